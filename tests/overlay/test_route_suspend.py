"""A route whose next hop stopped acknowledging is suspended, not forgotten: hearing that
neighbour again (a healed partition) reinstates it at once (issue 7 item 6)."""

from __future__ import annotations

from meshcomm.overlay.routing import MAX_SUSPENDED_ROUTES, RouteTable
from meshcomm.types import LinkAddr, NodeId

A, B = LinkAddr("r|a"), LinkAddr("r|b")


def dst(i: int) -> NodeId:
    return NodeId(i.to_bytes(4, "big") * 8)


def test_suspended_route_comes_back_when_its_next_hop_is_heard() -> None:
    routes = RouteTable(timeout_s=600.0)
    routes.consider(dst(1), A, NodeId(b"a" * 32), 40, 3, 0.0)
    routes.suspend(dst(1), 10.0)
    assert routes.get(dst(1), 10.0) is None and routes.has_suspended_via(A)
    assert not routes.has_suspended_via(B)
    back = routes.reinstate_via(A, 70.0)
    assert [r.dst for r in back] == [dst(1)]
    route = routes.get(dst(1), 70.0)
    assert route is not None and route.next_hop == A and route.updated_at == 70.0
    assert not routes.has_suspended_via(A) and routes.reinstate_via(A, 71.0) == []


def test_a_route_learned_meanwhile_or_a_stale_one_is_not_overwritten() -> None:
    routes = RouteTable(timeout_s=600.0)
    routes.consider(dst(1), A, NodeId(b"a" * 32), 40, 3, 0.0)
    routes.consider(dst(2), A, NodeId(b"a" * 32), 40, 3, 0.0)
    routes.suspend(dst(1), 1.0)
    routes.suspend(dst(2), 1.0)
    routes.consider(dst(1), B, NodeId(b"b" * 32), 80, 4, 2.0)   # learned via B meanwhile
    assert routes.reinstate_via(A, 700.0) == []                  # dst(2): older than timeout
    route = routes.get(dst(1), 700.0)
    assert route is None or route.next_hop == B


def test_suspended_routes_are_bounded() -> None:
    routes = RouteTable(timeout_s=600.0)
    for i in range(MAX_SUSPENDED_ROUTES * 3):
        routes.consider(dst(i), A, NodeId(b"a" * 32), 40, 3, 0.0)
        routes.suspend(dst(i), 1.0)
    assert len(routes._suspended) == MAX_SUSPENDED_ROUTES
    assert len(routes.reinstate_via(A, 2.0)) == MAX_SUSPENDED_ROUTES
