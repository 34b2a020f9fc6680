"""``meshcomm config check FILE`` and ``meshcomm config show [--profile NAME | FILE]``.

Each sub-command stores its handler as ``handler`` in the parsed namespace; the handler takes
the namespace and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meshcomm.config import (
    InvalidConfig,
    NodeConfig,
    config_with_overrides,
    load_config,
    load_profile,
    parse_override,
    profile_names,
    profile_path,
)
from meshcomm.config_show import format_config
from meshcomm.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` with its sub-commands ``check``, ``show`` and ``profiles``."""
    config = subparsers.add_parser("config", help="check and show field configs",
                                   description="Check and show field configuration files.")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="validate a field config file")
    check.add_argument("file", metavar="FILE", type=Path)
    check.set_defaults(handler=run_check)

    show = sub.add_parser("show", help="print the effective configuration",
                          description="Print the effective configuration: built-in defaults, "
                                      "a profile, or a file, with --set overrides applied.")
    source = show.add_mutually_exclusive_group()
    source.add_argument("--profile", metavar="NAME",
                        help="a shipped profile: " + ", ".join(profile_names()))
    source.add_argument("file", metavar="FILE", type=Path, nargs="?")
    show.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                      dest="overrides", help="override one key (repeatable)")
    show.set_defaults(handler=run_show)

    profiles = sub.add_parser("profiles", help="list the shipped field profiles")
    profiles.set_defaults(handler=run_profiles)


def report_config_error(exc: ConfigError, source: str) -> None:
    """Print a config error to stderr, one line per problem, each naming its key path."""
    if isinstance(exc, InvalidConfig):
        for key_path, message in exc.problems:
            print(f"{exc.source}: {key_path}: {message}", file=sys.stderr)
    elif exc.key_path.startswith(source):
        print(str(exc), file=sys.stderr)
    else:
        print(f"{source}: {exc}", file=sys.stderr)


def summary(cfg: NodeConfig) -> str:
    node, trust = cfg.node, cfg.trust
    radios = ", ".join(cfg.radio.interfaces) or "none (use --radio)"
    lines = [
        f"  role {node.role.value}, incident {node.incident!r}, domain {node.domain}",
        f"  name {node.name or '(hostname + key fingerprint)'}, "
        f"registration lifetime {node.registration_lifetime_s} s",
        f"  trust {trust.policy.value} with {len(trust.agency_keys)} agency key(s)",
        f"  radios: {radios}" + (f"; impairment {cfg.radio.impairment}"
                                 if cfg.radio.impairment else ""),
    ]
    return "\n".join(lines)


def run_check(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        report_config_error(exc, str(path))
        return 1
    print(f"{path}: ok")
    print(summary(cfg))
    return 0


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """The ``--set SECTION.KEY=VALUE`` flags as an overrides mapping."""
    return dict(parse_override(text) for text in texts)


def run_show(args: argparse.Namespace) -> int:
    if args.profile is not None:
        source = f"profile {args.profile}"
    elif args.file is not None:
        source = str(args.file)
    else:
        source = "built-in defaults"
    try:
        if args.profile is not None:
            cfg = load_profile(args.profile)
            source = f"{source} ({profile_path(args.profile)})"
        elif args.file is not None:
            cfg = load_config(args.file)
        else:
            cfg = NodeConfig()
        cfg = config_with_overrides(cfg, parse_overrides(args.overrides))
    except ConfigError as exc:
        report_config_error(exc, str(args.file) if args.file is not None else "meshcomm")
        return 1
    print(f"# effective configuration: {source}")
    if args.overrides:
        print("# overrides: " + " ".join(args.overrides))
    print(format_config(cfg), end="")
    return 0


def run_profiles(args: argparse.Namespace) -> int:
    for name in profile_names():
        print(f"{name:16} {profile_path(name)}")
    return 0
