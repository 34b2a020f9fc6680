"""Send/receive pairs from the SIP messages two gateways journaled
(meshcomm/export/exchanges.py): a receipt pairs with the first send of its message, only
between the two nodes each names, by envelope id when the records carry one; devices are
fed one after the other and only records waiting for a device still to come are held,
within bounds."""

from __future__ import annotations

import tracemalloc

from meshcomm.export.exchanges import ExchangeFinder
from meshcomm.journal.chain import JournalEntry

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32
E1, E2 = "e1" * 16, "e2" * 16                 # envelope ids (hex)


def _sip(seq: int, wall: float, direction: str, peer: str, call_id: str = "c1",
         status: int | None = None, env: str | None = None) -> JournalEntry:
    data: dict[str, object] = {"dir": direction, "method": "MESSAGE", "status": status,
                               "call_id": call_id, "cseq": 1, "peer": peer[:16] + ".mesh"}
    if env is not None:
        data["env"] = env
    return JournalEntry(seq, 0.0, wall, b"", "sip.message", data, b"", b"")


def _feed(finder: ExchangeFinder, journals: dict[str, list[JournalEntry]],
          order: list[str]) -> list[tuple[str, str, float, float]]:
    for device in order:
        for entry in journals[device]:
            finder.add(device, entry)
    return sorted((p.sender, p.receiver, p.send, p.recv) for p in finder.exchanges())


def test_a_receipt_pairs_with_the_first_send_and_only_between_the_named_nodes() -> None:
    journals = {
        A: [_sip(1, 10.0, "to-mesh", B), _sip(2, 11.0, "to-mesh", B)],   # a retransmission
        B: [_sip(1, 11.2, "from-mesh", A),                 # the copy that got through
            _sip(2, 11.9, "from-mesh", A),                 # a duplicate: not paired
            _sip(3, 12.0, "from-mesh", C, call_id="c2")],  # no send journaled
        C: [_sip(1, 11.3, "from-mesh", A)],                # C was not sent it: no pair
    }
    for order in ([A, B, C], [B, C, A], [C, B, A]):
        finder = ExchangeFinder()
        finder.expect(journals)
        assert _feed(finder, journals, order) == [(A, B, 10.0, 11.2)], order
        assert finder.pairs == 1


def test_the_envelope_id_pairs_exactly() -> None:
    # The UA retransmitted the MESSAGE: a second envelope; only the second got through.
    # By Call-ID it would pair with the first send (a bound 2.1 s loose); by envelope id
    # it pairs with the send that was received.
    journals = {A: [_sip(1, 10.0, "to-mesh", B, env=E1), _sip(2, 12.0, "to-mesh", B, env=E2)],
                B: [_sip(1, 12.1, "from-mesh", A, env=E2)]}
    for order in ([A, B], [B, A]):
        assert _feed(ExchangeFinder(), journals, order) == [(A, B, 12.0, 12.1)]
    without = {A: [_sip(1, 10.0, "to-mesh", B), _sip(2, 12.0, "to-mesh", B)],
               B: [_sip(1, 12.1, "from-mesh", A)]}
    assert _feed(ExchangeFinder(), without, [A, B]) == [(A, B, 10.0, 12.1)]


def test_only_the_tightest_pair_per_direction_is_kept_and_all_are_counted() -> None:
    journals = {A: [_sip(i, 10.0 * i, "to-mesh", B, call_id=f"c{i}") for i in range(1, 6)]
                + [_sip(9, 100.0, "from-mesh", B, call_id="r")],
                B: [_sip(i, 10.0 * i + 0.1 * i, "from-mesh", A, call_id=f"c{i}")
                    for i in range(1, 6)] + [_sip(9, 99.0, "to-mesh", A, call_id="r")]}
    finder = ExchangeFinder()
    assert _feed(finder, journals, [A, B]) == [(A, B, 10.0, 10.1), (B, A, 99.0, 100.0)]
    assert finder.pairs == 6 and finder.held == 0


def test_the_tables_are_bounded_and_hold_only_what_can_still_match() -> None:
    finder = ExchangeFinder(max_per_peer=3)
    finder.expect([A, B])
    sends = [_sip(i + 1, float(i), "to-mesh", B, call_id=f"c{i}") for i in range(10)]
    strangers = [_sip(20 + i, 50.0, "to-mesh", C, call_id=f"x{i}") for i in range(100)]
    for entry in sends + strangers:
        finder.add(A, entry)
    assert finder.held == 3 and finder.dropped == 7       # C is not in the export
    for i in range(10):
        finder.add(B, _sip(i + 1, i + 0.5 + i / 100, "from-mesh", A, call_id=f"c{i}"))
    assert [p.send for p in finder.exchanges()] == [0.0]    # the tightest of c0..c2
    assert finder.pairs == 3 and finder.held == 0
    total = ExchangeFinder(max_keys=4)
    for i in range(10):
        total.add(A, _sip(i + 1, float(i), "to-mesh", B if i % 2 else C, call_id=f"c{i}"))
    assert total.held == 4 and total.dropped == 6
    note = JournalEntry(1, 0.0, 0.0, b"", "note", {}, b"", b"")
    total.add(B, note)                        # B's turn: what waits for B may match
    assert total.held == 4
    total.add(C, note)                        # B is done: what waited for it goes
    assert total.held == 2


