"""``meshcomm handset`` and ``meshcomm relay``: run a real node until Ctrl-C or SIGTERM.

Zero configuration: the identity is created on first start, the AoR is derived from
``--name`` / the profile / the host name plus a key fingerprint, and the node registers,
refreshes and, on exit, de-registers. Exit status: 0 after a clean stop, 1 when the node
cannot start (missing interface or permission, data dir in use, a full or read-only data
dir: one line naming the path) or could not close a store cleanly at stop (e.g. journal
entries a full disk kept out; logged in one line), 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from meshcomm.cli.config_cmd import parse_overrides, report_config_error
from meshcomm.cli.uplink_opts import add_uplink_arguments, uplink_overrides, uplink_settings
from meshcomm.config import (
    NodeConfig,
    Role,
    config_with_overrides,
    default_data_dir,
    load_config,
    load_profile,
    profile_names,
)
from meshcomm.errors import ConfigError
from meshcomm.runtime.app import DEFAULT_SHUTDOWN_GRACE_S, NodeOptions, StartupError, run_node
from meshcomm.runtime.uplink_addr import UplinkAddressError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Exit status for a bad configuration (argparse uses 2 for usage errors as well).
EXIT_CONFIG = 2
#: The test option --wall-clock-skew stays within this (a day: bindings issued further
#: ahead are refused by the mesh anyway).
MAX_WALL_CLOCK_SKEW_S = 86400.0
EXIT_STARTUP = 1
EXIT_INTERRUPTED = 130


def _add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--radio", metavar="SPEC", action="append", default=[],
                        help="link to use: udp:IFACE (IPv6 link-local multicast) or "
                             "ether:IFACE (raw frames, root); repeatable; default: the "
                             "config's radio.interfaces")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="identity, journal and control socket (default: node.data_dir, "
                             "else $XDG_DATA_HOME/meshcomm or ~/.local/share/meshcomm)")
    parser.add_argument("--name", help="SIP user part (default: host name + key fingerprint)")
    parser.add_argument("--domain", help="SIP domain of the incident")
    parser.add_argument("--incident", help="incident (overlay) id")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profile", metavar="NAME",
                        help="a shipped field profile: " + ", ".join(profile_names())
                             + " (default: handset, or vehicle-relay for relay)")
    source.add_argument("--config", metavar="FILE", type=Path, help="a field config file")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override one config key (repeatable)")
    parser.add_argument("--sip-listen", metavar="HOST:PORT", dest="sip_listen",
                        help="address of the local SIP gateway, UDP and TCP (default "
                             "sip.listen_host/udp_port/tcp_port: 127.0.0.1:5060; port 0: any "
                             "free port); 'off' disables it")
    parser.add_argument("--impair", metavar="SPEC",
                        help="user-space impairment of received frames, e.g. loss=0.1 "
                             "(tests and drills only)")
    # Tests of the after-action export: a node whose wall clock is wrong by this much.
    parser.add_argument("--wall-clock-skew", metavar="SECONDS", type=float, default=0.0,
                        dest="wall_clock_skew_s", help=argparse.SUPPRESS)
    parser.add_argument("--shutdown-grace", metavar="SECONDS", type=float,
                        default=DEFAULT_SHUTDOWN_GRACE_S, dest="shutdown_grace_s",
                        help="keep running this long after de-registering (default "
                             "%(default)s)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``handset`` and ``relay`` commands (same code, different role)."""
    handset = subparsers.add_parser(
        "handset", help="run a responder's handset node",
        description="Run a handset node: creates its identity on first start, finds "
                    "neighbours, registers sip:NAME@DOMAIN and de-registers on Ctrl-C.")
    _add_node_arguments(handset)
    handset.set_defaults(handler=run_handset, role=Role.HANDSET)
    relay = subparsers.add_parser(
        "relay", help="run a vehicle relay node",
        description="Run a relay node (same as handset, with role relay).")
    _add_node_arguments(relay)
    add_uplink_arguments(relay)
    relay.set_defaults(handler=run_handset, role=Role.RELAY)


#: Profile used when neither --profile nor --config is given, per command.
DEFAULT_PROFILES = {Role.HANDSET: "handset", Role.RELAY: "vehicle-relay"}


def _base_config(args: argparse.Namespace) -> NodeConfig:
    if args.profile is not None:
        return load_profile(args.profile)
    if args.config is not None:
        return load_config(args.config)
    default = DEFAULT_PROFILES[args.role]
    return load_profile(default) if default in profile_names() else NodeConfig()


def build_config(args: argparse.Namespace) -> NodeConfig:
    """The effective config: profile/file/defaults, then --set, then the dedicated flags."""
    overrides = parse_overrides(args.overrides)
    flags = {"node.name": args.name, "node.domain": args.domain,
             "node.incident": args.incident, "radio.impairment": args.impair}
    overrides.update({key: value for key, value in flags.items() if value is not None})
    if args.sip_listen is not None:
        overrides.update(parse_sip_listen(args.sip_listen))
    overrides.update(uplink_overrides(args))
    role: Role = args.role
    overrides["node.role"] = role.value
    return config_with_overrides(_base_config(args), overrides)


def parse_sip_listen(text: str) -> dict[str, Any]:
    """``HOST:PORT`` (IPv6 as ``[::1]:5060``) or ``off`` -> [sip] overrides."""
    if text.strip().lower() == "off":
        return {"sip.enabled": False}
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ConfigError("--sip-listen", f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:5060")
    return {"sip.enabled": True, "sip.listen_host": host, "sip.udp_port": int(port),
            "sip.tcp_port": int(port)}


def resolve_data_dir(args: argparse.Namespace, cfg: NodeConfig) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir).expanduser()
    text = default_data_dir(cfg.node, os.environ, str(Path.home()))
    return Path(text).expanduser()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def run_handset(args: argparse.Namespace) -> int:
    command = f"meshcomm {args.role.value}"
    _setup_logging(args.log_level)
    try:
        cfg = build_config(args)
        uplink = uplink_settings(cfg)
    except ConfigError as exc:
        report_config_error(exc, str(args.config) if args.config is not None else command)
        return EXIT_CONFIG
    except UplinkAddressError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    skew = args.wall_clock_skew_s
    if not math.isfinite(skew) or abs(skew) > MAX_WALL_CLOCK_SKEW_S:
        print(f"{command}: --wall-clock-skew must be within +/-{MAX_WALL_CLOCK_SKEW_S:.0f} s",
              file=sys.stderr)
        return EXIT_CONFIG
    options = NodeOptions(config=cfg, data_dir=resolve_data_dir(args, cfg),
                          radio_specs=tuple(args.radio) or cfg.radio.interfaces,
                          hostname=socket.gethostname(),
                          shutdown_grace_s=max(0.0, args.shutdown_grace_s), uplink=uplink,
                          wall_clock_skew_s=args.wall_clock_skew_s)
    try:
        return asyncio.run(run_node(options))
    except StartupError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
