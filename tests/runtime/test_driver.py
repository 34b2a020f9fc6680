"""NodeDriver with real MeshNodes on in-process mem radios (one asyncio loop)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.node.core import NodeCore
from meshcomm.node.e2e_sip import SipSealing, is_sealed
from meshcomm.node.gateway.core import SipGateway
from meshcomm.node.gateway.types import GatewayConfig, LocalDatagram
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storage import SfStorage
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.runtime.app import STORE_FORWARD_FILE, NodeOptions, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.verify import SignatureVerifier
from radios import open_radio
from radios.mem import drop_medium, get_medium
from tests.node.small_disk import read_only_connection
from tests.runtime.helpers import (
    FAST_OVERLAY,
    aors,
    chain_medium,
    ctl,
    identity,
    make_driver,
    node_options,
    wait_until,
)

STATIONS = ["a", "b", "c"]


def _aor(name: str) -> str:
    return f"sip:{name}@test.example"


async def _chain_of_three(medium: str, journal_dir: Path | None) -> list[NodeDriver]:
    drivers = [await make_driver(n, [f"mem:{medium}/{n}"], journal_dir, seed=i)
               for i, n in enumerate(STATIONS)]
    for name, driver in zip(STATIONS, drivers, strict=True):
        driver.register(_aor(name), (f"sip:{name}@{name}.mesh",))
    return drivers


def test_three_nodes_converge_over_two_hops_and_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        with chain_medium(STATIONS) as medium:
            drivers = await _chain_of_three(medium.name, tmp_path)
            try:
                want = {_aor(n) for n in STATIONS}
                await wait_until(lambda: all(aors(d) == want for d in drivers),
                                 "every node to know all three bindings")
                a, b, c = drivers
                far = {e.aor: e for e in a.who()}[_aor("c")]
                assert far.node_id == c.node.node_id.hex()
                assert far.state == "verified"
                await wait_until(lambda: {e.aor: e for e in a.who()}[_aor("c")].hops == 2,
                                 "a route from a to c")
                far = {e.aor: e for e in a.who()}[_aor("c")]
                assert far.next_hop == b.node.node_id.hex()
                assert {e.aor: e for e in a.who()}[_aor("a")].hops == 0
                assert a.radios[f"mem:{medium.name}/a"].counters["tx"] > 0
            finally:
                for driver in drivers:
                    driver.close()

    asyncio.run(scenario())
    for name in STATIONS:
        report = verify_journal(tmp_path / f"{name}.sqlite", identity(name).public_key)
        assert report.ok, report.problems
        assert report.count > 3
    from meshcomm.journal.store import JournalStore

    with JournalStore.open(tmp_path / "a.sqlite", identity("a").node_id) as store:
        types = [e.type for e in store.entries()]
        learned = [e for e in store.entries() if e.type == JournalEventType.BINDING_LEARNED]
    assert types[0] == JournalEventType.NODE_STARTED
    assert JournalEventType.NEIGHBOUR_UP in types
    assert len(learned) >= 3
    assert all(e.wall_s - e.mono_s == pytest.approx(1.7e9) for e in learned)


def test_journal_is_flushed_once_per_loop_turn(tmp_path: Path) -> None:
    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("a", [f"mem:{medium.name}/a"], tmp_path)
            try:
                journal = driver.journal
                assert journal is not None
                driver.register(_aor("a"), ())
                driver.register(_aor("a2"), ())
                # Appended once driver.journal is read (records wait for the transmit),
                # buffered, not yet written.
                assert driver.journal is journal and journal.pending_count >= 2
                head = journal.head()
                assert head is not None
                await asyncio.sleep(0)  # one loop turn: the coalesced flush runs
                assert journal.pending_count == 0
                assert journal.durable_seq == head[0]
            finally:
                driver.close()

    asyncio.run(scenario())


def test_journal_records_are_appended_after_the_transmit(tmp_path: Path) -> None:
    """A run's records are hashed into the journal after its datagrams went out (not
    before the transmit), stamped with the time the core produced them; closing the
    driver before the next loop turn writes them all the same."""
    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            driver = await make_driver("a", [f"mem:{medium.name}/a"], tmp_path)
            store = driver.journal       # the start-up's records appended
            assert store is not None
            head_before = store.head()
            appended_at_send: list[tuple[int, bytes] | None] = []
            radio = driver.radios[f"mem:{medium.name}/a"]
            send = radio.send

            def watching_send(data: bytes, dst: str | None) -> None:
                appended_at_send.append(store.head())
                send(data, dst)

            radio.send = watching_send  # type: ignore[method-assign]
            produced_at = driver.now()
            driver.register(_aor("a"), ())
            produced_by = driver.now()
            assert appended_at_send and set(appended_at_send) == {head_before}
            driver.close()               # no loop turn: close appends and writes them
            reread = JournalStore.open(tmp_path / "a.sqlite", driver.node.node_id)
            try:
                new = [e for e in reread.entries() if head_before is None
                       or e.seq > head_before[0]]
                assert new and all(produced_at <= e.mono_s <= produced_by for e in new)
                assert any(e.type == JournalEventType.BINDING_LEARNED.value for e in new)
            finally:
                reread.close()

    asyncio.run(scenario())


def test_exactly_one_timer_follows_next_timer(tmp_path: Path) -> None:
    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("a", [f"mem:{medium.name}/a"])
            try:
                assert driver.armed_at == driver.node.next_timer()
                driver.register(_aor("a"), ())
                assert driver.armed_at == driver.node.next_timer()
                first = driver.armed_at
                assert first is not None
                await wait_until(lambda: driver.armed_at != first, "the timer to fire")
                assert driver.armed_at == driver.node.next_timer()
                assert driver.node.counters["tx_hello"] >= 1
            finally:
                driver.close()
            assert driver.armed_at is None

    asyncio.run(scenario())


def test_a_batch_of_inputs_in_one_loop_turn_asks_next_timer_once(tmp_path: Path) -> None:
    """Datagrams read in one go (a radio's batch) each run the pump at once, but the timer
    is re-armed once, at the next loop turn, for all of them, and follows next_timer()."""
    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("a", [f"mem:{medium.name}/a"])
            try:
                asked = [0]
                next_timer = driver.core.next_timer

                def counting() -> float | None:
                    asked[0] += 1
                    return next_timer()

                driver.core.next_timer = counting  # type: ignore[method-assign]
                await asyncio.sleep(0)
                asked[0] = 0
                for i in range(10):
                    driver.receive(f"mem:{medium.name}/a", b"\x00junk %d" % i, "b")
                assert asked[0] == 0 and driver.node.counters["rx_frames"] >= 10
                await asyncio.sleep(0)
                assert asked[0] == 1
                assert driver.armed_at == next_timer()
            finally:
                driver.close()

    asyncio.run(scenario())


def test_unicast_goes_out_on_the_radio_of_its_link_address() -> None:
    """b has two radios on two media; a's unicast to c must cross b's second radio."""
    m1, m2 = "rt-uni-1", "rt-uni-2"
    get_medium(m1)
    get_medium(m2)
    received: list[UnicastReceived] = []

    async def scenario() -> None:
        a = await make_driver("ua", [f"mem:{m1}/a"])
        b = await make_driver("ub", [f"mem:{m1}/b", f"mem:{m2}/b"])
        c = await make_driver("uc", [f"mem:{m2}/c"])
        c.event_sink = lambda ev: received.append(ev) if isinstance(ev, UnicastReceived) else None
        try:
            c.register("sip:c@test.example", ())
            await wait_until(lambda: a.node.overlay.routes.get(c.node.identity.node_id, a.now())
                             is not None, "a route from a to c")
            a.node.send_unicast(c.node.node_id, 7, b"hello c", a.now())
            a.pump()
            await wait_until(lambda: bool(received), "c to receive the unicast")
            assert received[0].body == b"hello c"
            assert received[0].origin == a.node.node_id
            assert b.radios[f"mem:{m2}/b"].counters["tx"] > 0
            assert a.counters["tx_unknown_radio"] == b.counters["tx_unknown_radio"] == 0
        finally:
            for driver in (a, b, c):
                driver.close()

    try:
        asyncio.run(scenario())
    finally:
        drop_medium(m1)
        drop_medium(m2)


def test_clean_shutdown_withdraws_the_binding_at_the_neighbour() -> None:
    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            a = await make_driver("a", [f"mem:{medium.name}/a"])
            b = await make_driver("b", [f"mem:{medium.name}/b"])
            try:
                a.register(_aor("a"), ())
                b.register(_aor("b"), ())
                await wait_until(lambda: aors(b) == {_aor("a"), _aor("b")}, "convergence")
                a.shutdown()
                await wait_until(lambda: _aor("a") not in aors(b), "a's binding withdrawn")
                stored = [s for s in b.node.table if s.binding.aor == _aor("a")]
                assert stored and all(s.binding.is_tombstone for s in stored)
                assert a.node.next_timer() is not None  # the overlay keeps running
            finally:
                a.close()
                b.close()

    asyncio.run(scenario())


def test_garbage_from_a_radio_is_counted_not_fatal() -> None:
    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            a = await make_driver("a", [f"mem:{medium.name}/a"])
            try:
                name = f"mem:{medium.name}/a"
                for junk in (b"", b"\x00" * 10, b"\xff" * 2000, b"\x93\x01\x02"):
                    a.receive(name, junk, "b")
                drops = sum(v for k, v in a.node.counters.items()
                            if k.startswith("drop_") and k != "drop_journal_suppressed")
                assert drops == 4
                assert a.node.counters["rx_frames"] == 4
                a.register(_aor("a"), ())
                assert aors(a) == {_aor("a")}
            finally:
                a.close()

    asyncio.run(scenario())


def test_radio_names_must_be_unique() -> None:
    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("a", [f"mem:{medium.name}/a"])
            try:
                same = open_radio(f"mem:{medium.name}/a")
                with pytest.raises(LocalProtocolError):
                    NodeDriver(driver.node, [same, same], None, driver.loop, wall_offset_s=0)
            finally:
                driver.close()

    asyncio.run(scenario())


# ------------------------------------------------------------ store-and-forward (issue 7)
BRAVO = "sip:bravo@incident.local"


def _sf_options(data_dir: Path, spec: str, name: str, timeout_s: float) -> NodeOptions:
    return node_options(data_dir, spec, name, **{"sip.message_timeout_s": timeout_s})


def _held_texts(db: Path) -> list[bytes]:
    """The held MESSAGEs' texts as bravo's node reads them: on disk they are sealed to it
    (issue 12, end to end)."""
    with SfStorage.open(db) as storage:
        parcels = [h.parcel for h in storage.load()[0]]
    assert all(is_sealed(p.sip) and b"MESSAGE" not in p.sip for p in parcels)
    bravo = SipSealing(identity("bravo"), random.Random(0))
    return [(bravo.open_parcel(p.sip, p.origin_key) or b"").rpartition(b"\r\n\r\n")[2]
            for p in parcels]


async def _real_clock_driver(name: str, spec: str) -> NodeDriver:
    """A bare node driver whose wall clock is the real one (run_node's nodes check
    binding times against it)."""
    loop = asyncio.get_running_loop()
    radio = open_radio(spec)
    await radio.open()
    offset = time.time() - loop.time()
    node = MeshNode(identity(name), NodeSettings(overlay=FAST_OVERLAY),
                    verifier=SignatureVerifier(), rng=random.Random(5), now=loop.time(),
                    seq_base=1 << 32, wall_offset_s=offset)
    driver = NodeDriver(node, [radio], None, loop, wall_offset_s=offset)
    driver.start()
    return driver


async def _alfa_and_gone_bravo(tg: asyncio.TaskGroup, dirs: dict[str, Path], medium: str,
                               up: dict[str, NodeDriver],
                               timeout_s: float) -> asyncio.Task[int]:
    """alfa (run_node) up and bravo's binding known to it; then bravo's node (a plain
    driver: no signal handlers of its own) is gone without de-registering."""
    def ready(driver: NodeDriver, _info: NodeInfo) -> None:
        up["alfa"] = driver
    t_alfa = tg.create_task(run_node(
        _sf_options(dirs["alfa"], f"mem:{medium}/a", "alfa", timeout_s), ready))
    bravo = await _real_clock_driver("bravo", f"mem:{medium}/b")
    bravo.register(BRAVO, ("sip:bravo@bravo.mesh",))
    await wait_until(lambda: "alfa" in up, "alfa up")
    await wait_until(lambda: bool(up["alfa"].node.table.lookup(BRAVO)), "bravo at alfa")
    bravo.close()
    return t_alfa


def test_message_accepted_just_before_stop_is_held_on_disk(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("alfa", "bravo")}
    up: dict[str, NodeDriver] = {}

    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                t_alfa = await _alfa_and_gone_bravo(tg, dirs, medium.name, up, 30.0)
                sent = await asyncio.to_thread(ctl, dirs["alfa"], "send", to=BRAVO,
                                               text="just before SIGTERM", wait_s=0.0)
                assert isinstance(sent, dict) and sent["status"] == "pending", sent
                assert _held_texts(dirs["alfa"] / STORE_FORWARD_FILE) == []
                os.kill(os.getpid(), signal.SIGTERM)   # what the service manager sends
                assert await t_alfa == 0

    asyncio.run(scenario())
    assert _held_texts(dirs["alfa"] / STORE_FORWARD_FILE) == [b"just before SIGTERM"]


def test_a_store_that_cannot_be_written_answers_500_not_202(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("alfa", "bravo")}
    up: dict[str, NodeDriver] = {}
    db = dirs["alfa"] / STORE_FORWARD_FILE

    async def send(text: str) -> dict[str, object]:
        result = await asyncio.to_thread(ctl, dirs["alfa"], "send", to=BRAVO, text=text,
                                         wait_s=10.0)
        assert isinstance(result, dict)
        return result

    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                t_alfa = await _alfa_and_gone_bravo(tg, dirs, medium.name, up, 0.5)
                alfa = up["alfa"]
                assert alfa.sf_storage is not None
                alfa.sf_storage.close()
                alfa.sf_storage = SfStorage(read_only_connection(db), db)
                refused = await send("not writable")
                assert (refused["status"], refused["code"]) == ("failed", 500), refused
                assert alfa.counters["sf_persist_errors"] >= 1
                alfa.sf_storage.close()
                alfa.sf_storage = SfStorage.open(db)
                held = await send("writable again")
                assert (held["status"], held["code"]) == ("held", 202), held
                await asyncio.to_thread(ctl, dirs["alfa"], "stop")
                assert await t_alfa == 0
                alfa.sf_storage.close()

    asyncio.run(scenario())
    assert _held_texts(db) == [b"writable again"]


# ------------------------------------------------------------ containment (issue 8)
def test_a_failing_event_consumer_is_contained_and_the_node_keeps_working(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every event handed to the sink raises: the node still converges (transmit and timer
    keep running), the failure is counted, journaled and logged with a traceback once."""
    calls: list[object] = []

    def broken_sink(event: object) -> None:
        calls.append(event)
        raise RuntimeError("consumer bug")

    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            a = await make_driver("a", [f"mem:{medium.name}/a"], tmp_path)
            b = await make_driver("b", [f"mem:{medium.name}/b"], seed=2)
            a.event_sink = broken_sink
            try:
                a.register(_aor("a"), ())
                b.register(_aor("b"), ())
                await wait_until(lambda: {_aor("a"), _aor("b")} <= aors(a),
                                 "a to converge")
                await wait_until(lambda: b.node.overlay.routes.get(a.node.identity.node_id, b.now())
                                 is not None, "a route from b to a")
                for i in range(3):               # each UnicastReceived goes to the sink
                    b.node.send_unicast(a.node.node_id, 7, f"u{i}".encode(), b.now())
                    b.pump()
                await wait_until(lambda: a.counters["contained_faults"] >= 3,
                                 "several contained failures")
                b.register(_aor("b2"), ())       # and the node still learns what follows
                await wait_until(lambda: _aor("b2") in aors(a), "a to learn b2")
                assert a.armed_at is not None
                a.flush_journal()
            finally:
                a.close()
                b.close()

    with caplog.at_level("ERROR", logger="meshcomm.runtime.containment"):
        asyncio.run(scenario())
    assert len(calls) >= 3
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1                       # once per kind, then rate-limited
    with JournalStore.open(tmp_path / "a.sqlite", identity("a").node_id) as store:
        faults = [dict(e.data) for e in store.entries() if e.type == "node.fault"]
    assert faults and faults[0]["step"] == "event" and faults[0]["error"] == "RuntimeError"


def test_an_unstorable_journal_record_is_normalised_and_the_answer_goes_out(
        tmp_path: Path) -> None:
    """The issue 8 failure: a record carrying a peer's 2**65 made the journal refuse it
    inside pump(), which aborted before transmitting. Now it is stored as text and the
    pump goes on: the datagram the same pump releases is sent."""
    async def scenario(tmp: Path) -> None:
        with chain_medium(["a", "b"]) as medium:
            a = await make_driver("a", [f"mem:{medium.name}/a"], tmp)
            b = await make_driver("b", [f"mem:{medium.name}/b"], seed=2)
            try:
                assert isinstance(a.journal, JournalStore)
                a.node.overlay._events.append(  # the record the old bug made
                    JournalRecord(JournalEventType.SIP_MESSAGE, {"cseq": 2**65, "x": 1}))
                a.register(_aor("a"), ())        # its binding goes out in the same pump
                await wait_until(lambda: _aor("a") in aors(b), "b to learn a's binding")
                assert a.counters["journal_records_normalised"] == 1
                assert a.counters["contained_faults"] == 0
                a.flush_journal()
            finally:
                a.close()
                b.close()
        with JournalStore.open(tmp / "a.sqlite", identity("a").node_id) as store:
            stored = [dict(e.data) for e in store.entries() if e.type == "sip.message"]
        assert stored == [{"cseq": str(2**65), "x": 1}]

    asyncio.run(scenario(tmp_path))


class _FaultyGateway(SipGateway):
    """Fault injection: the real gateway handles the datagram, then a bug raises."""

    def receive_local(self, data: bytes, src: tuple[str, int], now: float) -> None:
        super().receive_local(data, src, now)
        raise RuntimeError("bug after the answer was queued")


def test_an_answer_queued_before_a_contained_failure_goes_out_at_once() -> None:
    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            radio = open_radio(f"mem:{medium.name}/a")
            await radio.open()
            loop = asyncio.get_running_loop()
            node = MeshNode(identity("a"), NodeSettings(overlay=FAST_OVERLAY),
                            verifier=SignatureVerifier(), rng=random.Random(1),
                            now=loop.time(), seq_base=1 << 32, wall_offset_s=1.7e9)
            aor = "sip:a@test.example"
            gw = _FaultyGateway(node, GatewayConfig(), rng=random.Random(2), node_aor=aor,
                                now=loop.time())
            sent: list[LocalDatagram] = []
            driver = NodeDriver(NodeCore(node, gw), [radio], None, loop,
                                wall_offset_s=1.7e9, sip_sink=sent.append)
            driver.start()
            client = ("127.0.0.1", 5099)
            options = (f"OPTIONS {aor} SIP/2.0\r\n"
                       "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKfault1;rport\r\n"
                       "Max-Forwards: 70\r\nFrom: <sip:c@test.example>;tag=c\r\n"
                       f"To: <{aor}>\r\nCall-ID: fault1@c\r\nCSeq: 1 OPTIONS\r\n"
                       "Content-Length: 0\r\n\r\n").encode()
            try:
                driver.receive_sip(options, client)
                assert [d.data.split(b"\r\n")[0] for d in sent if d.dest == client] == [
                    b"SIP/2.0 200 OK"]
                assert driver.counters["contained_faults"] == 1
                assert driver.armed_at is not None
            finally:
                driver.close()

    asyncio.run(scenario())
