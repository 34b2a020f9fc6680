"""Issue 7 item 3: no resurrection. Freshness comes from what the origin signed: the highest
sequence ever accepted per (AoR, key) outlives the table entry (and, with the store, a
restart), and a hop age forged to 0 cannot extend a binding past its signed end."""

from __future__ import annotations

from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, make_binding
from meshcomm.location.freshness import (
    FRESHNESS_RETENTION_S,
    FreshEntry,
    FreshnessMemory,
    Standing,
)
from meshcomm.location.table import LocationTable, MergeOutcome, TrustPolicy
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.wire import limits

from .helpers import ALICE, BOB, INCIDENT, WALL, binding

AOR = "sip:medic@fire.example"


def table_with(memory: FreshnessMemory) -> LocationTable:
    return LocationTable(INCIDENT, TrustPolicy(), SignatureVerifier(), freshness=memory)


def depart(t: LocationTable, now: float = 0.0) -> None:
    """ALICE registers (seq 1, 60 s), withdraws (seq 2, hold 60 s), the tombstone expires."""
    assert t.offer(binding(ALICE, 1, lifetime_s=60), now, WALL).outcome is MergeOutcome.NEW
    tomb = binding(ALICE, 2, lifetime_s=0, hold_s=60, issued_at=WALL + 10)
    assert t.offer(tomb, now + 10, WALL + 10).outcome is MergeOutcome.DEREGISTERED
    assert [g.binding.seq for g in t.expire(now + 71)] == [2]
    assert len(t) == 0


def test_old_binding_after_its_tombstone_expired_is_a_stale_replay() -> None:
    t = table_with(FreshnessMemory())
    depart(t)
    # The captured binding, replayed with a forged age of 0 while still within its signed
    # life plus the clock tolerance: without the memory it would be new again.
    replay = t.offer(binding(ALICE, 1, lifetime_s=60), 80.0, WALL + 80)
    assert replay.outcome is MergeOutcome.STALE and replay.reason == "replayed_old_seq"
    assert t.lookup(AOR) == [] and len(t) == 0
    # The control: a table without that memory takes the same replay as new.
    fresh = table_with(FreshnessMemory())
    assert fresh.offer(binding(ALICE, 1, lifetime_s=60), 80.0, WALL + 80).outcome \
        is MergeOutcome.NEW


def test_restart_restores_the_memory_and_refuses_the_replay() -> None:
    before = FreshnessMemory()
    depart(table_with(before))
    updates = before.take_updates()
    assert {e.seq for e in updates.upserts} == {2} and not updates.removals
    after = FreshnessMemory()
    after.restore(updates.upserts, WALL + 100)
    t = table_with(after)                          # a restarted relay: empty table
    assert after.take_updates().upserts == ()      # restoring writes nothing back
    for seq in (1, 2):                             # older and equal (the tombstone again)
        b = binding(ALICE, seq, lifetime_s=60) if seq == 1 else \
            binding(ALICE, 2, lifetime_s=0, hold_s=60, issued_at=WALL + 10)
        result = t.offer(b, 5.0, WALL + 100)
        assert result.outcome is not MergeOutcome.NEW or b.is_tombstone
        assert t.lookup(AOR) == []
    assert t.offer(binding(ALICE, 1, lifetime_s=60), 5.0, WALL + 100).reason \
        == "replayed_old_seq"
    # A genuinely newer registration is still accepted.
    assert t.offer(binding(ALICE, 3, lifetime_s=60, issued_at=WALL + 100), 6.0,
                   WALL + 100).outcome is MergeOutcome.NEW


def test_forged_age_zero_cannot_extend_past_the_signed_end() -> None:
    t = table_with(FreshnessMemory())
    # Issued for 300 s, 200 s before the tolerance: a relay says age 0. The receipt-based
    # rule alone would give it 300 s more; the signed end plus the tolerance leaves 100 s.
    old = binding(ALICE, 1, lifetime_s=300, issued_at=WALL - CLOCK_SKEW_TOLERANCE_S - 200)
    result = t.offer(old, 1000.0, WALL, 0.0)
    assert result.outcome is MergeOutcome.NEW and result.stored is not None
    assert result.stored.expires_at == 1100.0
    # Older than its life plus the tolerance: refused outright, whatever age is claimed.
    older = binding(BOB, 1, lifetime_s=300, issued_at=WALL - 300 - CLOCK_SKEW_TOLERANCE_S)
    refused = t.offer(older, 1000.0, WALL, 0.0)
    assert refused.outcome is MergeOutcome.REJECTED and refused.reason == "expired"


def test_same_sequence_again_lives_no_longer_than_first_acceptance_plus_lifetime() -> None:
    """Clock-independent cap: a node that accepted a sequence before counts its life from
    then, on its own clock, so re-offering it with age 0 gains nothing."""
    memory = FreshnessMemory()
    t = table_with(memory)
    b = binding(ALICE, 1, lifetime_s=60)
    assert t.offer(b, 0.0, WALL).outcome is MergeOutcome.NEW
    assert [g.binding.seq for g in t.expire(60.0)] == [1]
    again = t.offer(b, 50.0 + 20, WALL + 70, 0.0)           # 10 s past its life
    assert again.outcome is MergeOutcome.REJECTED and again.reason == "expired"
    # A restarted node (memory restored) sees it the same way.
    restored = FreshnessMemory()
    restored.restore(memory.take_updates().upserts, WALL + 70)
    again = table_with(restored).offer(b, 3.0, WALL + 70, 0.0)
    assert again.outcome is MergeOutcome.REJECTED and again.reason == "expired"
    # Within its life (evicted or restarted mid-life) it comes back, expiring on time.
    mid = FreshnessMemory()
    mid.restore([FreshEntry(b.record_id, 1, WALL, WALL + FRESHNESS_RETENTION_S,
                            Standing.TRANSIENT)], WALL + 40)
    back = table_with(mid).offer(b, 7.0, WALL + 40, 0.0)
    assert back.outcome is MergeOutcome.NEW and back.stored is not None
    assert back.stored.expires_at == 7.0 + 20


