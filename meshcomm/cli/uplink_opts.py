"""The uplink of ``meshcomm relay``: its flags, and what the runtime needs to start the DHT.

``--uplink IFACE``, ``--dht-bootstrap HOST:PORT`` (repeatable), ``--dht-port N`` and
``--uplink-impair SPEC`` override ``[uplink]`` of the field config (``--uplink`` also
enables it).
:func:`uplink_settings` resolves the effective ``[uplink]`` into an :class:`UplinkPlan`:
the interface's addresses (the DHT node binds there only), the bootstrap nodes, the
configured incident secret (or None: the bridge derives one from the incident id, which is
not private), the hysteresis of the uplink state machine and the uplink transport's
impairment. The uplink transport (the uplink mesh's UDP) listens on the DHT port + 1
(``meshcomm.runtime.uplink_transport``); its configured peers are the bootstrap nodes
at their port + 1 (:meth:`UplinkPlan.transport_peers`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcomm.config import NodeConfig, Role, config_with_overrides, parse_host_port
from meshcomm.dht.records import MAX_CONFIGURED_SECRET_BYTES, MIN_CONFIGURED_SECRET_BYTES
from meshcomm.errors import ConfigError
from meshcomm.runtime.uplink_addr import UplinkAddresses, uplink_addresses
from meshcomm.runtime.uplink_transport import transport_peer
from meshcomm.security.keystore import read_secret_file as keystore_secret
from radios import Impairment, parse_impairment

log = logging.getLogger(__name__)


def add_uplink_arguments(parser: argparse.ArgumentParser) -> None:
    """The relay's uplink flags."""
    group = parser.add_argument_group(
        "uplink (DHT between sites; cross-site routing is being built, issue 10)")
    group.add_argument("--uplink", metavar="IFACE",
                       help="run a DHT node on this uplink interface (binds only to its "
                            "addresses); sets uplink.enabled and uplink.interface")
    group.add_argument("--dht-bootstrap", metavar="HOST:PORT", action="append", default=None,
                       dest="dht_bootstrap",
                       help="a DHT node to join through, e.g. a `meshcomm dht-node` "
                            "(repeatable; replaces uplink.bootstrap; none: local peer "
                            "discovery on the uplink segment)")
    group.add_argument("--dht-port", metavar="N", type=int, dest="dht_port",
                       help="UDP port of the DHT node (default uplink.dht_port, 4222; 0: any); "
                            "the uplink transport listens on this port + 1")
    group.add_argument("--uplink-impair", metavar="SPEC", dest="uplink_impair",
                       help="user-space impairment of the uplink transport, like --impair, "
                            "e.g. delay=300ms,loss=0.02 (a satellite hop); sets "
                            "uplink.impairment")


def uplink_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[uplink]`` overrides the flags ask for (none on a command without them)."""
    overrides: dict[str, Any] = {}
    interface = getattr(args, "uplink", None)
    if interface is not None:
        overrides["uplink.enabled"] = True
        overrides["uplink.interface"] = interface
    bootstrap = getattr(args, "dht_bootstrap", None)
    if bootstrap is not None:
        overrides["uplink.bootstrap"] = tuple(bootstrap)
    port = getattr(args, "dht_port", None)
    if port is not None:
        overrides["uplink.dht_port"] = port
    impair = getattr(args, "uplink_impair", None)
    if impair is not None:
        overrides["uplink.impairment"] = impair
    return overrides


@dataclass(frozen=True, slots=True)
class UplinkPlan:
    """Everything the runtime needs to run the relay's DHT node and uplink state machine."""

    addresses: UplinkAddresses
    dht_port: int
    bootstrap: tuple[tuple[str, int], ...]
    #: The configured incident secret (``meshcomm.dht.records.secret_for(incident, it)``);
    #: None: derived from the incident id, so the DHT records are NOT private.
    secret: bytes | None = field(repr=False)
    up_stable_s: float
    down_grace_s: float
    #: The uplink transport's impairment (``[uplink] impairment``); None: none.
    impairment: Impairment | None = None

    def transport_peers(self) -> tuple[str, ...]:
        """The uplink transport's configured peers: each bootstrap node's ``HOST:PORT+1``."""
        peers = (transport_peer(host, port) for host, port in self.bootstrap)
        return tuple(peer for peer in peers if peer is not None)

    def uplink_addrs(self, port: int) -> tuple[str, ...]:
        """This relay's uplink ``host:port`` addresses (for its attachment records), given
        the port its uplink transport is bound to."""
        found = []
        if self.addresses.ipv4 is not None:
            found.append(f"{self.addresses.ipv4}:{port}")
        if self.addresses.ipv6 is not None:
            found.append(f"[{self.addresses.ipv6}]:{port}")
        return tuple(found)


def read_secret_file(path: Path) -> bytes:
    """The incident secret in ``path`` (see keystore.read_secret_file)."""
    return keystore_secret(path, "uplink.secret_file", MIN_CONFIGURED_SECRET_BYTES,
                           MAX_CONFIGURED_SECRET_BYTES)


def uplink_settings(cfg: NodeConfig, args: argparse.Namespace | None = None) -> UplinkPlan | None:
    """The relay's uplink plan from ``cfg`` and the flags in ``args``; None when the uplink
    is off (or the node is a handset). Raises ConfigError (a bad flag or secret file) and
    :class:`~meshcomm.runtime.uplink_addr.UplinkAddressError` (no such interface, or it has
    no address)."""
    overrides = uplink_overrides(args) if args is not None else {}
    if overrides:
        cfg = config_with_overrides(cfg, overrides)
    uplink = cfg.uplink
    if not uplink.enabled:
        return None
    if cfg.node.role is not Role.RELAY:
        raise ConfigError("uplink.enabled", "only a relay runs an uplink (meshcomm relay)")
    secret = None
    if uplink.secret_file is not None:
        secret = read_secret_file(Path(uplink.secret_file).expanduser())
    return UplinkPlan(addresses=uplink_addresses(uplink.interface), dht_port=uplink.dht_port,
                      bootstrap=tuple(parse_host_port(b) for b in uplink.bootstrap),
                      secret=secret, up_stable_s=uplink.up_stable_s,
                      down_grace_s=uplink.down_grace_s,
                      impairment=parse_impairment(uplink.impairment) if uplink.impairment
                      else None)
