"""RouteTable.consider within one flood: a later copy of the same flood (same sequence)
via the current next hop refreshes the route but never raises its metric (it raised it
before, and a third neighbour's path through this very node then formed a lasting loop:
tests/sim/test_routes.py); a newer flood sets the metric it carries."""

from __future__ import annotations

from meshcomm.overlay.routing import RouteTable
from meshcomm.types import LinkAddr, NodeId

DST = NodeId(b"d" * 32)
VIA_A, VIA_B = NodeId(b"a" * 32), NodeId(b"b" * 32)
A, B = LinkAddr("r|a"), LinkAddr("r|b")


def test_a_later_copy_of_the_same_flood_does_not_raise_the_metric() -> None:
    routes = RouteTable(timeout_s=60.0)
    assert routes.consider(DST, A, VIA_A, 2, 2, 0.0, seq=10) is not None
    assert routes.consider(DST, A, VIA_A, 5, 5, 0.1, seq=10) is None
    route = routes.get(DST, 0.2)
    assert route is not None and (route.metric, route.hops, route.updated_at) == (2, 2, 0.1)
    # A neighbour offering a path worse than the kept metric does not take over.
    assert routes.consider(DST, B, VIA_B, 3, 3, 0.2, seq=10) is None
    assert routes.get(DST, 0.3) is route


def test_a_newer_flood_sets_its_metric_and_a_better_path_still_wins() -> None:
    routes = RouteTable(timeout_s=60.0)
    routes.consider(DST, A, VIA_A, 2, 2, 0.0, seq=10)
    assert routes.consider(DST, A, VIA_A, 4, 4, 1.0, seq=11) is None
    route = routes.get(DST, 1.0)
    assert route is not None and route.metric == 4 and route.seq == 11
    changed = routes.consider(DST, B, VIA_B, 3, 3, 1.1, seq=11)
    assert changed is not None and changed.next_hop == B


def test_without_a_sequence_the_metric_follows_the_copy() -> None:
    routes = RouteTable(timeout_s=60.0)
    routes.consider(DST, A, VIA_A, 2, 2, 0.0)
    routes.consider(DST, A, VIA_A, 5, 5, 0.1)
    route = routes.get(DST, 0.1)
    assert route is not None and route.metric == 5


def test_a_newer_flood_via_another_neighbour_takes_over_whatever_its_metric() -> None:
    """The node re-sends the newer flood's first copy: it must route the way it came (it
    kept the older flood's next hop before, and a neighbour routing through it along the
    copy it re-sent then formed a loop: tests/sim/test_routes.py)."""
    routes = RouteTable(timeout_s=60.0)
    routes.consider(DST, A, VIA_A, 2, 2, 0.0, seq=10)
    changed = routes.consider(DST, B, VIA_B, 9, 9, 1.0, seq=11)
    assert changed is not None and (changed.next_hop, changed.metric, changed.seq) == (B, 9, 11)
    # The older flood's copy via A, however short, no longer takes it back...
    assert routes.consider(DST, A, VIA_A, 1, 1, 1.1, seq=10) is None
    # ...a shorter path of the same (newer) flood does.
    changed = routes.consider(DST, A, VIA_A, 5, 5, 1.2, seq=11)
    assert changed is not None and (changed.next_hop, changed.metric) == (A, 5)


def test_without_a_sequence_on_either_side_the_metric_decides() -> None:
    routes = RouteTable(timeout_s=60.0)
    routes.consider(DST, A, VIA_A, 5, 5, 0.0, seq=10)
    assert routes.consider(DST, B, VIA_B, 6, 6, 0.1) is None
    changed = routes.consider(DST, B, VIA_B, 4, 4, 0.2)
    assert changed is not None and changed.next_hop == B
