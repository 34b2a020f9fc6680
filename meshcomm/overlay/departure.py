"""Departure acknowledgement: how a departing node learns its neighbours hold its tombstone.

A departing node re-sends its tombstones (see :meth:`meshcomm.node.mesh.MeshNode.shutdown`)
until it has heard a copy of each from every neighbour (or its grace ends). A copy is the
acknowledgement: whoever sent it holds the tombstone. Waiting for every neighbour, not just
one, matters at the edge: a node that only the departing one connected to the mesh has
nobody else to repair a lost copy from. No new message type and, in the common case, no
extra frame:

* a neighbour that takes the tombstone as new rebroadcasts it (the flood) and the departing
  node overhears that rebroadcast;
* a neighbour that already holds it (it heard an earlier copy, or a relay's, or took it from
  anti-entropy) and gets another copy *straight from its origin* (hop count 0) echoes it back
  once, unicast, with TTL 1 (:meth:`DepartureEchoes.on_duplicate`). The echo is the only
  added frame: one per direct duplicate, at most one per tombstone per
  :data:`ECHO_MIN_GAP_S`, only for a tombstone the neighbour holds as current, so a replayed
  copy gains an attacker no more than the frame it sent.

Each hop repeats the idea, so that a departure crosses a sparse, lossy mesh (a chain of
vehicles) in about a second instead of waiting for anti-entropy rounds (each needs three
frames to get through): a node that takes a tombstone as ending a binding it held (a real
departure, not a tombstone of a key it never saw) floods it on (at once if it came by
anti-entropy rather than by flood), re-sends it up to :data:`RELAY_RESENDS` times,
:data:`RELAY_RESEND_S` apart (jittered), until it has heard copies from every neighbour
(the one it came from counts; a next hop of a known route counts as a neighbour even while
its HELLOs are being lost), and asks for an early digest. That costs at most
1 + RELAY_RESENDS frames per node per departure. At most :data:`MAX_RELAYED` tombstones are
tracked at once, and each is charged to the sender's re-flood budget
(:meth:`~meshcomm.overlay.admission.Admission.may_reflood`): beyond that, anti-entropy alone
repairs (an outsider's flood of departures buys no extra airtime). Whatever these
re-sends miss, anti-entropy repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from meshcomm.errors import DecodeError
from meshcomm.location.binding import binding_from_envelope_untrusted
from meshcomm.overlay.counters import OverlayCounter, TxTag
from meshcomm.overlay.ratelimit import link_host
from meshcomm.overlay.timers import TimerKind
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import MAX_AGE_MS, Envelope, Hop

if TYPE_CHECKING:
    from meshcomm.overlay.context import OverlayContext

#: A tombstone is echoed at most this often (per tombstone).
ECHO_MIN_GAP_S: Final = 0.1
#: Tombstones whose last echo time is remembered; the oldest is forgotten beyond this.
MAX_ECHO_TRACKED: Final = 256
#: Own envelopes a node waits to hear back at once (its tombstones: one per AoR), and the
#: senders remembered per envelope (more than any neighbour table holds).
MAX_AWAITED: Final = 64
MAX_HEARD_FROM: Final = 1024
#: A relayed tombstone: re-sends at most and their spacing (+/- jitter fraction).
RELAY_RESENDS: Final = 4
RELAY_RESEND_S: Final = 0.3
RELAY_RESEND_JITTER: Final = 0.3
#: Path metric put on a tombstone relayed from anti-entropy without a known route.
UNKNOWN_METRIC: Final = 64 * 16
#: Tombstones re-sent by this node at once.
MAX_RELAYED: Final = 32


@dataclass(slots=True)
class _Relayed:
    envelope: Envelope
    hop: Hop
    received_at: float
    #: neighbours not yet heard sending it
    waiting: set[LinkAddr]
    left: int


class DepartureEchoes:
    """Both sides of the acknowledgement, for one overlay."""

    def __init__(self, ctx: OverlayContext) -> None:
        self.ctx = ctx
        #: digest of an own envelope -> link addresses it was heard back from
        self._awaited: dict[bytes, set[LinkAddr]] = {}
        self._echoed: dict[bytes, float] = {}
        self._relayed: dict[bytes, _Relayed] = {}

    # ------------------------------------------------------------ departing side
    def expect(self, envelope: Envelope) -> None:
        """Watch for a copy of our own ``envelope`` sent by someone else."""
        if len(self._awaited) >= MAX_AWAITED:
            del self._awaited[next(iter(self._awaited))]
        self._awaited.setdefault(envelope.digest, set())

    def heard_from(self, envelope: Envelope) -> set[LinkAddr]:
        """Who has been heard sending a copy of our ``envelope`` (see :meth:`expect`)."""
        return self._awaited.get(envelope.digest, set())

    def forget(self, envelope: Envelope) -> None:
        self._awaited.pop(envelope.digest, None)

    def on_own_copy(self, env: Envelope, src: LinkAddr) -> None:
        """A frame carrying one of our own envelopes came in (the overlay drops it after)."""
        if self._awaited:
            heard = self._awaited.get(env.digest)
            if heard is not None and len(heard) < MAX_HEARD_FROM:
                heard.add(src)

    # ------------------------------------------------------------ relaying
    def learned(self, env: Envelope, hop: Hop | None, age_s: float, src: LinkAddr,
                now: float) -> None:
        """A tombstone from ``src`` ended a binding we held: pass it on until every
        neighbour has it. ``hop`` is None when it came by anti-entropy (not flooded yet)."""
        self.ctx.anti_entropy.soon(now)
        if (len(self._relayed) >= MAX_RELAYED or (hop is not None and hop.ttl <= 1)
                or not self.ctx.admission.may_reflood(link_host(src), now)):
            self.ctx.counters[OverlayCounter.TOMBSTONE_RELAY_UNTRACKED] += 1
            return
        if hop is None:
            route = self.ctx.routes.get(env.origin, now)
            metric, hops = ((route.metric, max(0, route.hops)) if route is not None
                            else (UNKNOWN_METRIC, 0))
            hop = Hop(ttl=self.ctx.config.flood_ttl, hops=hops, metric=metric,
                      age_ms=min(MAX_AGE_MS, int(age_s * 1000)))
            self._send(env, hop, hop.age_ms)
        # Whom to wait for: current neighbours and the next hops of known routes (a
        # neighbour whose HELLOs were lost for a while is still there).
        waiting = set(self.ctx.neighbours.by_addr)
        waiting.update(route.next_hop for route in self.ctx.routes.all())
        waiting.discard(src)
        self._relayed[env.digest] = _Relayed(env, hop, now, waiting, RELAY_RESENDS)
        self._schedule(env.digest, now)

    def _send(self, env: Envelope, hop: Hop, age_ms: int) -> None:
        self.ctx.transmit(env, Hop(ttl=hop.ttl - 1, hops=hop.hops + 1, metric=hop.metric,
                                 age_ms=min(MAX_AGE_MS, age_ms)), None, TxTag.TOMBSTONE_RESEND)

    def _schedule(self, digest: bytes, now: float) -> None:
        jitter = RELAY_RESEND_JITTER
        delay = RELAY_RESEND_S * self.ctx.rng.uniform(1 - jitter, 1 + jitter)
        self.ctx.schedule(now + delay, TimerKind.TOMBSTONE_RESEND, digest)

    def resend_due(self, digest: bytes, now: float) -> None:
        relayed = self._relayed.get(digest)
        if relayed is None:
            return
        if not relayed.waiting or relayed.left <= 0:
            del self._relayed[digest]
            return
        relayed.left -= 1
        hop = relayed.hop
        self._send(relayed.envelope, hop,
                   hop.age_ms + int((now - relayed.received_at) * 1000))
        self._schedule(digest, now)

    # ------------------------------------------------------------ neighbour side
    def on_duplicate(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        """A known, valid BINDING frame came in again: note who holds a tombstone we
        relay, and echo a tombstone sent by its origin."""
        if self._relayed:
            relayed = self._relayed.get(env.digest)
            if relayed is not None:
                relayed.waiting.discard(src)
        if hop.hops != 0:
            return
        try:
            binding = binding_from_envelope_untrusted(env)
        except DecodeError:
            return
        if not binding.is_tombstone:
            return
        stored = self.ctx.table.get(binding.record_id)
        if stored is None or stored.binding.seq != binding.seq:
            return
        digest = env.digest
        last = self._echoed.get(digest)
        if last is not None and now - last < ECHO_MIN_GAP_S:
            return
        if last is None and len(self._echoed) >= MAX_ECHO_TRACKED:
            del self._echoed[next(iter(self._echoed))]
        self._echoed[digest] = now
        age_ms = min(MAX_AGE_MS, int(stored.age_s(now) * 1000))
        self.ctx.transmit(env, Hop(ttl=1, hops=1, age_ms=age_ms), src, TxTag.TOMBSTONE_ECHO)
