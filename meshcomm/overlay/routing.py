"""Route table learned from floods: next hop to each origin by path metric (sum of ETX)."""

from __future__ import annotations

from dataclasses import dataclass

from meshcomm.types import LinkAddr, NodeId

#: Destinations with a route at once; past this the least recently refreshed is forgotten
#: (a flood of fresh keys cannot grow the table, only churn its stalest entries).
MAX_ROUTES = 8192


@dataclass(slots=True)
class Route:
    dst: NodeId
    next_hop: LinkAddr
    next_hop_id: NodeId
    metric: int
    hops: int
    updated_at: float


class RouteTable:
    """Best known next hop per destination. A route is replaced when a fresher copy via
    the same next hop arrives, or a path with a lower metric appears, or it timed out."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._routes: dict[NodeId, Route] = {}

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
                 hops: int, now: float) -> Route | None:
        """Offer a path; returns the route if the next hop changed (for the journal)."""
        cur = self._routes.get(dst)
        if cur is not None and now - cur.updated_at <= self.timeout_s:
            if cur.next_hop == next_hop:
                cur.metric, cur.hops, cur.updated_at = metric, hops, now
                del self._routes[dst]  # most recently refreshed last
                self._routes[dst] = cur
                return None
            if metric >= cur.metric:
                return None
        route = Route(dst, next_hop, next_hop_id, metric, hops, now)
        self._routes.pop(dst, None)
        if len(self._routes) >= MAX_ROUTES:
            del self._routes[next(iter(self._routes))]
        self._routes[dst] = route
        return route

    def drop(self, dst: NodeId) -> None:
        self._routes.pop(dst, None)