def test_records_that_are_not_mesh_messages_are_ignored() -> None:
    finder = ExchangeFinder()
    for bad in ({"dir": "to-mesh"}, {"dir": "to-mesh", "call_id": 5, "cseq": 1,
                                     "method": "M", "peer": "x"},
                {"dir": "to-mesh", "call_id": "c", "cseq": "1", "method": "M", "peer": "x"},
                {"dir": "local", "call_id": "c", "cseq": 1, "method": "M", "peer": "x"},
                {"dir": "to-mesh", "call_id": "c", "cseq": 1, "method": "M", "peer": ["x"]},
                {"dir": "to-mesh", "env": ["e"], "call_id": "c", "cseq": 1, "method": "M",
                 "peer": 7}):
        finder.add(A, JournalEntry(99, 0.0, 0.0, b"", "sip.message", bad, b"", b""))
    assert finder.held == 0 and finder.dropped == 0


def test_an_envelope_id_pairs_only_the_send_and_receipt_of_the_named_nodes() -> None:
    # Envelope ids are unique in an honest mesh; a journal repeating one (a forged or
    # confused record) must not pair across the wrong devices or directions.
    journals = {A: [_sip(1, 10.0, "to-mesh", B, env=E1)],
                B: [_sip(1, 10.2, "to-mesh", A, env=E1),       # same id, wrong way
                    _sip(2, 10.3, "from-mesh", C, env=E1)]}    # same id, wrong sender
    finder = ExchangeFinder()
    assert _feed(finder, journals, [A, B]) == [] and finder.pairs == 0


def _witnessed(seq: int, wall: float, node: str, sent_wall: object) -> JournalEntry:
    data = {"node": node, "seq": 4, "head": "00" * 32, "sig": "00" * 64,
            "sent_wall": sent_wall}
    return JournalEntry(seq, 0.0, wall, b"", "journal.witnessed", data, b"", b"")


def test_a_witness_record_with_the_senders_sealing_time_is_a_pair() -> None:
    """Relays journal no SIP message: a witnessed HELLO ties two neighbours' clocks (the
    witnessed node sealed it at sent_wall on its clock, the witness journaled it at its
    stamp); bad or foreign values pair nothing."""
    journals = {
        A: [_witnessed(1, 7200.004, B, 0.001), _witnessed(2, 7300.5, B, 100.0)],
        B: [_witnessed(1, 3.0, A, 7202.998),
            _witnessed(2, 5.0, B, 1.0),                  # itself
            _witnessed(3, 6.0, A, float("nan")), _witnessed(4, 6.0, A, "7200"),
            _witnessed(5, 6.0, A, None),                 # an old record without it
            _witnessed(6, 6.0, C, 1.0)],                 # C is not in the export
    }
    finder = ExchangeFinder()
    finder.expect([A, B])
    assert _feed(finder, journals, [A, B]) == [(A, B, 7202.998, 3.0),
                                               (B, A, 0.001, 7200.004)]
    assert finder.pairs == 3


def test_with_envelope_ids_the_first_send_and_first_receipt_pair_in_either_order() -> None:
    journals = {A: [_sip(1, 10.0, "to-mesh", B, env=E1), _sip(2, 11.0, "to-mesh", B, env=E1)],
                B: [_sip(1, 11.2, "from-mesh", A, env=E1),
                    _sip(2, 11.9, "from-mesh", A, env=E1)]}
    for order in ([A, B], [B, A]):
        finder = ExchangeFinder()
        finder.expect(journals)
        assert _feed(finder, journals, order) == [(A, B, 10.0, 11.2)] and finder.pairs == 1
    # An id that is not hex is matched as a record without one (by Call-ID...).
    odd = {A: [_sip(1, 10.0, "to-mesh", B, env="-1" * 16)],
           B: [_sip(1, 10.5, "from-mesh", A, env="+1" * 16)]}
    assert _feed(ExchangeFinder(), odd, [A, B]) == [(A, B, 10.0, 10.5)]


def test_records_with_envelope_ids_wait_compactly_and_within_bounds() -> None:
    finder = ExchangeFinder(max_per_peer=3)
    finder.expect([A, B, C])
    for i in range(10):
        finder.add(A, _sip(i + 1, float(i), "to-mesh", B, env=f"{i:016x}ab{i:014x}"))
    assert finder.held == 3 and finder.dropped == 7
    for i in range(10):
        finder.add(B, _sip(i + 1, i + 0.5, "from-mesh", A, env=f"{i:016x}ab{i:014x}"))
    assert finder.pairs == 3
    finder.add(C, JournalEntry(1, 0.0, 0.0, b"", "note", {}, b"", b""))   # B done
    assert finder.held == 0
    total = ExchangeFinder(max_keys=5)
    for i in range(8):
        total.add(A, _sip(i + 1, float(i), "to-mesh", B if i % 2 else C,
                          env=f"{i:016x}ab{i:014x}"))
    assert total.held == 5 and total.dropped == 3
    many = ExchangeFinder()
    many.expect([A, B, C])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            many.add(A, _sip(i + 1, float(i), "to-mesh", B, env=f"{i:016x}ab{i:014x}"))
        many.add(C, JournalEntry(1, 0.0, 0.0, b"", "note", {}, b"", b""))   # A done: sealed
        held_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert many.held == 50_000 and held_bytes < 50_000 * 40      # ~18 bytes a record
    for i in range(50_000):
        many.add(B, _sip(i + 1, i + 0.25, "from-mesh", A, env=f"{i:016x}ab{i:014x}"))
    assert many.pairs == 50_000


def test_a_witness_record_pairs_only_a_device_of_the_export_by_its_full_id() -> None:
    lookalike = B[:16] + "00" * 24                       # B's mesh peer name, not B
    finder = ExchangeFinder()
    finder.expect([A, B])
    finder.add(A, _witnessed(1, 10.0, lookalike, 9.0))
    assert finder.pairs == 0
    finder.add(A, _witnessed(2, 10.0, B, 9.0))
    assert finder.pairs == 1
