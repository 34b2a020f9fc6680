"""Benchmark: our DHT port over OpenDHT against kademlia 2.2.3 (pure Python), side by side.

    python -m tools.bench.dht [--sizes 100,300,1000] [--keys 200] [--seed 1] [--json]

For each size, in one process on loopback, each implementation in turn:

* ``setup``: start ``size`` nodes, every one bootstrapped to the first (OpenDHT: one
  :class:`~meshcomm.runtime.dht_opendht.OpenDhtPort` per node, the runtime's port; kademlia:
  one ``kademlia.network.Server`` per node, all on one asyncio loop); ready when every
  OpenDHT node holds a good peer / every kademlia bootstrap returned;
* ``store``: ``--keys`` values (64 random bytes each) stored from random nodes: latency to
  the put's completion (OpenDHT: ``DhtDone``; kademlia: ``set``), p50/p99, share that
  reported success;
* ``lookup``: each key looked up from another random node: latency until the stored bytes
  come back (OpenDHT: the ``DhtValues`` holding them; kademlia: ``get``), p50/p99, and
  ``lookup_ok``, the share that found them;
* ``churn``: the same lookups again from surviving nodes while 20% of the nodes (chosen at
  random, the bootstrap node may be among them) are stopped half-way through the batch,
  with no time to repair: ``churn_ok`` (the target is >= 99.5%) and its latencies.
  Stopping a node is a crash for both: neither hands its values on (OpenDHT's storage
  maintenance is off; kademlia has none); the stopped OpenDHT nodes are closed together
  (``aclose``), the lookups in flight go on meanwhile.
* ``opendht-port+retry``: the same OpenDHT lookups under the product's policy (the DHT
  bridge, :mod:`meshcomm.dht.bridge`, retries a missed get once after
  ``BridgeConfig.miss_retry_s``, 2 s): a lookup that missed is issued once more from the
  same node after ``--retry-s``; its latency runs from the first get to the answer. One
  run, both rows: the plain row counts first tries only.
* ``misses``: why gets missed (both batches; the +retry row's retries included, so a
  miss its retry did not rescue counts twice): OpenDHT finished the get without the
  value (``no_value``), the port's get failed (``get_failed``), hit its own timeout
  (``get_timeout``) or was refused by its bound on gets in flight (``refused``), or the
  bench's deadline passed on a first try (``deadline``);
  kademlia's misses are all ``no_value``/``deadline`` (its get answers None for both).

Lookups and stores run 32 at a time; the port's gets and puts time out after
``--op-timeout`` seconds (default 10; kademlia's RPC timeout is 5 s) and the bench's own
deadline is one second later, so the port's outcome is the one counted. Needs ``pip
install kademlia==2.2.3`` in the venv (a benchmark dependency only, not the project's);
without it (or with ``--no-kademlia``) the kademlia rows are skipped. Prints a table,
then (or with ``--json`` only) one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from meshcomm.dht.api import BridgeConfig
from meshcomm.dht.port import DhtDone, DhtGet, DhtPut, DhtResult, DhtValues
from meshcomm.runtime.dht_opendht import DhtBind, DhtPortCounter, OpenDhtPort, PortSettings

DEFAULT_SIZES = (100, 300, 1000)
CONCURRENCY = 32
KILL_SHARE = 0.2
VALUE_BYTES = 64
READY_TIMEOUT_S = 120.0
#: The bench's deadline for one operation, beyond the port's own timeout (seconds).
DEADLINE_MARGIN_S = 1.0
#: Why a lookup missed (see the module docstring).
NO_VALUE, GET_FAILED, GET_TIMEOUT, DEADLINE = "no_value", "get_failed", "get_timeout", "deadline"
REFUSED = "refused"


class Harness(Protocol):
    name: str

    async def start(self, size: int) -> None: ...
    async def store(self, origin: int, key: bytes, value: bytes) -> bool: ...
    async def lookup(self, origin: int, key: bytes, value: bytes) -> bool: ...
    async def kill(self, nodes: Sequence[int]) -> None: ...
    async def close(self) -> None: ...
    def take_misses(self) -> Counter[str]:
        """Why lookups missed since the last call (deadlines are counted by the bench)."""


# --------------------------------------------------------------------------- OpenDHT
class OpenDhtHarness:
    """``size`` OpenDhtPorts on 127.0.0.1, each bootstrapped to the first."""

    name = "opendht-port"

    def __init__(self, op_timeout_s: float) -> None:
        self.ports: list[OpenDhtPort | None] = []
        self.settings = PortSettings(network=random.randrange(1 << 20, 1 << 30),
                                     get_timeout_s=op_timeout_s, put_timeout_s=op_timeout_s,
                                     peers_interval_s=None, peer_discovery=False)
        self.tokens = itertools.count(1)
        self.waiting: dict[int, tuple[asyncio.Future[bool], bytes | None]] = {}
        self.every_port: list[OpenDhtPort] = []
        self.misses: Counter[str] = Counter()
        self._port_misses_taken: Counter[str] = Counter()

    def _on_result(self, result: DhtResult) -> None:
        if isinstance(result, DhtValues):
            entry = self.waiting.get(result.token)
            if entry is not None and entry[1] in result.values:
                del self.waiting[result.token]
                if not entry[0].done():
                    entry[0].set_result(True)
        elif isinstance(result, DhtDone):
            entry = self.waiting.pop(result.token, None)
            if entry is not None and entry[1] is not None and result.ok:
                self.misses[NO_VALUE] += 1      # done, and the value never came
            if entry is not None and not entry[0].done():
                entry[0].set_result(result.ok if entry[1] is None else False)

    def take_misses(self) -> Counter[str]:
        port_misses: Counter[str] = Counter()
        for port in self.every_port:
            port_misses[GET_FAILED] += port.counters[DhtPortCounter.GET_FAILED]
            port_misses[GET_TIMEOUT] += port.counters[DhtPortCounter.GET_TIMEOUTS]
            port_misses[REFUSED] += port.counters[DhtPortCounter.REFUSED_PENDING_FULL]
        taken = self.misses + (port_misses - self._port_misses_taken)
        self.misses, self._port_misses_taken = Counter(), port_misses
        return taken

    async def start(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        bind = DhtBind("127.0.0.1", None, 0)
        first = OpenDhtPort(loop, bind, [], self._on_result, self.settings)
        self.ports = [first]
        boot = [("127.0.0.1", first.bound_port())]
        for _ in range(size - 1):
            self.ports.append(OpenDhtPort(loop, bind, boot, self._on_result, self.settings))
        self.every_port = [p for p in self.ports if p is not None]
        deadline = loop.time() + READY_TIMEOUT_S
        pending = [p for p in self.ports if p is not None]
        while pending and loop.time() < deadline:
            for port in pending:
                port.sample_peers()         # a probe lookup; peers() reads its answer
            await asyncio.sleep(0.2)
            pending = [p for p in pending if p.peers().good == 0]

    async def _op(self, origin: int, op: DhtGet | DhtPut, want: bytes | None) -> bool:
        port = self.ports[origin]
        assert port is not None
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting[op.token] = (future, want)
        port.submit(op)
        return await future

    async def store(self, origin: int, key: bytes, value: bytes) -> bool:
        return await self._op(origin, DhtPut(next(self.tokens), key, value, 600), None)

    async def lookup(self, origin: int, key: bytes, value: bytes) -> bool:
        return await self._op(origin, DhtGet(next(self.tokens), key), value)

    async def kill(self, nodes: Sequence[int]) -> None:
        victims = [p for p in (self.ports[i] for i in nodes) if p is not None]
        for index in nodes:
            self.ports[index] = None
        await asyncio.gather(*(port.aclose() for port in victims))

    async def close(self) -> None:
        ports, self.ports = [p for p in self.ports if p is not None], []
        await asyncio.gather(*(port.aclose() for port in ports))


# --------------------------------------------------------------------------- kademlia
class KademliaHarness:
    """``size`` kademlia Servers on 127.0.0.1, each bootstrapped to the first."""

    name = "kademlia-2.2.3"

    def __init__(self, server_class: Any) -> None:
        self.server_class = server_class
        self.servers: list[Any] = []
        #: Exceptions raised in loop callbacks (rpcudp sets the result of an RPC that
        #: already timed out: InvalidStateError); counted, not printed.
        self.loop_errors = 0
        self.misses: Counter[str] = Counter()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors += 1

    async def start(self, size: int) -> None:
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        first = self.server_class()
        await first.listen(0, interface="127.0.0.1")
        boot = [("127.0.0.1", first.transport.get_extra_info("sockname")[1])]
        self.servers = [first]
        for _ in range(size - 1):
            server = self.server_class()
            await server.listen(0, interface="127.0.0.1")
            await server.bootstrap(boot)
            self.servers.append(server)

    async def store(self, origin: int, key: bytes, value: bytes) -> bool:
        return bool(await self.servers[origin].set(key.hex(), value))

    async def lookup(self, origin: int, key: bytes, value: bytes) -> bool:
        found = bool(await self.servers[origin].get(key.hex()) == value)
        if not found:
            self.misses[NO_VALUE] += 1
        return found

    def take_misses(self) -> Counter[str]:
        taken, self.misses = self.misses, Counter()
        return taken

    async def kill(self, nodes: Sequence[int]) -> None:
        for index in nodes:
            if self.servers[index] is not None:
                self.servers[index].stop()
                self.servers[index] = None

    async def close(self) -> None:
        await self.kill(range(len(self.servers)))


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Row:
    impl: str
    nodes: int
    setup_s: float
    store_p50_ms: float
    store_p99_ms: float
    store_ok: float
    lookup_p50_ms: float
    lookup_p99_ms: float
    lookup_ok: float
    churn_p50_ms: float
    churn_p99_ms: float
    churn_ok: float
    killed: int
    #: Why gets missed (both batches, retries included; see the module docstring).
    misses: dict[str, int]
    #: Of those, the ones a retry found (the +retry row only).
    found_on_retry: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One operation: its outcome and latency (ms), and its first try's."""

    ok: bool
    ms: float
    first_ok: bool
    first_ms: float


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def timed(op: Callable[[], Awaitable[bool]], timeout_s: float, gate: asyncio.Semaphore,
                misses: Counter[str]) -> tuple[bool, float]:
    """Run ``op`` under ``gate``; (success, latency in ms); a deadline or error fails."""
    async with gate:
        started = time.perf_counter()
        try:
            ok = await asyncio.wait_for(op(), timeout_s + DEADLINE_MARGIN_S)
        except (TimeoutError, OSError):
            misses[DEADLINE] += 1
            ok = False
        return ok, (time.perf_counter() - started) * 1000.0


