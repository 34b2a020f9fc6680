"""The binding table and its merge rule (the same in gossip and DHT mode).

* Per (AoR, key) the highest sequence number wins, never arrival order; an equal sequence
  is a duplicate, a lower one a stale replay. The highest sequence ever accepted is
  remembered after the record leaves the table, and across restarts
  (:class:`~meshcomm.location.freshness.FreshnessMemory`): a lower one stays a stale replay.
* ``lifetime_s == 0`` is a de-registration, kept as a tombstone for ``hold_s`` so that an
  older copy still travelling the mesh cannot resurrect the binding.
* Expiry is counted from receipt (minus the age relays report), but never past what the
  origin signed: the signed end (``issued_at`` + lifetime, or + hold for a tombstone) plus
  ``CLOCK_SKEW_TOLERANCE_S`` on our wall clock, nor past ``first seen + lifetime`` for a
  sequence this node accepted before. A binding whose signed end is further past than the
  tolerance is rejected (``expired``), as is one dated implausibly far in the future.
* Trust policy ``open``: one key holds an AoR; other keys' claims are stored as
  ``conflict``. The established holder wins (:mod:`meshcomm.location.holder`): a node
  that has held a claim for ``HOLDER_LOCK_S`` keeps it until it expires or is withdrawn;
  a node that joined late adopts the claim a majority of its neighbours report holding
  longest; without reports the first claim to arrive holds. Policy ``agency``: a binding
  must carry a credential signed by a trusted agency key.
* The table is bounded (``max_records``) and an AoR holds at most ``MAX_CLAIMS_PER_AOR``
  keys' claims. A full table makes room for a newcomer only by evicting one of lower
  standing (:mod:`meshcomm.location.standing`): own records are never evicted; credentialed
  records, tombstones of records we held, and established records whose origin is reachable
  outrank newcomers; a newcomer with nothing to displace is refused (``table_full``).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from meshcomm.errors import TrustError
from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, Binding
from meshcomm.location.freshness import FreshEntry, FreshnessMemory
from meshcomm.location.holder import HOLDER_LOCK_S, UNSETTLED_MAX_S, HolderVotes
from meshcomm.location.standing import NEWCOMER_TIERS, StandingIndex, Tier
from meshcomm.security.roles import DEFAULT_ROLE_ADDRESSES, check_trust_field, roles_for
from meshcomm.security.verify import SignatureVerifier
from meshcomm.wire import limits

DIGEST_BUCKETS = 16
#: Default bound of the table (records and tombstones).
DEFAULT_MAX_RECORDS = 4096
#: Keys whose claims on one AoR are kept at once (one responder may have a few devices).
MAX_CLAIMS_PER_AOR = 16
#: Stale expiry-heap entries tolerated beyond twice the table size before a rebuild.
EXPIRY_HEAP_SLACK = 64


class TrustMode(StrEnum):
    OPEN = "open"
    AGENCY = "agency"


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    mode: TrustMode = TrustMode.OPEN
    agency_keys: frozenset[bytes] = frozenset()
    #: Role addresses (user part) and the credential roles that may hold them
    #: (:mod:`meshcomm.security.roles`); pairs, so that the policy stays hashable.
    role_addresses: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
        DEFAULT_ROLE_ADDRESSES.items())

    def role_table(self) -> dict[str, tuple[str, ...]]:
        return dict(self.role_addresses)


class BindingState(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    CONFLICT = "conflict"
    #: The provisional holder of an AoR several keys claim, while this node has neither
    #: held it long (HOLDER_LOCK_S) nor heard a majority of neighbours back it; not used
    #: for routing until settled (at most UNSETTLED_MAX_S after the contest began).
    CONTESTED = "contested"


class MergeOutcome(Enum):
    NEW = "new"
    UPDATED = "updated"
    DEREGISTERED = "deregistered"
    DUPLICATE = "duplicate"
    STALE = "stale"
    REJECTED = "rejected"


@dataclass(slots=True)
class StoredBinding:
    binding: Binding
    received_at: float
    expires_at: float
    state: BindingState
    claim_order: int = field(default=0)
    #: A valid agency credential vouched for the binding when it arrived (our wall clock).
    credentialed: bool = False
    #: When this (AoR, key) record was first admitted (kept across updates).
    admitted_at: float = 0.0
    #: Since when this node has held this claim as the AoR's holder (open policy), or None.
    holder_since: float | None = None
    #: The signed hand-over time of a role-address claim (-1: it carries none).
    handover_from: int = -1

    def age_s(self, now: float) -> float:
        """Age to report when passing this binding on: lifetime already used up."""
        life = self.binding.hold_s if self.binding.is_tombstone else self.binding.lifetime_s
        return max(0.0, life - (self.expires_at - now))


@dataclass(frozen=True, slots=True)
class MergeResult:
    outcome: MergeOutcome
    stored: StoredBinding | None = None
    reason: str = ""
    previous_state: BindingState | None = None

    @property
    def changed(self) -> bool:
        return self.outcome in (MergeOutcome.NEW, MergeOutcome.UPDATED,
                                MergeOutcome.DEREGISTERED)


def _entry_hash(record_id: bytes, seq: int) -> int:
    digest = hashlib.sha256(record_id + seq.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big")


def bucket_of(record_id: bytes) -> int:
    return record_id[0] % DIGEST_BUCKETS


def _remaining_life_s(binding: Binding, wall_now: float, age_s: float,
                      remembered: FreshEntry | None) -> float:
    """Life left: from receipt minus the reported age, capped by the signed end (plus the
    skew tolerance) and, for a sequence accepted before, by first acceptance + lifetime."""
    life = binding.life_s
    left = min(life - age_s, binding.signed_end + CLOCK_SKEW_TOLERANCE_S - wall_now)
    if remembered is not None and remembered.seq == binding.seq:
        left = min(left, remembered.first_wall + life - wall_now)
    return left


def _locked(stored: StoredBinding, now: float) -> bool:
    """Held long enough that reports can no longer change the holder."""
    return stored.holder_since is not None and now - stored.holder_since >= HOLDER_LOCK_S


class LocationTable:
    """Bindings known to one node, with the merge rule, trust policy and digests."""

    def __init__(self, incident: str, policy: TrustPolicy, verifier: SignatureVerifier, *,
                 freshness: FreshnessMemory | None = None,
                 max_records: int = DEFAULT_MAX_RECORDS):
        self.incident = incident
        #: highest accepted sequence per record id, kept beyond the table (see there)
        self.freshness = freshness if freshness is not None else FreshnessMemory()
        self.policy = policy
        self._verifier = verifier
        self._records: dict[bytes, StoredBinding] = {}
        self._by_aor: dict[str, set[bytes]] = {}
        self._buckets = [0] * DIGEST_BUCKETS
        self._bucket_ids: list[set[bytes]] = [set() for _ in range(DIGEST_BUCKETS)]
        self._expiry: list[tuple[float, bytes, int]] = []
        #: (when, AoR key): a contested AoR to settle again once its grace ends
        self._resettle: list[tuple[float, str]] = []
        self._claims = 0
        self.max_records = max_records
        #: Whether a node id has a live route or is a neighbour, and whether it is a
        #: neighbour (the overlay sets these; eviction asks).
        self.reachable: Callable[[bytes, float], bool] = lambda _node, _now: False
        self.adjacent: Callable[[bytes], bool] = lambda _node: False
        self._own_keys: set[bytes] = set()
        self._standing = StandingIndex(
            lambda rid: self._records[rid].admitted_at, self._record_reachable,
            lambda rid: self.adjacent(self._records[rid].binding.node_id))
        self._votes = HolderVotes()
        #: Records evicted to make room (counted; the overlay reports it).
        self.evicted = 0

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[StoredBinding]:
        return iter(list(self._records.values()))

    def get(self, record_id: bytes) -> StoredBinding | None:
        return self._records.get(record_id)

    def remove(self, record_id: bytes, now: float) -> StoredBinding | None:
        """Take a record out at once (a revoked signer's, :mod:`meshcomm.overlay.trustsync`);
        its sequence stays remembered, so a replay of it is still stale."""
        stored = self._records.get(record_id)
        if stored is None:
            return None
        self._remove(stored)
        self._settle_aor(stored.binding.aor, now)
        self._forget_if_unclaimed(stored.binding.aor)
        return stored

    def lookup(self, aor: str) -> list[StoredBinding]:
        """Usable bindings for an AoR: live, not tombstones, not in conflict, not a
        provisional holder of a contest this node cannot settle yet."""
        found = [self._records[r] for r in self._by_aor.get(aor.lower(), ())]
        return [s for s in found
                if not s.binding.is_tombstone and s.state is not BindingState.CONFLICT
                and s.state is not BindingState.CONTESTED]

    def lookup_all(self, aor: str) -> list[StoredBinding]:
        """Every claim on ``aor`` (conflicts, contested and tombstones too)."""
        return [self._records[r] for r in self._by_aor.get(aor.lower(), ())]

    def bucket_hashes(self) -> list[int]:
        return list(self._buckets)

    def bucket_entries(self, bucket: int) -> list[tuple[bytes, int]]:
        records = self._records
        return sorted((rid, records[rid].binding.seq) for rid in self._bucket_ids[bucket])

    def next_expiry(self) -> float | None:
        """Earliest time :meth:`expire` has work: an expiry or a contest to settle."""
        first = self._next_record_expiry()
        if self._resettle and (first is None or self._resettle[0][0] < first):
            return self._resettle[0][0]
        return first

    def _next_record_expiry(self) -> float | None:
        while self._expiry:
            when, rid, seq = self._expiry[0]
            stored = self._records.get(rid)
            if stored is not None and stored.binding.seq == seq and stored.expires_at == when:
                return when
            heapq.heappop(self._expiry)
        return None

    # ----------------------------------------------------------------- merge
    def offer(self, binding: Binding, now: float, wall_now: float,
              age_s: float = 0.0) -> MergeResult:
        """Merge one received (or locally made) binding. Never raises on remote input."""
        # Authenticity first, so that a forged or foreign copy is counted as such and never
        # as a duplicate or stale replay (the verifier caches, so true duplicates stay cheap).
        reason = self._authenticity_reason(binding)
        if reason:
            return MergeResult(MergeOutcome.REJECTED, reason=reason)
        existing = self._records.get(binding.record_id)
        if existing is not None:
            if binding.seq == existing.binding.seq:
                return MergeResult(MergeOutcome.DUPLICATE, existing)
            if binding.seq < existing.binding.seq:
                return MergeResult(MergeOutcome.STALE, existing, reason="replayed_old_seq")
        remembered = self.freshness.floor(binding.record_id, wall_now)
        if remembered is not None and binding.seq < remembered.seq:
            return MergeResult(MergeOutcome.STALE, existing, reason="replayed_old_seq")
        reason = self._reject_reason(binding, wall_now, age_s)
        if reason:
            return MergeResult(MergeOutcome.REJECTED, reason=reason)
        try:
            credentialed, handover_from = self._credential_ok(binding, wall_now)
        except TrustError as exc:
            return MergeResult(MergeOutcome.REJECTED, reason=exc.reason)
        left_s = _remaining_life_s(binding, wall_now, age_s, remembered)
        if left_s <= 0:
            return MergeResult(MergeOutcome.REJECTED, reason="expired")
        if existing is None:
            reason = self._make_room(binding, credentialed, now)
            if reason:
                return MergeResult(MergeOutcome.REJECTED, reason=reason)
        stored = StoredBinding(binding, now, now + left_s, BindingState.VERIFIED,
                               credentialed=credentialed, admitted_at=now,
                               handover_from=handover_from)
        self.freshness.accepted(binding, wall_now, credentialed=credentialed)
        previous = existing.state if existing else None
        tier = self._tier_for(stored, existing, now)
        if existing is not None:
            stored.claim_order = existing.claim_order
            stored.admitted_at = existing.admitted_at
            stored.holder_since = existing.holder_since
            self._remove(existing)
        else:
            self._claims += 1
            stored.claim_order = self._claims
        self._insert(stored)
        self._standing.place(binding.record_id, tier)
        self._settle_aor(binding.aor, now)
        outcome = (MergeOutcome.NEW if existing is None else
                   MergeOutcome.DEREGISTERED if binding.is_tombstone else MergeOutcome.UPDATED)
        return MergeResult(outcome, stored, previous_state=previous)

    def _authenticity_reason(self, binding: Binding) -> str:
        if binding.envelope.incident != self.incident:
            return "wrong_incident"
        if not binding.envelope.verify(self._verifier):
            return "bad_signature"
        return ""

    def _reject_reason(self, binding: Binding, wall_now: float, age_s: float) -> str:
        if binding.issued_at > wall_now + limits.MAX_FUTURE_SKEW_S:
            return "future_dated"
        if binding.life_s - age_s <= 0:
            return "expired"
        if binding.signed_end + CLOCK_SKEW_TOLERANCE_S <= wall_now:
            return "expired"
        return ""

    def _credential_ok(self, binding: Binding, wall_now: float) -> tuple[bool, int]:
        """Whether a valid agency credential vouches for the binding (pattern and role,
        :mod:`meshcomm.security.roles`), and the time of the hand-over it carries (-1).

        Raises TrustError when the agency policy requires one and it is missing or bad."""
        reason, handover_from = self._trust_check(binding.aor, binding.key, binding.credential,
                                                  wall_now)
        if reason and self.policy.mode is TrustMode.AGENCY:
            raise TrustError(f"binding refused: {reason}", reason=reason)
        return (False, -1) if reason else (True, handover_from)

    def trust_reason(self, aor: str, key: bytes, field: bytes | None, wall_now: float) -> str:
        """Why a binding of ``aor`` by ``key`` with credential field ``field`` would not be
        vouched for ('' if it would): the gateway asks before answering a REGISTER."""
        return self._trust_check(aor, key, field, wall_now)[0]

    def claim_refusal(self, aor: str, key: bytes, field: bytes | None, wall_now: float) -> str:
        """Why this table would not let ``key`` hold ``aor`` with credential field
        ``field`` ('' if it would): the agency policy's checks, and a role address another
        key holds with a hand-over at least as recent. The gateway answers a REGISTER
        with 403 instead of 200 when this is not empty."""
        if self.policy.mode is not TrustMode.AGENCY:
            return ""
        reason, handover_from = self._trust_check(aor, key, field, wall_now)
        if reason:
            return reason
        holder = self.role_holder(aor)
        if holder is not None and holder.binding.key != key and (
                holder.handover_from >= handover_from):
            return "role_address_held"
        return ""

    def _trust_check(self, aor: str, key: bytes, field: bytes | None,
                     wall_now: float) -> tuple[str, int]:
        if field is None:
            return "no_credential", -1
        try:
            _, handover = check_trust_field(
                field, trusted_agency_keys=self.policy.agency_keys,
                role_table=self.policy.role_table(), device_key=key, aor=aor,
                wall_time_s=wall_now)
        except TrustError as exc:
            return exc.reason or "bad_credential", -1
        if handover is None or roles_for(aor, self.policy.role_table()) is None:
            return "", -1
        if not self._may_hand_over(aor, handover.signer_key, key, handover.from_time):
            return "handover_signer", -1
        return "", handover.from_time

    def _may_hand_over(self, aor: str, signer: bytes, new_key: bytes, from_time: int) -> bool:
        """A hand-over is signed by a trusted agency key or by the *current holder* of the
        address (the holder among the other keys' claims: a losing claimant, or a holder
        that already handed the address on, cannot hand it to anyone). A node that has not
        seen the holder's binding yet refuses it; anti-entropy offers the new holder's
        binding again once the holder's has arrived. A refresh of a claim already holding
        by this very hand-over keeps it, whatever became of the old holder's claim."""
        if signer in self.policy.agency_keys:
            return True
        claims = [self._records[r] for r in self._by_aor.get(aor.lower(), ())]
        if any(s.binding.key == new_key and s.handover_from == from_time and s.credentialed
               and not s.binding.is_tombstone for s in claims):
            return True
        holder = self._role_holder(aor, [s for s in claims if s.binding.key != new_key])
        return holder is not None and holder.binding.key == signer

    def role_holder(self, aor: str) -> StoredBinding | None:
        """The claim holding a role address under the agency policy (None: not one, or
        nobody holds it): the latest hand-over, else the earliest claim."""
        return self._role_holder(aor, [self._records[r] for r in self._by_aor.get(aor.lower(), ())])

    def _role_holder(self, aor: str, claims: list[StoredBinding]) -> StoredBinding | None:
        if roles_for(aor, self.policy.role_table()) is None:
            return None
        live = [s for s in claims if not s.binding.is_tombstone and s.credentialed]
        return max(live, key=lambda s: (s.handover_from, -s.claim_order), default=None)

    def _settle_aor(self, aor: str, now: float) -> None:
        """Recompute holder/conflict states of every live claim on ``aor``."""
        ids = self._by_aor.get(aor.lower(), ())
        if (len(ids) == 1 and self.policy.mode is TrustMode.OPEN
                and not self._votes.has_votes(aor.lower())):  # the common case
            only = self._records[next(iter(ids))]
            if only.binding.is_tombstone:
                only.state, only.holder_since = BindingState.VERIFIED, None
            else:
                only.state = self._open_holder_state(only)
                if only.holder_since is None:
                    only.holder_since = now
            return
        claims = sorted((self._records[r] for r in ids), key=lambda s: s.claim_order)
        if self.policy.mode is TrustMode.AGENCY:
            # every credentialed key is accepted (one responder, many devices), except on a
            # role address: one holder (security.roles), the other claims are conflicts
            holder = self._role_holder(aor, claims)
            for s in claims:
                s.state = (BindingState.CONFLICT if holder is not None and s is not holder
                           and not s.binding.is_tombstone else BindingState.VERIFIED)
            return
        live = [s for s in claims if not s.binding.is_tombstone]
        holder = self._choose_holder(aor.lower(), live, now)
        settle_at = self._unsettled_until(aor.lower(), live, holder, now)
        for s in claims:
            if s.binding.is_tombstone:
                s.state = BindingState.VERIFIED
                s.holder_since = None
            elif s is holder:
                s.state = (self._open_holder_state(s) if settle_at is None
                           else BindingState.CONTESTED)
                if s.holder_since is None:
                    s.holder_since = now
            else:
                s.state = BindingState.CONFLICT
                s.holder_since = None

    def _unsettled_until(self, aor_key: str, live: list[StoredBinding],
                         holder: StoredBinding | None, now: float) -> float | None:
        """When a provisional holder settles by arrival order (None: it is settled now).

        A holder is settled when it is the only claim, was held for HOLDER_LOCK_S, or a
        majority of the reporting neighbours back it. Otherwise a late joiner would route
        to whichever claim reached it first (an attacker re-flooding a claim); it waits
        for its neighbours' reports instead, at most UNSETTLED_MAX_S from the moment the
        contest began here (the arrival of the second claim, so fresh attacker keys cannot
        prolong it)."""
        if (holder is None or _locked(holder, now) or holder.binding.key in self._own_keys
                or (len(live) < 2 and not self._votes.has_votes(aor_key))):
            return None
        rid = holder.binding.record_id
        if self._votes.standing_s(aor_key, [rid], now)[0] >= 0:
            return None
        # a sole claim that neighbours pass on without holding it: contested since it came
        began = sorted(s.admitted_at for s in live)[min(1, len(live) - 1)]
        until = began + UNSETTLED_MAX_S
        if now >= until:
            return None
        if len(self._resettle) < self.max_records:
            heapq.heappush(self._resettle, (until, aor_key))
        return until

    def _choose_holder(self, aor_key: str, live: list[StoredBinding],
                       now: float) -> StoredBinding | None:
        """The holder by the rule of :mod:`meshcomm.location.holder` (``live`` is in
        arrival order)."""
        if not live:
            return None
        current = next((s for s in live if s.holder_since is not None), None)
        if len(live) == 1 or (current is not None and _locked(current, now)):
            return current if current is not None else live[0]
        standing = self._votes.standing_s(aor_key, [s.binding.record_id for s in live], now)
        best = max(range(len(live)), key=lambda i: (standing[i], live[i] is current, -i))
        if standing[best] >= 0:
            return live[best]
        return current if current is not None else live[0]

    # ----------------------------------------------------------------- holder reports
    def held_s(self, stored: StoredBinding, now: float) -> int:
        """How long this node has held ``stored`` as its AoR's holder (-1: it does not),
        reported to neighbours in anti-entropy (open policy)."""
        if (stored.holder_since is None or self.policy.mode is not TrustMode.OPEN
                or stored.state is BindingState.CONTESTED):
            return -1
        return int(min(now - stored.holder_since, limits.MAX_HELD_REPORT_S))

    def report_holder(self, reporter: bytes, record_id: bytes, held_s: int,
                      now: float) -> bool:
        """A neighbour ``reporter`` (checked by the caller) says it has held ``record_id``
        for ``held_s`` (-1: it does not hold it); True if our holder changed."""
        stored = self._records.get(record_id)
        if (stored is None or stored.binding.is_tombstone
                or self.policy.mode is not TrustMode.OPEN):
            return False
        aor = stored.binding.aor
        if (len(self._by_aor[aor.lower()]) < 2 and held_s >= 0
                and not self._votes.has_votes(aor.lower())):
            return False  # uncontested and vouched for: nothing to decide
        # (a sole claim a neighbour passes on without holding it is a vote against it)
        if not self._votes.report(aor.lower(), reporter, record_id, held_s, now):
            return False
        before = self._holder_of(aor)
        self._settle_aor(aor, now)
        return self._holder_of(aor) is not before

    def contested(self, aor: str, now: float) -> list[bytes]:
        """Record ids of the live claims on ``aor`` while its holder is still open to
        neighbours' reports (several claims, holder not locked); else []."""
        ids = self._by_aor.get(aor.lower(), ())
        if len(ids) < 2 or self.policy.mode is not TrustMode.OPEN:
            return []
        live = [self._records[r] for r in ids
                if not self._records[r].binding.is_tombstone]
        if len(live) < 2:
            return []
        holder = self._holder_of(aor)
        if holder is not None and _locked(holder, now):
            return []
        return [s.binding.record_id for s in live]

    def _holder_of(self, aor: str) -> StoredBinding | None:
        for rid in self._by_aor.get(aor.lower(), ()):
            stored = self._records[rid]
            if stored.holder_since is not None:
                return stored
        return None

    # ----------------------------------------------------------------- bound
    def protect_key(self, key: bytes) -> None:
        """Records signed by ``key`` (this node's own) are never evicted."""
        self._own_keys.add(key)
        for stored in self._records.values():
            if stored.binding.key == key:
                self._standing.place(stored.binding.record_id, Tier.OWN)

    def _tier_for(self, stored: StoredBinding, existing: StoredBinding | None,
                  now: float) -> Tier:
        if stored.binding.key in self._own_keys:
            return Tier.OWN
        if stored.credentialed:
            return Tier.CREDENTIALED
        if existing is None:
            return self._standing.newcomer_tier(now)
        old = self._standing.tier(existing.binding.record_id)
        if old is None or old in NEWCOMER_TIERS:
            if now - existing.admitted_at < self._standing.probation_s:
                return old if old is not None else Tier.PROBATION
            old = Tier.ESTABLISHED
        if stored.binding.is_tombstone:
            return Tier.TOMBSTONE  # a de-registration of a record that had standing here
        return Tier.ESTABLISHED if old is Tier.TOMBSTONE else old

    def _make_room(self, binding: Binding, credentialed: bool, now: float) -> str:
        """Room for a record new to the table: '' or why it is refused."""
        tier = (Tier.OWN if binding.key in self._own_keys else
                Tier.CREDENTIALED if credentialed else Tier.PROBATION)
        claims = self._by_aor.get(binding.aor.lower())
        if claims is not None and len(claims) >= MAX_CLAIMS_PER_AOR:
            if tier < Tier.CREDENTIALED:
                return "aor_claims_full"
            newest = max((self._records[r] for r in claims
                          if (self._standing.tier(r) or Tier.OWN) < Tier.CREDENTIALED),
                         key=lambda s: s.claim_order, default=None)
            if newest is None:
                return "aor_claims_full"
            self._evict(newest.binding.record_id, now)
        if len(self._records) < self.max_records:
            return ""
        victim = self._standing.victim(tier, now)
        if victim is None:
            return "table_full"
        self._evict(victim, now)
        return ""

    def _evict(self, rid: bytes, now: float) -> None:
        stored = self._records[rid]
        self._remove(stored)
        self.evicted += 1
        self._settle_aor(stored.binding.aor, now)
        self._forget_if_unclaimed(stored.binding.aor)

    def _forget_if_unclaimed(self, aor: str) -> None:
        if aor.lower() not in self._by_aor:
            self._votes.forget(aor.lower())

    def _record_reachable(self, rid: bytes, now: float) -> bool:
        return self.reachable(self._records[rid].binding.node_id, now)

    def _open_holder_state(self, stored: StoredBinding) -> BindingState:
        if not self.policy.agency_keys or stored.credentialed:
            return BindingState.VERIFIED
        return BindingState.UNVERIFIED

    # ----------------------------------------------------------------- expiry
    def expire(self, now: float) -> list[StoredBinding]:
        """Remove bindings and tombstones whose time is up; return them. Contests whose
        grace is over are settled (by arrival order when no majority appeared)."""
        gone: list[StoredBinding] = []
        while self._resettle and self._resettle[0][0] <= now:
            _, aor_key = heapq.heappop(self._resettle)
            if aor_key in self._by_aor:
                self._settle_aor(aor_key, now)
        while self._expiry and self._expiry[0][0] <= now:
            when, rid, seq = heapq.heappop(self._expiry)
            stored = self._records.get(rid)
            if stored is None or stored.binding.seq != seq or stored.expires_at != when:
                continue
            self._remove(stored)
            gone.append(stored)
            self._settle_aor(stored.binding.aor, now)
            self._forget_if_unclaimed(stored.binding.aor)
        return gone

    def _insert(self, stored: StoredBinding) -> None:
        rid = stored.binding.record_id
        self._records[rid] = stored
        self._by_aor.setdefault(stored.binding.aor.lower(), set()).add(rid)
        self._buckets[bucket_of(rid)] ^= _entry_hash(rid, stored.binding.seq)
        self._bucket_ids[bucket_of(rid)].add(rid)
        heapq.heappush(self._expiry, (stored.expires_at, rid, stored.binding.seq))
        if len(self._expiry) > 2 * len(self._records) + EXPIRY_HEAP_SLACK:
            # Entries of replaced or evicted records wait in the heap until their time; a
            # flood churning the table must not grow it: rebuild from the live records.
            self._expiry = [(s.expires_at, r, s.binding.seq) for r, s in self._records.items()]
            heapq.heapify(self._expiry)

    def _remove(self, stored: StoredBinding) -> None:
        rid = stored.binding.record_id
        del self._records[rid]
        key = stored.binding.aor.lower()
        ids = self._by_aor.get(key)
        if ids is not None:
            ids.discard(rid)
            if not ids:
                del self._by_aor[key]
        self._buckets[bucket_of(rid)] ^= _entry_hash(rid, stored.binding.seq)
        self._bucket_ids[bucket_of(rid)].discard(rid)
        self._standing.discard(rid)
