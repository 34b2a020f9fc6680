"""The in-memory DHT model: placement, churn with replication, TTL, partitions, loss,
fresh misses, listens, health samples, determinism."""

from __future__ import annotations

import random

import pytest

from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.port import DhtCancel, DhtDone, DhtGet, DhtListen, DhtPeers, DhtPut, DhtValues
from meshcomm.errors import LocalProtocolError

KEY = bytes(range(20))


class Driver:
    def __init__(self, config: ModelConfig | None = None, nodes: int = 8,
                 seed: int = 1) -> None:
        self.model = DhtModel(random.Random(seed), config or ModelConfig())
        self.now = 0.0
        self.results: dict[str, list[object]] = {}
        for n in range(nodes):
            self.model.add_node(f"n{n}")

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while (due := self.model.next_timer()) is not None and due <= end:
            self.now = due
            self.model.on_timer(due)
            while (item := self.model.next_result()) is not None:
                self.results.setdefault(item[0], []).append(item[1])
        self.now = end

    def op(self, node: str, op: DhtPut | DhtGet | DhtListen | DhtCancel,
           wait_s: float = 1.0) -> list[object]:
        before = len(self.results.get(node, []))
        self.model.submit(node, op, self.now)
        self.run(wait_s)
        return [r for r in self.results.get(node, [])[before:]
                if not isinstance(r, DhtPeers) and getattr(r, "token", None) == op.token]

    def get(self, node: str, token: int) -> list[bytes]:
        out = self.op(node, DhtGet(token, KEY), wait_s=6.0)
        assert isinstance(out[-1], DhtDone)
        return [v for r in out if isinstance(r, DhtValues) for v in r.values]


def test_put_then_get_elsewhere_and_ttl_expiry() -> None:
    d = Driver()
    assert d.op("n0", DhtPut(1, KEY, b"v1", 30)) == [DhtDone(1, True)]
    assert d.get("n5", 2) == [b"v1"]
    assert d.model.stored(KEY, d.now) == 1
    d.run(31)
    assert d.get("n5", 3) == []


def test_churn_keeps_k_replicas_while_a_holder_lives() -> None:
    d = Driver(ModelConfig(replicas=3))
    d.op("n0", DhtPut(1, KEY, b"v", 600))
    holders = [n for n, node in d.model.nodes.items() if KEY in node.store]
    assert len(holders) == 3
    d.model.kill(holders[0])
    d.model.kill(holders[1])
    now_holders = [n for n, node in d.model.nodes.items() if node.alive and KEY in node.store]
    assert len(now_holders) == 3        # copied on to the next closest live nodes
    survivor = next(n for n in d.model.nodes if d.model.nodes[n].alive)
    assert d.get(survivor, 2) == [b"v"]
    d.model.kill(*now_holders)            # all at once: nobody left to copy from
    alive = next(n for n in d.model.nodes if d.model.nodes[n].alive)
    assert d.get(alive, 3) == []        # every holder died: gone
    d.model.restart(holders[0])
    assert not d.model.nodes[holders[0]].store    # a restarted node starts empty


def test_partitions_separate_and_fail_a_lonely_node() -> None:
    d = Driver()
    d.model.partition([{"n0", "n1"}])
    d.op("n0", DhtPut(1, KEY, b"v", 600))
    assert d.get("n1", 2) == [b"v"]
    assert d.get("n5", 3) == []
    d.model.partition([{"n0"}])
    done = d.op("n0", DhtPut(4, KEY, b"w", 600), wait_s=6.0)
    assert done == [DhtDone(4, False)]  # no one to store it with
    assert d.model.peers("n0") == 0 and d.model.peers("n5") == 6
    d.model.heal()
    assert d.model.peers("n0") == 7


def test_fresh_values_can_miss_then_appear() -> None:
    d = Driver(ModelConfig(miss_after_put=1.0, propagate_s=2.0))
    d.op("n0", DhtPut(1, KEY, b"v", 600), wait_s=0.1)
    assert d.get("n3", 2) == []
    d.run(2.0)
    assert d.get("n3", 3) == [b"v"]


def test_loss_fails_some_puts_and_gets() -> None:
    d = Driver(ModelConfig(loss=0.6))
    outcomes = [d.op(f"n{t % 8}", DhtPut(t, bytes([t]) * 20, b"v", 600), wait_s=6.0)[0]
                for t in range(1, 60)]
    failed = [o for o in outcomes if isinstance(o, DhtDone) and not o.ok]
    assert 0 < len(failed) < len(outcomes)


def test_listen_reports_existing_and_new_values_until_cancelled() -> None:
    d = Driver()
    d.op("n0", DhtPut(1, KEY, b"old", 600))
    got = d.op("n4", DhtListen(7, KEY))
    assert got == [DhtValues(7, (b"old",))]
    d.op("n1", DhtPut(2, KEY, b"new", 600))
    assert DhtValues(7, (b"new",)) in d.results["n4"]
    d.op("n4", DhtCancel(7))
    d.op("n1", DhtPut(3, KEY, b"newer", 600))
    assert DhtValues(7, (b"newer",)) not in d.results["n4"]


def test_health_samples_and_batches() -> None:
    d = Driver(nodes=3)
    d.run(1.5)
    assert DhtPeers(2) in d.results["n0"]
    for t in range(150):
        d.model.submit("n0", DhtPut(t, KEY, t.to_bytes(2, "big"), 600), d.now)
    d.run(1.0)
    batches = [r for r in d.op("n1", DhtGet(999, KEY)) if isinstance(r, DhtValues)]
    assert [len(b.values) for b in batches] == [64, 64, 22]
    with pytest.raises(LocalProtocolError):
        d.model.add_node("n0")


def test_same_seed_same_results() -> None:
    def trace(seed: int) -> list[object]:
        d = Driver(ModelConfig(loss=0.2, jitter_s=0.1), seed=seed)
        for t in range(30):
            d.model.submit(f"n{t % 8}", DhtPut(t, bytes([t % 5]) * 20, b"v", 600), d.now)
            d.model.submit(f"n{(t + 3) % 8}", DhtGet(100 + t, bytes([t % 5]) * 20), d.now)
            d.run(0.5)
        return [(k, v) for k, vs in sorted(d.results.items()) for v in vs]
    assert trace(3) == trace(3)
    assert trace(3) != trace(4)
