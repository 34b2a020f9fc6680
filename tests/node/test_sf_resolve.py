"""Resolution state of held messages' To AoRs (meshcomm.node.sf_resolve): one question
per AoR, bounded questions in flight and per second, backoff, kept answers, wake-ups,
bounded state under a flood of AoRs."""

from __future__ import annotations

from meshcomm.node.sf_resolve import (
    ANSWER_TIMEOUT_S,
    ASKS_PER_S,
    DOWN_PROBE_S,
    FOUND_KEEP_S,
    MAX_FAR_AORS,
    MAX_RESOLVING,
    RETRY_INITIAL_S,
    RETRY_MAX_S,
    RETRY_UNREACHABLE_MAX_S,
    FarAors,
)
from meshcomm.types import NodeId

NODE = NodeId(b"\x01" * 32)
OTHER = NodeId(b"\x02" * 32)


def test_one_question_per_aor_and_ids_apart_from_the_gateways() -> None:
    far = FarAors()
    first = far.want("sip:Bob@b.example", 0.0)
    assert first is not None and first < 0 and far.owns(first)
    assert far.want("sip:bob@B.example", 0.0) is None      # same AoR, any case
    assert far.answered(first, NODE, False, 0.1) == "sip:bob@b.example"
    assert not far.owns(first)
    assert far.node("SIP:BOB@b.example") == NODE
    assert far.want("sip:bob@b.example", 0.2) is None      # the answer is kept
    again = far.want("sip:bob@b.example", 0.1 + FOUND_KEEP_S)
    assert again is not None
    assert far.answered(again, NODE, False, 61.0) is None   # the same node: nothing new
    third = far.want("sip:bob@b.example", 61.0 + FOUND_KEEP_S)
    assert third is not None and far.answered(third, OTHER, False, 122.0) is not None


def test_failed_questions_back_off_up_to_the_maximum_and_a_wake_asks_at_once() -> None:
    far = FarAors()
    now, gaps = 0.0, []
    for _ in range(6):
        rid = far.want("sip:x@y", now)
        assert rid is not None
        assert far.answered(rid, None, True, now) is None
        assert far.may_go_upstream("sip:x@y")
        due = far.next_due(now)
        assert due is not None
        gaps.append(due - now)
        assert far.want("sip:x@y", due - 0.01) is None
        now = due
    assert gaps == [RETRY_INITIAL_S, 2.0, 4.0, RETRY_MAX_S, RETRY_MAX_S, RETRY_MAX_S]
    far.wake(now - 1.0)
    # Due now: the next poll asks it; no timer at or before now (a spin in virtual time).
    assert far.next_due(now - 1.0) is None
    assert far.want("sip:x@y", now - 1.0) is not None


def test_questions_in_flight_and_per_second_are_bounded() -> None:
    far = FarAors()
    asked = [far.want(f"sip:u{i}@y", 0.0) for i in range(50)]
    assert sum(r is not None for r in asked) == MAX_RESOLVING
    for rid in asked[:MAX_RESOLVING]:
        assert rid is not None
        far.answered(rid, None, False, 0.0)
    # The burst is spent: ASKS_PER_S more each second.
    assert sum(far.want(f"sip:u{i}@y", 1.0) is not None for i in range(8, 50)) == int(
        ASKS_PER_S)


def test_an_unanswered_question_stops_blocking_after_the_timeout() -> None:
    far = FarAors()
    rid = far.want("sip:x@y", 0.0)
    assert rid is not None
    assert far.want("sip:x@y", ANSWER_TIMEOUT_S - 0.1) is None
    later = far.want("sip:x@y", ANSWER_TIMEOUT_S)
    assert later is not None and later != rid and not far.owns(rid)
    assert far.answered(rid, NODE, False, ANSWER_TIMEOUT_S) is None    # a late answer
    assert far.node("sip:x@y") is None


def test_a_flood_of_aors_keeps_the_state_bounded_and_retain_forgets() -> None:
    far = FarAors()
    for i in range(3 * MAX_FAR_AORS):
        far.want(f"sip:flood{i}@y", float(i))
    assert len(far) <= MAX_FAR_AORS
    far.retain({"sip:flood0@y"})
    assert len(far) <= MAX_RESOLVING + 1                    # those being asked stay


def test_while_the_uplink_is_down_one_probe_asks_for_every_aor() -> None:
    """200 AoRs held for, the island's uplink down: one question per DOWN_PROBE_S in all
    (it was one per AoR every two seconds); the probe that finds a node asks every AoR
    again at once."""
    far = FarAors()
    aors = [f"sip:r{i}@far.example" for i in range(200)]
    asked = 0
    now = 0.0
    while now < 60.0:
        for aor in aors:
            rid = far.want(aor, now)
            if rid is not None:
                asked += 1
                far.answered(rid, None, True, now, beyond_down=True)
        now += 0.1
    assert far.beyond_down
    # the first answers arrive while several were out (the burst), then one per probe
    assert asked <= MAX_RESOLVING + 60.0 / DOWN_PROBE_S + 1, asked
    # the uplink is back: the next probe finds a node; everyone is asked at once
    probe = None
    while probe is None:
        now += 0.1
        probe = next((r for r in (far.want(a, now) for a in aors) if r is not None), None)
    far.answered(probe, NODE, False, now)
    assert not far.beyond_down
    again = [far.want(a, now) for a in aors[:MAX_RESOLVING]]
    assert sum(r is not None for r in again) >= MAX_RESOLVING - 1


def test_an_island_cut_off_is_asked_again_soon() -> None:
    far = FarAors()
    now, gaps = 0.0, []
    for _ in range(5):
        rid = far.want("sip:x@cut.example", now)
        assert rid is not None
        far.answered(rid, None, True, now, unreachable=True)
        due = far.next_due(now)
        assert due is not None
        gaps.append(due - now)
        now = due
    assert max(gaps) == RETRY_UNREACHABLE_MAX_S