def test_entries_expire_after_the_retention() -> None:
    memory = FreshnessMemory()
    t = table_with(memory)
    depart(t)
    entry = memory.get(binding(ALICE, 1).record_id)
    assert entry is not None and entry.seq == 2
    assert entry.keep_until_wall >= WALL + 10 + limits.MAX_LIFETIME_S + 60
    assert memory.floor(entry.record_id, entry.keep_until_wall) is not None
    assert memory.floor(entry.record_id, entry.keep_until_wall + 1) is None
    # After the retention any replay of the old binding is long past its signed end.
    late = t.offer(binding(ALICE, 1, lifetime_s=60), 500.0, entry.keep_until_wall + 1)
    assert late.outcome is MergeOutcome.REJECTED and late.reason == "expired"


def test_standing_rises_with_a_second_sequence_a_credential_or_own_key() -> None:
    memory = FreshnessMemory(own_key=BOB.public_key)
    t = table_with(memory)
    t.offer(binding(ALICE, 1), 0.0, WALL)
    rid = binding(ALICE, 1).record_id
    assert memory.get(rid).standing is Standing.TRANSIENT  # type: ignore[union-attr]
    t.offer(binding(ALICE, 2), 1.0, WALL + 1)
    assert memory.get(rid).standing is Standing.ESTABLISHED  # type: ignore[union-attr]
    t.offer(binding(BOB, 1, aor="sip:bob@fire.example"), 2.0, WALL + 2)
    own = binding(BOB, 1, aor="sip:bob@fire.example").record_id
    assert memory.get(own).standing is Standing.OWN  # type: ignore[union-attr]


def test_flood_of_fresh_keys_is_bounded_and_evicts_only_its_own_kind() -> None:
    capacity = 64
    memory = FreshnessMemory(own_key=BOB.public_key, capacity=capacity)
    t = table_with(memory)
    t.max_records = 10_000
    # Honest history: 20 handsets that registered and refreshed (established), our own.
    honest = [Identity(bytes([200, i]) + bytes(30)) for i in range(20)]
    for i, who in enumerate(honest):
        aor = f"sip:h{i}@fire.example"
        for seq in (1, 2):
            assert t.offer(make_binding(who, incident=INCIDENT, seq=seq, aor=aor,
                                        contacts=("mesh:x",), issued_at=WALL, lifetime_s=60),
                           float(seq), WALL).changed
    t.offer(binding(BOB, 1, aor="sip:bob@fire.example"), 3.0, WALL)
    kept = {rid for rid in (e.record_id for e in memory.take_updates().upserts)}
    assert len(kept) == 21
    # An attacker floods 1,000 fresh keys, each seen once.
    for i in range(1000):
        who = Identity(i.to_bytes(4, "big") + bytes(28))
        t.offer(make_binding(who, incident=INCIDENT, seq=1, aor=f"sip:x{i}@evil.example",
                             contacts=("mesh:y",), issued_at=WALL, lifetime_s=60),
                5.0, WALL)
    assert len(memory) == capacity
    assert memory.evicted == 1000 - (capacity - 21)
    assert all(memory.get(rid) is not None for rid in kept)
    updates = memory.take_updates()
    # What waits for the store is bounded too (the store never ran here): removals beyond
    # the bound are only counted; the store trims itself to its best rows instead.
    assert len(updates.upserts) == capacity - 21
    assert len(updates.upserts) + len(updates.removals) <= 2 * capacity
    assert len(updates.removals) + memory.unrecorded_removals == memory.evicted


def test_expired_entries_make_room_before_anything_is_evicted() -> None:
    memory = FreshnessMemory(capacity=2)
    a, b, c = (binding(who, 1) for who in (ALICE, BOB, Identity(bytes(range(9, 41)))))
    memory.accepted(a, WALL, credentialed=True)
    memory.accepted(b, WALL + 10, credentialed=False)
    late = WALL + 10 + FRESHNESS_RETENTION_S + 1       # both past their time
    memory.accepted(c, late, credentialed=False)
    assert len(memory) == 1 and memory.evicted == 0 and memory.expired == 2
    assert memory.get(c.record_id) is not None


def test_highest_own_sequence_is_remembered_for_a_node_that_lost_its_epoch() -> None:
    import random

    from meshcomm.node.mesh import MeshNode, NodeSettings

    memory = FreshnessMemory(own_key=ALICE.public_key)
    memory.accepted(binding(ALICE, 5 << 32 | 9), WALL, credentialed=False)
    memory.accepted(binding(BOB, 7 << 32), WALL, credentialed=False)       # not ours
    assert memory.highest_own_seq() == 5 << 32 | 9
    restored = FreshnessMemory(own_key=ALICE.public_key)
    restored.restore([e for e in memory.take_updates().upserts], WALL)
    node = MeshNode(ALICE, NodeSettings(incident=INCIDENT), verifier=SignatureVerifier(),
                    rng=random.Random(1), now=0.0, seq_base=1 << 32, wall_offset_s=WALL,
                    freshness=restored)
    own = node.register(AOR, ("mesh:a",), 1.0)
    assert own.seq > 5 << 32 | 9
    assert node.table.lookup(AOR)
