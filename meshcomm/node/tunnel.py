"""Tunnel: cross-site traffic of a node (issue 10), a part of :class:`~meshcomm.node.core.
NodeCore` (sans-IO).

Remote bindings are not flooded into the island: a node learns where a remote AoR lives on
demand and keeps it in a bounded table of *remote routes* (destination node -> the far
island's uplinked relays that attached it). A message for a remote node travels as an
*item* (:mod:`meshcomm.node.tunnel_wire`), signed end to end by its origin:

1. the origin hands it to an uplinked relay of its own island (``TUNNEL_OUT``, a radio
   unicast; a relay with the uplink itself skips this leg),
2. that relay sends it over the uplink mesh to one of the far relays it reaches
   (``TUNNEL_WAN``),
3. the far relay passes it to the destination in its island (``TUNNEL_IN``), naming the
   relay it came from, so the destination's answers go back the same way.

Each leg is an ordinary mesh unicast: signed per hop, acknowledged and retransmitted per
hop (media items best effort), fragmented as needed. The destination checks the origin's
signature and the incident, drops a copy it has seen (bounded memory per origin), learns
the route back, and delivers the item as a ``UnicastReceived`` / ``MediaReceived`` the
node core routes as any other.

**Watching** (a relay with a DHT bridge): while items flow through it to a node it resolved,
the node's AoR is watched (the bridge's ``listen``); news (:class:`RemoteChanged`: another
relay attached it, one lapsed) updates the remote routes mid-dialog; a watch idle for
:data:`WATCH_IDLE_S` is dropped.

**Resolution** (:meth:`Tunnel.resolve`, asked by the gateway for an AoR the island does
not know): a relay with a DHT bridge asks it; any other node asks an uplinked relay of its
island (``RESOLVE``/``RESOLVED``), which asks its bridge. Answers teach remote routes (with
their TTL) and come back as :class:`ResolveDone`. An island relay's answer carries each
node's owner-signed binding, checked here as gossip checks a binding
(:mod:`meshcomm.node.tunnel_answer`) before a route or key is learned from it: a lying
relay cannot name a node of its choice (an entry that fails is dropped, counted
``tunnel_drop_bad_answer`` and journaled). Relays bound the questions they take in
(overall and per asking node) and every leg is rate-limited per origin; malformed or
forged input is dropped and counted (:class:`TunnelCounter`).

**Revocations** (issue 12.4): items from or to a revoked node, or carried by a revoked
relay, are dropped and counted (``tunnel_drop_revoked``) at relays and at the destination
(an overlay sees only the relay's envelope); remote routes to revoked nodes are forgotten
and none is learned. So are those of a device whose latest binding seen here carries a
revoked credential (or, under ``agency``, one of a revoked agency): ``TrustSync.node_revoked``.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from meshcomm.deadlines import DeadlineHeap
from meshcomm.dht.api import UPLINK_CAP, NotFound, NotFoundReason, RemoteChanged, Resolved
from meshcomm.dht.bridge import DhtBridge
from meshcomm.dht.records import check_uplink_addr, normalise_aor
from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import BindingLearned, BindingUpdated
from meshcomm.location.binding import Binding
from meshcomm.location.table import BindingState
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.tunnel_answer import AnswerChecks, AnswerDrops, entry_refusal
from meshcomm.node.tunnel_wire import (
    MAX_ANSWER_BINDINGS,
    MAX_ANSWER_TTL_S,
    MAX_FAR_RELAYS,
    MAX_ITEM_BODY_BYTES,
    MAX_REQUEST_ID,
    AnswerEntry,
    Item,
    MediaItem,
    ResolveStatus,
    decode_resolve_untrusted,
    decode_resolved_untrusted,
    decode_tunnel_in_untrusted,
    decode_tunnel_out_untrusted,
    decode_tunnel_wan_untrusted,
    encode_resolve,
    encode_resolved,
    encode_tunnel_in,
    encode_tunnel_out,
    encode_tunnel_wan,
    seal_item,
)
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.media import MAX_MEDIA_PAYLOAD_BYTES, MediaReceived
from meshcomm.overlay.ratelimit import TokenBuckets
from meshcomm.overlay.trustsync import TrustSync
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import NodeId

#: Remote routes kept (least recently used forgotten first).
MAX_REMOTE_ROUTES = 1024
#: A route learned from traffic (not from the DHT) lasts this long after its last use.
LEARNED_ROUTE_TTL_S = 600.0
#: Resolutions a node waits for at once; questions a relay takes in, overall and per node.
MAX_PENDING_RESOLVES = 256
#: Resolutions of one AoR that wait on the question already out for it instead of asking
#: the relay again (20 MESSAGEs to one far AoR at once are one question, not 20, which the
#: relay's MAX_QUESTIONS_PER_NODE would partly refuse as busy).
MAX_JOINED = 64
MAX_RELAY_QUESTIONS = 256
MAX_QUESTIONS_PER_NODE = 16
#: A node gives up on its island relay's answer after this long.
RESOLVE_TIMEOUT_S = 15.0
#: Items seen per origin (exactly once at the destination) and origins remembered.
SEEN_PER_ORIGIN = 512
MAX_SEEN_ORIGINS = 1024
#: A relay's answer is reused at most this long (then the relay is asked again: the AoR
#: may have moved, or its island may have lost its uplink).
ANSWER_CACHE_S = 60.0
#: A watched AoR no item went to for this long is no longer watched.
WATCH_IDLE_S = 60.0
#: Per-origin budget of items a relay passes on (a hostile node cannot flood the uplink).
RELAY_ITEMS_PER_S = 200.0
RELAY_ITEMS_BURST = 400


class TunnelCounter(StrEnum):
    SENT = "tunnel_items_sent"
    SENT_MEDIA = "tunnel_media_sent"
    NO_RELAY = "tunnel_no_island_relay"
    TOO_LARGE = "tunnel_item_too_large"
    RELAYED_OUT = "tunnel_relayed_to_uplink"
    RELAYED_IN = "tunnel_relayed_to_island"
    DELIVERED = "tunnel_items_delivered"
    DUPLICATES = "tunnel_duplicates"
    DROP_MALFORMED = "tunnel_drop_malformed"
    DROP_SIGNATURE = "tunnel_drop_bad_signature"
    DROP_NOT_FOR_US = "tunnel_drop_not_for_us"
    DROP_NO_UPLINK = "tunnel_drop_no_uplink"
    DROP_RATE = "tunnel_drop_rate_limited"
    DROP_UNKNOWN_KIND = "tunnel_drop_unknown_kind"
    DROP_REVOKED = "tunnel_drop_revoked"     # from or to a revoked node, or via one
    DROP_BAD_ANSWER = "tunnel_drop_bad_answer"   # a RESOLVED entry not believed
    RESOLVES = "tunnel_resolves"
    RESOLVES_ANSWERED = "tunnel_resolves_answered"
    RESOLVES_CACHED = "tunnel_resolves_cached"
    RESOLVES_JOINED = "tunnel_resolves_joined"   # joined the question already out for the AoR
    RESOLVES_TIMED_OUT = "tunnel_resolves_timed_out"
    QUESTIONS = "tunnel_questions_taken"
    QUESTIONS_REFUSED = "tunnel_questions_refused"
    ANSWERS_UNEXPECTED = "tunnel_answers_unexpected"
    UPLINK_FRAMES_WITHOUT_MESH = "tunnel_uplink_frames_without_mesh"
    BAD_UPLINK_CONTACT = "tunnel_bad_uplink_contact"
    #: an item sent to a far relay of this relay's own route: none of the sender's was
    #: reached through a live neighbour of the uplink mesh
    OWN_FAR_RELAY = "tunnel_own_far_relay"


class Reach(IntEnum):
    """How the uplink mesh reaches a far relay (Tunnel._reach), best first."""

    LIVE = 0            # a neighbour, or a route whose next hop is one
    #: a route via a neighbour gone silent (HELLOs lost, or it died), or two hops via a
    #: neighbour whose HELLOs no longer list the relay (behind NATs, far relays reach each
    #: other through a dht-node: its per-hop acks say nothing of the relay's death)
    SILENT = 1
    UNREACHED = 2       # no route


#: Claims an island relay may be picked from (not those in conflict or contested).
ROUTABLE_STATES = frozenset({BindingState.VERIFIED, BindingState.UNVERIFIED})
#: Media items travel as media frames (per-hop ARQ without backoff, as voice wants) under
#: these reserved stream ids, one per leg; a larger payload goes as a best-effort unicast.
TUNNEL_OUT_STREAM = b"\xff\xffTUNOUT"
TUNNEL_WAN_STREAM = b"\xff\xffTUNWAN"
TUNNEL_IN_STREAM = b"\xff\xffTUN_IN"
STREAM_KINDS = {TUNNEL_OUT_STREAM: AppKind.TUNNEL_OUT, TUNNEL_WAN_STREAM: AppKind.TUNNEL_WAN,
                TUNNEL_IN_STREAM: AppKind.TUNNEL_IN}
KIND_STREAMS = {kind: stream for stream, kind in STREAM_KINDS.items()}
#: Answers after which a request may go to the upstream proxy (nothing known of the AoR).
UPSTREAM_STATUSES = frozenset({ResolveStatus.NOT_FOUND, ResolveStatus.UPLINK_DOWN})
#: Kinds carried through the tunnel as signed items (media travels as media items).
TUNNELLED_KINDS = frozenset({AppKind.SIP, AppKind.JOURNAL_PULL, AppKind.JOURNAL_CHUNK,
                             AppKind.STORE_FORWARD})   # sealed parcels, receipts


@dataclass(frozen=True, slots=True)
class ResolveDone:
    """The answer to ``Tunnel.resolve(request_id, aor)``: the node that holds the AoR
    (None: not found, no uplink, busy or no answer in time)."""

    request_id: int
    node: NodeId | None
    status: ResolveStatus


@dataclass(frozen=True, slots=True)
class UplinkPeers:
    """Uplink transport addresses of far relays, learned from the DHT (for the edge's
    uplink radio)."""

    addrs: tuple[str, ...]


TunnelEvent = ResolveDone | UplinkPeers | UnicastReceived | MediaReceived | JournalRecord


@dataclass(slots=True)
class RemoteRoute:
    far_relays: tuple[NodeId, ...]
    expires_at: float
    #: The island relay the last item from this node came through (preferred back).
    local_relay: NodeId | None = None
    #: The verified binding the route was learned from (DHT, or a relay's answer): checked
    #: again when the trust records change (a revoked credential).
    binding: Binding | None = None


@dataclass(slots=True)
class _Pending:
    """A question out to an island relay, and every resolution waiting for its answer
    (the first one's ``request_id`` and those that joined it, :data:`MAX_JOINED`)."""

    request_id: int
    aor: str
    joined: list[int] = field(default_factory=list)

    def request_ids(self) -> list[int]:
        return [self.request_id, *self.joined]


class Tunnel:
    """See the module docstring. ``dht`` is the node's bridge (a relay with an uplink)."""

    def __init__(self, node: MeshNode, verifier: SignatureVerifier, *,
                 dht: DhtBridge | None = None, uplink: MeshNode | None = None) -> None:
        self.node = node
        self.verifier = verifier
        self.dht = dht
        self.uplink = uplink
        self.incident = node.settings.incident
        self.counters: Counter[str] = Counter()
        self._routes: OrderedDict[bytes, RemoteRoute] = OrderedDict()
        self._events: deque[TunnelEvent] = deque()
        self._seen: OrderedDict[bytes, OrderedDict[int, None]] = OrderedDict()
        self._req_ids = itertools.count(1)
        #: Our questions to an island relay: request id -> pending (and their deadlines).
        self._asked: dict[int, _Pending] = {}
        #: The question out per AoR (normalised): later resolutions of it join it.
        self._asking: dict[str, int] = {}
        self._deadlines: DeadlineHeap[int] = DeadlineHeap()
        #: Resolutions of our bridge: token -> local request ids and (node, request id)s.
        self._tokens: dict[int, list[tuple[bytes, int]]] = {}
        self._questions: Counter[bytes] = Counter()
        self._budget = TokenBuckets(RELAY_ITEMS_PER_S, RELAY_ITEMS_BURST)
        #: The AoR each resolved remote node was found for (bounded like the routes),
        #: and the AoRs watched, by their last use (a watch is dropped when idle).
        self._aor_of: OrderedDict[bytes, str] = OrderedDict()
        self._watched: dict[str, float] = {}
        self._watch_idle: DeadlineHeap[str] = DeadlineHeap()
        #: A node without a bridge: its relay's answers by AoR, kept for their TTL (the
        #: next request for the AoR goes at once, without asking again).
        self._answers: OrderedDict[str, tuple[NodeId, float]] = OrderedDict()
        #: This relay's gateway forwards what nobody knows to an upstream SIP proxy: an
        #: island node's question the DHT cannot answer is answered with this node.
        self.offers_upstream = False
        #: Told the keys of nodes a relay's answer named (the node core sets it).
        self.learn_key: Callable[[bytes], None] | None = None
        self._checks = AnswerChecks(self.incident, node.table, verifier, node.overlay.trust)
        self._answer_drops = AnswerDrops()
        #: The trust state the routes' bindings were last checked against.
        self._checked: object = None

    # ------------------------------------------------------------ driving API
    def next_timer(self) -> float | None:
        times = [t for t in (self._deadlines.next_time(), self._watch_idle.next_time())
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> None:
        for aor in self._watch_idle.pop_due(now):
            last = self._watched.get(aor)
            if last is None:
                continue
            if last + WATCH_IDLE_S > now:    # the same sum as scheduled: in floating point
                # now - last < WATCH_IDLE_S can hold while last + WATCH_IDLE_S == now, and
                # the watch would be rescheduled at now forever (a spin in virtual time)
                self._watch_idle.schedule(aor, last + WATCH_IDLE_S)
                continue
            del self._watched[aor]
            if self.dht is not None:
                self.dht.unwatch(aor, now)
        for wire_id in self._deadlines.pop_due(now):
            pending = self._take_asked(wire_id)
            if pending is None:
                continue
            self.counters[TunnelCounter.RESOLVES_TIMED_OUT] += 1
            self._events.extend(ResolveDone(request_id, None, ResolveStatus.UPLINK_DOWN)
                                for request_id in pending.request_ids())

    def _take_asked(self, wire_id: int) -> _Pending | None:
        """The question ``wire_id`` (answered or timed out), no longer out."""
        pending = self._asked.pop(wire_id, None)
        if pending is not None and self._asking.get(normalise_aor(pending.aor)) == wire_id:
            del self._asking[normalise_aor(pending.aor)]
        return pending

    def next_event(self) -> TunnelEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------ routes
    def route(self, dst: bytes, now: float) -> RemoteRoute | None:
        """The remote route to ``dst`` when it is in another island (None: it is ours,
        or unknown)."""
        found = self._routes.get(dst)
        if found is None:
            return None
        if found.expires_at <= now or self.node.overlay.routes.get(NodeId(dst), now):
            return None                     # lapsed, or the node is in our island now
        if self._trust.active:
            self._recheck()
            if not self._still_trusted(dst, found):
                return None
        self._routes.move_to_end(dst)
        return found

    def _still_trusted(self, dst: bytes, route: RemoteRoute) -> bool:
        """Revocations (issue 12.4): a route to a revoked node is forgotten, revoked far
        relays leave a route (a route with none left is forgotten)."""
        trust = self._trust
        relays = tuple(r for r in route.far_relays if not trust.node_revoked(r))
        if trust.node_revoked(dst) or not relays:
            del self._routes[dst]
            self._aor_of.pop(dst, None)
            return False
        route.far_relays = relays
        return True

    def _recheck(self) -> None:
        """Once per change of the trust records, the bindings routes were learned from
        are checked again: a device whose credential is revoked is then refused by
        ``TrustSync.node_revoked`` (its routes and items)."""
        state = self._trust.store.state
        if state is not self._checked:
            self._checked = state
            for route in self._routes.values():
                if route.binding is not None:
                    self._trust.binding_refusal(route.binding)

    @property
    def _trust(self) -> TrustSync:
        return self.node.overlay.trust

    def _refuses(self, item: Item, *via: bytes) -> bool:
        """An item from or to a revoked node, or carried by a revoked relay (``via``):
        dropped and counted, at relays and at the destination."""
        trust = self._trust
        if trust.active:
            self._recheck()
        if not trust.active or not any(trust.node_revoked(n)
                                       for n in (item.origin, item.dst, *via)):
            return False
        self.counters[TunnelCounter.DROP_REVOKED] += 1
        return True

    def learn(self, dst: bytes, far_relays: tuple[NodeId, ...], ttl_s: float, now: float,
              local_relay: NodeId | None = None, binding: Binding | None = None) -> None:
        if self._trust.active:
            trust = self._trust
            far_relays = tuple(r for r in far_relays if not trust.node_revoked(r))
            if trust.node_revoked(dst):
                return
        if not far_relays or dst == self.node.node_id:
            return
        route = self._routes.get(dst)
        if route is None:
            while len(self._routes) >= MAX_REMOTE_ROUTES:
                self._routes.popitem(last=False)
            self._routes[dst] = RemoteRoute(far_relays, now + ttl_s, local_relay, binding)
            return
        self._routes.move_to_end(dst)
        route.far_relays = far_relays
        route.expires_at = max(route.expires_at, now + ttl_s)
        if local_relay is not None:
            route.local_relay = local_relay
        if binding is not None and (route.binding is None
                                    or binding.issued_at >= route.binding.issued_at):
            route.binding = binding

    def remote_count(self) -> int:
        return len(self._routes)

    def remote_nodes(self, now: float) -> list[NodeId]:
        """Nodes of other islands with a live remote route (journal collection's
        targets beyond the island)."""
        trust = self._trust
        return [NodeId(dst) for dst, route in self._routes.items()
                if route.expires_at > now and not self.node.overlay.routes.get(NodeId(dst), now)
                and not (trust.active and trust.node_revoked(dst))]

    # ------------------------------------------------------------ sending
    def send(self, dst: bytes, kind: int, body: bytes, now: float) -> bytes | None:
        """Send a unicast of ``kind`` to the remote node ``dst``: the id of the item that
        carries it (b"": too large, dropped and counted); None: no remote route (the
        caller sends it in the island)."""
        route = self.route(dst, now)
        if route is None:
            return None
        if len(body) > MAX_ITEM_BODY_BYTES:
            self.counters[TunnelCounter.TOO_LARGE] += 1
            return b""
        item = seal_item(self.node.identity, self.incident, dst, kind, self.node.overlay.next_seq(),
                         body)
        self.counters[TunnelCounter.SENT] += 1
        self._send_item(route, item, now)
        return item.item_id

    def send_media(self, dst: bytes, stream: bytes, payload: bytes, now: float) -> bool:
        route = self.route(dst, now)
        if route is None:
            return False
        self.counters[TunnelCounter.SENT_MEDIA] += 1
        self._send_item(route, MediaItem(NodeId(self.node.node_id), NodeId(dst), stream,
                                         payload), now)
        return True

    def _send_item(self, route: RemoteRoute, item: Item, now: float) -> None:
        media = isinstance(item, MediaItem)
        if self.uplink is not None:
            self._to_far_relay(route.far_relays, item, now)
            return
        relay = self._island_relay(route.local_relay, now)
        if relay is None:
            self.counters[TunnelCounter.NO_RELAY] += 1
            return
        self._leg(self.node, relay, AppKind.TUNNEL_OUT,
                  encode_tunnel_out(route.far_relays, item), now, media)

    def _to_far_relay(self, far_relays: tuple[NodeId, ...], item: Item, now: float) -> None:
        assert self.uplink is not None
        if self._trust.active:
            far_relays = tuple(r for r in far_relays if not self._trust.node_revoked(r))
            if not far_relays:
                self.counters[TunnelCounter.DROP_REVOKED] += 1
                return
        far = self._far_relay(far_relays, item.dst, now)
        if far == self.node.node_id:           # we attached it: the item is for our island
            self._to_island(far, item, now)
            return
        self.counters[TunnelCounter.RELAYED_OUT] += 1
        self._in_use(item.dst, now)
        self._leg(self.uplink, far, AppKind.TUNNEL_WAN, encode_tunnel_wan(item), now,
                  isinstance(item, MediaItem))

    def _far_relay(self, far_relays: tuple[NodeId, ...], dst: bytes, now: float) -> NodeId:
        """The far relay to send an item for ``dst`` to, of those named (in order of
        preference): ourselves, else the first one the uplink mesh reaches through a live
        neighbour, else the first with a route (its next hop silent: HELLOs may just have
        been lost), else the first named.

        A sender's list may be stale (a handset learned one relay from the last item that
        came through it, and that relay died): when none of the named ones is reached
        through a live neighbour, the relays of this node's own route to ``dst`` are
        tried as well (learned from the DHT, and kept fresh by its watch)."""
        me = NodeId(self.node.node_id)
        if me in far_relays:
            return me
        best, rank = self._best_reached(far_relays, now)
        if rank != Reach.LIVE:
            own = self._routes.get(dst)
            if own is not None and own.expires_at > now:
                trust = self._trust
                other, other_rank = self._best_reached(
                    tuple(r for r in own.far_relays if r not in far_relays
                          and not (trust.active and trust.node_revoked(r))), now)
                if other_rank < rank:
                    self.counters[TunnelCounter.OWN_FAR_RELAY] += 1
                    return other
        return best

    def _best_reached(self, relays: tuple[NodeId, ...], now: float) -> tuple[NodeId, Reach]:
        """The first of ``relays`` the uplink mesh reaches best, and how (``_reach``); the
        first one and Reach.UNREACHED when it reaches none (or there are none)."""
        best, rank = (relays[0] if relays else NodeId(b"")), Reach.UNREACHED
        for relay in relays:
            r = self._reach(relay, now)
            if r < rank:
                best, rank = relay, r
                if r == Reach.LIVE:
                    break
        return best, rank

    def _reach(self, relay: NodeId, now: float) -> Reach:
        """How the uplink mesh reaches ``relay`` (see Reach)."""
        assert self.uplink is not None
        overlay = self.uplink.overlay
        if relay in overlay.neighbours.by_id:
            return Reach.LIVE
        route = overlay.routes.get(relay, now)
        if route is None:
            return Reach.UNREACHED
        if overlay.neighbours.get(route.next_hop) is None or overlay.lost_beyond(route):
            return Reach.SILENT
        return Reach.LIVE

    def _in_use(self, dst: bytes, now: float) -> None:
        """Items go to remote node ``dst``: watch its AoR while they do."""
        aor = self._aor_of.get(dst)
        if aor is None or self.dht is None:
            return
        if aor not in self._watched:
            if not self.dht.watch(aor, now):
                return
            self._watch_idle.schedule(aor, now + WATCH_IDLE_S)
        self._watched[aor] = now

    def on_uplink_record(self, record: JournalRecord, now: float) -> None:
        """The uplink mesh learned or updated a member's binding: its contacts are the
        member's uplink addresses (its own and those its NAT maps it to, as seen by a
        reachable member): the edge's uplink radio gets them as peers, so two relays
        behind NATs send to each other's mapped address and punch through where the NATs
        allow it (the rest of the time the uplink mesh routes through the reachable
        member)."""
        payload = record.payload
        if self.uplink is None or not isinstance(payload, BindingLearned | BindingUpdated):
            return
        stored = self.uplink.table.get(payload.record)
        if stored is None or stored.binding.node_id == self.node.node_id:
            return
        addrs = []
        for contact in stored.binding.contacts:
            try:
                addrs.append(check_uplink_addr(contact))
            except DecodeError:
                self.counters[TunnelCounter.BAD_UPLINK_CONTACT] += 1
        if addrs:
            self._events.append(UplinkPeers(tuple(addrs)))

    def on_remote_changed(self, news: RemoteChanged, now: float) -> None:
        """News of a watched AoR: the remote routes follow its relays."""
        for rb in news.bindings:
            if rb.reachable:
                ttl = min(MAX_ANSWER_TTL_S, max(1.0, rb.expires_at - now))
                self._note_route(news.aor, rb.binding,
                                 tuple(a.relay for a in rb.relays[:MAX_FAR_RELAYS]), ttl, now)

    def _note_route(self, aor: str, binding: Binding, relays: tuple[NodeId, ...], ttl: float,
                    now: float) -> None:
        node = binding.node_id
        self.learn(node, relays, ttl, now, binding=binding)
        self._aor_of[node] = aor
        self._aor_of.move_to_end(node)
        while len(self._aor_of) > MAX_REMOTE_ROUTES:
            self._aor_of.popitem(last=False)

    def _to_island(self, far_relay: bytes, item: Item, now: float) -> None:
        if item.dst == self.node.node_id:
            self._deliver(item, far_relay, None, 0, now)
            return
        self.counters[TunnelCounter.RELAYED_IN] += 1
        self._leg(self.node, item.dst, AppKind.TUNNEL_IN, encode_tunnel_in(far_relay, item),
                  now, isinstance(item, MediaItem))

    def _leg(self, mesh: MeshNode, dst: bytes, kind: AppKind, body: bytes, now: float,
             media: bool) -> None:
        """One leg: a media item as a media frame when it fits, the rest as a unicast."""
        if media and len(body) <= MAX_MEDIA_PAYLOAD_BYTES:
            mesh.send_media(dst, KIND_STREAMS[kind], body, now)
            return
        self._unicast(mesh, dst, kind, body, now, media)

    def _unicast(self, mesh: MeshNode, dst: bytes, kind: int, body: bytes, now: float,
                 best_effort: bool) -> None:
        try:
            mesh.send_unicast(dst, kind, body, now, best_effort=best_effort)
        except LocalProtocolError:
            self.counters[TunnelCounter.TOO_LARGE] += 1

    def island_relays(self, now: float) -> list[NodeId]:
        """Uplinked relays of the island (live bindings with the uplink capability),
        those with a route first, by path metric."""
        me = self.node.node_id
        found: dict[bytes, int] = {}
        for stored in self.node.table:
            b = stored.binding
            if (UPLINK_CAP in b.caps and b.node_id != me and not b.is_tombstone
                    and stored.state in ROUTABLE_STATES and stored.expires_at > now):
                route = self.node.overlay.routes.get(b.node_id, now)
                found[b.node_id] = route.metric if route is not None else 1 << 30
        return [NodeId(n) for n, _ in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]

    def _island_relay(self, preferred: NodeId | None, now: float) -> NodeId | None:
        relays = self.island_relays(now)
        if preferred is not None and preferred in relays[:1]:
            return preferred
        if preferred is not None and self.node.overlay.routes.get(preferred, now):
            return preferred
        return relays[0] if relays else None

    # ------------------------------------------------------------ receiving
    def on_unicast(self, event: UnicastReceived, from_uplink: bool, now: float) -> None:
        """A unicast of one of the tunnel's kinds (from the island, or the uplink mesh)."""
        try:
            if from_uplink:
                if event.kind != AppKind.TUNNEL_WAN:
                    self.counters[TunnelCounter.DROP_UNKNOWN_KIND] += 1
                    return
                self._on_wan(event, decode_tunnel_wan_untrusted(event.body), now)
                return
            handler = {AppKind.TUNNEL_OUT: self._on_out, AppKind.TUNNEL_IN: self._on_in,
                       AppKind.RESOLVE: self._on_resolve,
                       AppKind.RESOLVED: self._on_resolved}.get(AppKind(event.kind))
            if handler is None:
                self.counters[TunnelCounter.DROP_UNKNOWN_KIND] += 1
                return
            handler(event, now)
        except (DecodeError, ValueError):
            self.counters[TunnelCounter.DROP_MALFORMED] += 1

    def claims(self, stream: bytes) -> bool:
        """Whether a media frame of ``stream`` is a leg of a media item (not a call's)."""
        return stream in STREAM_KINDS

    def on_media_frame(self, frame: MediaReceived, from_uplink: bool, now: float) -> None:
        """A media item's leg that came as a media frame (``claims(frame.stream)``); its
        origin is as claimed (media items are authenticated end to end by the call)."""
        kind = STREAM_KINDS[frame.stream]
        if from_uplink != (kind is AppKind.TUNNEL_WAN):
            self.counters[TunnelCounter.DROP_UNKNOWN_KIND] += 1
            return
        self.on_unicast(UnicastReceived(frame.origin, b"", kind, frame.payload, frame.hops, 0),
                        from_uplink, now)

    def _on_out(self, event: UnicastReceived, now: float) -> None:
        far_relays, item = decode_tunnel_out_untrusted(event.body)
        if self.uplink is None:
            self.counters[TunnelCounter.DROP_NO_UPLINK] += 1
            return
        if not self._budget.allow(event.origin.hex(), now):
            self.counters[TunnelCounter.DROP_RATE] += 1
            return
        if self._refuses(item, event.origin):
            return
        self._to_far_relay(far_relays, item, now)

    def _on_wan(self, event: UnicastReceived, item: Item, now: float) -> None:
        if not self._budget.allow(event.origin.hex(), now):
            self.counters[TunnelCounter.DROP_RATE] += 1
            return
        if self._refuses(item, event.origin):
            return
        self._to_island(event.origin, item, now)

    def _on_in(self, event: UnicastReceived, now: float) -> None:
        far_relay, item = decode_tunnel_in_untrusted(event.body)
        self._deliver(item, far_relay, NodeId(event.origin), event.hops, now)

    def _deliver(self, item: Item, far_relay: bytes, local_relay: NodeId | None, hops: int,
                 now: float) -> None:
        if item.dst != self.node.node_id:
            self.counters[TunnelCounter.DROP_NOT_FOR_US] += 1
            return
        if self._refuses(item, far_relay, *(() if local_relay is None else (local_relay,))):
            return
        if isinstance(item, MediaItem):
            self._events.append(MediaReceived(item.origin, item.stream, item.payload, hops))
            return
        if item.kind not in TUNNELLED_KINDS:
            self.counters[TunnelCounter.DROP_UNKNOWN_KIND] += 1
            return
        if not item.verify(self.incident, self.verifier):
            self.counters[TunnelCounter.DROP_SIGNATURE] += 1
            return
        origin = item.origin
        if not self._first(origin, item.msg_no):
            self.counters[TunnelCounter.DUPLICATES] += 1
            return
        self._came_through(origin, NodeId(far_relay), local_relay, now)
        self.counters[TunnelCounter.DELIVERED] += 1
        self._events.append(UnicastReceived(origin, item.origin_key, item.kind, item.body,
                                            hops, item.msg_no, item.item_id))

    def _came_through(self, origin: bytes, far_relay: NodeId, local_relay: NodeId | None,
                      now: float) -> None:
        """An item from ``origin`` came through ``far_relay``: the way back goes there
        first, and the far relays known before stay behind it (should that one die, its
        island's other relays are still known: replacing the list left a handset sending
        through a dead relay until the route lapsed)."""
        known = self._routes.get(origin)
        relays: tuple[NodeId, ...] = (far_relay,)
        if known is not None and known.expires_at > now:
            relays = (far_relay, *(r for r in known.far_relays if r != far_relay))
        self.learn(origin, relays[:MAX_FAR_RELAYS], LEARNED_ROUTE_TTL_S, now, local_relay)

    def _first(self, origin: bytes, msg_no: int) -> bool:
        seen = self._seen.get(origin)
        if seen is None:
            while len(self._seen) >= MAX_SEEN_ORIGINS:
                self._seen.popitem(last=False)
            seen = self._seen[origin] = OrderedDict()
        else:
            self._seen.move_to_end(origin)
        if msg_no in seen:
            return False
        seen[msg_no] = None
        while len(seen) > SEEN_PER_ORIGIN:
            seen.popitem(last=False)
        return True

    # ------------------------------------------------------------ resolution
    def resolve(self, request_id: int, aor: str, now: float) -> None:
        """Find the node of remote ``aor``; a :class:`ResolveDone` answers (perhaps at
        once)."""
        self.counters[TunnelCounter.RESOLVES] += 1
        cached = self._answers.get(normalise_aor(aor))
        if cached is not None and cached[1] > now and self.route(cached[0], now) is not None:
            # A relay too: while its DHT node is still finding peers again, the uplink
            # mesh may already carry (the far island answers or the request is held).
            self.counters[TunnelCounter.RESOLVES_CACHED] += 1
            self._events.append(ResolveDone(request_id, cached[0], ResolveStatus.FOUND))
            return
        if self.dht is not None:
            self._ask_bridge(aor, (b"", request_id), now)
            return
        out = self._asked.get(self._asking.get(normalise_aor(aor), -1))
        if out is not None and len(out.joined) < MAX_JOINED:
            self.counters[TunnelCounter.RESOLVES_JOINED] += 1
            out.joined.append(request_id)
            return
        relay = self._island_relay(None, now)
        if relay is None or len(self._asked) >= MAX_PENDING_RESOLVES:
            # No uplinked relay in the island: nobody beyond it can be asked (404).
            status = ResolveStatus.NOT_FOUND if relay is None else ResolveStatus.BUSY
            self._events.append(ResolveDone(request_id, None, status))
            return
        wire_id = next(self._req_ids) & MAX_REQUEST_ID
        self._asked[wire_id] = _Pending(request_id, aor)
        self._asking[normalise_aor(aor)] = wire_id
        self._deadlines.schedule(wire_id, now + RESOLVE_TIMEOUT_S)
        self._unicast(self.node, relay, AppKind.RESOLVE, encode_resolve(wire_id, aor), now,
                      False)

    def _ask_bridge(self, aor: str, asker: tuple[bytes, int], now: float) -> None:
        assert self.dht is not None
        token = self.dht.resolve(aor, now)
        self._tokens.setdefault(token, []).append(asker)

    def _on_resolve(self, event: UnicastReceived, now: float) -> None:
        request_id, aor = decode_resolve_untrusted(event.body)
        origin = event.origin
        if self.dht is None:
            self._answer(origin, request_id, ResolveStatus.UPLINK_DOWN, (), now)
            return
        if (sum(self._questions.values()) >= MAX_RELAY_QUESTIONS
                or self._questions[origin] >= MAX_QUESTIONS_PER_NODE):
            self.counters[TunnelCounter.QUESTIONS_REFUSED] += 1
            self._answer(origin, request_id, ResolveStatus.BUSY, (), now)
            return
        self.counters[TunnelCounter.QUESTIONS] += 1
        self._questions[origin] += 1
        self._ask_bridge(aor, (origin, request_id), now)

    def _answer(self, node: bytes, request_id: int, status: ResolveStatus,
                entries: tuple[AnswerEntry, ...], now: float) -> None:
        self._unicast(self.node, node, AppKind.RESOLVED,
                      encode_resolved(request_id, status, entries), now, False)

    def owns(self, token: int) -> bool:
        """Whether the bridge's answer ``token`` is one the tunnel asked for."""
        return token in self._tokens

    def on_bridge(self, answer: Resolved | NotFound, now: float) -> None:
        """The bridge answered one of our resolutions."""
        askers = self._tokens.pop(answer.token, [])
        if isinstance(answer, Resolved):
            entries = self._learn_resolved(answer, now)
            # Known but with no relay reaching it now (the uplink is down, its relays
            # lapsed): unreachable, not unknown (480, and a MESSAGE is held).
            status = (ResolveStatus.FOUND if entries else ResolveStatus.UNREACHABLE
                      if answer.bindings else ResolveStatus.NOT_FOUND)
        else:
            entries = ()
            status = (ResolveStatus.UPLINK_DOWN if answer.reason is NotFoundReason.UPLINK_DOWN
                      else ResolveStatus.BUSY if answer.reason is NotFoundReason.BUSY
                      else ResolveStatus.NOT_FOUND)
        for node, request_id in askers:
            if not node:
                self._events.append(ResolveDone(request_id,
                                                entries[0].node if entries else None, status))
                continue
            self._questions[node] -= 1
            if self._questions[node] <= 0:
                del self._questions[node]
            if status in UPSTREAM_STATUSES and self.offers_upstream:
                # Send it here: this relay's gateway takes it to the upstream proxy.
                self._answer(node, request_id, ResolveStatus.FOUND,
                             (AnswerEntry(NodeId(self.node.node_id), (), 0),), now)
                continue
            self._answer(node, request_id, status, entries, now)

    def _learn_resolved(self, answer: Resolved, now: float) -> tuple[AnswerEntry, ...]:
        """Remote routes (and uplink peers) from the bridge's answer; the reachable
        bindings, most recently issued first."""
        reachable = sorted((rb for rb in answer.bindings if rb.reachable),
                           key=lambda rb: -rb.binding.issued_at)
        entries: list[AnswerEntry] = []
        addrs: list[str] = []
        for rb in reachable[:MAX_ANSWER_BINDINGS]:
            relays = tuple(a.relay for a in rb.relays[:MAX_FAR_RELAYS])
            ttl = int(min(MAX_ANSWER_TTL_S, max(1.0, rb.expires_at - now)))
            self._note_route(answer.aor, rb.binding, relays, ttl, now)
            if not entries:
                self._remember_answer(answer.aor, NodeId(rb.binding.node_id), ttl, now)
            entries.append(AnswerEntry(NodeId(rb.binding.node_id), relays, ttl, rb.binding))
            addrs.extend(a for att in rb.relays for a in att.addrs)
        if addrs:
            self._events.append(UplinkPeers(tuple(dict.fromkeys(addrs))))
        return tuple(entries)

    def _on_resolved(self, event: UnicastReceived, now: float) -> None:
        wire_id, status, entries = decode_resolved_untrusted(event.body)
        pending = self._take_asked(wire_id)
        if pending is None:
            self.counters[TunnelCounter.ANSWERS_UNEXPECTED] += 1
            return
        self._deadlines.discard(wire_id)
        self.counters[TunnelCounter.RESOLVES_ANSWERED] += 1
        entries = self._believed(entries, pending.aor, event, now)
        if not entries and status is ResolveStatus.FOUND:
            status = ResolveStatus.NOT_FOUND
        for entry in entries:
            self.learn(entry.node, entry.relays, entry.ttl_s, now, NodeId(event.origin),
                       entry.binding)
            key = entry.key or event.origin_key         # the relay itself: its own key
            if self.learn_key is not None:
                self.learn_key(key)             # to seal SIP to it (node.e2e_sip)
        node = entries[0].node if entries and status is ResolveStatus.FOUND else None
        if node is not None and entries[0].relays:
            self._remember_answer(pending.aor, node, entries[0].ttl_s, now)
        self._events.extend(ResolveDone(request_id, node, status)
                            for request_id in pending.request_ids())

    def _believed(self, entries: tuple[AnswerEntry, ...], aor: str, event: UnicastReceived,
                  now: float) -> tuple[AnswerEntry, ...]:
        """The entries whose owner-signed binding holds (:mod:`.tunnel_answer`); the
        others dropped, counted and journaled (rate-limited)."""
        wall_now = self.node.overlay.wall_time(now)
        kept = []
        for entry in entries:
            reason = entry_refusal(entry, aor, event.origin_key, self._checks, wall_now)
            if reason is None:
                kept.append(entry)
                continue
            self.counters[TunnelCounter.DROP_BAD_ANSWER] += 1
            record = self._answer_drops.record(reason, event.origin, now)
            if record is not None:
                self._events.append(record)
        return tuple(kept)

    def _remember_answer(self, aor: str, node: NodeId, ttl_s: float, now: float) -> None:
        key = normalise_aor(aor)
        self._answers[key] = (node, now + min(ttl_s, ANSWER_CACHE_S))
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_REMOTE_ROUTES:
            self._answers.popitem(last=False)
