"""Cross-journal checks (meshcomm/export/crosscheck.py): a device that rewrote, re-signed
or cut its history is caught by what other devices witnessed, a receipt whose send was
removed is named on the sender, bad witness records on the witness; an honest incident
gives nothing, in either feeding order; every table is bounded and what overflows is
counted, never turned into a finding."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence

import pytest

from meshcomm.errors import LocalProtocolError
from meshcomm.export.clocks import ClockEstimate, Offset
from meshcomm.export.crosscheck import CrossCheck, CrossLimits
from meshcomm.journal.chain import JournalChain, JournalEntry, MemoryJournal
from meshcomm.journal.events import JournalEventType
from meshcomm.security.identity import Identity
from tests.export.journals import (
    WITNESSED,
    build_incident,
    claim_of,
    plain,
    rechain,
    sip_data,
)

IDS = [Identity(bytes([0x20 + i]) * 32) for i in range(5)]
HEX = [ident.node_id.hex() for ident in IDS]
KEYS = {ident.node_id.hex(): ident.public_key for ident in IDS}
Journals = dict[str, list[JournalEntry]]


def _incident(seed: int = 7) -> tuple[Journals, list[set[int]]]:
    journals = [MemoryJournal(ident.node_id) for ident in IDS]
    incident = build_incident(IDS, journals, seed=seed, steps=120)
    return {h: list(j.entries()) for h, j in zip(HEX, journals, strict=True)}, \
        incident.witnessed


def _check(journals: Journals, keys: Mapping[str, bytes] | None = None, *,
           reverse: bool = False, clocks: ClockEstimate | None = None,
           limits: CrossLimits | None = None) -> list[tuple[str, int, str]]:
    check = CrossCheck(keys, limits)
    for device in sorted(journals, reverse=reverse):
        check.begin(device)
        for entry in journals[device]:
            check.add(device, entry)
    return [(p.device, p.entry, p.kind) for p in check.problems(clocks)]


def _both_orders(journals: Journals, keys: Mapping[str, bytes] | None = None
                 ) -> list[tuple[str, int, str]]:
    forward = _check(journals, keys)
    assert _check(journals, keys, reverse=True) == forward
    return forward


def _rewritten(entries: list[JournalEntry], ident: Identity, seq: int) -> list[JournalEntry]:
    """``ident`` rewrites its entry ``seq`` (a changed value), re-chains and re-signs."""
    tail = plain(entries[seq - 1:])
    kind, data, mono, wall = tail[0]
    tail[0] = (kind, {**data, "rewritten": True}, mono, wall + 0.5)
    return entries[:seq - 1] + [e for e, _ in rechain(ident, entries[:seq - 1], tail)]


def test_an_honest_incident_gives_no_problem_in_either_order() -> None:
    journals, witnessed = _incident()
    assert all(witnessed) and sum(len(j) for j in journals.values()) > 300
    assert _both_orders(journals, KEYS) == []
    assert _both_orders(journals) == []
    check = CrossCheck(KEYS)
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    counts = check.counts()
    assert counts["claims"] >= 20 and counts["sends"] >= 40
    assert check.problems() == []


@pytest.mark.parametrize("keys", [KEYS, None])
def test_a_rewritten_and_resigned_history_is_caught_where_a_witness_first_disagrees(
        keys: Mapping[str, bytes] | None) -> None:
    journals, witnessed = _incident()
    heads = sorted(witnessed[2])
    seq = heads[1] - 3                                  # between two witnessed heads
    journals[HEX[2]] = _rewritten(journals[HEX[2]], IDS[2], seq)
    first = min(h for h in heads if h >= seq)
    kind = "fork" if keys else "witness-contradicts"
    assert _both_orders(journals, keys) == [(HEX[2], first, kind)]


def test_a_cut_tail_is_truncated_at_the_first_missing_entry() -> None:
    journals, witnessed = _incident()
    last_head = max(witnessed[1])
    journals[HEX[1]] = journals[HEX[1]][:last_head - 10]
    assert _both_orders(journals, KEYS) == [(HEX[1], last_head - 9, "truncated")]
    journals[HEX[1]] = []                               # nothing left but its name
    assert _both_orders(journals, KEYS) == [(HEX[1], 1, "truncated")]


def test_a_tail_nobody_witnessed_can_be_cut_unseen() -> None:
    """The limit of witnesses: the final checkpoint entry is remembered by nobody."""
    journals, witnessed = _incident()
    assert max(witnessed[3]) < len(journals[HEX[3]]) - 1
    journals[HEX[3]] = journals[HEX[3]][:max(witnessed[3])]
    assert _both_orders(journals, KEYS) == []


def _witness_records(journals: Journals, witness: int, data: list[dict[str, object]]
                     ) -> list[int]:
    """Append ``data`` as witness records to ``witness``'s journal (re-chained)."""
    entries = journals[HEX[witness]]
    chain = JournalChain(IDS[witness].node_id, (entries[-1].seq, entries[-1].entry_hash))
    added = [chain.append(WITNESSED, d, 0.0, entries[-1].wall_s + 1 + i)
             for i, d in enumerate(data)]
    journals[HEX[witness]] = entries + added
    return [e.seq for e in added]


