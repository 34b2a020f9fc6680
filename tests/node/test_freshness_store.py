"""Issue 7 item 3 across restarts: the freshness memory on disk (FreshnessStore), a relay
restarted from it refusing a departed handset's replayed binding, bounds under a flood,
damaged files, and the driver writing it before it transmits (and retrying on a full disk)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from meshcomm.errors import ConfigError
from meshcomm.location.binding import make_binding
from meshcomm.location.freshness import (
    FRESHNESS_RETENTION_S,
    FreshEntry,
    FreshnessMemory,
    Standing,
)
from meshcomm.node.freshness_store import (
    TRIM_EVERY_WRITES,
    FreshnessStore,
    decode_fresh_row_untrusted,
)
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import MsgType, parse_frame_untrusted
from radios.mem import MemRadio, drop_medium, get_medium

WALL = 1_800_000_000.0
INCIDENT = "default"
HANDSET = Identity(bytes(range(40, 72)))
RELAY = Identity(bytes(range(80, 112)))
AOR = "sip:medic@fire.example"


def node(identity: Identity, wall: float, memory: FreshnessMemory | None = None) -> MeshNode:
    """A node started at monotonic 0 whose wall clock reads ``wall`` then."""
    return MeshNode(identity, NodeSettings(incident=INCIDENT), verifier=SignatureVerifier(),
                    rng=random.Random(1), now=0.0, wall_offset_s=wall, freshness=memory)


def frames(sender: MeshNode, now: float) -> list[bytes]:
    return [d.data for d in sender.to_send(now)]


def binding_frames(data: list[bytes]) -> list[bytes]:
    return [f for f in data if parse_frame_untrusted(f)[0].msg_type is MsgType.BINDING]


def open_relay(path: Path, wall: float) -> tuple[MeshNode, FreshnessStore]:
    store = FreshnessStore.open(path)
    memory = FreshnessMemory(own_key=RELAY.public_key)
    memory.restore(store.load(wall), wall)
    return node(RELAY, wall, memory), store


def test_replay_of_a_departed_handsets_binding_to_a_restarted_relay_is_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "freshness.sqlite"
    handset = node(HANDSET, WALL)
    relay, store = open_relay(path, WALL)
    handset.register(AOR, ("sip:medic@h.mesh",), 1.0)
    captured = binding_frames(frames(handset, 1.0))
    assert len(captured) == 1                       # what an attacker records
    relay.receive(captured[0], LinkAddr("h"), 1.1)
    assert relay.table.lookup(AOR)
    handset.shutdown(5.0)
    for f in binding_frames(frames(handset, 5.0)):
        relay.receive(f, LinkAddr("h"), 5.1)
    assert relay.table.lookup(AOR) == []
    store.apply(relay.take_freshness_updates())     # what the driver does every pump
    relay.on_timer(5.1 + 300 + 1)                   # the tombstone's hold is over
    assert all(s.binding.aor != AOR for s in relay.table)
    store.apply(relay.take_freshness_updates())
    store.close()
    # The relay restarts 320 s after the registration: monotonic time starts again.
    wall = WALL + 320
    restarted, store = open_relay(path, wall)
    restarted.receive(captured[0], LinkAddr("attacker"), 0.5)
    assert restarted.table.lookup(AOR) == []
    assert restarted.counters["drop_replayed_old_seq"] == 1
    assert not binding_frames(frames(restarted, 0.6))   # nothing re-flooded
    store.close()
    # The control: the same relay restarted without its freshness file takes the replay
    # as new, verified, with a lifetime, and would re-flood it (the reported attack).
    amnesiac = node(RELAY, wall)
    amnesiac.receive(captured[0], LinkAddr("attacker"), 0.5)
    found = amnesiac.table.lookup(AOR)
    assert found and found[0].state.value == "verified"


def test_restart_then_older_sequence_refused_newer_accepted(tmp_path: Path) -> None:
    path = tmp_path / "freshness.sqlite"
    handset = node(HANDSET, WALL)
    relay, store = open_relay(path, WALL)
    sent: list[bytes] = []
    for t in (1.0, 2.0, 3.0):                       # three registrations: seq n, n+1, n+2
        handset.register(AOR, ("sip:medic@h.mesh",), t)
        sent += binding_frames(frames(handset, t))
    for f in sent:
        relay.receive(f, LinkAddr("h"), 3.5)
    store.apply(relay.take_freshness_updates())
    store.close()
    restarted, store = open_relay(path, WALL + 10)
    for old in sent[:2]:
        restarted.receive(old, LinkAddr("x"), 0.1)
    assert restarted.table.lookup(AOR) == []
    assert restarted.counters["drop_replayed_old_seq"] == 2
    restarted.receive(sent[2], LinkAddr("h"), 0.2)  # the current one is still welcome
    assert restarted.table.lookup(AOR)
    store.close()


def test_store_round_trip_expiry_and_corrupt_rows(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    memory = FreshnessMemory()
    for i in range(5):
        who = Identity(bytes([i + 1]) * 32)
        memory.accepted(make_binding(who, incident=INCIDENT, seq=10 + i, aor=f"sip:u{i}@x.y",
                                     contacts=(), issued_at=WALL, lifetime_s=60),
                        WALL, credentialed=i == 0)
    with FreshnessStore.open(path) as store:
        store.apply(memory.take_updates())
        assert store.count() == 5
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as raw:                # damage the file by hand
        raw.execute("INSERT INTO fresh VALUES (x'0102', x'00', 'a', 1e10, 9)")
        raw.execute("INSERT INTO fresh VALUES (x'0102030405060708', x'0000000000000001', "
                    "1.0, 1e300, 0)")
    with FreshnessStore.open(path) as store:
        loaded = store.load(WALL + 1)
        assert store.skipped_rows == 2
        assert sorted(e.seq for e in loaded) == [10, 11, 12, 13, 14]
        assert {e.standing for e in loaded} == {Standing.TRANSIENT, Standing.CREDENTIALED}
        # Past the retention every row is gone, and deleted from the file.
        assert store.load(WALL + FRESHNESS_RETENTION_S + 1) == []
        assert store.count() == 2                     # only the two damaged rows remain


def test_rows_decode_only_to_entries_or_decode_error() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from meshcomm.errors import DecodeError
    values = st.one_of(st.none(), st.integers(-5, 2**70), st.floats(), st.binary(max_size=10),
                       st.text(max_size=5))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(values, min_size=0, max_size=6))
    def check(row: list[object]) -> None:
        try:
            entry = decode_fresh_row_untrusted(row)
        except DecodeError:
            return
        assert isinstance(entry, FreshEntry)

    check()


def test_not_a_freshness_database_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "f.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a freshness database"):
        FreshnessStore.open(bad)


def test_store_stays_bounded_under_a_flood_and_keeps_honest_entries(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    capacity = 100
    memory = FreshnessMemory(own_key=RELAY.public_key, capacity=capacity)
    honest = []
    for i in range(30):                               # registered and refreshed
        who = Identity(bytes([7, i]) + bytes(30))
        for seq in (1, 2):
            b = make_binding(who, incident=INCIDENT, seq=seq, aor=f"sip:h{i}@x.y",
                             contacts=(), issued_at=WALL, lifetime_s=60)
            memory.accepted(b, WALL, credentialed=False)
        honest.append(b.record_id)
    with FreshnessStore.open(path) as store:
        store.max_entries = capacity
        store.apply(memory.take_updates())
        for i in range(1000):                        # 1,000 fresh keys, 4 per pump
            who = Identity(i.to_bytes(4, "big") + bytes(28))
            memory.accepted(make_binding(who, incident=INCIDENT, seq=1,
                                         aor=f"sip:x{i}@evil.example", contacts=(),
                                         issued_at=WALL, lifetime_s=60), WALL + 1,
                            credentialed=False)
            if i % 4 == 3:
                store.apply(memory.take_updates())
        assert store.count() == capacity
    with FreshnessStore.open(path) as store:         # restart
        restored = FreshnessMemory(own_key=RELAY.public_key, capacity=capacity)
        restored.restore(store.load(WALL + 2, capacity), WALL + 2)
    assert len(restored) == capacity
    assert all(restored.get(rid) is not None for rid in honest)


def test_driver_writes_before_transmitting_and_retries_after_a_failed_write(
        tmp_path: Path) -> None:
    """The relay's re-flood of a new binding leaves its radio only once the binding's
    sequence is on disk; a refused write (read-only: what a full disk looks like to SQLite)
    is counted and retried with the next pump."""
    medium = get_medium("fresh-driver")
    path = tmp_path / "f.sqlite"
    seen_on_disk_at_send: list[int] = []

    class WatchedRadio(MemRadio):
        def send(self, data: bytes, dst: str | None) -> None:
            if binding_frames([data]):
                with sqlite3.connect(path) as peek:
                    seen_on_disk_at_send.append(
                        peek.execute("SELECT COUNT(*) FROM fresh").fetchone()[0])
            super().send(data, dst)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        radio = WatchedRadio("mem:fresh-driver/r", "fresh-driver", "r")
        await radio.open()
        store = FreshnessStore.open(path)
        offset = WALL - loop.time()                   # both clocks read WALL now
        relay = MeshNode(RELAY, NodeSettings(incident=INCIDENT), verifier=SignatureVerifier(),
                         rng=random.Random(2), now=loop.time(), wall_offset_s=offset,
                         freshness=FreshnessMemory(own_key=RELAY.public_key))
        driver = NodeDriver(relay, [radio], None, loop, wall_offset_s=offset)
        driver.fresh_store = store
        try:
            driver.start()
            handset = node(HANDSET, WALL)
            handset.register(AOR, ("sip:medic@h.mesh",), 0.0)
            first = binding_frames(frames(handset, 0.0))[0]
            driver.receive("mem:fresh-driver/r", first, "h")
            await asyncio.sleep(0.2)                  # past the rebroadcast delay
            assert seen_on_disk_at_send and seen_on_disk_at_send[0] == 1
            store._db().execute("PRAGMA query_only = ON")
            handset.register(AOR, ("sip:medic@h.mesh",), 1.0)
            driver.receive("mem:fresh-driver/r", binding_frames(frames(handset, 1.0))[0], "h")
            assert driver.counters["freshness_persist_errors"] >= 1
            store._db().execute("PRAGMA query_only = OFF")
            driver.pump()                             # the next pump writes what failed
            row = store._db().execute("SELECT seq FROM fresh").fetchone()
            assert int.from_bytes(row[0], "big") == relay.table.lookup(AOR)[0].binding.seq
        finally:
            driver.close()
            store.close()

    try:
        asyncio.run(scenario())
    finally:
        drop_medium(medium.name)


def test_removals_lost_while_the_disk_failed_are_trimmed_later(tmp_path: Path) -> None:
    capacity = 50
    memory = FreshnessMemory(capacity=capacity)
    counter = iter(range(10_000))

    def accept_one(wall: float, seqs: tuple[int, ...] = (1,)) -> None:
        i = next(counter)
        who = Identity(i.to_bytes(4, "big") + bytes(28))
        for seq in seqs:
            memory.accepted(make_binding(who, incident=INCIDENT, seq=seq,
                                         aor=f"sip:x{i}@x.example", contacts=(),
                                         issued_at=wall, lifetime_s=60),
                            wall, credentialed=False)

    with FreshnessStore.open(tmp_path / "f.sqlite") as store:
        store.max_entries = capacity
        for _ in range(capacity):                     # established entries, on disk
            accept_one(WALL, (1, 2))
        store.apply(memory.take_updates())
        for _ in range(300):                          # the disk refuses: nothing written
            accept_one(WALL)
        later = WALL + FRESHNESS_RETENTION_S + 1      # the on-disk entries' time is up
        accept_one(later)
        assert memory.unrecorded_removals > 0
        store.apply(memory.take_updates())            # the disk is back
        assert store.count() > capacity               # rows whose removal was lost
        for _ in range(TRIM_EVERY_WRITES - 2):       # up to the write that trims
            accept_one(later)
            store.apply(memory.take_updates())
        assert store.count() <= capacity
