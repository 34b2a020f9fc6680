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

Lookups and stores run 32 at a time; each has a deadline of ``--op-timeout`` seconds
(default 10; kademlia's RPC timeout is 5 s). Needs ``pip install kademlia==2.2.3`` in the
venv (a benchmark dependency only, not the project's); without it the kademlia rows are
skipped with a message. Prints a table, then (or with ``--json`` only) one JSON object.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from meshcomm.dht.port import DhtDone, DhtGet, DhtPut, DhtResult, DhtValues
from meshcomm.runtime.dht_opendht import DhtBind, OpenDhtPort, PortSettings

DEFAULT_SIZES = (100, 300, 1000)
CONCURRENCY = 32
KILL_SHARE = 0.2
VALUE_BYTES = 64
READY_TIMEOUT_S = 120.0


class Harness(Protocol):
    name: str

    async def start(self, size: int) -> None: ...
    async def store(self, origin: int, key: bytes, value: bytes) -> bool: ...
    async def lookup(self, origin: int, key: bytes, value: bytes) -> bool: ...
    async def kill(self, nodes: Sequence[int]) -> None: ...
    async def close(self) -> None: ...


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

    def _on_result(self, result: DhtResult) -> None:
        if isinstance(result, DhtValues):
            entry = self.waiting.get(result.token)
            if entry is not None and entry[1] in result.values:
                del self.waiting[result.token]
                if not entry[0].done():
                    entry[0].set_result(True)
        elif isinstance(result, DhtDone):
            entry = self.waiting.pop(result.token, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(result.ok if entry[1] is None else False)

    async def start(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        bind = DhtBind("127.0.0.1", None, 0)
        first = OpenDhtPort(loop, bind, [], self._on_result, self.settings)
        self.ports = [first]
        boot = [("127.0.0.1", first.bound_port())]
        for _ in range(size - 1):
            self.ports.append(OpenDhtPort(loop, bind, boot, self._on_result, self.settings))
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
        return bool(await self.servers[origin].get(key.hex()) == value)

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


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def timed(op: Callable[[], Awaitable[bool]], timeout_s: float,
                gate: asyncio.Semaphore) -> tuple[bool, float]:
    """Run ``op`` under ``gate``; (success, latency in ms); a timeout or error fails."""
    async with gate:
        started = time.perf_counter()
        try:
            ok = await asyncio.wait_for(op(), timeout_s)
        except (TimeoutError, OSError):
            ok = False
        return ok, (time.perf_counter() - started) * 1000.0


async def _batch(ops: list[Callable[[], Awaitable[bool]]], timeout_s: float,
                 midway: Callable[[], Awaitable[None]] | None = None,
                 ) -> list[tuple[bool, float]]:
    gate = asyncio.Semaphore(CONCURRENCY)
    tasks = []
    async with asyncio.TaskGroup() as group:
        for index, op in enumerate(ops):
            if midway is not None and index == len(ops) // 2:
                await asyncio.sleep(0)          # let the first half get going
                await midway()
            tasks.append(group.create_task(timed(op, timeout_s, gate)))
    return [task.result() for task in tasks]


def _summary(results: list[tuple[bool, float]]) -> tuple[float, float, float]:
    good = [ms for ok, ms in results if ok]
    return percentile(good, 0.5), percentile(good, 0.99), len(good) / max(1, len(results))


async def run_one(harness: Harness, size: int, keys: int, seed: int,
                  timeout_s: float) -> Row:
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
    try:
        stores = await _batch([
            functools.partial(harness.store, o, k, v)
            for o, (k, v) in zip(store_from, items, strict=True)], timeout_s)
        lookups = await _batch([
            functools.partial(harness.lookup, o, k, v)
            for o, (k, v) in zip(lookup_from, items, strict=True)], timeout_s)
        churn = await _batch([
            functools.partial(harness.lookup, o, k, v)
            for o, (k, v) in zip(churn_from, items, strict=True)], timeout_s,
            midway=functools.partial(harness.kill, killed))
    finally:
        await harness.close()
    return Row(harness.name, size, round(setup_s, 2),
               *(_rounded(_summary(stores))), *(_rounded(_summary(lookups))),
               *(_rounded(_summary(churn))), len(killed))


def _rounded(values: tuple[float, float, float]) -> tuple[float, float, float]:
    p50, p99, ok = values
    return round(p50, 2), round(p99, 2), round(ok, 4)


def kademlia_server() -> Any | None:
    try:
        from kademlia.network import Server  # type: ignore[import-not-found]
    except ImportError:
        return None
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    return Server


def format_table(rows: Sequence[Row]) -> str:
    head = ("impl", "nodes", "setup s", "store p50/p99 ms", "store ok", "lookup p50/p99 ms",
            "lookup ok", "churn p50/p99 ms", "churn ok")
    lines = ["{:<15} {:>5} {:>8} {:>18} {:>8} {:>18} {:>9} {:>18} {:>8}".format(*head)]
    for r in rows:
        lines.append(
            f"{r.impl:<15} {r.nodes:>5} {r.setup_s:>8.1f} "
            f"{f'{r.store_p50_ms:.1f}/{r.store_p99_ms:.1f}':>18} {r.store_ok:>8.1%} "
            f"{f'{r.lookup_p50_ms:.1f}/{r.lookup_p99_ms:.1f}':>18} {r.lookup_ok:>9.1%} "
            f"{f'{r.churn_p50_ms:.1f}/{r.churn_p99_ms:.1f}':>18} {r.churn_ok:>8.1%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="node counts, comma-separated (default %(default)s)")
    parser.add_argument("--keys", type=int, default=200, help="values stored and looked up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--op-timeout", type=float, default=10.0, dest="op_timeout_s")
    parser.add_argument("--json", action="store_true", help="only the JSON object")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    server = kademlia_server()
    if server is None:
        print("kademlia is not installed: `pip install kademlia==2.2.3` into the venv for "
              "the side-by-side rows (a benchmark dependency only); running OpenDHT alone",
              file=sys.stderr)
    rows: list[Row] = []
    for size in sizes:
        harnesses: list[Harness] = [OpenDhtHarness(args.op_timeout_s)]
        if server is not None:
            harnesses.append(KademliaHarness(server))
        for harness in harnesses:
            row = asyncio.run(run_one(harness, size, args.keys, args.seed, args.op_timeout_s))
            rows.append(row)
            if isinstance(harness, KademliaHarness) and harness.loop_errors:
                print(f"({size} nodes: {harness.loop_errors} exceptions in kademlia/rpcudp "
                      "loop callbacks, not printed)", file=sys.stderr)
            if not args.json:
                print(format_table([row]).splitlines()[-1] if rows[:-1] else
                      format_table([row]), flush=True)
    if not args.json:
        print()
    print(json.dumps({"bench": "dht", "keys": args.keys, "seed": args.seed,
                      "cpus": os.cpu_count(), "kill_share": KILL_SHARE,
                      "rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
