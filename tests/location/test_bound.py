"""The bounded table (fair eviction) and the established-holder rule (issue 7, items 1-2)."""

from __future__ import annotations

from meshcomm.location.holder import (
    HOLDER_LOCK_S,
    MAX_HOLDER_VOTERS,
    UNSETTLED_MAX_S,
    HolderVotes,
)
from meshcomm.location.standing import PROBATION_S, Tier
from meshcomm.location.table import (
    MAX_CLAIMS_PER_AOR,
    BindingState,
    LocationTable,
    MergeOutcome,
    StoredBinding,
    TrustMode,
)
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity

from .helpers import AGENCY, ALICE, BOB, CAROL, WALL, binding, table

BOUND = 64


def key(n: int) -> Identity:
    return Identity(n.to_bytes(4, "big") + b"\x07" * 28)


def fill(t: LocationTable, first: int, count: int, now: float) -> list[MergeOutcome]:
    return [t.offer(binding(key(n), 1, aor=f"sip:sybil{n}@x"), now, WALL).outcome
            for n in range(first, first + count)]


def claims(t: LocationTable, aor: str) -> list[StoredBinding]:
    return [s for s in t if s.binding.aor == aor]


def bounded(mode: TrustMode = TrustMode.OPEN, agency: frozenset[bytes] = frozenset()
            ) -> LocationTable:
    t = table(mode, agency)
    t.max_records = BOUND
    return t


def test_a_flood_of_newcomers_never_grows_the_table_past_its_bound() -> None:
    t = bounded()
    t.protect_key(ALICE.public_key)
    assert t.offer(binding(ALICE, 1, aor="sip:own@x"), 0.0, WALL).outcome is MergeOutcome.NEW
    outcomes = fill(t, 0, 5 * BOUND, 1.0)
    assert len(t) == BOUND
    assert outcomes.count(MergeOutcome.NEW) == 5 * BOUND  # newcomers churn among newcomers
    assert t.evicted == 5 * BOUND - (BOUND - 1)
    assert [s.binding.key for s in t.lookup("sip:own@x")] == [ALICE.public_key]


def test_established_reachable_and_credentialed_records_outrank_newcomers() -> None:
    cred = issue_credential(AGENCY, aor_pattern="sip:*@x", role="command",
                            device_key=CAROL.public_key, issued_at=int(WALL) - 10,
                            expires_at=int(WALL) + 3600).to_bytes()
    t = bounded(agency=frozenset({AGENCY.public_key}))
    reachable = {BOB.node_id}
    t.reachable = lambda node, _now: node in reachable
    t.offer(binding(BOB, 1, aor="sip:bob@x"), 0.0, WALL)
    t.offer(binding(CAROL, 1, aor="sip:chief@x", credential=cred), 0.0, WALL)
    fill(t, 0, BOUND - 2, 0.0)
    # After probation everything is established; only the reachable and the credentialed
    # survive a long flood: the unreachable established records make room one by one.
    later = PROBATION_S + 1
    fill(t, 1000, 3 * BOUND, later)
    assert len(t) == BOUND
    assert t.lookup("sip:bob@x") and t.lookup("sip:chief@x")
    assert t.lookup("sip:chief@x")[0].state is BindingState.VERIFIED


def test_a_full_table_of_protected_records_refuses_newcomers() -> None:
    t = bounded()
    t.reachable = lambda _node, _now: True  # every origin has a live route
    fill(t, 0, BOUND, 0.0)
    outcome = t.offer(binding(BOB, 1, aor="sip:late@x"), PROBATION_S + 1, WALL)
    assert outcome.outcome is MergeOutcome.REJECTED and outcome.reason == "table_full"
    assert len(t) == BOUND
    # a refresh of a known record is never refused
    assert t.offer(binding(key(3), 2, aor="sip:sybil3@x"), PROBATION_S + 2,
                   WALL).outcome is MergeOutcome.UPDATED


def test_tombstones_of_held_records_stay_while_newcomers_churn() -> None:
    t = bounded()
    t.offer(binding(BOB, 1, aor="sip:bob@x"), 0.0, WALL)
    later = PROBATION_S + 1
    fill(t, 0, BOUND - 1, later - 30)
    t.offer(binding(BOB, 2, aor="sip:bob@x", lifetime_s=0, hold_s=120), later, WALL)
    assert t._standing.tier(claims(t, "sip:bob@x")[0].binding.record_id) is Tier.TOMBSTONE
    fill(t, 1000, 2 * BOUND, later + 1)
    assert [s.binding.is_tombstone for s in claims(t, "sip:bob@x")] == [True]


def test_claims_on_one_aor_are_bounded() -> None:
    t = table()
    outcomes = [t.offer(binding(key(n), 1, aor="sip:n4@x"), 0.0, WALL)
                for n in range(MAX_CLAIMS_PER_AOR + 5)]
    assert sum(o.outcome is MergeOutcome.NEW for o in outcomes) == MAX_CLAIMS_PER_AOR
    assert {o.reason for o in outcomes[MAX_CLAIMS_PER_AOR:]} == {"aor_claims_full"}
    assert len(t) == MAX_CLAIMS_PER_AOR


