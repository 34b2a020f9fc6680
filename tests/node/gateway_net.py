"""In-memory test net: a chain of whole nodes (NodeCore: MeshNode + SipGateway, with a
media relay or store-and-forward where asked) with stock SIP UAs attached to their
gateways, stepped deterministically in virtual time.

Each node is driven through the one :class:`~meshcomm.node.pump.Pump` on a
:class:`~tests.node.memory_edge.MemoryEdge`: the net only moves what the edges hold --
datagrams to the chain neighbours, SIP to the UAs -- and fires the armed timers; the
routing between a node's parts and the persist-before-transmit order are the pump's and
the core's, as in the runtime. A node with store-and-forward writes its ``SfPersist``
batches to its SQLite storage when it has one (else they are taken as written).
``Net(loss=...)`` drops each radio frame with that probability (seeded); ``Net.cut``
holds chain links that are down.

Tests may also give a station's core an input directly (``station.sip.receive_sip(...)``):
the next step of the net runs every pump, so what that produced goes out then."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.location.table import TrustPolicy
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaConfig, MediaRelay, SequentialPortAllocator
from meshcomm.media.session import TO_MESH_COUNTERS, ClientPacket
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.gateway.core import SipGateway
from meshcomm.node.gateway.types import Address, GatewayConfig, MessageHolder
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.node.sf_delivered import DeliveredRecord
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import HeldMessage, StoreForward, StoreForwardConfig
from meshcomm.overlay.config import OverlayConfig
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import RequestSucceeded, UaConfig, UaEvent
from meshcomm.types import LinkAddr
from tests.node.memory_edge import MemoryEdge

DOMAIN = "incident.local"
GW_ADDR: Address = ("127.0.0.1", 5060)
FAST_OVERLAY = OverlayConfig(hello_interval_s=0.2, neighbour_timeout_s=1.0,
                             anti_entropy_interval_s=0.4)
#: Virtual time advanced at most this much per step.
MAX_STEP_S = 0.05
#: Exchange rounds of one instant before the net counts as not settling (a loop).
MAX_SETTLE_ROUNDS = 1000


@dataclass
class Station:
    """One node of the chain: its core, the pump driving it, the edge it runs on, and the
    UAs attached to its gateway."""

    name: str
    core: NodeCore
    edge: MemoryEdge
    pump: Pump = field(init=False)
    uas: dict[Address, UserAgent] = field(default_factory=dict)
    ua_events: dict[Address, list[UaEvent]] = field(default_factory=dict)
    #: Local datagrams for addresses without a UA (raw clients of the tests).
    unclaimed: list[tuple[Address, bytes]] = field(default_factory=list)
    up: bool = True

    def __post_init__(self) -> None:
        self.pump = Pump(self.core, self.edge)

    def use(self, core: NodeCore) -> None:
        """Run ``core`` on this station from now on (a restart of the node's software:
        a new gateway, store-and-forward core...; the edge and the UAs stay)."""
        self.core = core
        self.pump = Pump(core, self.edge)

    @property
    def sip(self) -> NodeCore:
        return self.core

    @property
    def gw(self) -> SipGateway:
        assert self.core.gateway is not None
        return self.core.gateway

    @property
    def node(self) -> MeshNode:
        return self.core.node

    @property
    def relay(self) -> MediaRelay | None:
        """The media relay of the gateway (Net(media=...))."""
        return self.core.relay

    @property
    def journal(self) -> list[JournalRecord]:
        return self.edge.journal

    @property
    def other_events(self) -> list[object]:
        """Events other than journal records, and every ``SfPersist`` written."""
        return self.edge.events

    @property
    def to_clients(self) -> list[ClientPacket]:
        """What the media relay sent to its clients."""
        return self.edge.to_clients

    @property
    def storage(self) -> SfStorage | None:
        """Store-and-forward database (None: writes are taken as done)."""
        return self.edge.storage

    @storage.setter
    def storage(self, storage: SfStorage | None) -> None:
        self.edge.storage = storage

    def sip_journal(self) -> list[dict[str, object]]:
        return [dict(r.data) for r in self.journal if r.type is JournalEventType.SIP_MESSAGE]


class Net:
    """A chain n0 - n1 - ... of whole nodes; each hears only its chain neighbours."""

    def __init__(self, n_nodes: int, *, config: GatewayConfig | None = None,
                 holders: dict[int, MessageHolder] | None = None, seed: int = 7,
                 media: MediaConfig | None = None, media_ports: int = 100,
                 media_at: set[int] | None = None, loss: float = 0.0,
                 trust: TrustPolicy | None = None,
                 credential: Callable[[int, Identity], bytes | None] | None = None) -> None:
        """``trust`` and ``credential`` (node index, identity -> its credential): the
        agency policy's nodes (issue 12)."""
        self.now = 0.0
        self.rng = random.Random(seed)
        self.loss = loss
        #: Chain links that are down (a partition), as {i, i + 1}.
        self.cut: set[frozenset[int]] = set()
        self.loss_rng = random.Random(seed * 7919 + 1)
        self.stations: list[Station] = []
        holders = holders or {}
        for i in range(n_nodes):
            ident = Identity(hashlib.sha256(f"gw-test-{seed}-{i}".encode()).digest())
            node = MeshNode(ident, NodeSettings(overlay=FAST_OVERLAY,
                                                trust=trust or TrustPolicy()),
                            verifier=SignatureVerifier(), rng=random.Random(seed * 100 + i),
                            now=self.now, seq_base=1 << 32, wall_offset_s=1.7e9,
                            credential=credential(i, ident) if credential else None)
            relay = None
            if media is not None and (media_at is None or i in media_at):
                first = 20000 + 1000 * i
                relay = MediaRelay(ident, SequentialPortAllocator(f"127.0.0.{10 + i}", first,
                                                                  first + 2 * media_ports),
                                   random.Random(seed * 10 + i), media)
            aor = f"sip:node{i}@{DOMAIN}"
            core = compose(node, gateway_config=config or GatewayConfig(),
                           rng=random.Random(seed * 1000 + i), node_aor=aor, now=self.now,
                           relay=relay, holder=holders.get(i))
            self.stations.append(Station(f"n{i}", core, MemoryEdge()))
            self._register_own(self.stations[-1], aor, f"sip:node{i}")

    def _register_own(self, st: Station, aor: str, user: str) -> None:
        """The node's own AoR, reachable at its gateway's mesh host."""
        contact = f"{user}@{st.gw.mesh_host}"
        core = st.core
        st.pump.command(self.now, lambda: core.register(aor, (contact,), self.now))

    # ------------------------------------------------------------ media
    def client_media(self, index: int, call_id: str, data: bytes,
                     channel: Channel = Channel.RTP) -> bool:
        """A client's datagram arrives on its gateway's call port (m-line 0): relay it over
        the mesh. False when the relay dropped it."""
        st = self.stations[index]
        assert st.relay is not None
        session = st.relay.sessions.get(call_id)
        relayed = TO_MESH_COUNTERS[channel]
        before = session.counters[relayed] if session is not None else 0
        st.pump.client_media(call_id, 0, channel, data, self.now)
        return session is not None and session.counters[relayed] > before

    # ------------------------------------------------------------ clients
    def add_ua(self, index: int, user: str, port: int) -> UserAgent:
        addr: Address = ("127.0.0.1", port)
        ua = UserAgent(UaConfig(aor=f"sip:{user}@{DOMAIN}", local_host=addr[0], local_port=port,
                                outbound_proxy=GW_ADDR),
                       random.Random(self.rng.getrandbits(32)))
        st = self.stations[index]
        st.uas[addr] = ua
        st.ua_events[addr] = []
        return ua

    def events(self, index: int, port: int) -> list[UaEvent]:
        return self.stations[index].ua_events[("127.0.0.1", port)]

    # ------------------------------------------------------------ stepping
    def _neighbours(self, i: int) -> list[int]:
        return [j for j in (i - 1, i + 1)
                if 0 <= j < len(self.stations) and frozenset((i, j)) not in self.cut]

    def _exchange(self) -> bool:
        """One round: each station's UAs to its gateway, its datagrams to its neighbours,
        its SIP to its UAs."""
        moved = False
        for i, st in enumerate(self.stations):
            if not st.up:
                continue
            for addr, ua in st.uas.items():
                for out in ua.to_send(self.now):
                    moved = True
                    st.pump.sip(out.data, addr, self.now)
            for dgram in st.edge.take_air():
                moved = True
                self._broadcast(i, dgram.data, dgram.dst)
            for local in st.edge.take_local():
                moved = True
                target = st.uas.get(local.dest)
                if target is not None:
                    target.receive(local.data, GW_ADDR, self.now)
                else:
                    st.unclaimed.append((local.dest, local.data))
            for addr, ua in st.uas.items():
                while (ua_event := ua.next_event()) is not None:
                    st.ua_events[addr].append(ua_event)
        return moved

    def _broadcast(self, i: int, data: bytes, dst: str | None) -> None:
        """A frame station ``i`` sent, to the neighbours that hear it (each may lose it)."""
        src = LinkAddr(self.stations[i].name)
        for j in self._neighbours(i):
            if dst is None or dst == f"n{j}":
                peer = self.stations[j]
                if self.loss and self.loss_rng.random() < self.loss:
                    continue
                if peer.up:
                    peer.pump.radio(data, src, self.now)

    def _settle(self) -> None:
        for st in self.stations:            # what a test gave a core directly goes out
            if st.up:
                st.pump.run(self.now)
        for _ in range(MAX_SETTLE_ROUNDS):
            if not self._exchange():
                return
        raise AssertionError("network did not settle")

    def _next_time(self) -> float:
        times: list[float] = []
        for st in self.stations:
            if not st.up:
                continue
            if st.edge.deadline is not None:
                times.append(st.edge.deadline)
            times += [u for ua in st.uas.values() if (u := ua.next_timer()) is not None]
        return min(times, default=self.now + MAX_STEP_S)

    def step(self, limit: float) -> None:
        self._settle()
        self.now = max(self.now, min(self._next_time(), limit, self.now + MAX_STEP_S))
        for st in self.stations:
            if not st.up:
                continue
            st.pump.timer(self.now)
            for ua in st.uas.values():
                ua.on_timer(self.now)
        self._settle()

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step(end)

    def run_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> float:
        start = self.now
        while not condition():
            if self.now - start > timeout_s:
                raise AssertionError(f"condition not met within {timeout_s} s (virtual)")
            self.step(start + timeout_s + MAX_STEP_S)
        return self.now - start

    def converge(self) -> None:
        """Every node knows every node's own binding."""
        want = {f"sip:node{i}@{DOMAIN}" for i in range(len(self.stations))}
        self.run_until(lambda: all(
            all(st.node.table.lookup(a) for a in want) for st in self.stations if st.up))


