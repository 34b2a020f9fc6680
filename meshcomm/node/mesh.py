"""MeshNode: the gossip overlay plus the node's own registrations (sans-IO).

The node registers its AoRs as signed bindings, refreshes them before they expire
(at half their lifetime, jittered), and withdraws them on shutdown with tombstones.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from meshcomm.journal.events import JournalEventType as J
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import LocationTable, TrustPolicy
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.core import FrameDecoder, GossipOverlay, OverlayEvent
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Aor, Datagram, LinkAddr, NodeId
from meshcomm.wire.envelope import decode_frame_untrusted

#: Refresh at this fraction of the lifetime, +/- the jitter fraction.
REFRESH_FRACTION = 0.5
REFRESH_JITTER = 0.1
#: A departing node sends each tombstone this many times: it cannot repair losses later.
DEPARTURE_COPIES = 3


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


class MeshNode:
    """One node: driving API of the architecture guide, plus register/deregister."""

    def __init__(self, identity: Identity, settings: NodeSettings, *, verifier: SignatureVerifier,
                 rng: random.Random, now: float, seq_base: int = 0, wall_offset_s: float = 0.0,
                 credential: bytes | None = None,
                 overlay_class: type[GossipOverlay] = GossipOverlay,
                 frame_decoder: FrameDecoder = decode_frame_untrusted) -> None:
        self.identity = identity
        self.settings = settings
        self.rng = rng
        self.credential = credential
        self.table = LocationTable(settings.incident, settings.trust, verifier)
        self.overlay = overlay_class(identity, settings.incident, settings.overlay, self.table,
                                     verifier, rng, now=now, role=settings.role,
                                     seq_base=seq_base, wall_offset_s=wall_offset_s,
                                     frame_decoder=frame_decoder)
        self._registrations: dict[str, _Registration] = {}
        self._stopped = False
        self._next_refresh = float("inf")
        self.overlay.emit(J.NODE_STARTED, node=identity.node_id.hex(), role=settings.role,
                          incident=settings.incident)

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
                               hold_s=lifetime, caps=(), credential=self.credential)
        self.overlay.announce(binding, now, copies)
        return binding

    def shutdown(self, now: float) -> None:
        """Withdraw every registration (tombstones flood out) and stop refreshing."""
        for aor in list(self._registrations):
            self.deregister(aor, now, copies=DEPARTURE_COPIES)
        self._stopped = True
        self.overlay.emit(J.NODE_STOPPED, node=self.identity.node_id.hex())

    def send_unicast(self, dst: bytes, kind: int, body: bytes, now: float, *,
                     best_effort: bool = False) -> bytes:
        """Send ``body`` (up to MAX_MESSAGE_BYTES, fragmented as needed) to node ``dst``;
        best-effort skips per-hop acknowledgement (for media)."""
        return self.overlay.forwarder.send(NodeId(dst), kind, body, now,
                                           best_effort=best_effort)

    def send_media(self, dst: bytes, stream: bytes, payload: bytes, now: float) -> None:
        """Send one media payload (already authenticated by the media layer) to ``dst``."""
        self.overlay.media.send(NodeId(dst), stream, payload, now)

    def _announce(self, reg: _Registration, now: float) -> Binding:
        lifetime = self.settings.registration_lifetime_s
        binding = make_binding(self.identity, incident=self.settings.incident,
                               seq=self.overlay.next_seq(), aor=reg.aor, contacts=reg.contacts,
                               issued_at=self.overlay.wall_time(now), lifetime_s=lifetime,
                               caps=self.settings.caps, credential=self.credential)
        factor = REFRESH_FRACTION * self.rng.uniform(1 - REFRESH_JITTER, 1 + REFRESH_JITTER)
        reg.refresh_at = now + lifetime * factor
        self.overlay.announce(binding, now)
        self._update_next_refresh()
        return binding

    def _update_next_refresh(self) -> None:
        self._next_refresh = min((r.refresh_at for r in self._registrations.values()),
                                 default=float("inf"))

    # ------------------------------------------------------------ driving API
    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        self.overlay.receive(data, src, now)

    def to_send(self, now: float) -> list[Datagram]:
        return self.overlay.to_send(now)

    def next_timer(self) -> float | None:
        overlay_t = self.overlay.next_timer()
        if self._stopped or not self._registrations:
            return overlay_t
        refresh = self._next_refresh
        return refresh if overlay_t is None else min(refresh, overlay_t)

    def on_timer(self, now: float) -> None:
        if not self._stopped:
            for reg in list(self._registrations.values()):
                if reg.refresh_at <= now:
                    self._announce(reg, now)
        self.overlay.on_timer(now)

    def next_event(self) -> OverlayEvent | None:
        return self.overlay.next_event()