def _checkpoint_of(journals: Journals, device: int) -> JournalEntry:
    return next(e for e in journals[HEX[device]]
                if e.type == JournalEventType.CHECKPOINT)


def test_bad_witness_records_are_named_on_the_witness() -> None:
    journals, _ = _incident()
    claim = claim_of(IDS[1], _checkpoint_of(journals, 1))
    forged = dict(claim, sig=bytes(64).hex())                   # signature garbled
    lying = dict(claim, head=bytes(32).hex())                   # another head, old sig
    malformed: list[dict[str, object]] = [dict(claim, seq="x"), dict(claim, node="zz"),
                                          {"node": HEX[1]}]
    seqs = _witness_records(journals, 0, [forged, lying, *malformed])
    assert _check(journals, KEYS) == [(HEX[0], seqs[0], "bad-witness")]
    rows = CrossCheck(KEYS)
    for device, entries in journals.items():
        for entry in entries:
            rows.add(device, entry)
    (row,) = rows.problems()
    assert "4 more like it" in row.detail
    # Without keys the garbled signature goes unseen (its head is right) and the lie is
    # the witness's word against the journal: both are named, neither is proven.
    assert _check(journals) == sorted([(HEX[0], seqs[2], "bad-witness"),
                                       (HEX[1], claim["seq"], "witness-contradicts")])


def test_two_heads_signed_for_one_seq_are_a_fork_even_without_the_journal() -> None:
    journals, _ = _incident()
    honest = journals.pop(HEX[4])
    forked = _rewritten(honest, IDS[4], 3)
    checkpoint = _checkpoint_of({HEX[4]: honest}, 4)
    other = next(e for e in forked if e.seq == checkpoint.seq)
    _witness_records(journals, 0, [claim_of(IDS[4], checkpoint)])
    _witness_records(journals, 1, [claim_of(IDS[4], other)])
    assert _check(journals, KEYS) == [(HEX[4], checkpoint.seq - 1, "fork")]
    assert _check(journals) == []                      # unsigned: nothing is proven


# ----------------------------------------------------------------------------- receipts
def _entries(ident: Identity, records: Sequence[tuple[str, dict[str, object], float]]
             ) -> list[JournalEntry]:
    chain = JournalChain(ident.node_id)
    return [chain.append(kind, data, wall - 1000.0, wall) for kind, data, wall in records]


SIP = JournalEventType.SIP_MESSAGE.value
ENV = "ab" * 16


def _send_and_receipt(env: str | None = ENV, skew: float = 0.0, *, sent: bool = True,
                      sender_until: float = 300.0) -> Journals:
    a, b = IDS[0], IDS[1]
    sender: list[tuple[str, dict[str, object], float]] = [
        (JournalEventType.NODE_STARTED.value, {"node": HEX[0]}, 10.0),
        ("note", {"n": 1}, 50.0),
        (SIP, sip_data("to-mesh", b, "c1", None, env), 100.0),
        ("note", {"n": 2}, 101.0),
        ("note", {"n": 3}, sender_until)]
    if not sent:
        del sender[2]                              # the device removed it and re-signed
    receiver: list[tuple[str, dict[str, object], float]] = [
        (JournalEventType.NODE_STARTED.value, {"node": HEX[1]}, 10.0),
        (SIP, sip_data("from-mesh", a, "c1", None, env), 100.1),
        ("note", {"n": 1}, 400.0)]
    return {HEX[0]: _entries(a, [(k, d, w + skew) for k, d, w in sender]),
            HEX[1]: _entries(b, receiver)}


