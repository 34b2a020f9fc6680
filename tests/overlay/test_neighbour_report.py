"""What a neighbour's HELLO says of the nodes beyond it (Neighbour.reports): used by the
tunnel to pass over a far relay that the member routing to it no longer hears."""

from __future__ import annotations

from meshcomm.overlay.neighbours import Neighbour
from meshcomm.types import LinkAddr, NodeId
from meshcomm.wire.limits import MAX_HELLO_NEIGHBOURS


def _nb(report: list[object] | None) -> Neighbour:
    nb = Neighbour(NodeId(b"\x01" * 32), b"k" * 32, LinkAddr("udp|x"), "relay", 0.0, 1, 1)
    nb.report = report
    return nb


def test_a_report_lists_a_node_or_not_and_a_full_or_missing_one_says_nothing() -> None:
    far = b"\xaa\xbb\xcc\xdd"
    assert _nb(None).reports(far, MAX_HELLO_NEIGHBOURS) is None
    assert _nb([]).reports(far, MAX_HELLO_NEIGHBOURS) is False
    assert _nb([[b"\x00\x00\x00\x01", 200], [far, 90]]).reports(far, MAX_HELLO_NEIGHBOURS)
    assert _nb([[b"\x00\x00\x00\x01", 200]]).reports(far, MAX_HELLO_NEIGHBOURS) is False
    full: list[object] = [[i.to_bytes(4, "big"), 255] for i in range(MAX_HELLO_NEIGHBOURS)]
    assert _nb(full).reports(far, MAX_HELLO_NEIGHBOURS) is None   # only the best-heard
