"""An in-memory model of a DHT for the simulator and the tests (sans-IO, virtual time).

Several DHT nodes (one per uplinked relay, plus standalone ones), each carrying out the
operations of :mod:`meshcomm.dht.port` for its bridge, with what a real DHT does to them:

* **latency** (``latency_s`` plus up to ``jitter_s``) on every operation and result;
* **loss**: each exchange with one replica is lost with probability ``loss``; a put that
  reached no replica, or an operation of a node that reaches no other node, fails
  (``DhtDone(ok=False)``) after ``op_timeout_s``;
* **placement** as in Kademlia: a value is stored on the ``replicas`` live nodes closest
  (XOR distance) to its key among those the putting node can reach; a get asks the
  ``2 * replicas`` closest reachable live nodes;
* **partitions**: groups of nodes that cannot reach each other (:meth:`partition`);
* **churn**: a killed node loses what it stored; values that still have a live holder are
  copied to the next closest live nodes (k replicas kept); a restarted node starts empty;
* **TTL**: a value vanishes ``ttl_s`` (at most ``max_ttl_s``) after its put;
* **fresh misses**: with probability ``miss_after_put`` a value stays invisible to gets
  for ``propagate_s`` after its put (a get right after its put may miss, as measured on
  OpenDHT);
* **health**: every ``peers_interval_s`` each live node reports ``DhtPeers`` (the live
  nodes it reaches).

Driving API: ``submit(node, op, now)``, ``next_timer()``, ``on_timer(now)``,
``next_result() -> (node, DhtResult) | None``.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshcomm.dht.port import (
    MAX_VALUES_PER_RESULT,
    DhtCancel,
    DhtDone,
    DhtGet,
    DhtListen,
    DhtOp,
    DhtPeers,
    DhtPut,
    DhtResult,
    DhtValues,
)
from meshcomm.errors import LocalProtocolError

#: Values one key holds in the model (the oldest go first beyond this).
MAX_MODEL_VALUES_PER_KEY = 65536
#: The largest peer count a node reports.
MAX_REPORTED_PEERS = 64


@dataclass(frozen=True, slots=True)
class ModelConfig:
    latency_s: float = 0.05
    jitter_s: float = 0.02
    loss: float = 0.0
    replicas: int = 3
    max_ttl_s: int = 3600
    miss_after_put: float = 0.0
    propagate_s: float = 2.0
    op_timeout_s: float = 5.0
    peers_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.miss_after_put <= 1.0:
            raise ValueError("model loss must be in [0, 1), miss_after_put in [0, 1]")
        if self.replicas < 1 or self.peers_interval_s <= 0 or self.latency_s < 0:
            raise ValueError("model replicas >= 1, peers_interval_s > 0, latency_s >= 0")


@dataclass(slots=True)
class _Value:
    vid: int
    value: bytes
    expires_at: float
    visible_at: float


@dataclass(slots=True)
class _Node:
    name: str
    pos: int
    alive: bool = True
    store: dict[bytes, dict[int, _Value]] = field(default_factory=dict)


_Pending = DhtOp | DhtResult | None   # an operation to run, a result to hand out, a tick


class DhtModel:
    """See the module docstring."""

    def __init__(self, rng: random.Random, config: ModelConfig = ModelConfig(), *,
                 now: float = 0.0) -> None:
        self.rng = rng
        self.config = config
        self.nodes: dict[str, _Node] = {}
        self._group: dict[str, int] = {}
        self._listens: dict[tuple[str, int], bytes] = {}
        self._heap: list[tuple[float, int, str, _Pending]] = []
        self._n = 0
        self._vid = 0
        self._ready: deque[tuple[str, DhtResult]] = deque()
        self._push(now + config.peers_interval_s, "", None)

    # ------------------------------------------------------------ topology
    def add_node(self, name: str) -> None:
        if name in self.nodes:
            raise LocalProtocolError(f"DHT model node {name!r} exists")
        pos = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=20).digest(), "big")
        self.nodes[name] = _Node(name, pos)

    def kill(self, *names: str) -> None:
        """The nodes die at once: what they stored is lost unless a live node holds it."""
        lost: list[tuple[bytes, _Value]] = []
        for name in names:
            node = self.nodes[name]
            node.alive = False
            lost.extend((key, item) for key, values in node.store.items()
                        for item in values.values())
            node.store = {}
            for listen in [k for k in self._listens if k[0] == name]:
                del self._listens[listen]
        for key, item in lost:
            holders = [n for n in self.nodes.values()
                       if n.alive and item.vid in n.store.get(key, {})]
            if holders:
                for target in self._closest(key, self._reach(holders[0].name)):
                    self._store(target, key, item)

    def restart(self, name: str) -> None:
        self.nodes[name].alive = True

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Nodes in different groups cannot reach each other (unlisted: one more group)."""
        self._group = {name: index + 1 for index, group in enumerate(groups)
                       for name in group}

    def heal(self) -> None:
        self._group = {}

    def peers(self, name: str) -> int:
        node = self.nodes[name]
        if not node.alive:
            return 0
        return min(MAX_REPORTED_PEERS, len(self._reach(name)) - 1)

    def stored(self, key: bytes, now: float) -> int:
        """Distinct live values under ``key`` anywhere (for tests and reports)."""
        return len({vid for n in self.nodes.values() if n.alive
                    for vid, v in n.store.get(key, {}).items() if v.expires_at > now})

    # ------------------------------------------------------------ driving API
    def submit(self, node: str, op: DhtOp, now: float) -> None:
        """``node``'s bridge asks for ``op``; it runs after the latency."""
        if isinstance(op, DhtCancel):
            self._listens.pop((node, op.token), None)
            return
        self._push(now + self._latency(), node, op)

    def next_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def on_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            when, _, node, item = heapq.heappop(self._heap)
            if item is None:
                self._tick(when)
            elif isinstance(item, DhtPut | DhtGet | DhtListen | DhtCancel):
                self._run(node, item, when)
            elif self.nodes[node].alive:
                self._ready.append((node, item))

    def next_result(self) -> tuple[str, DhtResult] | None:
        return self._ready.popleft() if self._ready else None

    # ------------------------------------------------------------ operations
    def _run(self, name: str, op: DhtOp, now: float) -> None:
        node = self.nodes[name]
        if not node.alive:
            return
        reach = self._reach(name)
        if isinstance(op, DhtPut):
            self._put(name, op, reach, now)
        elif isinstance(op, DhtGet):
            found = self._found(op.key, reach, now)
            at = self._deliver(name, op.token, found, now)
            ok = bool(found) or len(reach) > 1
            # the values come first, then the completion (as OpenDHT's callbacks)
            self._push(at if ok else now + self.config.op_timeout_s, name,
                       DhtDone(op.token, ok))
        elif isinstance(op, DhtListen):
            self._listens[(name, op.token)] = op.key
            self._deliver(name, op.token, self._found(op.key, reach, now), now)

    def _put(self, name: str, op: DhtPut, reach: list[_Node], now: float) -> None:
        cfg = self.config
        self._vid += 1
        visible = now + (cfg.propagate_s if self.rng.random() < cfg.miss_after_put else 0.0)
        item = _Value(self._vid, op.value, now + min(op.ttl_s, cfg.max_ttl_s), visible)
        stored = 0
        for target in self._closest(op.key, reach):
            if target.name == name or self.rng.random() >= cfg.loss:
                self._store(target, op.key, item)
                stored += 1
        ok = stored > 0 and len(reach) > 1
        self._push(now + (self._latency() if ok else cfg.op_timeout_s), name,
                   DhtDone(op.token, ok))
        if stored:
            names = {n.name for n in reach}
            for (listener, token), key in self._listens.items():
                if key == op.key and listener in names:
                    self._push(max(now, visible) + self._latency(), listener,
                               DhtValues(token, (op.value,)))

    def _found(self, key: bytes, reach: list[_Node], now: float) -> list[bytes]:
        seen: dict[int, bytes] = {}
        for target in self._closest(key, reach, 2 * self.config.replicas):
            values = target.store.get(key)
            if not values or self.rng.random() < self.config.loss:
                continue
            for vid in [v for v, item in values.items() if item.expires_at <= now]:
                del values[vid]
            for vid, item in values.items():
                if item.visible_at <= now:
                    seen.setdefault(vid, item.value)
        return list(seen.values())

    def _deliver(self, name: str, token: int, values: list[bytes], now: float) -> float:
        """Hand ``values`` to ``name`` in batches after one latency; returns when."""
        at = now + self._latency()
        for start in range(0, len(values), MAX_VALUES_PER_RESULT):
            self._push(at, name, DhtValues(token,
                                           tuple(values[start:start + MAX_VALUES_PER_RESULT])))
        return at

    def _tick(self, now: float) -> None:
        for name, node in self.nodes.items():
            if node.alive:
                self._ready.append((name, DhtPeers(self.peers(name))))
        self._push(now + self.config.peers_interval_s, "", None)

    # ------------------------------------------------------------ helpers
    def _store(self, node: _Node, key: bytes, item: _Value) -> None:
        values = node.store.setdefault(key, {})
        values[item.vid] = item
        if len(values) > MAX_MODEL_VALUES_PER_KEY:
            del values[next(iter(values))]

    def _reach(self, name: str) -> list[_Node]:
        group = self._group.get(name, 0)
        return [n for n in self.nodes.values()
                if n.alive and self._group.get(n.name, 0) == group]

    def _closest(self, key: bytes, nodes: list[_Node], count: int | None = None) -> list[_Node]:
        target = int.from_bytes(key, "big")
        return sorted(nodes, key=lambda n: n.pos ^ target)[:count or self.config.replicas]

    def _latency(self) -> float:
        return self.config.latency_s + self.rng.uniform(0.0, self.config.jitter_s)

    def _push(self, when: float, node: str, item: _Pending) -> None:
        self._n += 1
        heapq.heappush(self._heap, (when, self._n, node, item))
