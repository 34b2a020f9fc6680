"""What the overlay's helpers (anti-entropy, forwarding, media, departures) may use of the
node they belong to.

:class:`~meshcomm.overlay.core.GossipOverlay` owns the shared state (configuration,
counters, location table, neighbours, routes, timers, outgoing queue, journal) and hands
itself to each helper typed as :class:`OverlayContext`: the helper sees exactly the
attributes and methods listed here, and mypy checks that ``GossipOverlay`` provides them
(see the conformance line at the end of :mod:`.core`). A helper that needs something new
adds it here first, so the coupling between the parts stays visible in one place.

The Protocol is only a type: at run time the helper holds the overlay itself, so an
attribute access costs what it did before.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import random

    from meshcomm.journal.payloads import JournalPayload
    from meshcomm.location.binding import Binding
    from meshcomm.location.table import LocationTable, MergeResult
    from meshcomm.overlay.admission import Admission
    from meshcomm.overlay.antientropy import AntiEntropy
    from meshcomm.overlay.config import OverlayConfig
    from meshcomm.overlay.counters import DropReason, TxTag
    from meshcomm.overlay.forwarding import UnicastReceived
    from meshcomm.overlay.media import MediaReceived
    from meshcomm.overlay.neighbours import NeighbourTable
    from meshcomm.overlay.routing import RouteTable
    from meshcomm.overlay.timers import TimerKind
    from meshcomm.types import Datagram, LinkAddr, NodeId
    from meshcomm.wire.envelope import Envelope, Hop, MsgType


class OverlayContext(Protocol):
    """The node as its overlay helpers see it (read-only attributes, shared operations)."""

    # ------------------------------------------------------------ shared state
    @property
    def node_id(self) -> NodeId: ...
    @property
    def short_id(self) -> bytes: ...
    @property
    def config(self) -> OverlayConfig: ...
    @property
    def counters(self) -> Counter[str]: ...
    @property
    def table(self) -> LocationTable: ...
    @property
    def neighbours(self) -> NeighbourTable: ...
    @property
    def routes(self) -> RouteTable: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def admission(self) -> Admission: ...
    @property
    def anti_entropy(self) -> AntiEntropy: ...

    # ------------------------------------------------------------ output: frames, timers, events
    def seal(self, msg_type: MsgType, payload: object) -> Envelope: ...
    def transmit(self, env: Envelope, hop: Hop, dst: LinkAddr | None, tag: TxTag) -> None: ...
    def queue_raw(self, dgram: Datagram, tag: TxTag) -> None: ...
    def schedule(self, when: float, kind: TimerKind, key: bytes = b"") -> None: ...
    def emit(self, payload: JournalPayload) -> None: ...
    def post_event(self, event: UnicastReceived | MediaReceived) -> None: ...
    def drop(self, reason: DropReason, src: LinkAddr | None, now: float) -> None: ...

    # ------------------------------------------------------------ checks and duplicates
    def verified(self, env: Envelope, src: LinkAddr, now: float) -> bool: ...
    def verified_first_copy(self, env: Envelope, src: LinkAddr, now: float) -> bool: ...
    def seen(self, digest: bytes) -> bool | None: ...
    def mark_seen(self, digest: bytes, ok: bool) -> None: ...
    def admission_refusal(self, binding: Binding, src: LinkAddr,
                          now: float) -> DropReason | None: ...

    # ------------------------------------------------------------ bindings and routes
    def offer_binding(self, binding: Binding, now: float, age_s: float,
                      src: LinkAddr | None, hop: Hop | None = None) -> MergeResult: ...
    def learn_route(self, env: Envelope, hop: Hop, src: LinkAddr, now: float,
                    via: NodeId | None = None) -> None: ...
    def learn_fallback_route(self, env: Envelope, src: LinkAddr, via: NodeId,
                             now: float) -> None: ...
    def next_hop_to(self, dst: NodeId, now: float) -> LinkAddr | None: ...