def test_a_removed_send_is_named_on_the_sender_where_it_would_have_been() -> None:
    assert _both_orders(_send_and_receipt()) == []
    journals = _send_and_receipt(sent=False)
    assert _both_orders(journals) == [(HEX[0], 3, "receipt-without-send")]
    check = CrossCheck()
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    (row,) = check.problems()
    assert f"{HEX[1][:16]} entry 2 received envelope {ENV[:16]}" in row.detail


def test_receipts_are_checked_only_where_the_senders_journal_covers_them() -> None:
    assert _check(_send_and_receipt(None, sent=False)) == []        # no env: not checked
    assert _check(_send_and_receipt(sent=False, sender_until=102.0)) == []   # ends early
    journals = _send_and_receipt(sent=False)
    del journals[HEX[0]]                                            # sender not exported
    assert _check(journals) == []
    for lost in ({"type": "journal.dropped", "data": {"count": 3, "first_wall_s": 99.0,
                                                      "last_wall_s": 100.5}},
                 {"type": JournalEventType.NODE_STARTED.value, "data": {"node": HEX[0]}}):
        journals = _send_and_receipt(sent=False)
        entries = journals[HEX[0]]
        tail = plain(entries[2:])
        tail.insert(0, (str(lost["type"]), dict(lost["data"]), 1.0, 100.6))  # type: ignore
        journals[HEX[0]] = entries[:2] + [e for e, _ in rechain(IDS[0], entries[:2], tail)]
        assert _check(journals) == [], lost                 # it may have lost the send


def test_receipt_coverage_is_judged_on_corrected_clocks() -> None:
    skew = 7200.0                                     # the sender's clock is 2 h ahead
    journals = _send_and_receipt(sent=False, skew=skew)
    assert _check(journals) == []                     # raw: its journal ended long ago
    clocks = ClockEstimate(HEX[1], {HEX[1]: Offset(0.0, 0.0), HEX[0]: Offset(skew, 0.05)},
                           True)
    assert _check(journals, clocks=clocks) == [(HEX[0], 3, "receipt-without-send")]
    unknown = ClockEstimate(HEX[1], {HEX[1]: Offset(0.0, 0.0)}, True)
    assert _check(journals, clocks=unknown) == []     # no offset: not judged


# ----------------------------------------------------------------------------- bounds
def _fake(seq: int, wall: float, kind: str, data: dict[str, object],
          rng: random.Random) -> JournalEntry:
    return JournalEntry(seq, wall, wall, b"\x01", kind, data, b"", rng.randbytes(32))


def test_a_flood_of_claims_is_bounded_per_witness_and_real_findings_survive() -> None:
    journals, witnessed = _incident()
    heads = sorted(witnessed[2])
    journals[HEX[2]] = _rewritten(journals[HEX[2]], IDS[2], heads[0])
    rng = random.Random(1)
    stranger = "ee" * 32                                # no journal, no key: unprovable
    flood = [_fake(i, 1.0, WITNESSED, {"node": stranger, "seq": i, "head": rng.randbytes(
        32).hex(), "sig": rng.randbytes(64).hex()}, rng) for i in range(1, 5001)]
    limits = CrossLimits(claims=2_000, claims_per_witness=1_000)
    check = CrossCheck(KEYS, limits)
    check.begin("liar")
    for entry in flood:
        check.add("liar", entry)
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    counts = check.counts()
    assert counts["claims"] <= 2_000 and counts["claims_dropped"] >= 4_000
    assert [(p.device, p.entry, p.kind) for p in check.problems()] == [
        (HEX[2], heads[0], "fork")]
    # A flood of node ids stops at the node table; the export's devices still get theirs.
    check = CrossCheck(KEYS, CrossLimits(nodes=100))
    for i, entry in enumerate(flood):
        check.add("liar", _fake(entry.seq, 1.0, WITNESSED, {**entry.data, "node": f"{i:064x}"},
                                rng))
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    assert check.counts()["claims_dropped"] >= 4_800
    assert [(p.device, p.kind) for p in check.problems()] == [(HEX[2], "fork")]


