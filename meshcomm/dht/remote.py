"""What a node knows of remote AoRs from the DHT: bounded, with the gossip merge rule.

Per AoR (LRU-bounded, :attr:`RemoteView.max_aors`; watched AoRs are never evicted), per
(AoR, key) a *claim*: the binding with the highest sequence (never arrival order; a
tombstone of a higher sequence withdraws it), and the live attachments of the relays that
publish it (several relays of one island each publish; at most ``max_relays`` per claim,
at most ``max_claims`` claims per AoR). An attachment *lapses* at its expiry (its relay
stopped refreshing: dead, or lost its uplink); a claim whose attachments all lapsed stays
known, *unreachable*, until the binding itself expires. Claims are listed credentialed
first, then in arrival order (under the ``open`` policy the first key to claim holds).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from meshcomm.dht.records import (
    Attachment,
    DhtRecord,
    RecordReject,
    attachment_life_left_s,
    binding_life_left_s,
)
from meshcomm.location.binding import Binding
from meshcomm.location.freshness import FreshEntry

#: Stale heap entries tolerated beyond twice the number of AoRs before a rebuild.
LAPSE_HEAP_SLACK = 64


class RemoteState(StrEnum):
    REACHABLE = "reachable"        # at least one relay's attachment is live
    UNREACHABLE = "unreachable"    # known, but every attachment lapsed
    WITHDRAWN = "withdrawn"        # a tombstone of a higher sequence arrived
    EXPIRED = "expired"            # the binding's own time is up: forgotten
    REVOKED = "revoked"            # a trust record refuses it now: forgotten


class MergeOutcome(Enum):
    CHANGED = "changed"            # a new claim, binding or relay
    REFRESHED = "refreshed"        # a newer attachment of a relay already known
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class RemoteBinding:
    """A binding learned from the DHT, with the relays that reach it (latest first);
    no relays: known but unreachable."""

    binding: Binding
    relays: tuple[Attachment, ...]
    expires_at: float

    @property
    def reachable(self) -> bool:
        return bool(self.relays)


@dataclass(slots=True)
class _Relay:
    attachment: Attachment
    lapse_at: float


@dataclass(slots=True)
class _Claim:
    binding: Binding
    expires_at: float
    credentialed: bool
    order: int
    relays: dict[bytes, _Relay] = field(default_factory=dict)
    #: eviction rank: 2 credentialed, 1 a key accepted here before, 0 a stranger
    rank: int = 0


@dataclass(slots=True)
class RemoteAor:
    aor: str
    claims: dict[bytes, _Claim] = field(default_factory=dict)
    #: a lookup found nothing: answer NotFound from here until then
    negative_until: float = 0.0
    #: the next lapse or expiry among the claims (None: nothing to do)
    next_at: float | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A claim's reachability changed (for the journal and the watchers)."""

    aor: str
    binding: Binding
    state: RemoteState
    relays: tuple[bytes, ...]      # relay node ids


