"""Send/receive pairs from the SIP messages two gateways journaled
(meshcomm/export/exchanges.py): a receipt pairs with the first send of its message, only
between the two nodes each names, and the tables are bounded."""

from __future__ import annotations

from meshcomm.export.exchanges import ExchangeFinder
from meshcomm.journal.chain import JournalEntry

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32


def _sip(seq: int, wall: float, direction: str, peer: str, call_id: str = "c1",
         status: int | None = None) -> JournalEntry:
    data = {"dir": direction, "method": "MESSAGE", "status": status, "call_id": call_id,
            "cseq": 1, "peer": peer[:16] + ".mesh"}
    return JournalEntry(seq, 0.0, wall, b"", "sip.message", data, b"", b"")


def test_a_receipt_pairs_with_the_first_send_and_only_between_the_named_nodes() -> None:
    finder = ExchangeFinder()
    finder.add(A, _sip(1, 10.0, "to-mesh", B))
    finder.add(A, _sip(2, 11.0, "to-mesh", B))          # a retransmission
    finder.add(B, _sip(1, 11.2, "from-mesh", A))        # the copy that got through
    finder.add(C, _sip(1, 11.3, "from-mesh", A))        # C was not sent it: no pair
    finder.add(B, _sip(2, 12.0, "from-mesh", C, call_id="c2"))   # no send journaled
    pairs = list(finder.exchanges())
    assert [(p.sender, p.receiver, p.send, p.recv) for p in pairs] == [(A, B, 10.0, 11.2)]


def test_the_tables_are_bounded_oldest_first() -> None:
    finder = ExchangeFinder(max_keys=3)
    for i in range(10):
        finder.add(A, _sip(i + 1, float(i), "to-mesh", B, call_id=f"c{i}"))
        finder.add(B, _sip(i + 1, i + 0.5, "from-mesh", A, call_id=f"c{i}"))
    assert finder.dropped == 14
    assert [p.send for p in finder.exchanges()] == [7.0, 8.0, 9.0]
    for bad in ({"dir": "to-mesh"}, {"dir": "to-mesh", "call_id": 5, "cseq": 1,
                                     "method": "M", "peer": "x"}):
        finder.add(A, JournalEntry(99, 0.0, 0.0, b"", "sip.message", bad, b"", b""))
    assert finder.dropped == 14