def test_receipts_sends_and_the_index_are_bounded_without_false_findings() -> None:
    rng = random.Random(2)
    journals = _send_and_receipt(sent=False)
    many = [_fake(i, 100.0 + i * 1e-3, SIP, sip_data("from-mesh", IDS[3], f"c{i}", None,
                                                    rng.randbytes(16).hex()), rng)
            for i in range(1, 3001)]
    check = CrossCheck(None, CrossLimits(receipts=1_000))
    for entry in many:
        check.add("flooder", entry)
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    assert check.counts()["receipts_dropped"] >= 2_000
    assert check.problems() == []                       # the real receipt did not fit
    # Sends that did not fit: that sender's receipts are not judged.
    journals = _send_and_receipt()
    assert _check(journals, limits=CrossLimits(sends=0)) == []
    # An index that stopped: seqs beyond it are not judged, a cut tail still is.
    journals, witnessed = _incident()
    journals[HEX[2]] = _rewritten(journals[HEX[2]], IDS[2], max(witnessed[2]))
    assert _check(journals, KEYS, limits=CrossLimits(indexed_entries=50)) == []
    journals[HEX[1]] = journals[HEX[1]][:5]
    assert _check(journals, KEYS, limits=CrossLimits(indexed_entries=50)) == [
        (HEX[1], 6, "truncated")]


def test_gaps_and_entries_out_of_order_are_not_judged() -> None:
    journals, witnessed = _incident()
    head = sorted(witnessed[2])[1]
    entries = journals[HEX[2]]
    journals[HEX[2]] = [e for e in entries if e.seq != head] + entries[:3]   # gap, replay
    assert _check(journals, KEYS) == []
    check = CrossCheck(KEYS, CrossLimits(max_seq_gap=0))
    for device, entries in journals.items():
        for entry in entries:
            check.add(device, entry)
    counts = check.counts()
    assert counts["index_stopped"] == 1 and counts["entries_out_of_order"] == 3


def _stream(devices: int, per_device: int, rng: random.Random) -> Iterator[
        tuple[str, JournalEntry]]:
    """Entries like a busy incident's: a third SIP over the mesh, a witness record per
    20 entries, the rest other events."""
    names = [f"{d:02x}" * 32 for d in range(devices)]
    for d, name in enumerate(names):
        for seq in range(1, per_device + 1):
            roll, other = seq % 20, names[(d + 1 + seq % (devices - 1)) % devices]
            if roll < 7:
                data = sip_data("to-mesh" if roll % 2 else "from-mesh",
                                IDS[0], "c", None, rng.randbytes(16).hex())
                data["peer"] = other[:16] + ".mesh"
                kind = SIP
            elif roll == 7:
                kind, data = WITNESSED, {"node": other, "seq": seq, "head": rng.randbytes(
                    32).hex(), "sig": rng.randbytes(64).hex()}
            else:
                kind, data = "route.changed", {"hops": 2}
            yield name, _fake(seq, 1e9 + seq, kind, data, rng)


def test_memory_stays_bounded_per_entry() -> None:
    """200,000 entries of 100 devices: the tables grow by well under 40 bytes an entry
    (a million-event export: within a few tens of MB)."""
    rng = random.Random(3)
    stream = list(_stream(100, 2_000, rng))
    tracemalloc.start()
    try:
        check = CrossCheck()
        for device, entry in stream:
            check.add(device, entry)
        check.problems()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / len(stream) < 40, peak


def test_a_refused_journal_is_taken_back_whole() -> None:
    """A journal that failed its own verification is discarded as it is fed: its forged
    receipts and unprovable claims blame nobody, and what it was first to claim is gone."""
    journals, _ = _incident()
    liar = HEX[3]
    entries = journals.pop(liar)
    chain = JournalChain(IDS[3].node_id, (entries[-1].seq, entries[-1].entry_hash))
    lies = [chain.append(WITNESSED, claim_of(IDS[4], other), 0.0, 1e10)
            for other in _rewritten(journals[HEX[4]], IDS[4], 2)
            if other.type == JournalEventType.CHECKPOINT]
    lies.append(chain.append(SIP, sip_data("from-mesh", IDS[0], "x", None, "cd" * 16),
                             0.0, entries[5].wall_s))
    for keys, liar_first in ((KEYS, False), (None, False), (KEYS, True), (None, True)):
        check = CrossCheck(keys)
        if not liar_first:
            for device, others in journals.items():
                for entry in others:
                    check.add(device, entry)
        for entry in entries + lies:
            check.add(liar, entry)
        with pytest.raises(LocalProtocolError):
            check.discard(HEX[0])
        if not liar_first:
            assert check.problems(), keys          # what it says blames others
        check.discard(liar)
        if liar_first:
            for device, others in journals.items():
                for entry in others:
                    check.add(device, entry)
        assert check.problems() == [], keys
        assert check.counts()["devices"] == 4


