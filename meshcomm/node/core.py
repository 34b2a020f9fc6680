"""NodeCore: the whole node -- overlay and location, SIP gateway, store-and-forward, media
relay -- as one sans-IO core with the one driving API (ARCHITECTURE.md rule 2).

The runtime's node driver, the simulator and every test harness drive this one object
through :class:`meshcomm.node.pump.Pump`; nobody else moves items between the parts::

    core.receive(frame, link_addr, now)                    # a radio frame
    core.receive_sip(data, client_addr, now)               # SIP from a local client
    core.receive_client_media(call_id, index, channel, data, now)  # a client's RTP/RTCP
    core.to_send(now) -> radio Datagrams
    core.next_timer(); core.on_timer(now)
    core.next_event() -> NodeEvent                         # everything for the edge

**The routing table.** Every item a part produces is classified into a :class:`Flow` and
handled by the one entry of :attr:`NodeCore._routes` for that flow (``grep ROUTE_OF``):
SIP unicasts go to the gateway, store-and-forward unicasts to ``StoreForward.on_mesh``,
MEDIA frames to the relay (and what it returns to the local client as an event), the
gateway's SIP for other nodes to ``MeshNode.send_unicast``, store-and-forward deliveries
and hold outcomes to the gateway, the overlay's journal records also to store-and-forward
(a healed route retries held messages at once); the rest goes out through
:meth:`NodeCore.next_event` in the order it was produced. Parts a node does not run are
absent: their flows go out as events (a node without store-and-forward passes its
store-and-forward unicasts to the edge, which may count them).

Every input moves all queued work between the parts before it returns (at most
:data:`MAX_SETTLE_ROUNDS` rounds; they settle in one or two), so the outputs only drain.
Durability is the pump's job: ``SfPersist`` events and the freshness memory's changes are
written by the edge before anything the same input produced is transmitted, and the
outcome comes back through :meth:`NodeCore.persisted` (a held MESSAGE is answered 202
only once on disk, 500 if the write failed).

A later part (a DHT bridge, talkgroups) is one more part: its outputs get flows and routes
here; the pump and the edges do not change.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Protocol

from meshcomm.dht.api import NotFound, RemoteChanged, Resolved
from meshcomm.dht.bridge import BridgeEvent, DhtBridge
from meshcomm.dht.port import DhtResult
from meshcomm.errors import LocalProtocolError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import RouteChanged, UplinkChanged
from meshcomm.location.binding import Binding
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaCallEnded, MediaRelay, SdpPath
from meshcomm.media.session import ClientPacket
from meshcomm.node.collect import Collect, CollectConfig, CollectRows
from meshcomm.node.collect_serve import JournalRead
from meshcomm.node.e2e_sip import SEALED_KINDS, SipSealing
from meshcomm.node.gateway.core import GatewayEvent, SipGateway
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.types import (
    EnvelopeSlot,
    GatewayConfig,
    LocalDatagram,
    MeshSip,
    MessageHolder,
    ResolveAor,
    identity_sdp,
    no_end_call,
)
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.sf_remote import SfRemoteTry
from meshcomm.node.storeforward import SfDeliver, SfEvent, SfHoldResult, StoreForward
from meshcomm.node.tunnel import (
    UPSTREAM_STATUSES,
    ResolveDone,
    Tunnel,
    TunnelCounter,
    TunnelEvent,
)
from meshcomm.node.tunnel_wire import ResolveStatus
from meshcomm.node.upstream import UpstreamConfig, UpstreamRegistrar
from meshcomm.overlay.core import OverlayEvent
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.media import MediaReceived
from meshcomm.types import UPLINK_BROADCAST, UPLINK_PREFIX, Datagram, LinkAddr, SansIOCore

log = logging.getLogger(__name__)

#: Rounds of exchange between the parts per input before yielding (they settle in 1-2).
MAX_SETTLE_ROUNDS = 32

#: What comes out of :meth:`NodeCore.next_event` for the edge.
NodeEvent = (OverlayEvent | GatewayEvent | SfEvent | LocalDatagram | ClientPacket
             | MediaCallEnded | BridgeEvent | TunnelEvent | JournalRead | CollectRows)


class Part(Enum):
    """The parts of a node, in the order the settle loop drains them."""

    GATEWAY = "gateway"
    OVERLAY = "overlay"
    STORE_FORWARD = "store_forward"
    MEDIA = "media"
    DHT = "dht"
    UPLINK = "uplink"
    TUNNEL = "tunnel"
    UPSTREAM = "upstream"      # REGISTERs at the upstream registrar (its outputs: edge)
    COLLECT = "collect"        # journal collection (its reads and rows: edge)


class Flow(Enum):
    """Where an item one part produced goes next."""

    SIP_FROM_MESH = "sip_from_mesh"          # UnicastReceived(SIP) -> gateway.receive_mesh
    SF_FROM_MESH = "sf_from_mesh"            # UnicastReceived(STORE_FORWARD) -> sf.on_mesh
    MEDIA_FROM_MESH = "media_from_mesh"      # MediaReceived -> relay.from_mesh -> client
    SIP_TO_MESH = "sip_to_mesh"              # MeshSip -> node.send_unicast(SIP)
    SF_DELIVER = "sf_deliver"                # SfDeliver -> gateway.deliver_stored
    SF_HOLD_RESULT = "sf_hold_result"        # SfHoldResult -> gateway.hold_done
    OVERLAY_RECORD = "overlay_record"        # overlay JournalRecord -> sf, dht, then the edge
    RESOLVE = "resolve"                      # ResolveAor -> tunnel.resolve
    RESOLVE_DONE = "resolve_done"            # ResolveDone -> gateway.resolved
    TUNNEL_FROM_MESH = "tunnel_from_mesh"    # UnicastReceived(RESOLVE.. TUNNEL_IN) -> tunnel
    TUNNEL_FROM_UPLINK = "tunnel_from_uplink"  # the uplink mesh's UnicastReceived -> tunnel
    DHT_ANSWER = "dht_answer"                # Resolved / NotFound -> tunnel (its tokens)
    SF_REMOTE_TRY = "sf_remote_try"          # SfRemoteTry -> gateway.deliver_remote
    DHT_RECORD = "dht_record"                # the bridge's JournalRecord: uplink up -> sf
    DHT_NEWS = "dht_news"                    # RemoteChanged -> tunnel, then the edge
    UPLINK_RECORD = "uplink_record"          # the uplink mesh's JournalRecord -> tunnel
    MEDIA_FROM_UPLINK = "media_from_uplink"  # the uplink mesh's MediaReceived -> tunnel
    COLLECT_FROM_MESH = "collect_from_mesh"  # UnicastReceived(JOURNAL_*) -> collect
    TO_EDGE = "to_edge"                      # out through next_event


#: The one routing table: (producing part, item type) -> flow. Unicasts are refined by
#: their application kind (:data:`UNICAST_FLOWS`); anything not listed goes to the edge.
ROUTE_OF: dict[tuple[Part, type], Flow] = {
    (Part.OVERLAY, MediaReceived): Flow.MEDIA_FROM_MESH,
    (Part.OVERLAY, JournalRecord): Flow.OVERLAY_RECORD,
    (Part.GATEWAY, MeshSip): Flow.SIP_TO_MESH,
    (Part.STORE_FORWARD, SfDeliver): Flow.SF_DELIVER,
    (Part.STORE_FORWARD, SfHoldResult): Flow.SF_HOLD_RESULT,
    (Part.GATEWAY, ResolveAor): Flow.RESOLVE,
    (Part.TUNNEL, ResolveDone): Flow.RESOLVE_DONE,
    (Part.TUNNEL, MediaReceived): Flow.MEDIA_FROM_MESH,
    (Part.DHT, Resolved): Flow.DHT_ANSWER,
    (Part.DHT, NotFound): Flow.DHT_ANSWER,
    (Part.DHT, JournalRecord): Flow.DHT_RECORD,
    (Part.DHT, RemoteChanged): Flow.DHT_NEWS,
    (Part.UPLINK, JournalRecord): Flow.UPLINK_RECORD,
    (Part.UPLINK, MediaReceived): Flow.MEDIA_FROM_UPLINK,
    (Part.STORE_FORWARD, SfRemoteTry): Flow.SF_REMOTE_TRY,
    (Part.STORE_FORWARD, ResolveAor): Flow.RESOLVE,   # a held message's To AoR
}
#: Unicasts delivered to this node, by application kind.
UNICAST_FLOWS: dict[int, Flow] = {
    AppKind.SIP: Flow.SIP_FROM_MESH,
    AppKind.STORE_FORWARD: Flow.SF_FROM_MESH,
    AppKind.RESOLVE: Flow.TUNNEL_FROM_MESH,
    AppKind.RESOLVED: Flow.TUNNEL_FROM_MESH,
    AppKind.TUNNEL_OUT: Flow.TUNNEL_FROM_MESH,
    AppKind.TUNNEL_IN: Flow.TUNNEL_FROM_MESH,
    AppKind.JOURNAL_PULL: Flow.COLLECT_FROM_MESH,
    AppKind.JOURNAL_CHUNK: Flow.COLLECT_FROM_MESH,
}
#: Flows whose target parts a node may not run: without any of them the item goes to the
#: edge.
NEEDS_PART: dict[Flow, frozenset[Part]] = {
    Flow.SIP_FROM_MESH: frozenset({Part.GATEWAY}),
    Flow.SF_FROM_MESH: frozenset({Part.STORE_FORWARD}),
    Flow.MEDIA_FROM_MESH: frozenset({Part.MEDIA, Part.TUNNEL}),
    Flow.SF_DELIVER: frozenset({Part.GATEWAY}),
    Flow.SF_HOLD_RESULT: frozenset({Part.GATEWAY}),
    Flow.OVERLAY_RECORD: frozenset({Part.STORE_FORWARD, Part.DHT}),
    Flow.RESOLVE: frozenset({Part.TUNNEL}),
    Flow.RESOLVE_DONE: frozenset({Part.GATEWAY}),
    Flow.TUNNEL_FROM_MESH: frozenset({Part.TUNNEL}),
    Flow.TUNNEL_FROM_UPLINK: frozenset({Part.TUNNEL}),
    Flow.DHT_ANSWER: frozenset({Part.TUNNEL}),
    Flow.SF_REMOTE_TRY: frozenset({Part.GATEWAY}),
    Flow.DHT_RECORD: frozenset({Part.STORE_FORWARD}),
    Flow.DHT_NEWS: frozenset({Part.TUNNEL}),
    Flow.UPLINK_RECORD: frozenset({Part.TUNNEL}),
    Flow.MEDIA_FROM_UPLINK: frozenset({Part.TUNNEL}),
    Flow.COLLECT_FROM_MESH: frozenset({Part.COLLECT}),
}

_Route = Callable[[Any, float], bool]


class _TimedPart(Protocol):
    def next_timer(self) -> float | None: ...

    def on_timer(self, now: float) -> None: ...


class MediaHooks:
    """The gateway's SDP hooks bound to a media relay and the node's clock (the gateway
    calls them without a time; the core sets :attr:`now` at every input)."""

    def __init__(self, relay: MediaRelay, now: float) -> None:
        self.relay = relay
        self.now = now

    def rewrite_sdp(self, direction: SdpPath, call_id: str, body: bytes,
                    client_host: str) -> bytes:
        return self.relay.rewrite_sdp(direction, call_id, body, self.now,
                                      client_host=client_host)

    def end_call(self, call_id: str) -> None:
        self.relay.end_call(call_id, self.now)


class NodeCore:
    """See the module docstring. Build one with :func:`compose` (or directly from parts
    already wired: the gateway's holder must be ``sf``, its media hooks ``media``)."""

    def __init__(self, node: MeshNode, gateway: SipGateway | None = None,
                 sf: StoreForward | None = None, media: MediaHooks | None = None,
                 dht: DhtBridge | None = None, uplink: MeshNode | None = None,
                 tunnel: Tunnel | None = None,
                 upstream: UpstreamRegistrar | None = None,
                 collect: Collect | None = None, e2e: SipSealing | None = None) -> None:
        if sf is not None and gateway is not None and gateway.holder is not sf:
            raise LocalProtocolError("the store-and-forward core must be the gateway's holder")
        self.node = node
        self.gateway = gateway
        self.sf = sf
        self.media = media
        self.relay = media.relay if media is not None else None
        #: The DHT bridge of a relay with an uplink (issue 10): it publishes the island's
        #: bindings and resolves remote AoRs; its DHT operations go out as events.
        self.dht = dht
        #: The uplink mesh of a relay with an uplink (issue 10): a second overlay, same
        #: identity, whose frames travel only on the uplink (link addresses "uplink|...").
        self.uplink = uplink
        #: Cross-site traffic and remote resolution (meshcomm.node.tunnel).
        self.tunnel = tunnel
        #: Registers the island's AoRs at the upstream SIP registrar ([upstream], issue 10
        #: item 5): its REGISTERs go to the edge as LocalDatagrams, its answers come back
        #: through receive_sip.
        self.upstream = upstream
        #: Journal collection, both sides (meshcomm.node.collect).
        self.collect = collect
        #: End-to-end sealing of SIP unicasts and held MESSAGEs (meshcomm.node.e2e_sip).
        self.e2e = e2e
        if sf is not None:
            sf.e2e = e2e
        self._wire_trust(node, dht)
        if tunnel is not None and e2e is not None:
            tunnel.learn_key = e2e.learn
        if collect is not None and tunnel is not None:
            collect.send = self._collect_send         # devices of other islands too
            collect.remote_nodes = tunnel.remote_nodes
        if gateway is not None:
            gateway.resolves_remote = tunnel is not None
        if tunnel is not None and gateway is not None:
            tunnel.offers_upstream = gateway.config.upstream is not None
        if sf is not None:
            sf.remote_delivery = tunnel is not None and gateway is not None
            sf.far = tunnel             # parcels and receipts for other islands
        #: The last resolution found no way beyond the island (a later success wakes
        #: the messages held for other islands).
        self._beyond_down = False
        self._events: deque[NodeEvent] = deque()
        #: The parts with timers, in the order they fire when due at the same time.
        self._timed: list[_TimedPart] = [p for p in (node, gateway, sf, self.relay, dht,
                                                     uplink, tunnel, upstream, collect)
                                     if p is not None]
        self._present = {Part.OVERLAY} | {part for part, obj in (
            (Part.GATEWAY, gateway), (Part.STORE_FORWARD, sf), (Part.MEDIA, media),
            (Part.DHT, dht), (Part.UPLINK, uplink), (Part.TUNNEL, tunnel),
            (Part.UPSTREAM, upstream), (Part.COLLECT, collect))
            if obj is not None}
        #: A bare gossip node has nothing to route: its events pass straight through.
        self._bare = self._present == {Part.OVERLAY}
        routes: dict[Flow, _Route] = {
            Flow.SIP_FROM_MESH: self._sip_from_mesh,
            Flow.SF_FROM_MESH: self._sf_from_mesh,
            Flow.MEDIA_FROM_MESH: self._media_from_mesh,
            Flow.SIP_TO_MESH: self._sip_to_mesh,
            Flow.SF_DELIVER: self._sf_deliver,
            Flow.SF_HOLD_RESULT: self._sf_hold_result,
            Flow.OVERLAY_RECORD: self._overlay_record,
            Flow.RESOLVE: self._resolve,
            Flow.RESOLVE_DONE: self._resolve_done,
            Flow.TUNNEL_FROM_MESH: self._tunnel_from_mesh,
            Flow.TUNNEL_FROM_UPLINK: self._tunnel_from_uplink,
            Flow.DHT_ANSWER: self._dht_answer,
            Flow.SF_REMOTE_TRY: self._sf_remote_try,
            Flow.DHT_RECORD: self._dht_record,
            Flow.DHT_NEWS: self._dht_news,
            Flow.UPLINK_RECORD: self._uplink_record,
            Flow.MEDIA_FROM_UPLINK: self._media_from_uplink,
            Flow.COLLECT_FROM_MESH: self._collect_from_mesh,
            Flow.TO_EDGE: self._to_edge,
        }
        for flow, parts in NEEDS_PART.items():
            if not parts & self._present:
                routes[flow] = self._to_edge
        self._routes = routes

    @staticmethod
    def _wire_trust(node: MeshNode, dht: DhtBridge | None) -> None:
        """Revocations (issue 12.4): the gateway's and ``ctl status``' view of this node's
        own standing, and the DHT bridge's checks of remote bindings and relays."""
        trust = node.overlay.trust
        trust.own_credential = lambda: node.credential
        if dht is not None:
            dht.revocations = trust
            if dht.trust_changed not in trust.store.observers:
                trust.store.observers.append(dht.trust_changed)

    # ------------------------------------------------------------ convenience views
    @property
    def node_id(self) -> bytes:
        return self.node.node_id

    @property
    def departure_done(self) -> bool:
        return self.node.departure_done

    # ------------------------------------------------------------ driving API
    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        """A radio frame from link address ``src`` (an uplink's: "uplink|host:port")."""
        if self._bare:               # nothing to route: the simulator's hot path
            self.node.receive(data, src, now)
            return
        self._clock(now)
        if src.startswith(UPLINK_PREFIX):
            if self.uplink is None:
                self.node.counters[TunnelCounter.UPLINK_FRAMES_WITHOUT_MESH] += 1
                return
            self.uplink.receive(data, src, now)
        else:
            self.node.receive(data, src, now)
        self._settle(now)

    def to_send(self, now: float) -> list[Datagram]:
        """The island's frames (``dst`` None: the radios) and the uplink mesh's (``dst``
        "uplink|...", a broadcast there is :data:`UPLINK_BROADCAST`: every uplink peer)."""
        out = self.node.to_send(now)
        if self.uplink is not None:
            out.extend(d if d.dst is not None else Datagram(d.data, UPLINK_BROADCAST)
                       for d in self.uplink.to_send(now))
        return out

    def next_timer(self) -> float | None:
        best = self.node.next_timer()
        if self._bare:
            return best
        for part in self._timed:
            part_t = part.next_timer()
            if part_t is not None and (best is None or part_t < best):
                best = part_t
        return best

    def on_timer(self, now: float) -> None:
        """Fire the timers of the parts that are due (each part runs on its own
        schedule, whatever woke the node)."""
        self._clock(now)
        for part in self._timed:
            due = part.next_timer()
            if due is not None and due <= now:
                part.on_timer(now)
        self._settle(now)

    def next_event(self) -> NodeEvent | None:
        if self._bare:
            return self.node.next_event()
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------ other inputs
    def receive_sip(self, data: bytes, src: tuple[str, int], now: float) -> None:
        """A SIP message from a local client (a UDP datagram or one framed TCP message)."""
        if self.gateway is None:
            raise LocalProtocolError("this node runs without a SIP gateway")
        self._clock(now)
        if self.upstream is not None and self.upstream.offer(data, src, now):
            self._settle(now)           # an answer to one of the registration client's
            return
        self.gateway.receive_local(data, src, now)
        self._settle(now)

    def receive_client_media(self, call_id: str, index: int, channel: Channel, data: bytes,
                             now: float) -> None:
        """A datagram from a local client on a call port (m-line ``index``): relayed over
        the mesh when the call's media session takes it (else dropped, counted)."""
        if self.relay is None:
            raise LocalProtocolError("this node runs without a media relay")
        self._clock(now)
        out = self.relay.from_client(call_id, index, channel, data, now)
        if out is not None and not (self.tunnel is not None and self.tunnel.send_media(
                out.dst_node, out.stream, out.payload, now)):
            self.node.send_media(out.dst_node, out.stream, out.payload, now)
        self._settle(now)

    def receive_dht(self, result: DhtResult, now: float) -> None:
        """A result of one of the bridge's DHT operations (or a peers sample)."""
        if self.dht is None:
            raise LocalProtocolError("this node runs without a DHT bridge")
        self._clock(now)
        self.dht.on_dht(result, now)
        self._settle(now)

    def persisted(self, msg_ids: Iterable[bytes], ok: bool, now: float) -> None:
        """The edge applied (``ok``) or failed to apply the ``SfPersist`` events of these
        ids; answers waiting for it are queued (the pump drains them in the same pump)."""
        if self.sf is not None:
            self._clock(now)
            self.sf.persisted(msg_ids, ok, now)
            self._settle(now)

    def take_freshness_updates(self) -> FreshnessUpdates:
        """Changes of the freshness memory since the last call (the edge writes them
        before it transmits what produced them)."""
        return self.node.take_freshness_updates()

    def requeue_freshness(self, updates: FreshnessUpdates) -> None:
        """The edge could not write these changes: they are handed out again next time."""
        self.node.table.freshness.requeue(updates)

    def journal_checkpointed(self, seq: int, head: bytes, signature: bytes) -> None:
        """The edge wrote a signed journal checkpoint: it goes out with the HELLOs of the
        island's overlay and of the uplink mesh, for neighbours to witness."""
        self.node.journal_checkpointed(seq, head, signature)
        if self.uplink is not None:
            self.uplink.journal_checkpointed(seq, head, signature)

    def settle(self, now: float) -> None:
        """Move queued work between the parts (after an input failed half-way)."""
        self._settle(now)

    def collect_input(self, fn: Callable[[Collect], object], now: float) -> None:
        """An input or command for the collection part (``fn(core.collect)``: start, rows
        read by the edge, rows stored), then the parts settle."""
        if self.collect is None:
            raise LocalProtocolError("this node runs without journal collection")
        self._clock(now)
        fn(self.collect)
        self._settle(now)

    # ------------------------------------------------------------ commands
    def register(self, aor: str, contacts: tuple[str, ...], now: float) -> Binding:
        binding = self.node.register(aor, contacts, now)
        self._settle(now)
        return binding

    def deregister(self, aor: str, now: float) -> Binding | None:
        binding = self.node.deregister(aor, now)
        self._settle(now)
        return binding

    def shutdown(self, now: float) -> None:
        """Withdraw the node's registrations (tombstones go out, on the uplink mesh too)
        and stop refreshing."""
        self.node.shutdown(now)
        if self.uplink is not None:
            self.uplink.shutdown(now)
        self._settle(now)

    def send_message(self, to_aor: str, text: str, now: float) -> int:
        """Send a MESSAGE from the node's own AoR through the gateway's built-in UA."""
        if self.gateway is None:
            raise LocalProtocolError("this node runs without a SIP gateway")
        self._clock(now)
        send_id = self.gateway.send_message(to_aor, text, now)
        self._settle(now)
        return send_id

    def hold_pending(self, now: float) -> int:
        """Stopping: hand every MESSAGE still waiting for a far node to store-and-forward
        (see SipGateway.hold_pending); the pump then persists and reports as usual."""
        if self.gateway is None:
            return 0
        self._clock(now)
        handed = self.gateway.hold_pending(now)
        self._settle(now)
        return handed

    # ------------------------------------------------------------ routing
    def _clock(self, now: float) -> None:
        if self.media is not None:
            self.media.now = now

    def _settle(self, now: float) -> None:
        if self._bare:
            return
        gateway, sf, relay, node = self.gateway, self.sf, self.relay, self.node
        for _ in range(MAX_SETTLE_ROUNDS):
            moved = False
            if gateway is not None:
                for item in gateway.to_send(now):
                    moved = self._route(Part.GATEWAY, item, now) or moved
            while (event := node.next_event()) is not None:
                moved = self._route(Part.OVERLAY, event, now) or moved
            if gateway is not None:
                # Its sends first: a to-mesh record comes out with its envelope's id.
                for item in gateway.to_send(now):
                    moved = self._route(Part.GATEWAY, item, now) or moved
                while (gw_event := gateway.next_event()) is not None:
                    moved = self._route(Part.GATEWAY, gw_event, now) or moved
            if sf is not None:
                while (sf_event := sf.next_event()) is not None:
                    moved = self._route(Part.STORE_FORWARD, sf_event, now) or moved
            if relay is not None:
                while (ended := relay.next_event()) is not None:
                    moved = self._route(Part.MEDIA, ended, now) or moved
            if self.dht is not None:
                while (dht_event := self.dht.next_event()) is not None:
                    moved = self._route(Part.DHT, dht_event, now) or moved
            if self.uplink is not None:
                while (up_event := self.uplink.next_event()) is not None:
                    moved = self._route(Part.UPLINK, up_event, now) or moved
            if self.tunnel is not None:
                while (t_event := self.tunnel.next_event()) is not None:
                    moved = self._route(Part.TUNNEL, t_event, now) or moved
            if self.upstream is not None:
                for dgram in self.upstream.to_send(now):
                    self._route(Part.UPSTREAM, dgram, now)
                while (up_rec := self.upstream.next_event()) is not None:
                    self._route(Part.UPSTREAM, up_rec, now)
            if self.collect is not None:
                while (c_event := self.collect.next_event()) is not None:
                    self._events.append(c_event)
            if not moved:
                return
        log.debug("node core: parts still busy after %d rounds", MAX_SETTLE_ROUNDS)

    def _route(self, part: Part, item: object, now: float) -> bool:
        """Hand ``item`` to its flow's route; True if it went to another part."""
        if isinstance(item, UnicastReceived):
            flow = (Flow.TUNNEL_FROM_UPLINK if part is Part.UPLINK
                    else UNICAST_FLOWS.get(item.kind, Flow.TO_EDGE))
        else:
            flow = ROUTE_OF.get((part, type(item)), Flow.TO_EDGE)
        return self._routes[flow](item, now)

    def _to_edge(self, item: NodeEvent, now: float) -> bool:
        self._events.append(item)
        return False

    def _sip_from_mesh(self, event: UnicastReceived, now: float) -> bool:
        assert self.gateway is not None
        if self.e2e is not None and event.kind in SEALED_KINDS:
            opened = self.e2e.open(event, now)
            for out in self.e2e.take_outgoing():   # NACKs and re-sends (node.e2e_sip)
                if out.seal:
                    self._sip_to_mesh(MeshSip(out.dst, out.body), now)
                else:
                    self._send_sip(out.dst, out.body, None, now)
            if opened is None:          # forged, tampered, not for us or a NACK: counted
                return True
            event = opened
        self.gateway.receive_mesh(event.origin, event.body, event.hops, now, event.env)
        return True

    def _collect_from_mesh(self, event: UnicastReceived, now: float) -> bool:
        assert self.collect is not None
        self.collect.on_unicast(event, now)
        return True

    def _collect_send(self, dst: bytes, kind: int, body: bytes, now: float) -> None:
        """A collection message: through the tunnel to a node of another island, else in
        the island."""
        assert self.tunnel is not None
        if self.tunnel.send(dst, kind, body, now) is None:
            self.node.send_unicast(dst, kind, body, now)

    def _sf_from_mesh(self, event: UnicastReceived, now: float) -> bool:
        assert self.sf is not None
        self.sf.on_mesh(event, now)
        return True

    def _media_from_mesh(self, event: MediaReceived, now: float) -> bool:
        if self.tunnel is not None and self.tunnel.claims(event.stream):
            self.tunnel.on_media_frame(event, False, now)     # a media item's leg
            return True
        if self.relay is None:
            self._events.append(event)
            return False
        packet = self.relay.from_mesh(event.origin, event.stream, event.payload, now)
        if packet is not None:
            self._events.append(packet)
        return True

    def _sip_to_mesh(self, item: MeshSip, now: float) -> bool:
        body = item.body
        if self.e2e is not None:
            sealed = self.e2e.seal(item.dst, AppKind.SIP, body, now)
            if sealed is None:              # no key for the node: never sent in clear
                assert self.gateway is not None
                self.gateway.counters[GatewayCounter.MESH_SEND_ERRORS] += 1
                log.warning("SIP message to %s not sent: its key is unknown", item.dst[:8].hex())
                return True
            body = sealed
        self._send_sip(item.dst, body, item.sent, now)
        return True

    def _send_sip(self, dst: bytes, body: bytes, sent: EnvelopeSlot | None,
                  now: float) -> None:
        """A SIP unicast (sealed, or an e2e NACK) to node ``dst``: through the tunnel to
        another island, else in the island."""
        if self.tunnel is not None:
            tunnelled = self.tunnel.send(dst, AppKind.SIP, body, now)
            if tunnelled is not None:       # the node is in another island
                if sent is not None and tunnelled:
                    sent.env = tunnelled    # the item's id names it on both ends
                return
        try:
            env = self.node.send_unicast(dst, AppKind.SIP, body, now)
        except LocalProtocolError as exc:
            assert self.gateway is not None
            self.gateway.counters[GatewayCounter.MESH_SEND_ERRORS] += 1
            log.warning("SIP message to %s not sent: %s", dst[:8].hex(), exc)
            return
        if sent is not None:
            sent.env = env                  # the gateway's to-mesh record carries it

    def _sf_deliver(self, event: SfDeliver, now: float) -> bool:
        assert self.gateway is not None
        self.gateway.deliver_stored(event.msg_id, event.sip, now)
        return True

    def _sf_hold_result(self, event: SfHoldResult, now: float) -> bool:
        assert self.gateway is not None
        self.gateway.hold_done(event.msg_id, event.durable, now)
        return True

    def _resolve(self, item: ResolveAor, now: float) -> bool:
        assert self.tunnel is not None
        self.tunnel.resolve(item.request_id, item.aor, now)
        return True

    def _resolve_done(self, item: ResolveDone, now: float) -> bool:
        assert self.gateway is not None
        if item.status in (ResolveStatus.UPLINK_DOWN, ResolveStatus.UNREACHABLE):
            self._beyond_down = True
        elif item.node is not None and self._beyond_down:
            self._beyond_down = False
            if self.sf is not None:
                self.sf.remote_reachable(now)
        if self.sf is not None and self.sf.owns_resolution(item.request_id):
            self.sf.resolved(item.request_id, item.node, item.status, now)
            return True
        self.gateway.resolved(item.request_id, item.node,
                              item.status is ResolveStatus.NOT_FOUND,
                              item.status in UPSTREAM_STATUSES, now)
        return True

    def _tunnel_from_mesh(self, event: UnicastReceived, now: float) -> bool:
        assert self.tunnel is not None
        self.tunnel.on_unicast(event, False, now)
        return True

    def _tunnel_from_uplink(self, event: UnicastReceived, now: float) -> bool:
        assert self.tunnel is not None
        self.tunnel.on_unicast(event, True, now)
        return True

    def _dht_answer(self, item: Resolved | NotFound, now: float) -> bool:
        """The bridge's answer to a resolution the tunnel asked for (others: the edge)."""
        assert self.tunnel is not None
        if self.e2e is not None and isinstance(item, Resolved):
            for found in item.bindings:         # verified by the bridge: keys to seal to
                self.e2e.learn(found.binding.key)
        if not self.tunnel.owns(item.token):
            self._events.append(item)
            return False
        self.tunnel.on_bridge(item, now)
        return True

    def _sf_remote_try(self, item: SfRemoteTry, now: float) -> bool:
        assert self.gateway is not None
        self.gateway.deliver_remote(item.msg_id, item.sip, now)
        return True

    def _dht_record(self, record: JournalRecord, now: float) -> bool:
        """The bridge's journal record goes to the edge; the uplink coming up wakes the
        messages held for other islands."""
        payload = record.payload
        if (self.sf is not None and isinstance(payload, UplinkChanged)
                and payload.state == "up"):
            self.sf.remote_reachable(now)
        self._events.append(record)
        return False

    def _dht_news(self, news: RemoteChanged, now: float) -> bool:
        assert self.tunnel is not None
        self.tunnel.on_remote_changed(news, now)
        self._events.append(news)
        return False

    def _media_from_uplink(self, event: MediaReceived, now: float) -> bool:
        assert self.tunnel is not None
        if self.tunnel.claims(event.stream):
            self.tunnel.on_media_frame(event, True, now)
            return True
        self._events.append(event)
        return False

    def _uplink_record(self, record: JournalRecord, now: float) -> bool:
        """Members' uplink addresses to the edge (UplinkPeers); a route to a member (re)
        appearing wakes the messages held for other islands; the record goes on."""
        assert self.tunnel is not None
        self.tunnel.on_uplink_record(record, now)
        payload = record.payload
        if (self.sf is not None and isinstance(payload, RouteChanged)
                and payload.next_hop is not None):
            self.sf.remote_reachable(now)
        self._events.append(record)
        return False

    def _overlay_record(self, record: JournalRecord, now: float) -> bool:
        if self.sf is not None:
            self.sf.on_overlay_record(record, now)
        if self.dht is not None:
            self.dht.on_overlay_record(record, now)
        self._events.append(record)
        return False


#: Builds a node's tunnel from the node, its DHT bridge and its uplink mesh.
TunnelFactory = Callable[[MeshNode, DhtBridge | None, MeshNode | None], Tunnel]


def plain_tunnel(node: MeshNode, dht: DhtBridge | None, uplink: MeshNode | None) -> Tunnel:
    return Tunnel(node, node.overlay.verifier, dht=dht, uplink=uplink)


def compose(node: MeshNode, *, gateway_config: GatewayConfig | None = None,
            rng: random.Random | None = None, node_aor: str = "", now: float,
            sf: StoreForward | None = None, relay: MediaRelay | None = None,
            holder: MessageHolder | None = None, dht: DhtBridge | None = None,
            uplink: MeshNode | None = None,
            upstream: UpstreamConfig | None = None,
            collect: CollectConfig | None = None,
            key_rng: random.Random | None = None,
            make_tunnel: TunnelFactory | None = None) -> NodeCore:
    """Wire a whole node: the gateway (when ``gateway_config`` is given) gets ``sf`` as
    its holder (or ``holder``, a test's) and the relay's SDP hooks. ``key_rng`` draws the
    ephemeral keys of end-to-end sealing (the runtime passes ``random.SystemRandom``;
    without it a generator seeded from ``rng`` is used, for tests and the simulator).
    ``make_tunnel`` builds the tunnel (default :func:`plain_tunnel`; the simulator's
    times its resolutions): the runtime and the simulator build every core here."""
    media = MediaHooks(relay, now) if relay is not None else None
    gateway = None
    if gateway_config is not None:
        if rng is None or not node_aor:
            raise LocalProtocolError("a gateway needs an rng and the node's AoR")
        gateway = SipGateway(node, gateway_config, rng=rng, node_aor=node_aor, now=now,
                             holder=holder if holder is not None else sf,
                             rewrite_sdp=media.rewrite_sdp if media else identity_sdp,
                             end_call=media.end_call if media else no_end_call)
    tunnel = ((make_tunnel or plain_tunnel)(node, dht, uplink)
              if gateway is not None or uplink is not None else None)
    registrar = None
    if upstream is not None:
        if rng is None:
            raise LocalProtocolError("the upstream registration client needs an rng")
        registrar = UpstreamRegistrar(node.table, upstream, rng, now)
    collector = Collect(node, collect) if collect is not None else None
    e2e = None
    if gateway is not None:
        assert rng is not None
        tables = [node.table] + ([uplink.table] if uplink is not None else [])
        e2e = SipSealing(node.identity, key_rng or random.Random(rng.getrandbits(64)), tables,
                         node.counters)
    return NodeCore(node, gateway, sf, media, dht, uplink, tunnel, registrar, collector, e2e)


def _conforms(core: NodeCore, node: MeshNode) -> tuple[SansIOCore, SansIOCore]:
    """mypy checks here that the node core and the gossip node speak the driving API."""
    return core, node