# ------------------------------------------------------------------ established holder
GENUINE, ATTACKER = ALICE, BOB
AOR = "sip:n4@x"
N1, N2, N3, LIAR = b"n1", b"n2", b"n3", b"liar"


def holder(t: LocationTable) -> bytes:
    found = t.lookup(AOR)
    assert len(found) == 1
    return found[0].binding.key


def provisional_holder(t: LocationTable) -> bytes:
    """The claim a contest would settle on (routing does not use it yet)."""
    assert t.lookup(AOR) == []
    (found,) = [s for s in (t.get(r) for r in t.contested(AOR, 0.0)) if s is not None
                and s.state is BindingState.CONTESTED]
    return found.binding.key


def joiner_met_attacker_first() -> tuple[LocationTable, bytes, bytes]:
    t = table()
    attacker = t.offer(binding(ATTACKER, 1, aor=AOR), 100.0, WALL).stored
    genuine = t.offer(binding(GENUINE, 1, aor=AOR), 100.5, WALL).stored
    assert attacker is not None and genuine is not None
    # Arrival order, with nothing else to go on -- but only provisionally: a joiner does
    # not route to the first claim it heard while its neighbours' reports are on their way.
    assert provisional_holder(t) == ATTACKER.public_key
    assert t.held_s(attacker, 100.5) == -1          # and does not vouch for it either
    return t, genuine.binding.record_id, attacker.binding.record_id


def test_a_contest_nobody_reports_on_settles_by_arrival_after_its_grace() -> None:
    t, _genuine, attacker = joiner_met_attacker_first()
    settle = 100.5 + UNSETTLED_MAX_S
    assert t.next_expiry() == settle
    assert t.expire(settle - 0.1) == [] and t.lookup(AOR) == []
    assert t.expire(settle) == []
    assert holder(t) == ATTACKER.public_key
    assert t.get(attacker).state is BindingState.VERIFIED  # type: ignore[union-attr]


def test_fresh_attacker_keys_do_not_prolong_a_contest() -> None:
    t, _genuine, _attacker = joiner_met_attacker_first()
    for i, key in enumerate((CAROL, Identity(bytes(range(7, 39))))):
        t.offer(binding(key, 1, aor=AOR), 105.0 + i, WALL)
    t.expire(100.5 + UNSETTLED_MAX_S)
    assert holder(t) == ATTACKER.public_key


def test_a_late_joiner_adopts_the_holder_its_neighbours_report() -> None:
    t, genuine, attacker = joiner_met_attacker_first()
    assert t.contested(AOR, 101.0) == [attacker, genuine] or \
        set(t.contested(AOR, 101.0)) == {attacker, genuine}
    assert t.report_holder(N1, genuine, 900, 101.0)
    assert holder(t) == GENUINE.public_key
    assert t.held_s(t.lookup(AOR)[0], 103.0) == 2
    assert t.get(attacker).state is BindingState.CONFLICT  # type: ignore[union-attr]


def test_one_lying_neighbour_cannot_swing_two_honest_ones() -> None:
    t, genuine, attacker = joiner_met_attacker_first()
    t.report_holder(LIAR, attacker, 10**6, 101.0)
    assert holder(t) == ATTACKER.public_key  # one voice, unopposed: it is all we know
    t.report_holder(N1, genuine, 900, 101.1)
    t.report_holder(N2, genuine, 850, 101.2)
    assert holder(t) == GENUINE.public_key
    # the liar repeating itself, or re-flooding the claim, adds nothing
    for i in range(10):
        t.report_holder(LIAR, attacker, 10**6 + i, 102.0 + i)
        t.offer(binding(ATTACKER, 2 + i, aor=AOR), 102.0 + i, WALL)
    assert holder(t) == GENUINE.public_key


def test_an_established_node_keeps_its_holder_whatever_is_reported() -> None:
    t = table()
    genuine = t.offer(binding(GENUINE, 1, aor=AOR), 0.0, WALL).stored
    late = HOLDER_LOCK_S + 1
    attacker = t.offer(binding(ATTACKER, 1, aor=AOR), late, WALL).stored
    assert genuine is not None and attacker is not None
    assert t.contested(AOR, late) == []
    for who in (N1, N2, N3):
        assert not t.report_holder(who, attacker.binding.record_id, 10**6, late)
    assert holder(t) == GENUINE.public_key


def test_the_holder_locks_after_holding_long_enough() -> None:
    t, genuine, attacker = joiner_met_attacker_first()
    t.report_holder(N1, genuine, 900, 101.0)
    assert holder(t) == GENUINE.public_key
    locked_at = 101.0 + HOLDER_LOCK_S
    for who in (N2, N3, LIAR):
        t.report_holder(who, attacker, 10**6, locked_at)
    assert holder(t) == GENUINE.public_key


