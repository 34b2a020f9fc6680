"""In-memory harness: a chain of MeshNode + SipGateway (SipNode) with stock SIP UAs attached
to their gateways, stepped deterministically in virtual time.

A station with store-and-forward plays its runtime: ``SfPersist`` events are applied to its
SQLite storage (when it has one; else taken as written) and the outcome reported with
``SipNode.persisted``, as the node driver does. ``Net(loss=...)`` drops each radio frame
with that probability (seeded)."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaConfig, MediaRelay, SequentialPortAllocator
from meshcomm.media.session import ClientPacket
from meshcomm.node.gateway.core import SipGateway
from meshcomm.node.gateway.types import (
    Address,
    CallEnder,
    GatewayConfig,
    MessageHolder,
    SdpRewriter,
    identity_sdp,
    no_end_call,
)
from meshcomm.node.gateway_host import SipNode
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.sf_delivered import DeliveredRecord
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import HeldMessage, SfPersist, StoreForward, StoreForwardConfig
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.media import MediaReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import RequestSucceeded, UaConfig, UaEvent
from meshcomm.types import LinkAddr

DOMAIN = "incident.local"
GW_ADDR: Address = ("127.0.0.1", 5060)
FAST_OVERLAY = OverlayConfig(hello_interval_s=0.2, neighbour_timeout_s=1.0,
                             anti_entropy_interval_s=0.4)
#: Virtual time advanced at most this much per step.
MAX_STEP_S = 0.05


@dataclass
class Station:
    name: str
    sip: SipNode
    uas: dict[Address, UserAgent] = field(default_factory=dict)
    ua_events: dict[Address, list[UaEvent]] = field(default_factory=dict)
    journal: list[JournalRecord] = field(default_factory=list)
    other_events: list[object] = field(default_factory=list)
    #: Local datagrams for addresses without a UA (raw clients of the tests).
    unclaimed: list[tuple[Address, bytes]] = field(default_factory=list)
    up: bool = True
    #: The media relay of the gateway (Net(media=True)) and what it sent to its clients.
    relay: MediaRelay | None = None
    to_clients: list[ClientPacket] = field(default_factory=list)
    #: Store-and-forward database (None: writes are taken as done).
    storage: SfStorage | None = None

    @property
    def gw(self) -> SipGateway:
        return self.sip.gateway

    @property
    def node(self) -> MeshNode:
        return self.sip.node

    def sip_journal(self) -> list[dict[str, object]]:
        return [dict(r.data) for r in self.journal if r.type is JournalEventType.SIP_MESSAGE]


class Net:
    """A chain n0 - n1 - ... of SipNodes; each hears only its chain neighbours."""

    def __init__(self, n_nodes: int, *, config: GatewayConfig | None = None,
                 holders: dict[int, MessageHolder] | None = None, seed: int = 7,
                 media: MediaConfig | None = None, media_ports: int = 100,
                 media_at: set[int] | None = None, loss: float = 0.0) -> None:
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
            node = MeshNode(ident, NodeSettings(overlay=FAST_OVERLAY),
                            verifier=SignatureVerifier(), rng=random.Random(seed * 100 + i),
                            now=self.now, seq_base=1 << 32, wall_offset_s=1.7e9)
            aor = f"sip:node{i}@{DOMAIN}"
            relay = None
            rewrite: SdpRewriter = identity_sdp
            end_call: CallEnder = no_end_call
            if media is not None and (media_at is None or i in media_at):
                first = 20000 + 1000 * i
                relay = MediaRelay(ident, SequentialPortAllocator(f"127.0.0.{10 + i}", first,
                                                                  first + 2 * media_ports),
                                   random.Random(seed * 10 + i), media)
                rewrite, end_call = self._rewriter(relay), self._ender(relay)
            gw = SipGateway(node, config or GatewayConfig(), rng=random.Random(seed * 1000 + i),
                            node_aor=aor, now=self.now, holder=holders.get(i), rewrite_sdp=rewrite,
                            end_call=end_call)
            node.register(aor, (f"sip:node{i}@{gw.mesh_host}",), self.now)
            self.stations.append(Station(f"n{i}", SipNode(node, gw), relay=relay))

    def _rewriter(self, relay: MediaRelay) -> Callable[[str, str, bytes], bytes]:
        def rewrite(direction: str, call_id: str, body: bytes) -> bytes:
            return relay.rewrite_sdp(direction, call_id, body, self.now)
        return rewrite

    def _ender(self, relay: MediaRelay) -> Callable[[str], None]:
        def end(call_id: str) -> None:
            relay.end_call(call_id, self.now)
        return end

    # ------------------------------------------------------------ media
    def client_media(self, index: int, call_id: str, data: bytes,
                     channel: Channel = Channel.RTP) -> bool:
        """A client's datagram arrives on its gateway's call port (m-line 0): relay it over
        the mesh. False when the relay dropped it."""
        st = self.stations[index]
        assert st.relay is not None
        out = st.relay.from_client(call_id, 0, channel, data, self.now)
        if out is None:
            return False
        st.node.send_media(out.dst_node, out.stream, out.payload, self.now)
        return True

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
        moved = False
        for i, st in enumerate(self.stations):
            if not st.up:
                continue
            for addr, ua in st.uas.items():
                for out in ua.to_send(self.now):
                    moved = True
                    st.sip.receive_sip(out.data, addr, self.now)
            for dgram in st.sip.to_send(self.now):
                moved = True
                for j in self._neighbours(i):
                    if dgram.dst is None or dgram.dst == f"n{j}":
                        peer = self.stations[j]
                        if self.loss and self.loss_rng.random() < self.loss:
                            continue
                        if peer.up:
                            peer.sip.receive(dgram.data, LinkAddr(st.name), self.now)
            for local in st.sip.take_sip(self.now):
                moved = True
                target = st.uas.get(local.dest)
                if target is not None:
                    target.receive(local.data, GW_ADDR, self.now)
                else:
                    st.unclaimed.append((local.dest, local.data))
            moved = self._drain(st) or moved
        return moved

    def _drain(self, st: Station) -> bool:
        """Events to their consumers; True if persisting answered something (more to send)."""
        persist: list[SfPersist] = []
        while (event := st.sip.next_event()) is not None:
            if isinstance(event, SfPersist):
                persist.append(event)
                st.other_events.append(event)
            elif isinstance(event, JournalRecord):
                st.journal.append(event)
            elif isinstance(event, MediaReceived) and st.relay is not None:
                packet = st.relay.from_mesh(event.origin, event.stream, event.payload, self.now)
                if packet is not None:
                    st.to_clients.append(packet)
            else:
                st.other_events.append(event)
        for addr, ua in st.uas.items():
            while (ua_event := ua.next_event()) is not None:
                st.ua_events[addr].append(ua_event)
        if not persist:
            return False
        ok = True
        if st.storage is not None:
            try:
                st.storage.apply_all(persist)
            except sqlite3.Error:
                ok = False
        st.sip.persisted([e.msg_id for e in persist], ok, self.now)
        return True

    def _settle(self) -> None:
        for _ in range(1000):
            if not self._exchange():
                return
        raise AssertionError("network did not settle")

    def _next_time(self) -> float:
        times: list[float] = []
        for st in self.stations:
            if not st.up:
                continue
            t = st.sip.next_timer()
            if t is not None:
                times.append(t)
            times += [u for ua in st.uas.values() if (u := ua.next_timer()) is not None]
        return min(times, default=self.now + MAX_STEP_S)

    def step(self, limit: float) -> None:
        self._settle()
        self.now = max(self.now, min(self._next_time(), limit, self.now + MAX_STEP_S))
        for st in self.stations:
            if not st.up:
                continue
            st.sip.on_timer(self.now)
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
    gw = SipGateway(st.node, old.config, rng=random.Random(net.rng.getrandbits(32)),
                    node_aor=old.node_aor, now=net.now, holder=sf)
    st.sip = SipNode(st.node, gw, sf)
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
