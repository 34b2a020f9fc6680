"""Neighbour table: who we hear, how well, and in which direction.

Each HELLO carries a counter; the receiver keeps an exponentially weighted delivery ratio
(missed counters count as failures). HELLOs also list the neighbours the sender hears and
how well, which gives the reverse direction; a link's cost is its ETX, 1 / (q_fwd * q_rev),
in 1/16 units.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcomm.overlay.ratelimit import link_host
from meshcomm.types import LinkAddr, NodeId

COST_UNIT = 16
#: Neighbours tracked at once, and per sending device (link host): a device that answers
#: HELLOs from many ports or keys cannot crowd out the rest. Past either bound a new
#: neighbour is refused until one falls silent.
MAX_NEIGHBOURS = 256
MAX_NEIGHBOURS_PER_HOST = 4
MAX_LINK_COST = 16 * COST_UNIT
#: Quality a neighbour starts with before its HELLO history says more.
INITIAL_QUALITY = 0.5


@dataclass(slots=True)
class Neighbour:
    node_id: NodeId
    key: bytes
    addr: LinkAddr
    role: str
    last_heard: float
    last_hello_no: int
    last_seq: int
    q_fwd: float = INITIAL_QUALITY   # how well we hear them
    q_rev: float = 0.0               # how well they hear us (from their HELLO)
    alpha: float = 0.125

    def heard_hello(self, hello_no: int, now: float) -> None:
        gap = hello_no - self.last_hello_no
        if gap > 0:
            missed = min(gap - 1, 64)
            self.q_fwd = self.q_fwd * (1 - self.alpha) ** (missed + 1) + self.alpha
            self.last_hello_no = hello_no
        self.last_heard = now

    def quality(self, now: float, hello_interval_s: float) -> float:
        """Forward delivery ratio, decayed for HELLOs overdue right now."""
        overdue = int((now - self.last_heard) / hello_interval_s) - 1
        q = self.q_fwd
        if overdue > 0:
            q *= (1 - self.alpha) ** min(overdue, 64)
        return q

    def cost(self, now: float, hello_interval_s: float) -> int:
        """ETX of the link in 1/16 units (bidirectional delivery ratio)."""
        rev = self.q_rev if self.q_rev > 0 else INITIAL_QUALITY
        q = self.quality(now, hello_interval_s) * rev
        if q <= 1.0 / 16:
            return MAX_LINK_COST
        return min(MAX_LINK_COST, max(COST_UNIT, round(COST_UNIT / q)))


class NeighbourTable:
    def __init__(self, hello_interval_s: float, timeout_s: float, alpha: float):
        self.hello_interval_s = hello_interval_s
        self.timeout_s = timeout_s
        self.alpha = alpha
        self.by_addr: dict[LinkAddr, Neighbour] = {}
        self.by_id: dict[NodeId, Neighbour] = {}
        #: neighbours per link host (see ratelimit.link_host)
        self.hosts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.by_addr)

    def get(self, addr: LinkAddr) -> Neighbour | None:
        return self.by_addr.get(addr)

    def has_host(self, host: str) -> bool:
        """Whether a neighbour heard in a verified HELLO sends from ``host``."""
        return host in self.hosts

    def upsert(self, *, node_id: NodeId, key: bytes, addr: LinkAddr, role: str,
               hello_no: int, seq: int, now: float) -> tuple[Neighbour | None, bool]:
        """Record a HELLO; returns (neighbour, is_new), (None, False) if refused (full)."""
        nb = self.by_addr.get(addr)
        if nb is not None and nb.node_id != node_id:
            self.remove(nb)  # another device took over that link address
            nb = None
        if nb is None:
            host = link_host(addr)
            moved = self.by_id.get(node_id)
            if moved is not None and link_host(moved.addr) == host:
                self.remove(moved)  # the same node from another port of the same device
            if (len(self.by_addr) >= MAX_NEIGHBOURS
                    or self.hosts.get(host, 0) >= MAX_NEIGHBOURS_PER_HOST):
                return None, False
            nb = Neighbour(node_id, key, addr, role, now, hello_no, seq, alpha=self.alpha)
            self.by_addr[addr] = nb
            self.by_id[node_id] = nb
            self.hosts[host] = self.hosts.get(host, 0) + 1
            return nb, True
        nb.heard_hello(hello_no, now)
        nb.last_seq = seq
        nb.role = role
        return nb, False

    def remove(self, nb: Neighbour) -> None:
        if self.by_addr.get(nb.addr) is nb:
            del self.by_addr[nb.addr]
            host = link_host(nb.addr)
            left = self.hosts.get(host, 1) - 1
            if left > 0:
                self.hosts[host] = left
            else:
                self.hosts.pop(host, None)
        if self.by_id.get(nb.node_id) is nb:
            del self.by_id[nb.node_id]

    def expire(self, now: float) -> list[Neighbour]:
        gone = [nb for nb in self.by_addr.values() if now - nb.last_heard > self.timeout_s]
        for nb in gone:
            self.remove(nb)
        return gone

    def cost(self, addr: LinkAddr, now: float) -> int:
        nb = self.by_addr.get(addr)
        return MAX_LINK_COST if nb is None else nb.cost(now, self.hello_interval_s)

    def hello_report(self, now: float, limit: int) -> list[list[object]]:
        """[[short id, quality 0-255], ...] of the best-heard neighbours, for our HELLO."""
        rated = sorted(((nb.quality(now, self.hello_interval_s), nb.node_id[:4])
                        for nb in self.by_addr.values()), reverse=True)[:limit]
        return [[short, min(255, int(q * 255))] for q, short in rated]