async def attempt(op: Callable[[], Awaitable[bool]], timeout_s: float, gate: asyncio.Semaphore,
                  misses: Counter[str], retry_s: float | None) -> Attempt:
    """``op``, and with ``retry_s`` once more that long after a miss (the bridge's policy;
    the gate is not held while waiting)."""
    started = time.perf_counter()
    ok, ms = await timed(op, timeout_s, gate, misses)
    if ok or retry_s is None:
        return Attempt(ok, ms, ok, ms)
    await asyncio.sleep(retry_s)
    again, _ = await timed(op, timeout_s, gate, Counter())
    return Attempt(again, (time.perf_counter() - started) * 1000.0, ok, ms)


async def _batch(ops: list[Callable[[], Awaitable[bool]]], timeout_s: float,
                 misses: Counter[str], retry_s: float | None = None,
                 midway: Callable[[], Awaitable[None]] | None = None) -> list[Attempt]:
    gate = asyncio.Semaphore(CONCURRENCY)
    tasks = []
    async with asyncio.TaskGroup() as group:
        for index, op in enumerate(ops):
            if midway is not None and index == len(ops) // 2:
                await asyncio.sleep(0)          # let the first half get going
                await midway()
            tasks.append(group.create_task(attempt(op, timeout_s, gate, misses, retry_s)))
    return [task.result() for task in tasks]


