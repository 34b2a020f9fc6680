"""``meshcomm dht-node``: a standalone DHT node (no radio) that uplinked relays bootstrap to,
and a relay of their uplink mesh.

Run it on a command-post server or a cloud VM reachable from every site's uplink:
``meshcomm dht-node --listen 0.0.0.0:4222 --data-dir /var/lib/meshcomm-dht``. It logs its
node id and, whenever they change, its good peers; SIGINT/SIGTERM stop it cleanly (once
OpenDHT's lookups in flight have ended: up to ~20 s when peers just died). With
``--data-dir`` it keeps its DHT node id and its identity across restarts (relays' routing
tables stay valid).

It also relays the uplink mesh (issue 10), TURN-style, for relays that cannot reach each
other directly (both behind NAT): on the --listen address at the DHT port + 1 (the uplink
transport's port rule, ``meshcomm.runtime.uplink_transport``) it runs an uplink-mesh node
of incident ``--incident`` (it must be the relays' ``node.incident``; default "default"),
which registers ``sip:<its id>@uplink.invalid`` so the relays' uplink meshes route through
it. Its peers are the relays it hears from (relays list it as a bootstrap node and send to
HOST:PORT+1 by themselves).

Exit status: 0 after a clean stop, 1 when the node cannot start (the address is not local,
the port is in use, the data dir cannot be written), 2 for a malformed flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from meshcomm.cli.handset_cmd import EXIT_STARTUP, LOG_FORMAT, LOG_LEVELS
from meshcomm.config import (
    MAX_DHT_BOOTSTRAP,
    MAX_PORT,
    NodeConfig,
    config_with_overrides,
    parse_host_port,
)
from meshcomm.dht.port import DHT_KEY_BYTES, DhtPeers, DhtResult
from meshcomm.errors import ConfigError
from meshcomm.location.table import TrustPolicy
from meshcomm.overlay.config import OverlayConfig
from meshcomm.runtime.app import REGISTER_DELAY_S, StartupError
from meshcomm.runtime.dht_opendht import DhtBind, DhtStartError, OpenDhtPort, PortSettings
from meshcomm.runtime.driver import NodeDriver, as_uplink_radio
from meshcomm.runtime.uplink_transport import (
    UplinkContacts,
    make_uplink_mesh,
    open_uplink_radio,
    own_addrs,
    transport_port,
    uplink_aor,
)
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import load_or_create_identity, next_boot_epoch

log = logging.getLogger("meshcomm.dht_node")

EXIT_USAGE = 2
#: The node id file in --data-dir (20 random bytes, hex; the id is public).
NODE_ID_FILE = "dht-node-id"
#: Peer samples logged at least this often even when unchanged, seconds.
PEER_LOG_INTERVAL_S = 300.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dht-node", help="run a standalone DHT bootstrap node (no radio)",
        description="Run a standalone OpenDHT node that uplinked relays bootstrap to "
                    "(--dht-bootstrap HOST:PORT); no radio, no SIP. Stop with Ctrl-C or "
                    "SIGTERM.")
    parser.add_argument("--listen", metavar="HOST:PORT", required=True,
                        help="UDP address to listen on: an IPv4 address, [IPv6] or "
                             "0.0.0.0 / [::] for all (port 0: any free port)")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="keep the node id here across restarts (default: a new id "
                             "each start)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", action="append", default=[],
                        help="another DHT node to join (repeatable; none: local peer "
                             "discovery)")
    parser.add_argument("--peers-interval", metavar="SECONDS", type=float, default=5.0,
                        dest="peers_interval_s", help="peer sampling period (default 5)")
    parser.add_argument("--incident", metavar="ID", default=NodeConfig().node.incident,
                        help="incident of the uplink mesh it relays: the relays' "
                             "node.incident (default %(default)r)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.set_defaults(handler=run_dht_node)


def parse_listen(text: str) -> DhtBind:
    """``HOST:PORT`` -> a bind (HOST an IP address, IPv6 in brackets; 0.0.0.0 or [::]:
    every address of both families; port 0: any free port); ConfigError naming the flag."""
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        address = None
    if (not sep or address is None or not port.isdigit() or int(port) > MAX_PORT
            or bracketed != (address.version == 6)):
        raise ConfigError("--listen", f"{text!r}: expected IP:PORT, e.g. 0.0.0.0:4222, "
                                      "192.0.2.10:4222 or [2001:db8::10]:4222")
    if address.is_unspecified:
        return DhtBind(None, None, int(port))
    if address.version == 6:
        return DhtBind(None, str(address), int(port))
    return DhtBind(str(address), None, int(port))


def load_node_id(data_dir: Path) -> bytes:
    """The node id kept in ``data_dir`` (created with a random one on first start)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / NODE_ID_FILE
    try:
        node_id = bytes.fromhex(path.read_text().strip())
        if len(node_id) == DHT_KEY_BYTES:
            return node_id
        log.warning("%s is malformed: a new node id replaces it", path)
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("%s is malformed: a new node id replaces it", path)
    node_id = os.urandom(DHT_KEY_BYTES)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id.hex() + "\n")
    tmp.replace(path)
    return node_id


