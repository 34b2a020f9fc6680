"""Hash chain: construction, canonical encoding, round trips, checkpoints, in memory."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from enum import IntEnum

import msgpack
import pytest

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.chain import JournalChain, JournalEntry, MemoryJournal
from meshcomm.journal.codec import (
    GENESIS_HASH,
    MAX_CONTAINER_ITEMS,
    MAX_DATA_BYTES,
    MAX_NESTING_DEPTH,
    MAX_TYPE_BYTES,
    normalize_data,
)
from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.journal.verify import ProblemKind, verify_entries
from tests.journal.helpers import NODE_ID, event_data, signer, signing_key


def build(count: int, node_id: bytes = NODE_ID) -> list[JournalEntry]:
    chain = JournalChain(node_id)
    return [chain.append(JournalEventType.BINDING_LEARNED, event_data(i), 10.0 + i,
                         1.7e9 + i) for i in range(count)]


def test_first_entry_is_seq_1_linked_to_genesis() -> None:
    first = build(1)[0]
    assert first.seq == 1
    assert first.prev_hash == GENESIS_HASH == bytes(32)
    assert first.type == "binding.learned"
    assert first.node_id == NODE_ID


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_msgpack() -> None:
    chain = JournalChain(NODE_ID)
    entry = chain.append("route.changed", {"zeta": 1, "alpha": {"b": 2, "a": b"\x00"}},
                         1.5, 2.5)
    body = msgpack.packb([1, 1.5, 2.5, NODE_ID, "route.changed",
                          {"alpha": {"a": b"\x00", "b": 2}, "zeta": 1}], use_bin_type=True)
    assert entry.entry_hash == hashlib.sha256(GENESIS_HASH + body).digest()


def test_entries_link_and_seqs_increase() -> None:
    entries = build(20)
    assert [e.seq for e in entries] == list(range(1, 21))
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert len({e.entry_hash for e in entries}) == 20
    assert verify_entries(entries).ok


def test_chain_resumed_from_head_continues_identically() -> None:
    whole = build(10)
    chain = JournalChain(NODE_ID, head=(whole[4].seq, whole[4].entry_hash))
    resumed = [chain.append(JournalEventType.BINDING_LEARNED, event_data(i), 10.0 + i,
                            1.7e9 + i) for i in range(5, 10)]
    assert resumed == whole[5:]
    assert chain.head == (10, whole[-1].entry_hash)


def test_key_order_and_container_types_do_not_change_the_hash() -> None:
    class Level(IntEnum):
        HIGH = 3

    one = JournalChain(NODE_ID).append("t", {"a": (1, 2), "b": {"y": 1, "x": 2}}, 0.0, 0.0)
    two = JournalChain(NODE_ID).append("t", {"b": {"x": 2, "y": 1}, "a": [1, Level.HIGH - 1]},
                                       -0.0, 0.0)
    assert one.entry_hash == two.entry_hash
    assert one.data == {"a": [1, 2], "b": {"x": 2, "y": 1}}
    assert type(two.data["a"]) is list


def test_normalized_data_is_plain() -> None:
    plain, _ = normalize_data({"kind": JournalEventType.NEIGHBOUR_UP, "raw": bytearray(b"ab"),
                               "neg": -0.0})
    assert type(plain["kind"]) is str and plain["kind"] == "neighbour.up"
    assert type(plain["raw"]) is bytes
    assert math.copysign(1.0, plain["neg"]) == 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [
    {1: "non-str key"},
    {"set": {1, 2}},
    {"nan": math.nan},
    {"inf": [math.inf]},
    {"huge": 2**64},
    {"tiny": -(2**63) - 1},
    {"obj": object()},
    {"big": b"x" * MAX_DATA_BYTES},
    {"long": list(range(MAX_CONTAINER_ITEMS + 1))},
])
def test_unstorable_data_is_a_local_protocol_error(data: dict[object, object]) -> None:
    chain = JournalChain(NODE_ID)
    with pytest.raises(LocalProtocolError):
        chain.append("t", data, 0.0, 0.0)  # type: ignore[arg-type]
    assert chain.head is None  # a failed append does not advance the chain


def test_nesting_limit() -> None:
    ok: object = 1
    for _ in range(MAX_NESTING_DEPTH - 1):
        ok = [ok]
    JournalChain(NODE_ID).append("t", {"v": ok}, 0.0, 0.0)
    with pytest.raises(LocalProtocolError):
        JournalChain(NODE_ID).append("t", {"v": [ok]}, 0.0, 0.0)


@pytest.mark.parametrize(("type_name", "mono_s"), [
    ("", 0.0), ("x" * (MAX_TYPE_BYTES + 1), 0.0), ("t", math.nan), ("t", math.inf)])
def test_bad_type_or_time_is_a_local_protocol_error(type_name: str, mono_s: float) -> None:
    with pytest.raises(LocalProtocolError):
        JournalChain(NODE_ID).append(type_name, {}, mono_s, 0.0)


def test_bad_node_id_or_head_is_rejected() -> None:
    with pytest.raises(LocalProtocolError):
        JournalChain(b"")
    with pytest.raises(LocalProtocolError):
        JournalChain(NODE_ID, head=(1, b"short"))
    with pytest.raises(LocalProtocolError):
        JournalChain(NODE_ID, head=(0, bytes(32)))


def test_memory_journal_digest_is_deterministic_and_content_sensitive() -> None:
    def run(reason: str, keep: bool) -> MemoryJournal:
        journal = MemoryJournal(NODE_ID, keep_entries=keep)
        for i in range(50):
            record = JournalRecord(JournalEventType.ENVELOPE_DROPPED,
                                   {"reason": reason if i == 30 else "dup", "i": i})
            journal.append_record(record, float(i), 0.0)
        return journal

    assert MemoryJournal(NODE_ID).digest() == GENESIS_HASH
    first, second = run("ttl", True), run("ttl", False)
    assert first.digest() == second.digest()
    assert first.digest() != run("sig", True).digest()
    assert len(first) == len(second) == 50
    assert [e.seq for e in first.entries(45)] == [45, 46, 47, 48, 49, 50]
    assert list(second.entries()) == []
    assert verify_entries(first.entries()).ok


def test_signed_checkpoint_verifies_with_the_node_key_only() -> None:
    key = signing_key()
    journal = MemoryJournal(NODE_ID)
    for i in range(5):
        journal.append("t", {"i": i}, float(i), 0.0)
    checkpoint = journal.checkpoint(signer(key), 5.0, 0.0)
    journal.append("t", {"i": 6}, 6.0, 0.0)
    assert checkpoint.type == JournalEventType.CHECKPOINT
    assert checkpoint.data["head_seq"] == 5
    assert checkpoint.data["head_hash"] == checkpoint.prev_hash
    report = verify_entries(journal.entries(), bytes(key.verify_key))
    assert report.ok and report.checkpoints == 1
    wrong = verify_entries(journal.entries(), bytes(signing_key(9).verify_key))
    assert [(p.seq, p.kind) for p in wrong.problems] == [(6, ProblemKind.BAD_CHECKPOINT)]


def test_rewrite_without_the_key_is_caught_by_the_checkpoint() -> None:
    key = signing_key()
    journal = MemoryJournal(NODE_ID)
    for i in range(4):
        journal.append("t", {"i": i}, float(i), 0.0)
    journal.checkpoint(signer(key), 4.0, 0.0)
    original = list(journal.entries())
    # The forger changes entry 2 and recomputes every hash after it, checkpoint included
    # (they can update head_hash in its data but cannot re-sign it).
    forged_chain = JournalChain(NODE_ID, head=(1, original[0].entry_hash))
    forged = original[:1]
    for entry in original[1:4]:
        data = {"i": 99} if entry.seq == 2 else entry.data
        forged.append(forged_chain.append(entry.type, data, entry.mono_s, entry.wall_s))
    head_seq, head_hash = forged_chain.head or (0, b"")
    old_data = dict(original[4].data)
    forged.append(forged_chain.append(
        JournalEventType.CHECKPOINT, {**old_data, "head_hash": head_hash}, 4.0, 0.0))
    assert head_seq == 4
    assert verify_entries(forged).ok  # without the key, a full rewrite is consistent...
    report = verify_entries(forged, bytes(key.verify_key))
    assert [(p.seq, p.kind) for p in report.problems] == [(5, ProblemKind.BAD_CHECKPOINT)]


def test_signer_must_return_a_signature() -> None:
    with pytest.raises(LocalProtocolError):
        JournalChain(NODE_ID).checkpoint(lambda message: b"short", 0.0, 0.0)


def test_verify_entries_names_edited_removed_and_reordered_entries() -> None:
    entries = build(10)
    edited = list(entries)
    edited[4] = dataclasses.replace(edited[4], data={"i": -1})
    assert [(p.seq, p.kind) for p in verify_entries(edited).problems] == [
        (5, ProblemKind.EDITED)]
    removed = entries[:3] + entries[4:]
    assert [(p.seq, p.kind) for p in verify_entries(removed).problems] == [
        (4, ProblemKind.REMOVED)]
    swapped = [*entries[:5], entries[6], entries[5], *entries[7:]]
    report = verify_entries(swapped)
    assert (6, ProblemKind.REORDERED) in [(p.seq, p.kind) for p in report.problems]
    assert not report.ok


def test_verify_entries_expected_head_detects_truncation() -> None:
    entries = build(10)
    head = (10, entries[-1].entry_hash)
    assert verify_entries(entries, expected_head=head).ok
    report = verify_entries(entries[:7], expected_head=head)
    assert [(p.seq, p.kind) for p in report.problems] == [(10, ProblemKind.REMOVED)]
    other = build(10, node_id=b"\x01" * 32)
    report = verify_entries(other, expected_head=head)
    assert (10, ProblemKind.EDITED) in [(p.seq, p.kind) for p in report.problems]


def test_verify_rejects_a_malformed_public_key() -> None:
    with pytest.raises(LocalProtocolError):
        verify_entries(build(1), b"short")


def test_entry_linking_to_an_older_entry_is_reordered() -> None:
    entries = build(5)
    # A second writer resumed from a stale head: seq 6 links to entry 3, not entry 5.
    stale = JournalChain(NODE_ID, head=(5, entries[2].entry_hash))
    forked = stale.append(JournalEventType.NODE_STARTED, {}, 0.0, 0.0)
    report = verify_entries([*entries, forked])
    assert [(p.seq, p.kind) for p in report.problems] == [(6, ProblemKind.REORDERED)]
    assert "links to entry 3" in report.problems[0].message


def test_entry_with_foreign_data_types_is_undecodable_not_a_crash() -> None:
    entries = build(3)
    broken = dataclasses.replace(entries[1], data={"x": {1, 2}})
    report = verify_entries([entries[0], broken, entries[2]])
    assert [(p.seq, p.kind) for p in report.problems] == [(2, ProblemKind.UNDECODABLE)]
