"""Route table learned from floods: next hop to each origin by path metric (sum of ETX)."""

from __future__ import annotations

from dataclasses import dataclass

from meshcomm.types import LinkAddr, NodeId

#: Destinations with a route at once; past this the least recently refreshed is forgotten
#: (a flood of fresh keys cannot grow the table, only churn its stalest entries).
MAX_ROUTES = 8192
#: Routes remembered after their next hop failed, to reinstate when it is heard again.
MAX_SUSPENDED_ROUTES = 1024


@dataclass(slots=True)
class Route:
    dst: NodeId
    next_hop: LinkAddr
    next_hop_id: NodeId
    metric: int
    hops: int
    updated_at: float
    #: sequence number of the envelope (flood) that last set the metric; -1: unknown
    seq: int = -1


class RouteTable:
    """Best known next hop per destination. A route is refreshed by a copy via its next
    hop, and replaced by a newer envelope of the destination via another next hop, or by
    a path of the same envelope with a lower metric, or once it timed out."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._routes: dict[NodeId, Route] = {}
        self._suspended: dict[NodeId, Route] = {}
        #: next hops with suspended routes (count, an upper bound after evictions)
        self._suspended_via: dict[LinkAddr, int] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def get(self, dst: NodeId, now: float) -> Route | None:
        route = self._routes.get(dst)
        if route is None or now - route.updated_at > self.timeout_s:
            return None
        return route

    def all(self) -> list[Route]:
        return list(self._routes.values())

    def consider(self, dst: NodeId, next_hop: LinkAddr, next_hop_id: NodeId, metric: int,
                 hops: int, now: float, seq: int = -1) -> Route | None:
        """Offer a path; returns the route if the next hop changed (for the journal).

        A later copy of the same flood (``seq`` not newer) via the current next hop
        refreshes the route but does not raise its metric: a neighbour re-sending the flood
        after it learned a longer path (possibly through us) would otherwise count the
        metric up within one flood, and a third neighbour's offer then forms a loop.

        Via another next hop the sequence decides first, as in DSDV: a newer envelope of
        ``dst`` (its next flood) takes over whatever its metric, an older one never does,
        and within one sequence the lower metric wins. This node re-sends the first copy
        of each flood it hears, so its neighbours route along the path that copy took:
        keeping the previous flood's next hop instead (its metric looked lower) left this
        node pointing at a neighbour that now points back at it, a loop until the next
        flood. Along next hops the sequence then never decreases and, within one, the
        metric strictly falls: no loop (see tests/sim/test_routes.py)."""
        cur = self._routes.get(dst)
        if cur is not None and now - cur.updated_at <= self.timeout_s:
            if cur.next_hop == next_hop:
                if 0 <= seq <= cur.seq and metric > cur.metric:
                    metric, hops = cur.metric, cur.hops
                cur.metric, cur.hops, cur.updated_at = metric, hops, now
                cur.seq = max(cur.seq, seq)
                del self._routes[dst]  # most recently refreshed last
                self._routes[dst] = cur
                return None
            if seq >= 0 and cur.seq >= 0 and seq != cur.seq:
                if seq < cur.seq:      # older than what the route knows
                    return None
            elif metric >= cur.metric:
                return None
        route = Route(dst, next_hop, next_hop_id, metric, hops, now, seq)
        self._routes.pop(dst, None)
        if len(self._routes) >= MAX_ROUTES:
            del self._routes[next(iter(self._routes))]
        self._routes[dst] = route
        return route

    def drop(self, dst: NodeId) -> None:
        self._routes.pop(dst, None)

    def suspend(self, dst: NodeId, now: float) -> None:
        """Drop the route to ``dst`` because unicast over it went unacknowledged, but
        remember it: when its next hop is heard again (a healed partition), the route
        comes back at once instead of waiting for a flood or anti-entropy to teach it."""
        route = self._routes.pop(dst, None)
        if route is None:
            return
        route.updated_at = now
        self._suspended.pop(dst, None)
        if len(self._suspended) >= MAX_SUSPENDED_ROUTES:
            del self._suspended[next(iter(self._suspended))]
        self._suspended[dst] = route
        self._suspended_via[route.next_hop] = self._suspended_via.get(route.next_hop, 0) + 1

    def has_suspended_via(self, next_hop: LinkAddr) -> bool:
        return next_hop in self._suspended_via

    def reinstate_via(self, next_hop: LinkAddr, now: float) -> list[Route]:
        """Routes suspended on ``next_hop`` (heard again): back in the table unless a route
        was learned meanwhile or they are older than the route timeout; returns those
        reinstated."""
        back: list[Route] = []
        for dst in [d for d, r in self._suspended.items() if r.next_hop == next_hop]:
            route = self._suspended.pop(dst)
            if dst in self._routes or now - route.updated_at > self.timeout_s:
                continue
            route.updated_at = now
            if len(self._routes) >= MAX_ROUTES:
                del self._routes[next(iter(self._routes))]
            self._routes[dst] = route
            back.append(route)
        self._suspended_via.pop(next_hop, None)
        return back