class RemoteView:
    """See the module docstring."""

    def __init__(self, *, max_aors: int, max_claims: int, max_relays: int,
                 pinned: Callable[[str], bool] = lambda _aor: False) -> None:
        self.max_aors = max_aors
        self.max_claims = max_claims
        self.max_relays = max_relays
        self.pinned = pinned
        self._aors: OrderedDict[str, RemoteAor] = OrderedDict()
        self._heap: list[tuple[float, str]] = []
        self._order = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._aors)

    def get(self, aor: str) -> RemoteAor | None:
        entry = self._aors.get(aor)
        if entry is not None:
            self._aors.move_to_end(aor)
        return entry

    def entry(self, aor: str) -> RemoteAor:
        """The entry of ``aor``, created (evicting the least recently used) if needed."""
        found = self.get(aor)
        if found is not None:
            return found
        if len(self._aors) >= self.max_aors:
            victim = next((a for a in self._aors if not self.pinned(a)), None)
            if victim is not None:
                del self._aors[victim]
                self.evicted += 1
        entry = RemoteAor(aor)
        self._aors[aor] = entry
        return entry

    def view(self, aor: str, reachable: bool = True) -> tuple[RemoteBinding, ...]:
        """The live claims of ``aor`` (``reachable`` False: listed without relays)."""
        entry = self._aors.get(aor)
        if entry is None:
            return ()
        claims = sorted((c for c in entry.claims.values() if not c.binding.is_tombstone),
                        key=lambda c: (not c.credentialed, c.order))
        return tuple(RemoteBinding(
            c.binding,
            tuple(r.attachment for r in sorted(c.relays.values(), key=lambda r: -r.lapse_at))
            if reachable else (), c.expires_at) for c in claims)

    def is_duplicate(self, aor: str, record: DhtRecord) -> bool:
        """This exact attachment (hence this exact binding) is merged already."""
        entry = self._aors.get(aor)
        claim = entry.claims.get(record.binding.record_id) if entry is not None else None
        if claim is None or claim.binding.seq != record.binding.seq:
            return False
        relay = claim.relays.get(record.attachment.relay_key)
        return (relay is not None
                and relay.attachment.signature == record.attachment.signature
                and relay.attachment.signed_bytes == record.attachment.signed_bytes)

    # ------------------------------------------------------------ merge
    def merge(self, aor: str, record: DhtRecord, now: float, wall_now: float, *,
              credentialed: bool, remembered: FreshEntry | None
              ) -> tuple[MergeOutcome | RecordReject, StateChange | None]:
        """Merge a verified record (the caller verified it). The outcome, and the claim's
        state change when its reachability changed."""
        binding, att = record.binding, record.attachment
        entry = self.entry(aor)
        claim = entry.claims.get(binding.record_id)
        if claim is not None and binding.seq < claim.binding.seq:
            return RecordReject.STALE, None
        life_s = binding_life_left_s(binding, wall_now, remembered)
        if life_s <= 0:
            return RecordReject.EXPIRED, None
        att_left_s = attachment_life_left_s(att, wall_now)
        if att_left_s <= 0 and not binding.is_tombstone:
            return RecordReject.ATTACH_EXPIRED, None
        was_reachable = claim is not None and bool(claim.relays)
        was_live = claim is not None and not claim.binding.is_tombstone
        if claim is None:
            rank = 2 if credentialed else 1 if remembered is not None else 0
            if len(entry.claims) >= self.max_claims and not self._make_room(entry, rank):
                return RecordReject.CLAIMS_FULL, None
            self._order += 1
            claim = _Claim(binding, now + life_s, credentialed, self._order, rank=rank)
            entry.claims[binding.record_id] = claim
        elif binding.seq > claim.binding.seq:
            claim.binding, claim.expires_at, claim.credentialed = (binding, now + life_s,
                                                                   credentialed)
            claim.rank = max(claim.rank, 2 if credentialed else 1)
            claim.relays.clear()  # they attached the older binding
        entry.negative_until = 0.0
        if binding.is_tombstone:
            # kept until its hold ends, so that older copies stay refused
            self._schedule(entry)
            if not was_live:
                return MergeOutcome.CHANGED, None
            return MergeOutcome.CHANGED, StateChange(aor, binding, RemoteState.WITHDRAWN, ())
        outcome = self._attach(claim, att, now + min(att_left_s, life_s))
        self._schedule(entry)
        if isinstance(outcome, RecordReject) or was_reachable:
            return outcome, None
        return outcome, StateChange(aor, binding, RemoteState.REACHABLE, _relay_ids(claim))

    def _attach(self, claim: _Claim, att: Attachment,
                lapse_at: float) -> MergeOutcome | RecordReject:
        relay = claim.relays.get(att.relay_key)
        if relay is not None:
            if att.seq <= relay.attachment.seq:
                return MergeOutcome.DUPLICATE
            relay.attachment, relay.lapse_at = att, max(relay.lapse_at, lapse_at)
            return MergeOutcome.REFRESHED
        if len(claim.relays) >= self.max_relays:
            key, soonest = min(claim.relays.items(), key=lambda kv: kv[1].lapse_at)
            if soonest.lapse_at >= lapse_at:
                return RecordReject.RELAYS_FULL
            del claim.relays[key]
        claim.relays[att.relay_key] = _Relay(att, lapse_at)
        return MergeOutcome.CHANGED

    def _make_room(self, entry: RemoteAor, rank: int) -> bool:
        """Room for a new claim: a tombstone or unreachable claim goes first; else the
        newcomer displaces the newest claim of a lower rank (credentialed 2, a key this
        node accepted before 1, others 0), or is refused (the first claims hold, as in
        gossip): a flood of fresh keys cannot push out a key this node knew."""
        claims = entry.claims
        victim = next((rid for rid, c in claims.items()
                       if c.binding.is_tombstone or not c.relays), None)
        if victim is None:
            victim = max((rid for rid, c in claims.items() if c.rank < rank),
                         key=lambda rid: claims[rid].order, default=None)
        if victim is None:
            return False
        del claims[victim]
        return True

    def forget_refused(self, refused: Callable[[Binding], bool],
                       relay_refused: Callable[[bytes], bool]) -> tuple[list[StateChange], int]:
        """Drop the claims whose binding is now ``refused`` and the relays whose key is
        ``relay_refused`` (trust records changed). The state changes of live claims, and
        how many claims and relays left."""
        changes: list[StateChange] = []
        forgotten = 0
        for aor, entry in list(self._aors.items()):
            before = forgotten
            for rid, claim in list(entry.claims.items()):
                if refused(claim.binding):
                    del entry.claims[rid]
                    forgotten += 1
                    if not claim.binding.is_tombstone:
                        changes.append(StateChange(aor, claim.binding, RemoteState.REVOKED, ()))
                    continue
                gone = [key for key in claim.relays if relay_refused(key)]
                for key in gone:
                    del claim.relays[key]
                forgotten += len(gone)
                if gone and not claim.relays:
                    changes.append(StateChange(aor, claim.binding, RemoteState.UNREACHABLE, ()))
            if forgotten == before:
                continue
            if not entry.claims and not self.pinned(aor):
                del self._aors[aor]
            else:
                self._schedule(entry)
        return changes, forgotten

    # ------------------------------------------------------------ time
    def next_timer(self) -> float | None:
        heap = self._heap
        while heap:
            when, aor = heap[0]
            entry = self._aors.get(aor)
            if entry is not None and entry.next_at == when:
                return when
            heapq.heappop(heap)
        return None

    def on_timer(self, now: float) -> list[StateChange]:
        """Lapse attachments and expire claims whose time is up."""
        changes: list[StateChange] = []
        while (when := self.next_timer()) is not None and when <= now:
            _, aor = heapq.heappop(self._heap)
            entry = self._aors[aor]
            for rid, claim in list(entry.claims.items()):
                changes.extend(self._lapse(entry, rid, claim, now))
            entry.next_at = None
            if entry.claims:
                self._schedule(entry)
            elif entry.negative_until <= now and not self.pinned(aor):
                del self._aors[aor]
        return changes

    def _lapse(self, entry: RemoteAor, rid: bytes, claim: _Claim,
               now: float) -> list[StateChange]:
        if claim.expires_at <= now:
            del entry.claims[rid]
            if claim.binding.is_tombstone:
                return []
            return [StateChange(entry.aor, claim.binding, RemoteState.EXPIRED, ())]
        had = bool(claim.relays)
        for key in [k for k, r in claim.relays.items() if r.lapse_at <= now]:
            del claim.relays[key]
        if had and not claim.relays:
            return [StateChange(entry.aor, claim.binding, RemoteState.UNREACHABLE, ())]
        return []

    def _schedule(self, entry: RemoteAor) -> None:
        times = [c.expires_at for c in entry.claims.values()]
        times += [r.lapse_at for c in entry.claims.values() for r in c.relays.values()]
        nxt = min(times, default=None)
        if nxt == entry.next_at:
            return
        entry.next_at = nxt
        if nxt is not None:
            heapq.heappush(self._heap, (nxt, entry.aor))
            if len(self._heap) > 2 * len(self._aors) + LAPSE_HEAP_SLACK:
                self._heap = [(e.next_at, a) for a, e in self._aors.items()
                              if e.next_at is not None]
                heapq.heapify(self._heap)


def _relay_ids(claim: _Claim) -> tuple[bytes, ...]:
    return tuple(r.attachment.relay for r in claim.relays.values())