def test_without_a_majority_the_current_holder_stays() -> None:
    t, genuine, attacker = joiner_met_attacker_first()
    t.report_holder(LIAR, attacker, 10**6, 101.0)
    t.report_holder(N1, genuine, 900, 101.0)
    # one vote each: arrival order stands, unsettled (not routed) until the grace ends
    assert provisional_holder(t) == ATTACKER.public_key
    t, genuine, attacker = joiner_met_attacker_first()
    t.report_holder(N1, genuine, 900, 101.0)
    t.report_holder(LIAR, attacker, 10**6, 101.0)
    assert provisional_holder(t) == GENUINE.public_key  # one vote each: no reason to switch


def test_agency_policy_ignores_holder_reports() -> None:
    t = table(TrustMode.AGENCY, frozenset({AGENCY.public_key}))
    cred = issue_credential(AGENCY, aor_pattern="sip:*@x", role="medic",
                            device_key=GENUINE.public_key, issued_at=int(WALL) - 10,
                            expires_at=int(WALL) + 3600).to_bytes()
    stored = t.offer(binding(GENUINE, 1, aor=AOR, credential=cred), 0.0, WALL).stored
    assert stored is not None
    assert t.report_holder(N1, stored.binding.record_id, 5, 0.0) is False
    assert t.held_s(stored, 10.0) == -1 and t.contested(AOR, 10.0) == []


def test_votes_are_bounded_per_aor() -> None:
    votes = HolderVotes()
    for i in range(3 * MAX_HOLDER_VOTERS):
        votes.report("sip:x@y", bytes([i]), b"r" * 8, 10, 100.0)
    assert len(votes._votes["sip:x@y"]) == MAX_HOLDER_VOTERS
    assert votes.standing_s("sip:x@y", [b"r" * 8, b"q" * 8], 100.0) == [10.0, -1.0]


def test_churn_under_a_flood_does_not_grow_the_expiry_heap() -> None:
    t = bounded()
    for round_no in range(20):
        fill(t, round_no * BOUND, BOUND, float(round_no))
    assert len(t) == BOUND and t.evicted == 19 * BOUND
    assert len(t._expiry) <= 2 * BOUND + 64
    assert t.next_expiry() is not None


def test_records_from_before_a_surge_outlive_it_even_on_probation() -> None:
    """Handsets that registered (calmly) shortly before a flood are still on probation when
    it fills the table: the flood's own arrivals (a surge) go first."""
    t = bounded()
    calm = [t.offer(binding(key(10_000 + i), 1, aor=f"sip:h{i}@x"), float(i), WALL).stored
            for i in range(5)]
    assert all(s is not None for s in calm)
    assert {t._standing.tier(s.binding.record_id) for s in calm if s} == {Tier.PROBATION}
    fill(t, 0, 10 * BOUND, 20.0)  # well within the probation period
    assert len(t) == BOUND
    for i in range(5):
        assert t.lookup(f"sip:h{i}@x"), i


def test_a_neighbours_own_record_gets_a_second_chance_on_probation() -> None:
    t = bounded()
    fill(t, 0, 30, 0.0)  # a surge: every later newcomer is a surge arrival too
    near = t.offer(binding(CAROL, 1, aor="sip:near@x"), 1.0, WALL).stored
    assert near is not None and t._standing.tier(near.binding.record_id) is Tier.SURGE
    t.adjacent = lambda node: node == CAROL.node_id
    fill(t, 1000, 3 * BOUND, 2.0)
    assert t.lookup("sip:near@x")


def test_a_sole_claim_neighbours_pass_on_without_holding_is_contested() -> None:
    """A joiner meets the attacker's claim (passed on by an honest neighbour that holds
    another key's claim) before the genuine one: it must not route to it meanwhile."""
    t = table()
    attacker = t.offer(binding(ATTACKER, 1, aor=AOR), 100.0, WALL).stored
    assert attacker is not None and holder(t) == ATTACKER.public_key  # nothing known yet
    t.report_holder(N1, attacker.binding.record_id, -1, 100.2)
    assert t.lookup(AOR) == [] and attacker.state is BindingState.CONTESTED
    genuine = t.offer(binding(GENUINE, 1, aor=AOR), 100.4, WALL).stored
    assert genuine is not None
    t.report_holder(N1, genuine.binding.record_id, 900, 100.5)
    assert holder(t) == GENUINE.public_key


def test_a_claim_a_neighbour_holds_since_just_now_is_not_contested() -> None:
    t = table()
    stored = t.offer(binding(GENUINE, 1, aor=AOR), 100.0, WALL).stored
    assert stored is not None
    t.report_holder(N1, stored.binding.record_id, 0, 100.1)
    assert holder(t) == GENUINE.public_key
