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
* Trust policy ``open``: the first key to claim an AoR holds it until its binding expires
  or is withdrawn; later claims by other keys are stored as ``conflict``. Policy
  ``agency``: a binding must carry a credential signed by a trusted agency key.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from meshcomm.errors import DecodeError, TrustError
from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, Binding
from meshcomm.location.freshness import FreshEntry, FreshnessMemory
from meshcomm.security.credentials import check_credential, decode_credential_untrusted
from meshcomm.security.verify import SignatureVerifier
from meshcomm.wire import limits

DIGEST_BUCKETS = 16


class TrustMode(StrEnum):
    OPEN = "open"
    AGENCY = "agency"


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    mode: TrustMode = TrustMode.OPEN
    agency_keys: frozenset[bytes] = frozenset()


class BindingState(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    CONFLICT = "conflict"


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


class LocationTable:
    """Bindings known to one node, with the merge rule, trust policy and digests."""

    def __init__(self, incident: str, policy: TrustPolicy, verifier: SignatureVerifier, *,
                 freshness: FreshnessMemory | None = None):
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
        self._claims = 0

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[StoredBinding]:
        return iter(list(self._records.values()))

    def get(self, record_id: bytes) -> StoredBinding | None:
        return self._records.get(record_id)

    def lookup(self, aor: str) -> list[StoredBinding]:
        """Usable bindings for an AoR: live, not tombstones, not in conflict."""
        found = [self._records[r] for r in self._by_aor.get(aor.lower(), ())]
        return [s for s in found
                if not s.binding.is_tombstone and s.state is not BindingState.CONFLICT]

    def bucket_hashes(self) -> list[int]:
        return list(self._buckets)

    def bucket_entries(self, bucket: int) -> list[tuple[bytes, int]]:
        records = self._records
        return sorted((rid, records[rid].binding.seq) for rid in self._bucket_ids[bucket])

    def next_expiry(self) -> float | None:
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
            credentialed = self._credential_ok(binding, wall_now)
        except TrustError as exc:
            return MergeResult(MergeOutcome.REJECTED, reason=exc.reason)
        left_s = _remaining_life_s(binding, wall_now, age_s, remembered)
        if left_s <= 0:
            return MergeResult(MergeOutcome.REJECTED, reason="expired")
        stored = StoredBinding(binding, now, now + left_s, BindingState.VERIFIED,
                               credentialed=credentialed)
        self.freshness.accepted(binding, wall_now, credentialed=credentialed)
        previous = existing.state if existing else None
        if existing is not None:
            stored.claim_order = existing.claim_order
            self._remove(existing)
        else:
            self._claims += 1
            stored.claim_order = self._claims
        self._insert(stored)
        self._settle_aor(binding.aor)
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

    def _credential_ok(self, binding: Binding, wall_now: float) -> bool:
        """True if a valid agency credential vouches for the binding.

        Raises TrustError when the agency policy requires one and it is missing or bad.
        """
        required = self.policy.mode is TrustMode.AGENCY
        if binding.credential is None:
            if required:
                raise TrustError("binding carries no credential", reason="no_credential")
            return False
        try:
            cred = decode_credential_untrusted(binding.credential)
            check_credential(cred, trusted_agency_keys=self.policy.agency_keys,
                             device_key=binding.key, aor=binding.aor, wall_time_s=wall_now)
        except (DecodeError, TrustError) as exc:
            if required:
                reason = exc.reason if isinstance(exc, TrustError) else "bad_credential"
                raise TrustError(str(exc), reason=reason) from exc
            return False
        return True

    def _settle_aor(self, aor: str) -> None:
        """Recompute holder/conflict states of every live claim on ``aor``."""
        claims = sorted((self._records[r] for r in self._by_aor.get(aor.lower(), ())),
                        key=lambda s: s.claim_order)
        if self.policy.mode is TrustMode.AGENCY:
            for s in claims:  # every credentialed key is accepted (one responder, many devices)
                s.state = BindingState.VERIFIED
            return
        holder: bytes | None = None
        for s in claims:
            if s.binding.is_tombstone:
                s.state = BindingState.VERIFIED
                continue
            if holder is None or s.binding.key == holder:
                holder = s.binding.key
                s.state = self._open_holder_state(s)
            else:
                s.state = BindingState.CONFLICT

    def _open_holder_state(self, stored: StoredBinding) -> BindingState:
        if not self.policy.agency_keys or stored.credentialed:
            return BindingState.VERIFIED
        return BindingState.UNVERIFIED

    # ----------------------------------------------------------------- expiry
    def expire(self, now: float) -> list[StoredBinding]:
        """Remove bindings and tombstones whose time is up; return them."""
        gone: list[StoredBinding] = []
        while self._expiry and self._expiry[0][0] <= now:
            when, rid, seq = heapq.heappop(self._expiry)
            stored = self._records.get(rid)
            if stored is None or stored.binding.seq != seq or stored.expires_at != when:
                continue
            self._remove(stored)
            gone.append(stored)
            self._settle_aor(stored.binding.aor)
        return gone

    def _insert(self, stored: StoredBinding) -> None:
        rid = stored.binding.record_id
        self._records[rid] = stored
        self._by_aor.setdefault(stored.binding.aor.lower(), set()).add(rid)
        self._buckets[bucket_of(rid)] ^= _entry_hash(rid, stored.binding.seq)
        self._bucket_ids[bucket_of(rid)].add(rid)
        heapq.heappush(self._expiry, (stored.expires_at, rid, stored.binding.seq))

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