def _summary(results: list[Attempt], *, first: bool) -> tuple[float, float, float]:
    good = [(r.first_ms if first else r.ms) for r in results
            if (r.first_ok if first else r.ok)]
    p50, p99 = percentile(good, 0.5), percentile(good, 0.99)
    return round(p50, 2), round(p99, 2), round(len(good) / max(1, len(results)), 4)


async def run_one(harness: Harness, size: int, keys: int, seed: int,
                  timeout_s: float, retry_s: float | None = None) -> list[Row]:
    """One size: the harness's row, and with ``retry_s`` its ``+retry`` row too."""
    rng = random.Random(seed)
    started = time.perf_counter()
    await harness.start(size)
    setup_s = time.perf_counter() - started
    items = [(rng.randbytes(20), rng.randbytes(VALUE_BYTES)) for _ in range(keys)]
    killed = rng.sample(range(size), int(size * KILL_SHARE))
    alive = [i for i in range(size) if i not in set(killed)]
    store_from = [rng.randrange(size) for _ in items]
    lookup_from = [rng.randrange(size) for _ in items]
    churn_from = [rng.choice(alive) for _ in items]
    misses: Counter[str] = Counter()
    try:
        stores = await _batch([
            functools.partial(harness.store, o, k, v)
            for o, (k, v) in zip(store_from, items, strict=True)], timeout_s, Counter())
        harness.take_misses()
        lookups = await _batch([
            functools.partial(harness.lookup, o, k, v)
            for o, (k, v) in zip(lookup_from, items, strict=True)], timeout_s, misses, retry_s)
        churn = await _batch([
            functools.partial(harness.lookup, o, k, v)
            for o, (k, v) in zip(churn_from, items, strict=True)], timeout_s, misses, retry_s,
            midway=functools.partial(harness.kill, killed))
        misses += harness.take_misses()
    finally:
        await harness.close()
    store = _summary(stores, first=True)
    rows = [Row(harness.name, size, round(setup_s, 2), *store,
                *_summary(lookups, first=True), *_summary(churn, first=True), len(killed),
                dict(sorted(misses.items())))]
    if retry_s is not None:
        rescued = sum(1 for r in [*lookups, *churn] if r.ok and not r.first_ok)
        rows.append(Row(f"{harness.name}+retry", size, round(setup_s, 2), *store,
                        *_summary(lookups, first=False), *_summary(churn, first=False),
                        len(killed), dict(sorted(misses.items())), rescued))
    return rows