def attach_store_forward(net: Net, index: int, config: StoreForwardConfig,
                         db: Path | None = None) -> StoreForward:
    """Give station ``index`` a store-and-forward core (the gateway's holder), restored
    from and persisting to the SQLite file ``db`` when given. Called again on a station,
    it plays a restart of the node's software: a new gateway and core (the mesh node and
    its table stay), state restored from ``db``."""
    st = net.stations[index]
    if st.storage is not None:
        st.storage.close()
        st.storage = None
    held: list[HeldMessage] = []
    delivered: list[DeliveredRecord] = []
    if db is not None:
        st.storage = SfStorage.open(db)
        held, delivered = st.storage.load()[0], st.storage.load_delivered()
    sf = StoreForward(st.node, config, now=net.now, restored=held, delivered_ids=delivered)
    old = st.gw
    st.use(compose(st.node, gateway_config=old.config,
                   rng=random.Random(net.rng.getrandbits(32)), node_aor=old.node_aor,
                   now=net.now, sf=sf))
    return sf


T = TypeVar("T")


def of_kind(events: list[UaEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def registered(net: Net, index: int, port: int, user: str) -> UserAgent:
    """A UA for ``user`` at node ``index``, registered with that node's gateway."""
    ua = net.add_ua(index, user, port)
    ua.register(expires_s=600)
    net.run_until(lambda: any(isinstance(e, RequestSucceeded) and e.method == "REGISTER"
                              for e in net.events(index, port)))
    return ua
