"""The destination's delivered log (exactly once): bounded, fair eviction per origin node,
age-based forgetting, and its persistence (FORGET of what it evicts) in the core."""

from __future__ import annotations

import time
from pathlib import Path

from meshcomm.node.sf_delivered import DeliveredLog, DeliveredRecord
from meshcomm.node.storeforward import PersistOp, SfPersist, StoreForwardConfig

from .sf_net import Net

HONEST = b"h" * 32
FLOODER = b"f" * 32


def _id(origin: bytes, n: int) -> bytes:
    return origin[:1] + n.to_bytes(15, "big")


def test_a_flooding_origin_evicts_only_its_own_records() -> None:
    log = DeliveredLog(max_ids=10, keep_s=1000.0)
    for n in range(3):
        assert log.add(DeliveredRecord(_id(HONEST, n), float(n), HONEST)) == []
    evicted: list[bytes] = []
    for n in range(1000):
        evicted += log.add(DeliveredRecord(_id(FLOODER, n), 10.0 + n, FLOODER))
    assert len(log) == 10
    assert all(_id(HONEST, n) in log for n in range(3))
    assert evicted and all(e[:1] == b"f" for e in evicted)
    assert [r.msg_id for r in log if r.origin == FLOODER] == [
        _id(FLOODER, n) for n in range(993, 1000)]          # its newest kept


def test_when_origins_are_even_the_oldest_record_goes() -> None:
    log = DeliveredLog(max_ids=4, keep_s=1000.0)
    a, b = b"a" * 32, b"b" * 32
    log.add(DeliveredRecord(_id(a, 0), 1.0, a))
    log.add(DeliveredRecord(_id(b, 0), 2.0, b))
    log.add(DeliveredRecord(_id(a, 1), 3.0, a))
    log.add(DeliveredRecord(_id(b, 1), 4.0, b))
    assert log.add(DeliveredRecord(_id(b, 2), 5.0, b)) == [_id(a, 0)]
    assert log.add(DeliveredRecord(_id(a, 2), 6.0, a)) == [_id(b, 0)]


def test_old_records_are_pruned_and_duplicates_ignored() -> None:
    log = DeliveredLog(max_ids=10, keep_s=100.0,
                       records=[DeliveredRecord(b"x" * 16, 50.0), DeliveredRecord(b"y" * 16, 5.0)])
    assert log.add(DeliveredRecord(b"x" * 16, 60.0)) == []
    assert log.get(b"x" * 16) == DeliveredRecord(b"x" * 16, 50.0)
    assert log.prune(120.0) == [b"y" * 16]
    assert b"x" * 16 in log and b"y" * 16 not in log and len(log) == 1


def test_the_core_persists_what_its_log_evicts(tmp_path: Path) -> None:
    net = Net(tmp_path, {"d": "handset"}, config=StoreForwardConfig(max_delivered_ids=3))
    host = net.start("d")
    sf = host.live_sf
    for n in range(5):
        sf.note_delivered(_id(FLOODER, n), FLOODER, net.now)
    events = []
    while (event := sf.next_event()) is not None:
        if isinstance(event, SfPersist):
            events.append(event)
            assert host.storage is not None
            host.storage.apply(event)
    assert [(e.op, e.msg_id) for e in events if e.op is PersistOp.FORGET] == [
        (PersistOp.FORGET, _id(FLOODER, 0)), (PersistOp.FORGET, _id(FLOODER, 1))]
    assert host.storage is not None
    assert [r.msg_id for r in host.storage.load_delivered()] == [
        _id(FLOODER, n) for n in (2, 3, 4)]
    assert all(r.origin == FLOODER for r in host.storage.load_delivered())
    assert sf.counters["sf_delivered_evicted"] == 2
    net.close()


def test_a_flood_from_many_fresh_origins_is_bounded_and_cheap() -> None:
    log = DeliveredLog(max_ids=1000, keep_s=1e9)
    log.add(DeliveredRecord(_id(HONEST, 0), 0.0, HONEST))
    log.add(DeliveredRecord(_id(HONEST, 1), 0.5, HONEST))   # the honest origin has two
    start = time.perf_counter()
    for n in range(20_000):                                   # Sybils: one record each
        origin = n.to_bytes(32, "big")
        log.add(DeliveredRecord(b"s" + n.to_bytes(15, "big"), 1.0 + n, origin))
    took = time.perf_counter() - start
    assert len(log) == 1000
    # one record per origin: per-origin fairness cannot tell fresh identities from an
    # honest sender, so the log degrades to first in, first out (the newest 1000 stay)
    assert sorted(r.msg_id for r in log) == [b"s" + n.to_bytes(15, "big")
                                             for n in range(19_000, 20_000)]
    assert took < 2.0, took                                   # O(1) per eviction
