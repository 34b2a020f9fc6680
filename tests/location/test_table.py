"""The binding table: merge rule, expiry, tombstones, trust policies and digests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.location.binding import Binding, binding_from_envelope_untrusted
from meshcomm.location.holder import UNSETTLED_MAX_S
from meshcomm.location.table import (
    DIGEST_BUCKETS,
    BindingState,
    LocationTable,
    MergeOutcome,
    TrustMode,
)
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.wire import limits
from meshcomm.wire.envelope import SIGNATURE_DOMAIN, Envelope

from .helpers import AGENCY, ALICE, BOB, CAROL, ROGUE_AGENCY, WALL, binding, table

AOR = "sip:medic@fire.example"


def offer(t: LocationTable, b: Binding, now: float = 0.0, age_s: float = 0.0,
          wall: float = WALL) -> MergeOutcome:
    return t.offer(b, now, wall, age_s).outcome


def snapshot(t: LocationTable) -> dict[bytes, tuple[int, float, BindingState]]:
    return {s.binding.record_id: (s.binding.seq, s.expires_at, s.state) for s in t}


# ------------------------------------------------------------------ merge rule
def test_outcomes_new_duplicate_stale_updated_deregistered() -> None:
    t = table()
    assert offer(t, binding(ALICE, 5)) is MergeOutcome.NEW
    assert offer(t, binding(ALICE, 5)) is MergeOutcome.DUPLICATE
    stale = t.offer(binding(ALICE, 4), 1.0, WALL)
    assert stale.outcome is MergeOutcome.STALE and stale.reason == "replayed_old_seq"
    assert not stale.changed
    updated = t.offer(binding(ALICE, 6, lifetime_s=90), 2.0, WALL)
    assert updated.outcome is MergeOutcome.UPDATED and updated.changed
    assert updated.previous_state is BindingState.VERIFIED
    assert len(t) == 1 and t.lookup(AOR)[0].binding.seq == 6
    assert t.lookup(AOR)[0].expires_at == 92.0
    assert offer(t, binding(ALICE, 7, lifetime_s=0, hold_s=90)) is MergeOutcome.DEREGISTERED
    assert t.lookup(AOR) == [] and len(t) == 1


offers = st.lists(
    st.tuples(st.sampled_from([ALICE, BOB, CAROL]), st.integers(1, 6),
              st.sampled_from(["sip:a@x", "sip:b@x", "sip:c@x"]), st.booleans()),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(offers, st.randoms(use_true_random=False))
def test_highest_seq_wins_regardless_of_arrival_order(
        spec: list[tuple[Identity, int, str, bool]], rng: object) -> None:
    # One key per AoR, so that open-policy holder choice cannot depend on order either.
    owner = {"sip:a@x": ALICE, "sip:b@x": BOB, "sip:c@x": CAROL}
    bindings = [binding(owner[aor], seq, aor=aor, lifetime_s=0 if gone else 60,
                        hold_s=60 if gone else 0) for _, seq, aor, gone in spec]
    shuffled = list(bindings)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = table(), table()
    for b in bindings:
        offer(first, b)
    for b in shuffled:
        offer(second, b)
    assert snapshot(first) == snapshot(second)
    assert first.bucket_hashes() == second.bucket_hashes()
    best: dict[bytes, int] = {}
    for b in bindings:
        best[b.record_id] = max(best.get(b.record_id, 0), b.seq)
    assert {rid: seq for rid, (seq, _, _) in snapshot(first).items()} == best


@settings(max_examples=40, deadline=None)
@given(st.permutations([binding(k, s, aor=a) for k in (ALICE, BOB) for s in (1, 2, 3)
                        for a in ("sip:a@x", "sip:b@x", "sip:c@x", "sip:d@x")]))
def test_bucket_hashes_equal_for_same_records_in_any_order(order: list[Binding]) -> None:
    reference, shuffled = table(), table()
    for b in sorted(order, key=lambda b: (b.aor, b.key, b.seq)):
        offer(reference, b)
    for b in order:
        offer(shuffled, b)
    assert shuffled.bucket_hashes() == reference.bucket_hashes()
    assert all(shuffled.bucket_entries(i) == reference.bucket_entries(i)
               for i in range(DIGEST_BUCKETS))


def test_bucket_hashes_differ_when_contents_differ() -> None:
    a, b = table(), table()
    offer(a, binding(ALICE, 1))
    offer(b, binding(ALICE, 2))
    assert a.bucket_hashes() != b.bucket_hashes()
    offer(a, binding(ALICE, 2))
    assert a.bucket_hashes() == b.bucket_hashes()
    empty = table()
    assert empty.bucket_hashes() == [0] * DIGEST_BUCKETS


# ------------------------------------------------------------------ time
def test_a_signer_clock_hours_slow_keeps_its_full_life() -> None:
    """A handset whose clock is wrong by hours (no real-time clock) stays reachable: its
    binding lives its full lifetime from receipt, not a moment less."""
    t = table()
    result = t.offer(binding(ALICE, 1, lifetime_s=300, issued_at=WALL - 6 * 3600), 100.0,
                     WALL, 0.0)
    assert result.outcome is MergeOutcome.NEW and result.stored is not None
    assert result.stored.expires_at == 400.0


def test_expiry_counts_from_receipt_minus_age_not_signer_clock() -> None:
    t = table()
    # Signed with a clock 5 minutes behind ours (within CLOCK_SKEW_TOLERANCE_S): still
    # fresh, lifetime counts from receipt. (More than the tolerance behind is refused:
    # issue 7, see tests/location/test_freshness.py.)
    result = t.offer(binding(ALICE, 1, lifetime_s=60, issued_at=WALL - 300), 100.0, WALL,
                     20.0)
    assert result.outcome is MergeOutcome.NEW and result.stored is not None
    assert result.stored.expires_at == 140.0
    assert result.stored.age_s(130.0) == 50.0
    assert t.next_expiry() == 140.0
    assert t.expire(139.9) == [] and len(t) == 1
    gone = t.expire(140.0)
    assert [g.binding.seq for g in gone] == [1] and len(t) == 0
    assert t.next_expiry() is None


def test_already_aged_out_binding_is_rejected() -> None:
    t = table()
    result = t.offer(binding(ALICE, 1, lifetime_s=60), 0.0, WALL, 60.0)
    assert result.outcome is MergeOutcome.REJECTED and result.reason == "expired"
    assert len(t) == 0


def test_refresh_moves_expiry_and_superseded_timer_is_ignored() -> None:
    t = table()
    offer(t, binding(ALICE, 1, lifetime_s=60), now=0.0)
    offer(t, binding(ALICE, 2, lifetime_s=60), now=50.0)
    assert t.next_expiry() == 110.0
    assert t.expire(100.0) == [] and len(t) == 1
    assert len(t.expire(110.0)) == 1


def test_tombstone_held_for_hold_s_then_removed() -> None:
    t = table()
    offer(t, binding(ALICE, 1, lifetime_s=60), now=0.0)
    assert offer(t, binding(ALICE, 2, lifetime_s=0, hold_s=120), now=10.0) \
        is MergeOutcome.DEREGISTERED
    stored = t.get(binding(ALICE, 2).record_id)
    assert stored is not None and stored.binding.is_tombstone
    assert t.lookup(AOR) == []
    # An older copy still travelling the mesh cannot resurrect the binding.
    assert offer(t, binding(ALICE, 1, lifetime_s=60), now=100.0) is MergeOutcome.STALE
    assert t.expire(129.9) == []
    assert [s.binding.seq for s in t.expire(130.0)] == [2]
    assert len(t) == 0


def test_future_dated_binding_is_rejected() -> None:
    t = table()
    late = binding(ALICE, 1, issued_at=WALL + limits.MAX_FUTURE_SKEW_S + 1)
    result = t.offer(late, 0.0, WALL)
    assert result.outcome is MergeOutcome.REJECTED and result.reason == "future_dated"
    assert offer(t, binding(ALICE, 2, issued_at=WALL + limits.MAX_FUTURE_SKEW_S)) \
        is MergeOutcome.NEW


# ------------------------------------------------------------------ authenticity
def test_wrong_incident_is_rejected() -> None:
    t = table()
    result = t.offer(binding(ALICE, 1, incident="other-incident"), 0.0, WALL)
    assert result.outcome is MergeOutcome.REJECTED and result.reason == "wrong_incident"
    assert len(t) == 0


def test_forged_signature_is_rejected() -> None:
    t = table()
    real = binding(ALICE, 1)
    env = real.envelope
    forged_env = Envelope(env.msg_type, env.incident, env.origin_key, env.origin, env.seq,
                          env.payload, env.signed_bytes,
                          BOB.sign(SIGNATURE_DOMAIN + env.signed_bytes))
    result = t.offer(binding_from_envelope_untrusted(forged_env), 0.0, WALL)
    assert result.outcome is MergeOutcome.REJECTED and result.reason == "bad_signature"
    # A higher sequence number does not help a forger either.
    higher = binding(ALICE, 9)
    env9 = higher.envelope
    forged9 = Envelope(env9.msg_type, env9.incident, env9.origin_key, env9.origin, env9.seq,
                       env9.payload, env9.signed_bytes, bytes(64))
    offer(t, real)
    assert t.offer(binding_from_envelope_untrusted(forged9), 1.0, WALL).reason == \
        "bad_signature"
    assert t.lookup(AOR)[0].binding.seq == 1


# ------------------------------------------------------------------ open policy
def test_open_policy_first_claim_holds_and_conflicts_are_marked() -> None:
    t = table()
    assert offer(t, binding(ALICE, 1, lifetime_s=60), now=0.0) is MergeOutcome.NEW
    assert offer(t, binding(BOB, 1, lifetime_s=120), now=1.0) is MergeOutcome.NEW
    states = {s.binding.key: s.state for s in t}
    # Contested: no neighbour vouched for either claim, so neither is routed to until the
    # contest settles (by arrival order, UNSETTLED_MAX_S after it began).
    assert states == {ALICE.public_key: BindingState.CONTESTED,
                      BOB.public_key: BindingState.CONFLICT}
    assert t.lookup(AOR) == []
    t.expire(1.0 + UNSETTLED_MAX_S)
    states = {s.binding.key: s.state for s in t}
    assert states == {ALICE.public_key: BindingState.VERIFIED,
                      BOB.public_key: BindingState.CONFLICT}
    assert [s.binding.key for s in t.lookup(AOR)] == [ALICE.public_key]
    # The holder refreshing keeps the AoR; the challenger's refresh stays a conflict.
    offer(t, binding(ALICE, 2, lifetime_s=60), now=30.0)
    result = t.offer(binding(BOB, 2, lifetime_s=120), 31.0, WALL)
    assert result.stored is not None and result.stored.state is BindingState.CONFLICT
    assert result.previous_state is BindingState.CONFLICT
    # Holder expires: the AoR passes to the next claimant.
    t.expire(90.0)
    assert [s.binding.key for s in t.lookup(AOR)] == [BOB.public_key]
    assert t.lookup(AOR)[0].state is BindingState.VERIFIED


def test_open_policy_hand_over_on_deregistration() -> None:
    t = table()
    offer(t, binding(ALICE, 1))
    offer(t, binding(BOB, 1))
    offer(t, binding(CAROL, 1))
    t.expire(UNSETTLED_MAX_S)                       # the contest settles by arrival order
    assert [s.binding.key for s in t.lookup(AOR)] == [ALICE.public_key]
    offer(t, binding(ALICE, 2, lifetime_s=0, hold_s=60), now=UNSETTLED_MAX_S)
    assert [s.binding.key for s in t.lookup(AOR)] == [BOB.public_key]
    assert t.get(binding(CAROL, 1).record_id).state is BindingState.CONFLICT  # type: ignore[union-attr]
    assert t.lookup(AOR.upper()) == t.lookup(AOR)


def test_open_policy_with_agency_keys_marks_uncredentialed_unverified() -> None:
    cred = issue_credential(AGENCY, aor_pattern="sip:*@fire.example", role="medic",
                            device_key=ALICE.public_key, issued_at=int(WALL) - 10,
                            expires_at=int(WALL) + 3600).to_bytes()
    t = table(TrustMode.OPEN, frozenset({AGENCY.public_key}))
    offer(t, binding(ALICE, 1, credential=cred))
    offer(t, binding(BOB, 1, aor="sip:other@fire.example"))
    assert t.lookup(AOR)[0].state is BindingState.VERIFIED
    assert t.lookup("sip:other@fire.example")[0].state is BindingState.UNVERIFIED


# ------------------------------------------------------------------ agency policy
def credential(device: Identity, *, agency: Identity = AGENCY,
               pattern: str = "sip:*@fire.example", expires_at: int = int(WALL) + 3600) -> bytes:
    return issue_credential(agency, aor_pattern=pattern, role="medic",
                            device_key=device.public_key, issued_at=int(WALL) - 3600,
                            expires_at=expires_at).to_bytes()


def test_agency_policy_rejects_bad_credentials_with_reasons() -> None:
    t = table(TrustMode.AGENCY, frozenset({AGENCY.public_key}))
    good = credential(ALICE)
    forged = bytearray(good)
    forged[-1] ^= 1
    cases = {
        "no_credential": binding(ALICE, 1),
        "bad_credential": binding(ALICE, 2, credential=bytes(forged)),
        "credential_expired": binding(ALICE, 3, credential=credential(
            ALICE, expires_at=int(WALL) - 1)),
        "credential_scope": binding(ALICE, 4, credential=credential(
            ALICE, pattern="sip:*@police.example")),
        "untrusted_agency": binding(ALICE, 5, credential=credential(
            ALICE, agency=ROGUE_AGENCY)),
    }
    for reason, b in cases.items():
        result = t.offer(b, 0.0, WALL)
        assert (result.outcome, result.reason) == (MergeOutcome.REJECTED, reason)
    # Someone else's credential does not transfer to another key.
    stolen = t.offer(binding(BOB, 1, credential=good), 0.0, WALL)
    assert stolen.reason == "bad_credential"
    garbage = t.offer(binding(BOB, 2, credential=b"\x93garbage"), 0.0, WALL)
    assert garbage.reason == "bad_credential"
    assert len(t) == 0


def test_agency_policy_accepts_valid_credentials_for_several_devices() -> None:
    t = table(TrustMode.AGENCY, frozenset({AGENCY.public_key, ROGUE_AGENCY.public_key}))
    assert offer(t, binding(ALICE, 1, credential=credential(ALICE))) is MergeOutcome.NEW
    assert offer(t, binding(BOB, 1, credential=credential(
        BOB, agency=ROGUE_AGENCY, pattern=AOR))) is MergeOutcome.NEW
    found = t.lookup(AOR)
    assert {s.binding.key for s in found} == {ALICE.public_key, BOB.public_key}
    assert all(s.state is BindingState.VERIFIED for s in found)
    # The credential is checked against our wall clock when the binding arrives.
    late = t.offer(binding(ALICE, 2, credential=credential(ALICE), issued_at=WALL + 7200),
                   10.0, WALL + 7200)
    assert late.reason == "credential_expired"


def test_forged_or_foreign_copy_is_never_counted_as_duplicate_or_stale() -> None:
    """Regression: authenticity was checked after the duplicate/stale test, so a forged copy
    with the stored (or an older) sequence number was reported as a duplicate or a replay,
    not as a bad signature, and a foreign-incident copy not as wrong_incident."""
    t = table()
    offer(t, binding(ALICE, 5))
    for seq in (5, 4):
        env = binding(ALICE, seq).envelope
        forged = Envelope(env.msg_type, env.incident, env.origin_key, env.origin, env.seq,
                          env.payload, env.signed_bytes, bytes(64))
        result = t.offer(binding_from_envelope_untrusted(forged), 1.0, WALL)
        assert (result.outcome, result.reason) == (MergeOutcome.REJECTED, "bad_signature")
        foreign = t.offer(binding(ALICE, seq, incident="other"), 1.0, WALL)
        assert (foreign.outcome, foreign.reason) == (MergeOutcome.REJECTED, "wrong_incident")
    assert offer(t, binding(ALICE, 5)) is MergeOutcome.DUPLICATE


def test_open_policy_backdated_binding_cannot_revive_an_expired_credential() -> None:
    """Regression: under the open policy the credential was checked against the binding's own
    (signer-chosen) issue time, so backdating it made an expired credential look valid."""
    t = table(TrustMode.OPEN, frozenset({AGENCY.public_key}))
    expired = credential(ALICE, expires_at=int(WALL) - 60)
    backdated = binding(ALICE, 1, credential=expired, issued_at=WALL - 120)
    result = t.offer(backdated, 0.0, WALL)
    assert result.outcome is MergeOutcome.NEW
    assert t.lookup(AOR)[0].state is BindingState.UNVERIFIED
    valid = binding(ALICE, 2, credential=credential(ALICE), issued_at=WALL - 120)
    offer(t, valid)
    assert t.lookup(AOR)[0].state is BindingState.VERIFIED