def kademlia_server() -> Any | None:
    try:
        from kademlia.network import Server  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    return Server


def format_table(rows: Sequence[Row], *, head: bool = True) -> str:
    names = ("impl", "nodes", "setup s", "store p50/p99 ms", "store ok", "lookup p50/p99 ms",
             "lookup ok", "churn p50/p99 ms", "churn ok", "misses (all gets)")
    lines = ["{:<19} {:>5} {:>8} {:>18} {:>8} {:>18} {:>9} {:>18} {:>8}  {}".format(*names)]
    for r in rows:
        why = " ".join(f"{k}={v}" for k, v in r.misses.items()) or "-"
        if r.found_on_retry:
            why += f" (retry found {r.found_on_retry})"
        lines.append(
            f"{r.impl:<19} {r.nodes:>5} {r.setup_s:>8.1f} "
            f"{f'{r.store_p50_ms:.1f}/{r.store_p99_ms:.1f}':>18} {r.store_ok:>8.1%} "
            f"{f'{r.lookup_p50_ms:.1f}/{r.lookup_p99_ms:.1f}':>18} {r.lookup_ok:>9.1%} "
            f"{f'{r.churn_p50_ms:.1f}/{r.churn_p99_ms:.1f}':>18} {r.churn_ok:>8.1%}  {why}")
    return "\n".join(lines if head else lines[1:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="node counts, comma-separated (default %(default)s)")
    parser.add_argument("--keys", type=int, default=200, help="values stored and looked up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--op-timeout", type=float, default=10.0, dest="op_timeout_s")
    parser.add_argument("--retry-s", type=float, default=BridgeConfig().miss_retry_s,
                        help="the +retry row's wait before its one retry (default: the "
                             "bridge's miss_retry_s, %(default)s s)")
    parser.add_argument("--no-kademlia", action="store_true",
                        help="OpenDHT rows only (even when kademlia is installed)")
    parser.add_argument("--json", action="store_true", help="only the JSON object")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    server = None if args.no_kademlia else kademlia_server()
    if server is None and not args.no_kademlia:
        print("kademlia is not installed: `pip install kademlia==2.2.3` into the venv for "
              "the side-by-side rows (a benchmark dependency only); running OpenDHT alone",
              file=sys.stderr)
    rows: list[Row] = []
    for size in sizes:
        harnesses: list[Harness] = [OpenDhtHarness(args.op_timeout_s)]
        if server is not None:
            harnesses.append(KademliaHarness(server))
        for harness in harnesses:
            retry_s = args.retry_s if isinstance(harness, OpenDhtHarness) else None
            new = asyncio.run(run_one(harness, size, args.keys, args.seed, args.op_timeout_s,
                                      retry_s))
            if not args.json:
                print(format_table(new, head=not rows), flush=True)
            rows.extend(new)
            if isinstance(harness, KademliaHarness) and harness.loop_errors:
                print(f"({size} nodes: {harness.loop_errors} exceptions in kademlia/rpcudp "
                      "loop callbacks, not printed)", file=sys.stderr)
    if not args.json:
        print()
    print(json.dumps({"bench": "dht", "keys": args.keys, "seed": args.seed,
                      "cpus": os.cpu_count(), "kill_share": KILL_SHARE,
                      "retry_s": args.retry_s, "rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