def test_devices_fed_interleaved_give_the_same_findings() -> None:
    """Device after device is the contract; entries of several devices mixed (each still
    in seq order) give the same answer, the receipts then all resolved at the end."""
    journals, witnessed = _incident()
    journals[HEX[2]] = _rewritten(journals[HEX[2]], IDS[2], sorted(witnessed[2])[1])
    mid = journals[HEX[0]][len(journals[HEX[0]]) // 2].wall_s
    entries = journals[HEX[3]]                              # a receipt of no send
    chain = JournalChain(IDS[3].node_id, (entries[-1].seq, entries[-1].entry_hash))
    forged = sip_data("from-mesh", IDS[0], "forged", None, "cd" * 16)
    journals[HEX[3]] = [*entries, chain.append(SIP, forged, 0.0, mid)]
    expected = _check(journals, KEYS)
    check = CrossCheck(KEYS)
    streams = {device: iter(entries) for device, entries in journals.items()}
    while streams:
        for device in list(streams):
            entry = next(streams[device], None)
            if entry is None:
                del streams[device]
            else:
                check.add(device, entry)
    assert [(p.device, p.entry, p.kind) for p in check.problems()] == expected
    assert sorted(kind for _, _, kind in expected) == ["fork", "receipt-without-send"]


def test_a_key_that_is_not_the_devices_is_not_used() -> None:
    journals, witnessed = _incident()
    journals[HEX[2]] = _rewritten(journals[HEX[2]], IDS[2], min(witnessed[2]))
    wrong = {HEX[2]: IDS[3].public_key, HEX[3]: b"short"}
    check = CrossCheck(wrong)
    assert check.counts()["keys_rejected"] == 2
    assert _check(journals, wrong) == [(HEX[2], min(witnessed[2]), "witness-contradicts")]


def _check_copied(journals: Journals, copies: Mapping[str, tuple[str, float, int]]
                  ) -> list[tuple[str, int, str]]:
    check = CrossCheck(KEYS)
    for device, copy in copies.items():
        check.copied(device, *copy)
    for device in sorted(journals):
        check.begin(device)
        for entry in journals[device]:
            check.add(device, entry)
    return [(p.device, p.entry, p.kind) for p in check.problems()]


def test_a_live_copy_taken_before_a_later_witnessed_checkpoint_is_not_truncated() -> None:
    """ctl collect copies journals that keep growing: device 1's copy ends at entry L, and
    a neighbour collected later witnessed a checkpoint past L made after that copy. With
    the copy's moment (copy.json) that is no cut tail; a claim witnessed before the moment
    still is, and so is one past the head the device reported then."""
    journals, witnessed = _incident()
    last_head = max(witnessed[1])
    cut = last_head - 10
    claim_walls = [e.wall_s for e in journals[HEX[1]] if e.seq == last_head]
    journals[HEX[1]] = journals[HEX[1]][:cut]
    made = claim_walls[0]
    claimed = sorted({e.wall_s for device in HEX if device != HEX[1]
                      for e in journals[device]
                      if e.type == WITNESSED and e.data.get("node") == HEX[1]
                      and e.data.get("seq") == last_head})
    # copied (heard by collector 0) before the checkpoint was made: no finding
    assert _check_copied(journals, {HEX[1]: (HEX[0], made - 30.0, cut)}) == []
    # copied long after every witness heard it, the device then reporting head `cut`
    late = claimed[-1] + 60.0
    assert _check_copied(journals, {HEX[1]: (HEX[0], late, cut)}) == [
        (HEX[1], cut + 1, "truncated")]
    # the device reported a head past the claim: an incomplete copy, no finding
    assert _check_copied(journals, {HEX[1]: (HEX[0], late, last_head + 1)}) == []
    # without copy.json (a file copied off the device) the cut is named as before
    assert _check_copied(journals, {}) == [(HEX[1], cut + 1, "truncated")]