class _PeerLog:
    """Logs the good-peer count when it changes (and now and then when it does not)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last: int | None = None
        self._logged_at = 0.0

    def __call__(self, result: DhtResult) -> None:
        if not isinstance(result, DhtPeers):
            return
        now = self._loop.time()
        if result.good != self._last or now - self._logged_at >= PEER_LOG_INTERVAL_S:
            log.info("good DHT peers: %d", result.good)
            self._last, self._logged_at = result.good, now


@dataclass(frozen=True, slots=True)
class MeshIdentity:
    """Who the dht-node is on the uplink mesh."""

    identity: Identity
    #: Boot epoch: its sequence numbers start at epoch << 32 (0: an ephemeral identity).
    epoch: int
    incident: str


def load_mesh_identity(data_dir: Path | None, incident: str) -> MeshIdentity:
    """The identity kept in ``data_dir`` (created on first start) and its next boot epoch;
    without a data dir a new one each start. OSError when the data dir refuses."""
    if data_dir is None:
        return MeshIdentity(Identity(secrets.token_bytes(32)), 0, incident)
    identity, created = load_or_create_identity(data_dir)
    return MeshIdentity(identity, next_boot_epoch(data_dir, first_start=created), incident)


async def open_mesh_relay(bind: DhtBind, dht_port: int, who: MeshIdentity,
                          loop: asyncio.AbstractEventLoop) -> NodeDriver:
    """The uplink-mesh node on the --listen address at the DHT port + 1 (with port 0 in
    --listen: any free port when that one is busy), driven and started; StartupError when
    the transport cannot bind."""
    hosts = (bind.ipv4, bind.ipv6) if bind.ipv4 or bind.ipv6 else ("0.0.0.0", "::")
    try:
        radio = await open_uplink_radio(tuple(h for h in hosts if h), dht_port, (),
                                        any_port_if_busy=bind.port == 0)
    except OSError as exc:
        raise StartupError(f"uplink transport on UDP port {transport_port(dht_port)}: "
                           f"{exc.strerror or exc}") from None
    wall_offset_s = time.time() - time.monotonic()
    mesh = make_uplink_mesh(who.identity, incident=who.incident, trust=TrustPolicy(),
                            overlay=OverlayConfig(), registration_lifetime_s=300,
                            rng=random.Random(secrets.randbits(64)), now=loop.time(),
                            seq_base=who.epoch << 32, wall_offset_s=wall_offset_s,
                            credential=None)
    driver = NodeDriver(mesh, [radio], None, loop, wall_offset_s=wall_offset_s,
                        node_on_uplink=True)
    driver.start()
    transport = as_uplink_radio(radio)
    assert transport is not None
    UplinkContacts(driver, mesh, own_addrs(transport), None).announce_after(REGISTER_DELAY_S,
                                                                            loop)
    log.info("uplink mesh relay %s (%s, incident %r) on UDP port %d", uplink_aor(mesh.node_id),
             fingerprint(who.identity.public_key), who.incident, transport.bound_port)
    return driver


async def serve(bind: DhtBind, bootstrap: list[tuple[str, int]], node_id: bytes | None,
                peers_interval_s: float, who: MeshIdentity) -> None:
    """Run the node until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    settings = PortSettings(peers_interval_s=peers_interval_s, node_id=node_id,
                            peer_discovery=not bootstrap)
    port = OpenDhtPort(loop, bind, bootstrap, _PeerLog(loop), settings)
    driver: NodeDriver | None = None
    try:
        where = ", ".join(a for a in (bind.ipv4, bind.ipv6 and f"[{bind.ipv6}]") if a) or "all"
        log.info("DHT node %s listening on UDP %s port %d%s", port.node_id(), where,
                 port.bound_port(), "" if bootstrap else " (local peer discovery on)")
        driver = await open_mesh_relay(bind, port.bound_port(), who, loop)
        await stop.wait()
        log.info("stopping (lookups in flight to peers that died may take OpenDHT ~20 s)")
        driver.shutdown()            # its uplink registration's tombstone goes out
    finally:
        if driver is not None:
            driver.close()
        await port.aclose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def run_dht_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    try:
        bind = parse_listen(args.listen)
        if len(args.bootstrap) > MAX_DHT_BOOTSTRAP:
            raise ConfigError("--bootstrap", f"at most {MAX_DHT_BOOTSTRAP} nodes")
        bootstrap = [parse_host_port(b) for b in args.bootstrap]
        if not 0.05 <= args.peers_interval_s <= 3600:
            raise ConfigError("--peers-interval", "must be in 0.05..3600 seconds")
        incident = config_with_overrides(NodeConfig(), {"node.incident": args.incident}
                                         ).node.incident
    except ConfigError as exc:
        print(f"meshcomm dht-node: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        node_id = load_node_id(args.data_dir) if args.data_dir is not None else None
        who = load_mesh_identity(args.data_dir, incident)
        asyncio.run(serve(bind, bootstrap, node_id, args.peers_interval_s, who))
    except (DhtStartError, StartupError) as exc:
        print(f"meshcomm dht-node: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except OSError as exc:
        print(f"meshcomm dht-node: data dir {args.data_dir}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_STARTUP
    return 0
