"""The gateway's timers cost O(log n), not O(n), per call (meshcomm/deadlines.py,
gateway/transactions.py): the deadline heap agrees with a scan under random churn and
stays bounded; a real gateway with 5,000 transactions created, answered and lingered out
answers ``next_timer`` and ``on_timer`` touching only the due entries (counted with the
heap's work counter, not timed), with the same retransmissions, timeouts and linger as
before; registrations expire from a heap in table order; the built-in UA is asked for
its timer once per change, not on every input."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshcomm.deadlines import COMPACT_MIN_STALE, DeadlineHeap
from meshcomm.node.gateway.core import LINGER_S, SipGateway
from meshcomm.node.gateway.types import MeshSip
from meshcomm.sip.message import SipResponse, parse_message_untrusted
from tools.bench.gateway_timers import (
    FAR_NODE,
    START_S,
    answer,
    drain,
    forward_messages,
    register_request,
    scan_next_timer,
    standalone_gateway,
)

TRANSACTIONS = 5000


def _bounded(heap: DeadlineHeap[Any]) -> bool:
    return heap.heap_size <= 2 * len(heap) + COMPACT_MIN_STALE


# ------------------------------------------------------------------ the heap alone
def test_the_heap_agrees_with_a_scan_under_random_churn() -> None:
    rng = random.Random(9)
    heap: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        roll = rng.random()
        key = rng.randrange(300)
        if roll < 0.55:
            when = now + rng.choice((0.0, 0.5, 1.0, rng.uniform(0, 50)))
            heap.schedule(key, when)
            model[key] = when
        elif roll < 0.7:
            heap.discard(key)
            model.pop(key, None)
        elif roll < 0.9:
            assert heap.next_time() == min(model.values(), default=None)
        else:
            now += rng.uniform(0, 5)
            due = heap.pop_due(now)
            expected = sorted((k for k, t in model.items() if t <= now),
                              key=lambda k: model[k])
            assert [model[k] for k in due] == [model[k] for k in expected]
            assert set(due) == set(expected)
            for k in due:
                del model[k]
        assert len(heap) == len(model)
        assert _bounded(heap)


def test_churn_on_few_keys_cannot_grow_the_heap() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    for i in range(100_000):
        heap.schedule(f"k{i % 10}", float(100_000 - i))      # always earlier: all stale
    assert len(heap) == 10
    assert heap.heap_size <= 10 + COMPACT_MIN_STALE + 1
    heap.schedule("k0", 5.0)
    heap.schedule("k0", 5.0)                    # unchanged: no new entry
    assert heap.deadline_of("k0") == 5.0
    for key in [f"k{i}" for i in range(10)]:
        heap.discard(key)
    assert heap.next_time() is None and heap.heap_size <= COMPACT_MIN_STALE + 1


# ------------------------------------------------------------------ a real gateway
def _work(gw: SipGateway) -> int:
    return gw.txs.timers.work


def test_five_thousand_transactions_cost_o_due_per_timer_call() -> None:
    gw = standalone_gateway(TRANSACTIONS)
    now = START_S
    # A flood's view: next_timer after every input, as the node's pump asks it.
    calls = []
    requests = forward_messages(gw, 0, TRANSACTIONS, now,
                                after_each=lambda: calls.append(gw.next_timer()))
    assert len(requests) == TRANSACTIONS == gw.status()["pending_transactions"]
    assert calls[-1] == scan_next_timer(gw) == now + gw.config.timers.t1_s
    # per input: the new transaction's deadline and retransmission pushed, one peek
    assert _work(gw) <= 4 * TRANSACTIONS
    assert _bounded(gw.txs.timers)
    before = _work(gw)
    for _ in range(1000):
        assert gw.next_timer() == now + gw.config.timers.t1_s
    assert _work(gw) - before == 1000                         # one peek per call

    # Nothing due yet: on_timer visits nothing.
    before = _work(gw)
    gw.on_timer(now + 0.1)
    assert _work(gw) - before == 0 and drain(gw, now + 0.1) == []

    # bob answers every one: each answer re-arms its transaction (linger), and the heap
    # stays bounded although every answer leaves a stale entry behind.
    peak = 0
    for request in requests:
        answer(gw, [request], 200, now + 0.2)
        peak = max(peak, gw.txs.timers.heap_size)
    assert peak <= 2 * TRANSACTIONS + COMPACT_MIN_STALE
    assert gw.counters["retransmissions_sent"] == 0
    assert gw.next_timer() == scan_next_timer(gw) == now + 0.2 + LINGER_S

    # Until the linger ends nothing is due, whatever the stale entries on top.
    before, stale = _work(gw), gw.txs.timers.stale
    gw.on_timer(now + 0.2 + LINGER_S - 0.01)
    assert _work(gw) - before <= stale                        # stale entries popped, only
    assert len(gw.txs) == TRANSACTIONS

    # The linger ends: all of them go, the heap is empty, next_timer is the registrar's.
    gw.on_timer(now + 0.2 + LINGER_S)
    assert len(gw.txs) == 0 and len(gw.txs.timers) == 0
    assert gw.txs.timers.heap_size == 0
    assert gw.next_timer() == scan_next_timer(gw) == gw.registrar.next_expiry()


def test_due_transactions_fire_as_before_and_only_they_are_visited() -> None:
    """Half the transactions answered, half silent: the silent ones are retransmitted at
    T1, 2 T1, 4 T1 ... and time out 480 after message_timeout_s; each on_timer visits the
    due entries only (one pop each, plus the stale ones on top)."""
    gw = standalone_gateway(TRANSACTIONS)
    now = START_S
    requests = forward_messages(gw, 0, TRANSACTIONS, now)
    answered, silent = requests[::2], requests[1::2]
    answer(gw, answered, 200, now + 0.1)
    t1 = gw.config.timers.t1_s
    fired_at = []
    while (when := gw.next_timer()) is not None and when < now + gw.config.message_timeout_s:
        assert when == scan_next_timer(gw)
        live_due = sum(1 for tx in gw.txs.values() if (d := tx.next_deadline()) is not None
                       and d <= when)
        before, stale = _work(gw), gw.txs.timers.stale
        gw.on_timer(when)
        # a pop and a re-arm per due transaction, plus stale entries on the way
        assert _work(gw) - before <= 2 * live_due + stale
        fired_at.append((round(when - now, 6), len(drain(gw, when))))
    # silent ones: T1 doubling capped at T2; the answered ones are never resent
    expected, interval, at = [], t1, t1
    while at < gw.config.message_timeout_s:
        expected.append((round(at, 6), len(silent)))
        interval = min(2 * interval, gw.config.timers.t2_s)
        at += interval
    assert fired_at == expected
    # the timeout: 480 for each silent one, toward the mesh, and nothing else
    gw.on_timer(now + gw.config.message_timeout_s)
    out = gw.to_send(now + gw.config.message_timeout_s)
    assert all(isinstance(o, MeshSip) and o.dst == FAR_NODE for o in out)
    finals = [m.status for o in out if isinstance(o, MeshSip)
              if isinstance(m := parse_message_untrusted(o.body), SipResponse)]
    assert finals == [480] * len(silent)
    assert gw.counters["timeouts"] == len(silent)
    assert gw.status()["pending_transactions"] == 0


def _register(gw: SipGateway, user: str, host: str, expires: int, now: float) -> None:
    """REGISTER ``user`` from ``host`` (one host each: the registrar's per-host quota)."""
    addr = (host, 5060)
    gw.receive_local(register_request(user, addr, expires=expires, cseq=int(now) + 1), addr,
                     now)
    drain(gw, now)


def test_registrations_expire_from_a_heap_in_table_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three groups expire together; each group leaves in the registrar's table order (a
    refresh keeps an AoR's place, as the dict it replaces did), not in heap order."""
    gw = standalone_gateway(10)
    users = [f"u{i}" for i in range(60)]
    now = START_S
    for i, user in enumerate(users):
        _register(gw, user, f"127.0.1.{i + 1}", 30 + (i % 3) * 10, now)
    for i, user in reversed(list(enumerate(users))):      # refreshed in reverse order
        _register(gw, user, f"127.0.1.{i + 1}", 30 + (i % 3) * 10, now + 1)
    gw.on_timer(now + 1 + LINGER_S)                       # the REGISTERs' transactions go
    assert len(gw.txs) == 0 and len(gw.registrar) == len(users) + 1     # and bob
    order = list(gw.registrar)
    removed: list[str] = []
    real = gw.registrar.unregister

    def spy(aor: str, now: float) -> None:
        removed.append(aor)
        real(aor, now)
    monkeypatch.setattr(gw.registrar, "unregister", spy)
    expected_times = (now + 31, now + 41, now + 51)
    for group, when in enumerate(expected_times):
        assert gw.next_timer() == scan_next_timer(gw) == when
        gw.on_timer(when - 0.001)
        assert not removed
        gw.on_timer(when)
        assert removed == [aor for aor in order if aor.startswith("sip:u")
                           and int(aor[5:].split("@")[0]) % 3 == group]
        removed.clear()
    assert gw.counters["registrations_expired"] == len(users)
    assert list(gw.registrar) == ["sip:bob@incident.local"]


def test_the_builtin_ua_is_asked_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = standalone_gateway(100)
    asked = []
    real = gw.builtin.ua.next_timer

    def counting() -> float | None:
        asked.append(1)
        return real()
    monkeypatch.setattr(gw.builtin.ua, "next_timer", counting)
    now = START_S
    forward_messages(gw, 0, 100, now, after_each=gw.next_timer)   # nothing for the UA
    assert len(asked) <= 1
    # A send from the built-in UA changes its timers: asked again, and the timer is right.
    gw.send_message("sip:bob@incident.local", "hello", now)
    drain(gw, now)
    assert gw.next_timer() == scan_next_timer(gw)
    assert len(asked) >= 2
    count = len(asked)
    for _ in range(50):
        gw.next_timer()
    assert len(asked) == count
