"""Run one real node: data dir, identity, journal, radios, driver and control socket.

:func:`run_node` is what ``meshcomm handset`` and ``meshcomm relay`` call. Startup problems
that the user can fix (bad radio spec, missing interface, no permission for raw frames,
another node on the same data dir) raise :class:`StartupError` with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from meshcomm.config import NodeConfig, node_aor
from meshcomm.dht.api import UPLINK_CAP
from meshcomm.dht.bridge import BridgeConfig, DhtBridge
from meshcomm.dht.port import DhtResult
from meshcomm.dht.records import secret_for
from meshcomm.dht.uplink import UplinkConfig
from meshcomm.diskio import disk_problem, is_read_only
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.journal.chain import (
    CHECKPOINT_HEAD_HASH,
    CHECKPOINT_HEAD_SEQ,
    CHECKPOINT_SIGNATURE,
)
from meshcomm.journal.store import FLUSH_RETRY_INTERVAL_S, JournalStore
from meshcomm.location.freshness import FreshnessMemory
from meshcomm.media.relay import MediaConfig, MediaRelay
from meshcomm.node.collect import CollectConfig
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.freshness_store import FreshnessStore
from meshcomm.node.gateway.types import GatewayConfig, LocalDatagram
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.revocation_store import TRUST_FILE, TrustDb, open_trust_store
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import RELAY_CAP, RELAY_ROLE, StoreForward, StoreForwardConfig
from meshcomm.runtime.collect_edge import CollectEdge, collect_config
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, ControlError, ControlServer
from meshcomm.runtime.dht_opendht import DhtBind, DhtStartError, OpenDhtPort
from meshcomm.runtime.driver import NodeDriver, as_uplink_radio
from meshcomm.runtime.handlers import NodeInfo, control_handlers
from meshcomm.runtime.handover_ctl import load_handovers
from meshcomm.runtime.localaddr import source_address_toward
from meshcomm.runtime.media_io import DatagramSink, UdpMediaPorts
from meshcomm.runtime.sipgw import SipSockets
from meshcomm.runtime.sipusers import SipUsers
from meshcomm.runtime.uplink_transport import (
    UplinkContacts,
    make_uplink_mesh,
    open_uplink_radio,
    transport_port,
)
from meshcomm.runtime.upstream_plan import UpstreamPlan, upstream_plan
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import (
    load_credential_bytes,
    load_or_create_identity,
    next_boot_epoch,
)
from meshcomm.security.revocation import TrustStore
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import UPLINK_RADIO, short_id
from radios import Impairment, Radio, open_radio, parse_impairment

if TYPE_CHECKING:
    from meshcomm.cli.uplink_opts import UplinkPlan

log = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.sqlite"
#: Held messages and delivered ids of store-and-forward (SQLite, mode 0600).
STORE_FORWARD_FILE: Final = "storeforward.sqlite"
#: Highest accepted sequence per (AoR, key): replays refused after a restart (SQLite, 0600).
FRESHNESS_FILE: Final = "freshness.sqlite"
LOCK_FILE: Final = "node.lock"
#: After de-registering, keep running at most this long: the tombstones are re-sent until
#: every neighbour has acknowledged them (MeshNode.departure_done ends the grace early; at
#: 30% loss 1 s left about one departure in 120 unacknowledged, 3 s one in 10^5).
DEFAULT_SHUTDOWN_GRACE_S: Final = 3.0
#: How often the grace checks whether the departure is acknowledged.
DEPARTURE_POLL_S: Final = 0.05
#: Announce this long after start (at most REGISTER_DELAY_HELLOS HELLO periods): the first
#: HELLOs (sent within a tenth of a period) have been heard by then, so the first flood of our
#: binding reaches known neighbours and every hop learns a route from it (join, then announce).
REGISTER_DELAY_S: Final = 1.0
REGISTER_DELAY_HELLOS: Final = 1.5
#: A signed journal checkpoint is written this often (and at a clean shutdown).
CHECKPOINT_INTERVAL_S: Final = 60.0
#: The first checkpoint comes this long after the start (neighbours heard by then).
FIRST_CHECKPOINT_S: Final = 5.0
#: SIP host part of the contact a node registers: ``sip:NAME@<short node id>.mesh``.
CONTACT_HOST_SUFFIX: Final = "mesh"


#: Exit status of a node that stopped but could not close a store cleanly (e.g. journal
#: entries that a full disk kept from being written; each is logged in one line).
EXIT_CLOSE_FAILED: Final = 1


class StartupError(Exception):
    """The node cannot start; the message is one line for the user."""


def disk_startup_error(data_dir: Path, exc: OSError | sqlite3.Error, path: Path | str,
                       doing: str = "writing", what: str = "") -> StartupError:
    """A one-line StartupError for a start-up step that failed on the disk: names ``path``
    and the problem ("no space left on device writing /x/identity.key", "data dir /x is
    read-only: cannot write /x/journal.sqlite"); ``what`` (e.g. "journal") prefixes it."""
    problem = disk_problem(exc, path, doing)
    if is_read_only(exc):
        problem = f"data dir {data_dir} is read-only: {problem.partition(': ')[2]}"
    return StartupError(f"{what}: {problem}" if what else problem)


@dataclass(frozen=True, slots=True)
class NodeOptions:
    config: NodeConfig
    data_dir: Path
    radio_specs: tuple[str, ...]
    hostname: str
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    #: Delay before the first announcement; None: REGISTER_DELAY_S (see there).
    register_delay_s: float | None = None
    #: Seeds the node's random.Random (tests); None draws one from the OS.
    seed: int | None = None
    #: A relay's uplink (``meshcomm.cli.uplink_opts.uplink_settings``): it runs a DHT node
    #: there and the DHT bridge in its core; None: no uplink.
    uplink: UplinkPlan | None = None
    #: Tests only (after-action clock estimation): the node's wall clock runs this far
    #: from the system's, as a device with a wrong clock would (journal stamps, binding
    #: issue times); its monotonic clock is untouched.
    wall_clock_skew_s: float = 0.0


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir: one node per data dir."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise disk_startup_error(data_dir, exc, data_dir / LOCK_FILE, "creating") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(f"another meshcomm node is running with data dir {data_dir}") \
                from None
        yield
    finally:
        os.close(fd)


def data_dir_locked(data_dir: Path) -> bool:
    """True while a node holds the lock of ``data_dir`` (it is running)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def radio_seed(node_id: bytes, spec: str) -> int:
    """Per-radio impairment seed derived from the node id (radio names repeat across nodes)."""
    digest = hashlib.sha256(b"meshcomm-radio-seed\x00" + node_id + spec.encode()).digest()
    return int.from_bytes(digest[:8], "big")


def mesh_settings(cfg: NodeConfig, *, uplink: bool = False) -> NodeSettings:
    """The MeshNode's settings; a relay's bindings carry the capability ``relay`` so nodes
    beyond one hop can offer it messages to hold, and ``uplink`` when its uplink runs."""
    role = cfg.node.role.value
    caps: tuple[str, ...] = (RELAY_CAP,) if role == RELAY_ROLE else ()
    if uplink:
        caps += (UPLINK_CAP,)
    return NodeSettings(incident=cfg.node.incident, role=role,
                        registration_lifetime_s=cfg.node.registration_lifetime_s,
                        trust=cfg.trust.to_policy(), overlay=cfg.overlay, caps=caps)


def store_forward_config(cfg: NodeConfig) -> StoreForwardConfig:
    """Store-and-forward bounds from ``[relay]`` (0 messages: this node takes no custody)."""
    relay = cfg.relay
    return StoreForwardConfig(max_held_messages=relay.store_and_forward_max_messages,
                              max_age_s=float(relay.store_and_forward_max_age_s))


def open_store_forward(path: Path, node: MeshNode, config: StoreForwardConfig,
                       now: float) -> tuple[StoreForward, SfStorage]:
    """Open the node's store-and-forward database and restore the core from it."""
    try:
        storage = SfStorage.open(path)
    except ConfigError as exc:
        raise StartupError(f"store-and-forward {path}: {exc}") from None
    except (sqlite3.Error, OSError) as exc:
        raise disk_startup_error(path.parent, exc, path, what="store-and-forward") from None
    try:
        held, delivered, _statuses = storage.load()
        sf = StoreForward(node, config, now=now, restored=held,
                          delivered_ids=storage.load_delivered())
    except BaseException:
        storage.close()
        raise
    if held or delivered:
        log.info("store-and-forward: restored %d held message(s), %d delivered id(s)%s",
                 len(held), len(delivered),
                 f", {storage.skipped_rows} corrupt row(s) skipped" if storage.skipped_rows
                 else "")
    return sf, storage


def _open_trust(path: Path, cfg: NodeConfig) -> tuple[TrustDb, TrustStore]:
    """The node's trust records (issue 12.4); a disk that refuses them is one line."""
    try:
        return open_trust_store(path, cfg.node.incident, cfg.trust.to_policy().agency_keys,
                                SignatureVerifier())
    except ConfigError as exc:
        raise StartupError(f"trust {path}: {exc}") from None
    except (sqlite3.Error, OSError) as exc:
        raise disk_startup_error(path.parent, exc, path, what="trust") from None


def open_freshness(path: Path, own_key: bytes,
                   wall_now: float) -> tuple[FreshnessMemory, FreshnessStore]:
    """Open the node's freshness database and restore the memory from it."""
    try:
        store = FreshnessStore.open(path)
    except ConfigError as exc:
        raise StartupError(f"freshness {path}: {exc}") from None
    except (sqlite3.Error, OSError) as exc:
        raise disk_startup_error(path.parent, exc, path, what="freshness") from None
    try:
        memory = FreshnessMemory(own_key=own_key)
        memory.restore(store.load(wall_now, memory.capacity), wall_now)
    except (sqlite3.Error, OSError) as exc:
        store.close()
        raise disk_startup_error(path.parent, exc, path, what="freshness") from None
    except BaseException:
        store.close()
        raise
    if len(memory) or store.skipped_rows:
        log.info("freshness: restored %d sequence(s)%s", len(memory),
                 f", {store.skipped_rows} corrupt row(s) skipped" if store.skipped_rows
                 else "")
    return memory, store


def contact_for(aor: str, node_id: bytes) -> str:
    user = aor.removeprefix("sip:").partition("@")[0]
    return f"sip:{user}@{short_id(node_id)}.{CONTACT_HOST_SUFFIX}"


def _capability_problem(spec: str, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return (f"radio {spec}: permission denied ({exc.strerror}); raw frames need root "
                "or CAP_NET_RAW")
    return f"radio {spec}: cannot open: {exc.strerror or exc}"


async def open_radios(specs: tuple[str, ...], impairment: Impairment | None,
                      node_id: bytes) -> list[Radio]:
    """Create and open every radio; on any failure close those opened and raise."""
    if not specs:
        raise StartupError("no radio: give --radio udp:IFACE (or ether:IFACE), or list "
                           "radio.interfaces in the field config")
    radios: list[Radio] = []
    try:
        for spec in specs:
            radio = open_radio(spec, impairment=impairment, seed=radio_seed(node_id, spec))
            try:
                await radio.open()
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
            except OSError as exc:
                raise StartupError(_capability_problem(spec, exc)) from None
            radios.append(radio)
    except BaseException:
        for radio in radios:
            radio.close()
        raise
    return radios


def _load_identity(data_dir: Path) -> tuple[Identity, int, bytes | None]:
    """Identity (created on first start), next boot epoch and credential; a disk that
    refuses the writes is a one-line StartupError naming the file."""
    try:
        identity, created = load_or_create_identity(data_dir)
        if created:
            log.info("created a new identity in %s, fingerprint %s", data_dir,
                     fingerprint(identity.public_key))
        else:
            log.info("identity fingerprint %s", fingerprint(identity.public_key))
        epoch = next_boot_epoch(data_dir, first_start=created)
        return identity, epoch, load_credential_bytes(data_dir)
    except OSError as exc:
        raise disk_startup_error(data_dir, exc, exc.filename or data_dir) from None


def _open_journal(path: Path, node_id: bytes) -> JournalStore:
    try:
        return JournalStore.open(path, node_id)
    except (OSError, sqlite3.Error) as exc:
        raise disk_startup_error(path.parent, exc, path, what="journal") from None
    except ConfigError as exc:
        raise StartupError(f"journal {path}: {exc}") from None
    except DecodeError as exc:
        raise StartupError(f"journal {path} cannot be continued: {exc}") from None


async def run_node(options: NodeOptions,
                   on_ready: Callable[[NodeDriver, NodeInfo], None] | None = None) -> int:
    """Run a node until SIGINT/SIGTERM or a ``stop`` request; returns the exit status."""
    data_dir = options.data_dir
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        problem = "read-only file system" if is_read_only(exc) else exc.strerror or str(exc)
        raise StartupError(f"cannot create data dir {data_dir}: {problem.lower()}") from None
    with data_dir_lock(data_dir):
        return await _run_locked(options, on_ready)


async def _run_locked(options: NodeOptions,
                      on_ready: Callable[[NodeDriver, NodeInfo], None] | None) -> int:
    cfg, data_dir = options.config, options.data_dir
    identity, epoch, credential = _load_identity(data_dir)
    aor = node_aor(cfg.node, options.hostname, identity.public_key)
    info = NodeInfo(identity.node_id, identity.public_key, aor,
                    contact_for(aor, identity.node_id), cfg.node.role.value,
                    cfg.node.incident, data_dir, epoch)
    impairment = parse_impairment(cfg.radio.impairment) if cfg.radio.impairment else None
    sf_storage: SfStorage | None = None
    sf: StoreForward | None = None
    sip_users: SipUsers | None = None
    # Until the driver owns them, what is opened is closed again if a later step fails.
    with contextlib.ExitStack() as opened:
        radios = await open_radios(options.radio_specs, impairment, identity.node_id)
        for radio in radios:
            opened.callback(radio.close)
        journal = _open_journal(data_dir / JOURNAL_FILE, identity.node_id)
        opened.callback(journal.close)
        loop = asyncio.get_running_loop()
        rng = random.Random(options.seed if options.seed is not None else secrets.randbits(64))
        wall_offset_s = time.time() - time.monotonic() + options.wall_clock_skew_s
        freshness, fresh_store = open_freshness(data_dir / FRESHNESS_FILE,
                                                identity.public_key,
                                                time.time() + options.wall_clock_skew_s)
        opened.callback(fresh_store.close)
        trust_db, trust = _open_trust(data_dir / TRUST_FILE, cfg)
        opened.callback(trust_db.close)
        node = MeshNode(identity, mesh_settings(cfg, uplink=options.uplink is not None),
                        verifier=SignatureVerifier(), rng=rng,
                        now=loop.time(), seq_base=epoch << 32, wall_offset_s=wall_offset_s,
                        credential=credential, freshness=freshness, trust=trust)
        load_handovers(data_dir, node, loop.time())               # issue 12.3
        sockets = await _open_sip(cfg)
        if sockets is not None:
            opened.callback(sockets.close)
            sip_users = SipUsers.open(cfg, data_dir, sockets.host, loop.time())
            sf, sf_storage = open_store_forward(data_dir / STORE_FORWARD_FILE, node,
                                                store_forward_config(cfg), loop.time())
        uplink: UplinkParts | None = None
        if options.uplink is not None:
            uplink = await open_uplink(options.uplink, cfg, identity, node, loop,
                                       seq_base=epoch << 32, wall_offset_s=wall_offset_s,
                                       credential=credential, rng=rng,
                                       on_result=lambda result: driver.receive_dht(result))
            opened.callback(uplink.close)
        upstream = await _upstream(cfg, sockets, options.uplink)
        opened.pop_all()
    # The call ports' sink refers to the driver; datagrams arrive only once calls exist.
    core, ports = _compose_core(node, cfg, identity, rng, aor, sockets, sf, uplink,
                                lambda *datagram: driver.receive_client_media(*datagram),
                                upstream, collect_config(cfg, credential))
    if sip_users is not None and isinstance(core, NodeCore) and core.gateway is not None:
        sip_users.attach(core.gateway, core.gateway.counters)      # issue 12.2 digest auth
    if uplink is not None:
        radios.append(uplink.radio)
    driver = NodeDriver(core, radios, journal, loop, wall_offset_s=wall_offset_s,
                        sip_sink=_sip_sink(sockets))
    driver.media_ports = ports
    driver.dht_port = uplink.dht_port if uplink is not None else None
    driver.sf_storage = sf_storage
    driver.fresh_store = fresh_store
    collect_edge = None
    if isinstance(core, NodeCore) and core.collect is not None:
        collect_edge = CollectEdge(driver, core.collect, identity.public_key,
                                   data_dir / JOURNAL_FILE)
        driver.event_sink = collect_edge.sink
    if sockets is not None:
        _attach_sip(driver, sockets)
    announce = None
    if uplink is not None:
        contacts = UplinkContacts(driver, uplink.mesh, uplink.bridge.config.uplink_addrs,
                                  uplink.bridge.set_uplink_addrs)
        transport = as_uplink_radio(uplink.radio)
        if transport is not None:
            transport.on_mapped = contacts.on_mapped
        announce = contacts.announce_after(register_delay_s(options), loop)
    try:
        status = await _serve(driver, info, options, on_ready, collect_edge, sip_users)
    finally:
        if collect_edge is not None:
            collect_edge.close()
        if announce is not None:
            announce.cancel()
        failed = _close_node(driver, sf_storage, sockets, fresh_store)
        failed += close_all([(f"trust {trust_db.path}", trust_db.close)])
    if failed:
        log.error("node stopped; could not close cleanly: %s", ", ".join(failed))
        return status or EXIT_CLOSE_FAILED
    return status


def _close_node(driver: NodeDriver, sf_storage: SfStorage | None,
                sockets: SipSockets | None, fresh_store: FreshnessStore) -> list[str]:
    """Close everything the node runs; what could not be closed (cleanly)."""
    # Every store is closed even when one close fails (e.g. a full disk at stop).
    failed = close_all([*_closers(driver, sf_storage, sockets),
                        (f"freshness {fresh_store.path}", fresh_store.close)])
    if driver.journal is not None and driver.journal.lost_at_close:
        failed.append(f"journal {driver.journal.path} "
                      f"({driver.journal.lost_at_close} entries not written)")
    return failed


def _compose_core(node: MeshNode, cfg: NodeConfig, identity: Identity, rng: random.Random,
                  aor: str, sockets: SipSockets | None, sf: StoreForward | None,
                  uplink: UplinkParts | None, media_sink: DatagramSink,
                  upstream: UpstreamPlan | None = None,
                  collect: CollectConfig | None = None,
                  ) -> tuple[NodeCore | MeshNode, UdpMediaPorts | None]:
    """The node's core: the bare MeshNode, or composed with the gateway (its call ports
    opened, sending to ``media_sink``) and the uplink's bridge and mesh."""
    loop = asyncio.get_running_loop()
    bridge, mesh = (uplink.bridge, uplink.mesh) if uplink is not None else (None, None)
    if sockets is None:
        return compose(node, now=loop.time(), dht=bridge, uplink=mesh, collect=collect), None
    ports = UdpMediaPorts(loop, sockets.host, media_sink, cfg.media.port_range)
    core = compose(node, gateway_config=gateway_config(cfg, sockets, upstream), rng=rng,
                   node_aor=aor, now=loop.time(), sf=sf, relay=media_relay(cfg, identity, ports),
                   dht=bridge, uplink=mesh,
                   upstream=upstream.config if upstream is not None else None,
                   collect=collect, key_rng=random.SystemRandom())   # ephemeral keys
    assert core.gateway is not None
    core.gateway.hosts.resolve = source_address_toward   # listening on 0.0.0.0 / ::
    if upstream is not None:     # the address the upstream reaches us at is ours
        core.gateway.hosts.toward(upstream.proxy)
    return core, ports


def _attach_sip(driver: NodeDriver, sockets: SipSockets) -> None:
    """The gateway's sockets deliver to the driver."""
    sockets.deliver = driver.receive_sip
    sockets.deliver_batch = driver.receive_sip_batch
    sockets.keep_open = driver.sip_client_registered
    driver.sip_sockets = sockets
    log.info("SIP gateway on %s udp/%d tcp/%d", sockets.host, sockets.udp_port,
             sockets.tcp_port)


#: (what, close) pairs for :func:`close_all`.
Closer = tuple[str, Callable[[], object]]


def _closers(driver: NodeDriver, sf_storage: SfStorage | None,
             sockets: SipSockets | None) -> list[Closer]:
    """What a running node closes at stop, in order (each close is idempotent; the radios
    and the journal are closed again on their own in case the driver's close failed)."""
    closers: list[Closer] = []
    if driver.media_ports is not None:
        closers.append(("media", driver.close_media))
    if isinstance(driver.dht_port, OpenDhtPort):
        closers.append(("DHT node", driver.dht_port.close))
    closers.append(("driver", driver.close))
    closers += [(f"radio {name}", radio.close) for name, radio in driver.radios.items()]
    journal = driver.journal
    if journal is not None:
        closers.append((f"journal {journal.path}", journal.close))
    if sf_storage is not None:
        closers.append((f"store-and-forward {sf_storage.path}", sf_storage.close))
    if sockets is not None:
        closers.append(("SIP gateway sockets", sockets.close))
    return closers


def close_all(closers: Sequence[Closer]) -> list[str]:
    """Call every closer even if some fail; log each failure in one line (no traceback).

    Returns what failed to close."""
    failed: list[str] = []
    for what, close in closers:
        try:
            close()
        except (OSError, sqlite3.Error) as exc:
            log.error("%s: close failed: %s", what, disk_problem(exc, what, "closing"))
            failed.append(what)
        except Exception as exc:   # a bug in one close must not leave the others open
            log.error("%s: close failed: %s: %s", what, type(exc).__name__, exc)
            failed.append(what)
    return failed


@dataclass(frozen=True, slots=True)
class UplinkParts:
    """What a relay runs on its uplink (issue 10)."""

    #: The DHT node on the uplink addresses.
    dht_port: OpenDhtPort
    #: The DHT bridge of the relay's core.
    bridge: DhtBridge
    #: The uplink transport (an UplinkRadio, maybe under its impairment).
    radio: Radio
    #: The uplink mesh's node (same identity and incident as the island's).
    mesh: MeshNode

    def close(self) -> None:
        """Close the transport and the DHT node (a start-up step after them failed)."""
        self.radio.close()
        self.dht_port.close()


async def open_uplink(plan: UplinkPlan, cfg: NodeConfig, identity: Identity, node: MeshNode,
                      loop: asyncio.AbstractEventLoop, *, seq_base: int, wall_offset_s: float,
                      credential: bytes | None, rng: random.Random,
                      on_result: Callable[[DhtResult], None]) -> UplinkParts:
    """The relay's DHT node and uplink transport on its uplink addresses, the bridge of its
    core and its uplink mesh (issue 10). A DHT node or transport that cannot start (a busy
    port, an address that is not local) is a one-line StartupError."""
    addrs = plan.addresses
    try:
        port = OpenDhtPort(loop, DhtBind(addrs.ipv4, addrs.ipv6, plan.dht_port),
                           plan.bootstrap, on_result)
    except DhtStartError as exc:
        raise StartupError(f"uplink {addrs.interface}: {exc}") from None
    try:
        radio = await _open_transport(plan, port.bound_port(), identity.node_id)
    except BaseException:
        port.close()
        raise
    transport = as_uplink_radio(radio)
    assert transport is not None
    secret = secret_for(cfg.node.incident, plan.secret)
    if not secret.private:
        log.warning("uplink: no uplink.secret_file: the DHT records are keyed by the incident "
                    "id alone; anyone who knows it can find and read them")
    config = BridgeConfig(uplink_addrs=plan.uplink_addrs(transport.bound_port),
                          uplink=UplinkConfig(stable_s=plan.up_stable_s,
                                              grace_s=plan.down_grace_s))
    # The bridge's nonces must be unpredictable: system randomness.
    bridge = DhtBridge(identity, node.table, secret, config, SignatureVerifier(),
                       random.SystemRandom(), now=loop.time(), wall_offset_s=wall_offset_s,
                       seq_base=seq_base)
    mesh = make_uplink_mesh(identity, incident=cfg.node.incident, trust=cfg.trust.to_policy(),
                            overlay=cfg.overlay,
                            registration_lifetime_s=cfg.node.registration_lifetime_s,
                            rng=random.Random(rng.getrandbits(64)), now=loop.time(),
                            seq_base=seq_base, wall_offset_s=wall_offset_s,
                            credential=credential, trust_store=node.overlay.trust.store)
    log.info("uplink %s: DHT node %s on udp/%d (%s bootstrap node(s)), transport on udp/%d "
             "(%d configured peer(s))%s", addrs.interface, port.node_id(), port.bound_port(),
             len(plan.bootstrap) or "no", transport.bound_port, len(transport.peers()),
             ", impaired" if radio is not transport else "")
    return UplinkParts(port, bridge, radio, mesh)


async def _open_transport(plan: UplinkPlan, dht_port: int, node_id: bytes) -> Radio:
    """The uplink transport on the uplink addresses at the DHT port + 1 (with --dht-port 0:
    any free port if that one is busy); a one-line StartupError when it cannot bind."""
    addrs = plan.addresses
    try:
        return await open_uplink_radio(
            tuple(a for a in (addrs.ipv4, addrs.ipv6) if a is not None), dht_port,
            plan.transport_peers(), any_port_if_busy=plan.dht_port == 0,
            impairment=plan.impairment, seed=radio_seed(node_id, UPLINK_RADIO),
            ask_mapped=True)
    except OSError as exc:
        raise StartupError(f"uplink {addrs.interface}: cannot open the uplink transport on "
                           f"udp/{transport_port(dht_port)}: {exc.strerror or exc}") from None


def media_relay(cfg: NodeConfig, identity: Identity, ports: UdpMediaPorts) -> MediaRelay:
    """The gateway's media relay on its call ports, with the [media] limits. Media nonces
    must be unpredictable: system randomness."""
    settings = cfg.media
    return MediaRelay(identity, ports, random.SystemRandom(),
                      MediaConfig(idle_timeout_s=settings.idle_timeout_s,
                                  max_calls=settings.max_calls))


async def _upstream(cfg: NodeConfig, sockets: SipSockets | None,
                    uplink: UplinkPlan | None) -> UpstreamPlan | None:
    """``[upstream]`` of a relay with a SIP gateway (meshcomm.runtime.upstream_plan)."""
    if sockets is None or not cfg.upstream.registrar:
        return None
    addrs = uplink.addresses if uplink is not None else None
    uplink_host = None if addrs is None else (addrs.ipv4 or addrs.ipv6)
    return await upstream_plan(cfg, sip_host=sockets.host, sip_port=sockets.udp_port,
                               uplink_host=uplink_host)


def gateway_config(cfg: NodeConfig, sockets: SipSockets,
                   upstream: UpstreamPlan | None = None) -> GatewayConfig:
    sip = cfg.sip
    return GatewayConfig(local_host=sockets.host, local_port=sockets.udp_port,
                         message_timeout_s=sip.message_timeout_s,
                         invite_timeout_s=sip.invite_timeout_s,
                         max_pending_transactions=sip.max_pending_transactions,
                         client_rate_per_s=sip.client_rate_per_s, client_burst=sip.client_burst,
                         timers=sip.timers, keep_sip_bodies=cfg.journal.keep_sip_bodies,
                         upstream=upstream.proxy if upstream is not None else None,
                         upstream_trusted=upstream is not None and upstream.trusted)


async def _open_sip(cfg: NodeConfig) -> SipSockets | None:
    """Bind the SIP gateway's UDP and TCP sockets (None when [sip] is disabled)."""
    sip = cfg.sip
    if not sip.enabled:
        return None
    sockets = SipSockets(sip.listen_host, sip.udp_port, sip.tcp_port, lambda _d, _a: None,
                         max_tcp_connections=sip.max_tcp_connections)
    try:
        await sockets.open()
    except OSError as exc:
        raise StartupError(f"SIP gateway: cannot listen on {sip.listen_host} port "
                           f"{sip.udp_port}/{sip.tcp_port}: {exc.strerror or exc}") from None
    return sockets


def _sip_sink(sockets: SipSockets | None) -> Callable[[LocalDatagram], None] | None:
    return None if sockets is None else sockets.send


async def _serve(driver: NodeDriver, info: NodeInfo, options: NodeOptions,
                 on_ready: Callable[[NodeDriver, NodeInfo], None] | None,
                 collect_edge: CollectEdge | None = None,
                 sip_users: SipUsers | None = None) -> int:
    loop = driver.loop
    stop = asyncio.Event()
    server = ControlServer(options.data_dir / CONTROL_SOCKET_FILE,
                           control_handlers(driver, info, stop.set, collect_edge, sip_users))
    try:
        server.bind()
    except ControlError as exc:
        raise StartupError(f"control socket: {exc}") from None
    except OSError as exc:
        raise disk_startup_error(options.data_dir, exc, server.path, "creating",
                                 what="control socket") from None
    driver.start()
    log.info("node %s up: %s (%s, incident %r) on %s", short_id(info.node_id), info.aor,
             info.role, info.incident, ", ".join(driver.radios))
    delay_s = register_delay_s(options)
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            serve_task = tg.create_task(server.serve(tg))
            sip_tcp_task = _serve_sip_tcp(driver, tg)
            checkpoint_task = tg.create_task(_checkpoints(driver, stop))
            register_task = tg.create_task(_register_after(driver, info, delay_s))
            if on_ready is not None:
                on_ready(driver, info)
            await stop.wait()
            log.info("stopping: withdrawing %s", info.aor)
            register_task.cancel()
            driver.shutdown()
            await _departure_grace(driver, options.shutdown_grace_s)
            driver.hold_pending_messages()   # unanswered MESSAGEs: held durably, not lost
            _checkpoint(driver)
            serve_task.cancel()
            checkpoint_task.cancel()
            if sip_tcp_task is not None:
                sip_tcp_task.cancel()        # closes every SIP TCP connection
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        server.close()
    log.info("node %s stopped", short_id(info.node_id))
    return 0


def register_delay_s(options: NodeOptions) -> float:
    """How long after start a node announces itself (see REGISTER_DELAY_S)."""
    if options.register_delay_s is not None:
        return options.register_delay_s
    return min(REGISTER_DELAY_S, REGISTER_DELAY_HELLOS * options.config.overlay.hello_interval_s)


async def _departure_grace(driver: NodeDriver, grace_s: float) -> None:
    """Wait until every neighbour acknowledged our tombstones, at most ``grace_s``."""
    deadline = driver.now() + grace_s
    while not driver.node.departure_done and (left := deadline - driver.now()) > 0:
        await asyncio.sleep(min(DEPARTURE_POLL_S, left))


def _serve_sip_tcp(driver: NodeDriver, tg: asyncio.TaskGroup) -> asyncio.Task[None] | None:
    """The SIP gateway's TCP accept loop as a task of ``tg`` (connections too)."""
    sockets = driver.sip_sockets
    return None if sockets is None else tg.create_task(sockets.serve(tg))


async def _register_after(driver: NodeDriver, info: NodeInfo, delay_s: float) -> None:
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    driver.register(info.aor, (info.contact,))
    log.info("announced %s (contact %s)", info.aor, info.contact)


def _checkpoint(driver: NodeDriver) -> None:
    journal = driver.journal
    if journal is None or driver.closed:
        return
    now = driver.now()
    entry = journal.checkpoint(driver.node.identity.sign, now, driver.wall_time(now))
    durable = driver.flush_journal()
    # Neighbours witness it (issue 11), only once it is on disk: a checkpoint announced and
    # then lost with an unwritable disk and a crash would prove an honest node a fork.
    if entry is not None and durable >= entry.seq:
        seq, head = entry.data[CHECKPOINT_HEAD_SEQ], entry.data[CHECKPOINT_HEAD_HASH]
        signature = entry.data[CHECKPOINT_SIGNATURE]
        if (isinstance(seq, int) and seq > 0 and isinstance(head, bytes)
                and isinstance(signature, bytes)):
            driver.core.journal_checkpointed(seq, head, signature)


async def _checkpoints(driver: NodeDriver, stop: asyncio.Event) -> None:
    """A signed checkpoint FIRST_CHECKPOINT_S after the start (the neighbours witness a new
    or restarted node's journal at once, and each witness record pairs the two clocks for
    the export), then every CHECKPOINT_INTERVAL_S. Meanwhile, while the journal cannot be
    written, retry it every FLUSH_RETRY_INTERVAL_S even when no new event comes, so the
    log and ``ctl status`` see the disk come back and waiting entries reach it."""
    next_checkpoint = driver.now() + FIRST_CHECKPOINT_S
    while not stop.is_set():
        await asyncio.sleep(min(FLUSH_RETRY_INTERVAL_S,
                                max(0.0, next_checkpoint - driver.now())))
        if driver.now() >= next_checkpoint:
            _checkpoint(driver)
            next_checkpoint += CHECKPOINT_INTERVAL_S
        elif driver.journal is not None and not driver.journal.writable and not driver.closed:
            driver.flush_journal()
