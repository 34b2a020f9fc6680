"""OpenDhtPort on REAL OpenDHT nodes: a cluster of runners on loopback in this process.

Each test uses its own random OpenDHT network id, so nodes of other tests (or of other
processes on this machine, found by peer discovery) never join its cluster.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opendht import _core as odht  # type: ignore[import-untyped]

from meshcomm.dht.port import (
    MAX_VALUE_BYTES,
    MAX_VALUES_PER_RESULT,
    DhtCancel,
    DhtDone,
    DhtGet,
    DhtListen,
    DhtPeers,
    DhtPut,
    DhtResult,
    DhtValues,
)
from meshcomm.errors import LocalProtocolError
from meshcomm.runtime.dht_opendht import (
    MAX_VALUES_PER_GET,
    OPENDHT_VALUE_LIFETIME_S,
    DhtBind,
    DhtPortCounter,
    DhtStartError,
    OpenDhtPort,
    PeerCounts,
    PortSettings,
    count_peers,
    value_id,
)

LOOPBACK = DhtBind("127.0.0.1", None, 0)
#: Generous bound on a cluster joining or an operation finishing on loopback (they take ms).
DEADLINE_S = 20.0


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@dataclass
class Results:
    """What one port handed back, and a way to wait for it."""

    items: list[DhtResult] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, result: DhtResult) -> None:
        assert asyncio.get_running_loop()      # on the loop's thread, never OpenDHT's
        self.items.append(result)
        self.changed.set()

    def done(self, token: int) -> DhtDone | None:
        return next((r for r in self.items if isinstance(r, DhtDone) and r.token == token),
                    None)

    def values(self, token: int) -> list[bytes]:
        return [v for r in self.items if isinstance(r, DhtValues) and r.token == token
                for v in r.values]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def finished(self, token: int) -> DhtDone:
        await self.wait_for(lambda: self.done(token) is not None)
        done = self.done(token)
        assert done is not None
        return done


@dataclass
class Cluster:
    ports: list[OpenDhtPort]
    results: list[Results]
    settings: PortSettings


def _settings(**changes: object) -> PortSettings:
    values: dict[str, object] = {"network": random.randrange(1 << 20, 1 << 30),
                                 "peers_interval_s": 0.2}
    values.update(changes)
    return PortSettings(**values)  # type: ignore[arg-type]


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():
            await asyncio.sleep(0.05)


@asynccontextmanager
async def cluster(size: int, **changes: object) -> AsyncIterator[Cluster]:
    """``size`` ports on loopback, all bootstrapped to the first; joined (every node
    holds a good peer) before the body runs; closed after it."""
    loop = asyncio.get_running_loop()
    settings = _settings(**changes)
    results = [Results() for _ in range(size)]
    ports = [OpenDhtPort(loop, LOOPBACK, [], results[0], settings)]
    try:
        bootstrap = [("127.0.0.1", ports[0].bound_port())]
        ports += [OpenDhtPort(loop, LOOPBACK, bootstrap, results[i], settings)
                  for i in range(1, size)]
        await _until(lambda: all(p.peers().good > 0 for p in ports))
        yield Cluster(ports, results, settings)
    finally:
        for port in ports:
            port.close()


def _key() -> bytes:
    return os.urandom(20)


# ------------------------------------------------------------------ round trips
def test_put_then_get_from_another_node_returns_the_bytes() -> None:
    async def scenario() -> None:
        async with cluster(8) as c:
            key, value = _key(), b"binding \x00\xff bytes"
            c.ports[1].submit(DhtPut(1, key, value, 120))
            assert await c.results[1].finished(1) == DhtDone(1, True)
            c.ports[6].submit(DhtGet(2, key))
            assert await c.results[6].finished(2) == DhtDone(2, True)
            assert c.results[6].values(2) == [value]
            # a Done is the last result of a get: nothing of token 2 after it
            await asyncio.sleep(0.2)
            items = c.results[6].items
            after = items[items.index(DhtDone(2, True)) + 1:]
            assert not [r for r in after if isinstance(r, DhtValues | DhtDone)]
            counters = c.ports[6].counters
            assert counters[DhtPortCounter.GETS] == 1
            assert counters[DhtPortCounter.VALUES_DELIVERED] == 1
            # a get of a key nobody wrote finishes with no values
            c.ports[3].submit(DhtGet(3, _key()))
            assert (await c.results[3].finished(3)).ok
            assert c.results[3].values(3) == []

    asyncio.run(scenario())


def test_an_ipv6_only_cluster_round_trips_and_counts_ipv6_peers() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        settings = _settings()
        bind = DhtBind(None, "::1", 0)
        results = [Results() for _ in range(5)]
        ports = [OpenDhtPort(loop, bind, [], results[0], settings)]
        try:
            ports += [OpenDhtPort(loop, bind, [("::1", ports[0].bound_port())], r, settings)
                      for r in results[1:]]
            await _until(lambda: all(p.peers().ipv6 > 0 for p in ports))
            assert all(p.peers().ipv4 == 0 for p in ports)
            key = _key()
            ports[1].submit(DhtPut(1, key, b"over IPv6", 60))
            assert (await results[1].finished(1)).ok
            ports[4].submit(DhtGet(2, key))
            await results[4].finished(2)
            assert results[4].values(2) == [b"over IPv6"]
        finally:
            for port in ports:
                await port.aclose()

    asyncio.run(scenario())


def test_repeated_put_of_the_same_bytes_is_one_value() -> None:
    async def scenario() -> None:
        async with cluster(6) as c:
            key = _key()
            for token in (1, 2, 3):
                c.ports[2].submit(DhtPut(token, key, b"same", 60))
                assert (await c.results[2].finished(token)).ok
            c.ports[4].submit(DhtPut(4, key, b"other", 60))
            assert (await c.results[4].finished(4)).ok
            c.ports[5].submit(DhtGet(5, key))
            await c.results[5].finished(5)
            assert sorted(c.results[5].values(5)) == [b"other", b"same"]

    asyncio.run(scenario())
    assert value_id(b"same") == value_id(b"same") != value_id(b"other")
    assert value_id(b"") != 0


def test_a_put_longer_than_opendht_keeps_values_is_put_permanent() -> None:
    """OpenDHT keeps a value 10 minutes; a longer TTL is a permanent put (re-announced by
    this node) that the port cancels when the TTL ends; it is stored and found like any."""
    async def scenario() -> None:
        async with cluster(5) as c:
            key = _key()
            c.ports[1].submit(DhtPut(1, key, b"long-lived", OPENDHT_VALUE_LIFETIME_S * 6))
            assert (await c.results[1].finished(1)).ok
            c.ports[3].submit(DhtGet(2, key))
            await c.results[3].finished(2)
            assert c.results[3].values(2) == [b"long-lived"]

    asyncio.run(scenario())


def test_listen_reports_new_values_until_cancelled() -> None:
    async def scenario() -> None:
        async with cluster(8) as c:
            key = _key()
            listener = c.results[7]
            c.ports[7].submit(DhtListen(10, key))
            c.ports[2].submit(DhtPut(1, key, b"first", 60))
            await listener.wait_for(lambda: b"first" in listener.values(10))
            c.ports[3].submit(DhtPut(2, key, b"second", 60))
            await listener.wait_for(lambda: b"second" in listener.values(10))
            c.ports[7].submit(DhtCancel(10))
            c.ports[2].submit(DhtPut(3, key, b"after cancel", 60))
            assert (await c.results[2].finished(3)).ok
            c.ports[5].submit(DhtGet(4, key))           # the value is there for a get...
            await c.results[5].finished(4)
            assert b"after cancel" in c.results[5].values(4)
            await asyncio.sleep(0.3)
            assert b"after cancel" not in listener.values(10)   # ...not for the listen
            assert listener.done(10) is None                    # a listen has no Done
            counters = c.ports[7].counters
            assert counters[DhtPortCounter.LISTENS] == counters[DhtPortCounter.CANCELS] == 1
            c.ports[7].submit(DhtCancel(10))                    # twice: counted, harmless
            assert c.ports[7].counters[DhtPortCounter.UNKNOWN_CANCELS] == 1

    asyncio.run(scenario())


def test_many_listens_cancelled_in_any_order_stay_sound() -> None:
    """The 4.4 binding alone releases the last listen's callback on every cancel (a
    use-after-free); the port's work-around keeps each listen's own callback alive."""
    async def scenario() -> None:
        async with cluster(5) as c:
            keys = [_key() for _ in range(12)]
            for token, key in enumerate(keys):
                c.ports[1].submit(DhtListen(token, key))
            for token in (0, 5, 11, 3, 7):
                c.ports[1].submit(DhtCancel(token))
            for token, key in enumerate(keys):
                c.ports[2].submit(DhtPut(100 + token, key, b"v%d" % token, 60))
            live = [t for t in range(12) if t not in (0, 5, 11, 3, 7)]
            res = c.results[1]
            await res.wait_for(lambda: all(res.values(t) == [b"v%d" % t] for t in live))
            await asyncio.sleep(0.2)
            assert all(res.values(t) == [] for t in (0, 5, 11, 3, 7))

    asyncio.run(scenario())


# ------------------------------------------------------------------ get right after put
def test_get_right_after_put_misses_sometimes_but_never_returns_wrong_data() -> None:
    """A get issued in the same loop turn as its put (not after the put's Done) may not
    find the value yet; whatever it returns is exactly what was put. After the put's Done a
    get finds it every time."""
    async def scenario() -> tuple[int, int]:
        async with cluster(12) as c:
            rounds, misses = 60, 0
            keys = [_key() for _ in range(rounds)]
            for i, key in enumerate(keys):
                c.ports[1 + i % 5].submit(DhtPut(i, key, b"value-%d" % i, 60))
                c.ports[6 + i % 5].submit(DhtGet(1000 + i, key))
            for i in range(rounds):
                put_res, get_res = c.results[1 + i % 5], c.results[6 + i % 5]
                assert (await put_res.finished(i)).ok
                await get_res.finished(1000 + i)
                got = get_res.values(1000 + i)
                assert got in ([], [b"value-%d" % i])
                misses += not got
            for i, key in enumerate(keys):          # after Done: found every time
                c.ports[11].submit(DhtGet(5000 + i, key))
            for i in range(rounds):
                await c.results[11].finished(5000 + i)
                assert c.results[11].values(5000 + i) == [b"value-%d" % i]
            return rounds, misses

    rounds, misses = asyncio.run(scenario())
    print(f"get right after put: {misses}/{rounds} missed")
    assert misses < rounds


# ------------------------------------------------------------------ bounds
async def _stop_raw_runner(runner: Any) -> None:
    """Stop a raw OpenDHT runner the way OpenDhtPort.aclose does: the binding's join()
    keeps the GIL while OpenDHT's thread may still need it for a put's done callback, so a
    bare shutdown(); join() can deadlock the whole process (pytest's signal timeout cannot
    fire in native code). Wait, with the GIL free, for the shutdown callback first."""
    confirmed: list[bool] = []
    runner.shutdown(lambda: confirmed.append(True))
    await _until(lambda: bool(confirmed))
    await asyncio.sleep(0.05)
    runner.join()


def _raw_put(runner: object, key: bytes, data: bytes) -> None:
    value = odht.Value(data)
    runner.put(odht.InfoHash(key.hex().encode()), value)  # type: ignore[attr-defined]


def test_oversize_and_flooded_values_are_bounded_and_counted() -> None:
    """A hostile node (a raw OpenDHT runner) writes values larger than the port accepts
    and more values under one key than one result holds: the port hands back batches of
    at most MAX_VALUES_PER_RESULT values of at most MAX_VALUE_BYTES each, and counts the
    rest."""
    async def scenario() -> None:
        async with cluster(6) as c:
            hostile = odht.DhtRunner()
            config = odht.DhtConfig()
            config.setNetwork(c.settings.network)
            hostile.run(port=0, ipv4="127.0.0.1", config=config)
            try:
                hostile.bootstrap("127.0.0.1", str(c.ports[0].bound_port()))
                key, flood = _key(), 150
                _raw_put(hostile, key, b"x" * (MAX_VALUE_BYTES + 1))
                _raw_put(hostile, key, b"y" * 20_000)
                for i in range(flood):
                    _raw_put(hostile, key, b"junk-%d" % i)
                seen: set[bytes] = set()
                res = c.results[4]
                for attempt in range(40):
                    c.ports[4].submit(DhtGet(attempt, key))
                    await res.finished(attempt)
                    seen = set(res.values(attempt))
                    if len(seen) == flood:
                        break
                    await asyncio.sleep(0.1)
                assert seen == {b"junk-%d" % i for i in range(flood)}
                batches = [r for r in res.items if isinstance(r, DhtValues)]
                assert all(len(b.values) <= MAX_VALUES_PER_RESULT for b in batches)
                assert all(len(v) <= MAX_VALUE_BYTES for b in batches for v in b.values)
                assert c.ports[4].counters[DhtPortCounter.OVERSIZE_DROPPED] >= 2
            finally:
                await _stop_raw_runner(hostile)

    asyncio.run(scenario())


def test_a_get_stops_after_max_values_per_get() -> None:
    async def scenario() -> None:
        async with cluster(5) as c:
            key, flood = _key(), MAX_VALUES_PER_GET + 200
            for i in range(flood):
                c.ports[1 + i % 3].submit(DhtPut(i, key, b"f%d" % i, 60))
            for i in range(flood):
                await c.results[1 + i % 3].finished(i)
            res = c.results[4]
            c.ports[4].submit(DhtGet(9999, key))
            await res.finished(9999)
            got = res.values(9999)
            assert len(got) <= MAX_VALUES_PER_GET
            assert len(got) == len(set(got))
            assert c.ports[4].counters[DhtPortCounter.OVER_LIMIT_DROPPED] + len(got) >= min(
                flood, MAX_VALUES_PER_GET + 1)

    asyncio.run(scenario())


def test_misuse_is_a_local_protocol_error() -> None:
    async def scenario() -> None:
        async with cluster(2) as c:
            with pytest.raises(LocalProtocolError, match="20 bytes"):
                c.ports[1].submit(DhtGet(1, b"short"))
            with pytest.raises(LocalProtocolError, match="at most"):
                c.ports[1].submit(DhtPut(2, _key(), b"z" * (MAX_VALUE_BYTES + 1), 60))
            c.ports[1].submit(DhtListen(3, _key()))
            with pytest.raises(LocalProtocolError, match="in use"):
                c.ports[1].submit(DhtGet(3, _key()))
            c.ports[1].close()
            with pytest.raises(LocalProtocolError, match="closed"):
                c.ports[1].submit(DhtGet(4, _key()))

    asyncio.run(scenario())


# ------------------------------------------------------------------ timeouts, health, stop
def test_get_and_put_time_out_when_the_bootstrap_node_never_answers() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        res = Results()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = OpenDhtPort(loop, LOOPBACK, [("127.0.0.1", silent.getsockname()[1])], res,
                               _settings(get_timeout_s=0.3, put_timeout_s=0.3))
            try:
                port.submit(DhtGet(1, _key()))
                port.submit(DhtPut(2, _key(), b"v", 60))
                assert not (await res.finished(1)).ok
                assert not (await res.finished(2)).ok
                await asyncio.sleep(0.5)        # no second Done for either, ever
                dones = sorted((r for r in res.items if isinstance(r, DhtDone)),
                               key=lambda r: r.token)
                assert dones == [DhtDone(1, False), DhtDone(2, False)]
                failed = sum(port.counters[c] for c in (
                    DhtPortCounter.GET_TIMEOUTS, DhtPortCounter.PUT_TIMEOUTS,
                    DhtPortCounter.GET_FAILED, DhtPortCounter.PUT_FAILED))
                assert failed == 2
            finally:
                port.close()

    asyncio.run(scenario())


def test_a_lone_node_reports_zero_peers_and_a_cluster_node_some() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        lone_results = Results()
        lone = OpenDhtPort(loop, LOOPBACK, [], lone_results, _settings(peers_interval_s=0.05))
        try:
            await lone_results.wait_for(
                lambda: sum(isinstance(r, DhtPeers) for r in lone_results.items) >= 3)
            assert {r for r in lone_results.items if isinstance(r, DhtPeers)} == {DhtPeers(0)}
            assert lone.peers() == PeerCounts(0, 0)
        finally:
            lone.close()
        async with cluster(6, peers_interval_s=0.05) as c:
            res = c.results[3]
            await res.wait_for(lambda: any(isinstance(r, DhtPeers) and r.good > 0
                                           for r in res.items))
            assert c.ports[3].peers().ipv4 >= 1 and c.ports[3].peers().ipv6 == 0

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_peer_samples_while_values_stream_never_deadlock() -> None:
    """Peer samples every 10 ms while a listen and gets receive hundreds of values: the
    port never calls into OpenDHT under the lock its thread holds while it runs our
    callbacks (the binding keeps the GIL meanwhile), so nothing hangs."""
    async def scenario() -> None:
        async with cluster(6, peers_interval_s=0.01) as c:
            key, count = _key(), 300
            res = c.results[1]
            c.ports[1].submit(DhtListen(1, key))
            for i in range(count):
                c.ports[2 + i % 4].submit(DhtPut(100 + i, key, b"s%d" % i, 60))
                if i % 50 == 0:
                    c.ports[1].submit(DhtGet(10 + i, key))

            def seen() -> set[bytes]:
                return {v for r in res.items if isinstance(r, DhtValues) for v in r.values}

            async def get_again() -> None:
                # The listen of a young six-node DHT may miss a value put far from its
                # key's nodes (tools/bench/dht.py): later gets collect those.
                for n in range(int(DEADLINE_S)):
                    await asyncio.sleep(1.0)
                    c.ports[1].submit(DhtGet(1000 + n, key))
            regets = asyncio.create_task(get_again())
            # Under load the gets may gather every value before the listen has synced
            # with the key's nodes: wait for both, the listen must stream half or more.
            try:
                await res.wait_for(lambda: len(seen()) == count
                                   and len(set(res.values(1))) >= count // 2)
            finally:
                regets.cancel()
            assert len(set(res.values(1))) >= count // 2      # the listen streamed too
            assert sum(isinstance(r, DhtPeers) for r in res.items) >= 5
            assert c.ports[1].peers().good >= 1

    asyncio.run(scenario())


def test_count_peers_by_family() -> None:
    addrs = [b"127.0.0.1:58476", b"[::1]:53855", b"127.0.0.1:58476", "192.0.2.9:4222"]
    assert count_peers(addrs) == PeerCounts(2, 1)
    assert count_peers([]) == PeerCounts(0, 0) and PeerCounts(2, 1).good == 3


def test_peer_discovery_joins_two_nodes_without_bootstrap() -> None:
    """Two vehicles on one LTE router: no bootstrap configured, OpenDHT's local peer
    discovery (multicast on the segment) joins them."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        settings = _settings()
        results = [Results(), Results()]
        ports = [OpenDhtPort(loop, DhtBind(None, None, 0), [], r, settings) for r in results]
        try:
            await _until(lambda: all(p.peers().good > 0 for p in ports))
            key = _key()
            ports[0].submit(DhtPut(1, key, b"found by discovery", 60))
            assert (await results[0].finished(1)).ok
            ports[1].submit(DhtGet(2, key))
            await results[1].finished(2)
            assert results[1].values(2) == [b"found by discovery"]
        finally:
            for port in ports:
                port.close()

    asyncio.run(scenario())


def test_close_leaves_no_thread_and_is_idempotent() -> None:
    async def one_round() -> None:
        async with cluster(10) as c:
            for i, port in enumerate(c.ports):
                key = _key()
                port.submit(DhtListen(1, key))
                port.submit(DhtPut(2, key, b"v%d" % i, 60))
                port.submit(DhtGet(3, _key()))
            # closed with a listen, maybe a put and a get still in flight
        for port in c.ports:
            assert port.closed and port.peers() == PeerCounts(0, 0)
            port.close()                            # twice: nothing happens

    asyncio.run(one_round())              # warm-up: process-wide pools, if any, start here
    before = _threads()
    asyncio.run(one_round())
    assert _threads() == before


@pytest.mark.slow
def test_aclose_with_a_get_to_a_dead_peer_keeps_the_loop_serving() -> None:
    """OpenDHT confirms a shutdown only once its gets end (~17 s against a dead peer):
    aclose() awaits that with the loop free, then joins; no thread is left."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        settings = _settings()
        first = OpenDhtPort(loop, LOOPBACK, [], Results(), settings)
        second = OpenDhtPort(loop, LOOPBACK, [("127.0.0.1", first.bound_port())], Results(),
                             settings)
        await _until(lambda: second.peers().good > 0)
        first.close()
        second.submit(DhtGet(1, _key()))
        second.submit(DhtPut(2, _key(), b"v", 60))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.1)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = loop.time()
        await second.aclose()
        task.cancel()
        assert second.closed
        assert ticks >= (loop.time() - started) / 0.1 * 0.5 - 1

    before = _threads()
    asyncio.run(scenario())
    assert _threads() <= before


def test_bad_binds_are_refused_before_opendht_sees_them() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", 0))
            taken = busy.getsockname()[1]
            with pytest.raises(DhtStartError, match=r"cannot bind UDP 127\.0\.0\.1:"):
                OpenDhtPort(loop, DhtBind("127.0.0.1", None, taken), [], Results())
        for bind, message in ((DhtBind("nonsense", None, 0), "not an IP address"),
                              (DhtBind("::1", None, 0), "not an IPv4 address"),
                              (DhtBind("192.0.2.254", None, 0), "cannot bind"),
                              (DhtBind("127.0.0.1", None, 70000), "not in 0..65535")):
            with pytest.raises(DhtStartError, match=message):
                OpenDhtPort(loop, bind, [], Results())
        with pytest.raises(DhtStartError, match="bootstrap"):
            OpenDhtPort(loop, LOOPBACK, [("127.0.0.1", 1)] * 17, Results())

    asyncio.run(scenario())
