"""MeshNode: the gossip overlay plus the node's own registrations (sans-IO).

The node registers its AoRs as signed bindings, refreshes them before they expire
(at half their lifetime, jittered), and withdraws them on shutdown with tombstones.

Departure: :meth:`MeshNode.shutdown` floods one copy of each tombstone, then re-sends the
tombstones that not every neighbour has acknowledged yet every :data:`DEPARTURE_RESEND_S`
(jittered), for at most :data:`DEPARTURE_GIVE_UP_S`; a copy of the tombstone heard from a
neighbour is its acknowledgement (:mod:`meshcomm.overlay.departure`), and from there
neighbours carry it on to the rest of the mesh (re-sends per hop, anti-entropy).
:attr:`MeshNode.departure_done` tells the runtime it may stop before its grace ends.

Freshness: the table's :class:`~meshcomm.location.freshness.FreshnessMemory` (given restored
from disk by the runtime) remembers the highest sequence accepted per (AoR, key);
:meth:`MeshNode.take_freshness_updates` hands its changes to the runtime, which writes them
before it transmits what the same input produced.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from meshcomm.journal.payloads import NodeStarted, NodeStopped
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.freshness import FreshnessMemory, FreshnessUpdates
from meshcomm.location.table import LocationTable, TrustPolicy
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.core import FrameDecoder, GossipOverlay, OverlayEvent
from meshcomm.overlay.counters import OverlayCounter, TxTag
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustStore
from meshcomm.security.roles import MAX_ROLE_ADDRESSES, Handover, pack_trust_bundle
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Aor, Datagram, LinkAddr, NodeId
from meshcomm.wire.envelope import Envelope, Hop, parse_frame_untrusted

#: Refresh at this fraction of the lifetime, +/- the jitter fraction.
REFRESH_FRACTION = 0.5
REFRESH_JITTER = 0.1
#: A departing node re-sends each unacknowledged tombstone this often (+/- the jitter
#: fraction): spaced copies are lost independently, back-to-back ones together.
DEPARTURE_RESEND_S = 0.3
DEPARTURE_RESEND_JITTER = 0.3
#: ... and stops re-sending after this long (the runtime's grace normally ends it first).
DEPARTURE_GIVE_UP_S = 10.0


@dataclass(frozen=True, slots=True)
class NodeSettings:
    incident: str = "default"
    role: str = "handset"
    registration_lifetime_s: int = 300
    trust: TrustPolicy = field(default_factory=TrustPolicy)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    caps: tuple[str, ...] = ()


@dataclass(slots=True)
class _Registration:
    aor: Aor
    contacts: tuple[str, ...]
    refresh_at: float


#: Hand-overs a node keeps (one per role address it may be given).
MAX_HANDOVERS = MAX_ROLE_ADDRESSES


class MeshNode:
    """One node: driving API of the architecture guide, plus register/deregister."""

    def __init__(self, identity: Identity, settings: NodeSettings, *, verifier: SignatureVerifier,
                 rng: random.Random, now: float, seq_base: int = 0, wall_offset_s: float = 0.0,
                 credential: bytes | None = None,
                 overlay_class: type[GossipOverlay] = GossipOverlay,
                 frame_decoder: FrameDecoder = parse_frame_untrusted,
                 freshness: FreshnessMemory | None = None,
                 trust: TrustStore | None = None) -> None:
        self.identity = identity
        self.settings = settings
        self.rng = rng
        self.credential = credential
        #: Signed hand-overs of role addresses to this node, by AoR (security.roles).
        self.handovers: dict[str, Handover] = {}
        if freshness is None:
            freshness = FreshnessMemory(own_key=identity.public_key)
        # Never sign below what the mesh already accepted from us (a lost boot epoch).
        seq_base = max(seq_base, freshness.highest_own_seq())
        self.table = LocationTable(settings.incident, settings.trust, verifier,
                                   freshness=freshness)
        self.overlay = overlay_class(identity, settings.incident, settings.overlay, self.table,
                                     verifier, rng, now=now, role=settings.role,
                                     seq_base=seq_base, wall_offset_s=wall_offset_s,
                                     frame_decoder=frame_decoder, trust=trust)
        self._registrations: dict[str, _Registration] = {}
        self._stopped = False
        self._next_refresh = float("inf")
        #: tombstones sent on shutdown and not acknowledged yet
        self._departing: list[Envelope] = []
        self._resend_at = float("inf")
        self._give_up_at = float("inf")
        #: link addresses expected to acknowledge (neighbours and next hops at shutdown)
        self._ack_from: set[LinkAddr] = set()
        self.overlay.emit(NodeStarted(node=identity.node_id.hex(), role=settings.role,
                                      incident=settings.incident))

    @property
    def counters(self) -> Counter[str]:
        return self.overlay.counters

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    # ------------------------------------------------------------ commands
    def register(self, aor: str, contacts: tuple[str, ...], now: float) -> Binding:
        """Announce (or update) a binding of ``aor`` to this node."""
        reg = _Registration(Aor(aor), contacts, now)
        self._registrations[aor.lower()] = reg
        return self._announce(reg, now)

    def deregister(self, aor: str, now: float, copies: int = 1) -> Binding | None:
        reg = self._registrations.pop(aor.lower(), None)
        self._update_next_refresh()
        if reg is None:
            return None
        lifetime = self.settings.registration_lifetime_s
        binding = make_binding(self.identity, incident=self.settings.incident,
                               seq=self.overlay.next_seq(), aor=reg.aor, contacts=(),
                               issued_at=self.overlay.wall_time(now), lifetime_s=0,
                               hold_s=lifetime, caps=(), credential=self.trust_field(reg.aor))
        self.overlay.announce(binding, now, copies)
        return binding

    def shutdown(self, now: float) -> None:
        """Withdraw every registration (tombstones flood out) and stop refreshing; keep
        re-sending the tombstones until every neighbour acknowledges them (see the module)."""
        for aor in list(self._registrations):
            tombstone = self.deregister(aor, now)
            if tombstone is not None:
                self._departing.append(tombstone.envelope)
                self.overlay.departures.expect(tombstone.envelope)
        self._stopped = True
        if self._departing:
            # Neighbours whose HELLOs were lost lately are still next hops of routes.
            self._ack_from = set(self.overlay.neighbours.by_addr)
            self._ack_from.update(r.next_hop for r in self.overlay.routes.all())
            self._give_up_at = now + DEPARTURE_GIVE_UP_S
            self._schedule_resend(now)
        self.overlay.emit(NodeStopped(node=self.identity.node_id.hex()))

    @property
    def departure_done(self) -> bool:
        """True once stopped and every neighbour (and next hop of a route) has acknowledged
        every tombstone, or re-sending gave up: the runtime may close the radios. A node
        that knows nobody keeps re-sending until its grace ends (someone may listen)."""
        if not self._stopped:
            return False
        self._collect_acks()
        return not self._departing

    def take_freshness_updates(self) -> FreshnessUpdates:
        """Changes of the freshness memory since the last call, for the runtime's store;
        the runtime writes them before it transmits (persist, then transmit)."""
        return self.table.freshness.take_updates()

    def send_unicast(self, dst: bytes, kind: int, body: bytes, now: float, *,
                     best_effort: bool = False) -> bytes:
        """Send ``body`` (up to MAX_MESSAGE_BYTES, fragmented as needed) to node ``dst``;
        best-effort skips per-hop acknowledgement (for media)."""
        return self.overlay.forwarder.send(NodeId(dst), kind, body, now,
                                           best_effort=best_effort)

    def journal_checkpointed(self, seq: int, head: bytes, signature: bytes) -> None:
        """The node's journal got a signed checkpoint over entry ``seq`` (hash ``head``):
        neighbours hear it with our HELLOs and witness it (:mod:`meshcomm.overlay.witness`).
        LocalProtocolError if the values are not a checkpoint's."""
        self.overlay.set_checkpoint(seq, head, signature)

    def send_media(self, dst: bytes, stream: bytes, payload: bytes, now: float) -> None:
        """Send one media payload (already authenticated by the media layer) to ``dst``."""
        self.overlay.media.send(NodeId(dst), stream, payload, now)

    def trust_field(self, aor: str) -> bytes | None:
        """The credential field of this node's bindings of ``aor``: the credential, with
        the signed hand-over of ``aor`` when one names this node (security.roles)."""
        if self.credential is None:
            return None
        return pack_trust_bundle(self.credential, self.handovers.get(aor.lower()))

    def accept_handover(self, handover: Handover, now: float) -> None:
        """Hold ``handover`` (of a role address to this node's key) and announce the
        address again with it, if this node registers it."""
        if handover.new_key != self.identity.public_key:
            raise ValueError("the hand-over names another key")
        self.handovers.pop(handover.aor, None)
        self.handovers[handover.aor] = handover
        while len(self.handovers) > MAX_HANDOVERS:
            del self.handovers[next(iter(self.handovers))]
        reg = self._registrations.get(handover.aor)
        if reg is not None:
            self._announce(reg, now)

    def _announce(self, reg: _Registration, now: float) -> Binding:
        lifetime = self.settings.registration_lifetime_s
        binding = make_binding(self.identity, incident=self.settings.incident,
                               seq=self.overlay.next_seq(), aor=reg.aor, contacts=reg.contacts,
                               issued_at=self.overlay.wall_time(now), lifetime_s=lifetime,
                               caps=self.settings.caps, credential=self.trust_field(reg.aor))
        factor = REFRESH_FRACTION * self.rng.uniform(1 - REFRESH_JITTER, 1 + REFRESH_JITTER)
        reg.refresh_at = now + lifetime * factor
        self.overlay.announce(binding, now)
        self._update_next_refresh()
        return binding

    def _schedule_resend(self, now: float) -> None:
        jitter = DEPARTURE_RESEND_JITTER
        self._resend_at = now + DEPARTURE_RESEND_S * self.rng.uniform(1 - jitter, 1 + jitter)

    def _collect_acks(self) -> None:
        """Drop the tombstones every neighbour has been heard sending back."""
        if not self._departing:
            return
        echoes = self.overlay.departures
        expected = self._ack_from | self.overlay.neighbours.by_addr.keys()
        acked = [env for env in self._departing
                 if expected and expected <= echoes.heard_from(env)]
        if not acked:
            return
        for env in acked:
            echoes.forget(env)
        self.counters[OverlayCounter.DEPARTURE_ACKED] += len(acked)
        self._departing = [env for env in self._departing if env not in acked]
        if not self._departing:
            self._resend_at = float("inf")

    def _resend_departures(self, now: float) -> None:
        self._collect_acks()
        if not self._departing:
            return
        if now >= self._give_up_at:
            self.counters[OverlayCounter.DEPARTURE_UNACKED] += len(self._departing)
            for env in self._departing:
                self.overlay.departures.forget(env)
            self._departing = []
            self._resend_at = float("inf")
            return
        for env in self._departing:
            self.overlay.transmit(env, Hop(ttl=self.settings.overlay.flood_ttl), None,
                                  TxTag.BINDING_RESEND)
        self._schedule_resend(now)

    def _update_next_refresh(self) -> None:
        self._next_refresh = min((r.refresh_at for r in self._registrations.values()),
                                 default=float("inf"))

    # ------------------------------------------------------------ driving API
    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        self.overlay.receive(data, src, now)
        if self._departing:
            self._collect_acks()

    def to_send(self, now: float) -> list[Datagram]:
        return self.overlay.to_send(now)

    def next_timer(self) -> float | None:
        overlay_t = self.overlay.next_timer()
        own = self._resend_at if self._stopped else (
            self._next_refresh if self._registrations else float("inf"))
        if own == float("inf"):
            return overlay_t
        return own if overlay_t is None else min(own, overlay_t)

    def on_timer(self, now: float) -> None:
        if not self._stopped:
            for reg in list(self._registrations.values()):
                if reg.refresh_at <= now:
                    self._announce(reg, now)
        elif self._resend_at <= now:
            self._resend_departures(now)
        self.overlay.on_timer(now)

    def next_event(self) -> OverlayEvent | None:
        return self.overlay.next_event()
