"""Neighbour table: who we hear, how well, and in which direction.

Each HELLO carries a counter; the receiver keeps an exponentially weighted delivery ratio
(missed counters count as failures). HELLOs also list the neighbours the sender hears and
how well, which gives the reverse direction; a link's cost is its ETX, 1 / (q_fwd * q_rev),
in 1/16 units.

**Variable beacon intervals (issue 13).** HELLOs follow a Trickle timer: a quiet mesh
sends them up to Imax apart. A HELLO announces the longest its sender's next interval may
be (:mod:`.witness`), capped here at our own Imax (``max_interval_s``): a hostile HELLO
cannot announce a huge interval to stay alive forever. A neighbour is gone after
``max(timeout_s, TIMEOUT_INTERVALS x its interval)`` without a HELLO, and its delivery
ratio counts missed HELLOs by their counter and decays for HELLOs overdue by its own
interval, so a quiet neighbour is neither declared dead nor rated poor for being quiet.
Each link has a class (:func:`link_class`: unusable, weak, good); a change of class is an
inconsistency that resets our HELLO timer.
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
#: A neighbour is gone after this many of its announced intervals without a HELLO (its
#: next HELLO is due within 1.5 intervals: this leaves room for one or two lost ones).
TIMEOUT_INTERVALS = 3.5
#: Link classes (see link_class): below the configured minimum quality, weak, good.
WEAK_LINK_QUALITY = 0.5


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
    #: the beacon interval it announced (capped), or our own HELLO interval
    interval_s: float = 2.0
    #: link_class of the link when last rated
    link_class: int = 1
    #: HELLOs heard from it (the estimate's window fills up: see heard_hello)
    heard: int = 0
    #: the neighbour report of its last HELLO ([[short id, quality], ...], validated;
    #: at most MAX_HELLO_NEIGHBOURS entries), None before the first
    report: list[object] | None = None

    def reports(self, short_id: bytes, limit: int) -> bool | None:
        """Whether its last HELLO listed the node of ``short_id`` among its neighbours;
        None when that says nothing (no HELLO yet, or a full report, ``limit`` entries,
        which lists only the best-heard)."""
        report = self.report
        if report is None or len(report) >= limit:
            return None
        return any(entry[0] == short_id for entry in report)  # type: ignore[index]

    def heard_hello(self, hello_no: int, now: float) -> None:
        """A HELLO numbered ``hello_no``: the delivery ratio moves by its weight, 1/(n+1)
        for the n-th HELLO heard until that reaches ``alpha`` (the mean over the HELLOs
        so far while the window fills, then an exponential window): with Trickle a new
        link hears few HELLOs, and its estimate must not take minutes to leave the prior."""
        gap = hello_no - self.last_hello_no
        if gap > 0:
            missed = min(gap - 1, 64)
            self.heard += 1
            weight = max(self.alpha, 1.0 / (self.heard + 1))
            self.q_fwd = self.q_fwd * (1 - weight) ** (missed + 1) + weight
            self.last_hello_no = hello_no
        self.last_heard = now

    def quality(self, now: float, hello_interval_s: float) -> float:
        """Forward delivery ratio, decayed for HELLOs overdue right now (by the longer of
        ``hello_interval_s`` and the neighbour's announced interval)."""
        overdue = int((now - self.last_heard) / max(hello_interval_s, self.interval_s)) - 1
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


def link_class(quality: float, min_quality: float) -> int:
    """0: below ``min_quality`` (not used for routes), 1: weak, 2: good."""
    if quality < min_quality:
        return 0
    return 1 if quality < WEAK_LINK_QUALITY else 2


class NeighbourTable:
    def __init__(self, hello_interval_s: float, timeout_s: float, alpha: float, *,
                 max_interval_s: float | None = None, min_quality: float = 0.2) -> None:
        self.hello_interval_s = hello_interval_s
        self.timeout_s = timeout_s
        self.alpha = alpha
        #: the longest announced interval believed (our own Imax)
        self.max_interval_s = hello_interval_s if max_interval_s is None else max_interval_s
        self.min_quality = min_quality
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

    def interval_of(self, announced_s: float | None) -> float:
        """The interval believed for a HELLO that announced ``announced_s`` (None: our
        own HELLO interval), capped at ``max_interval_s``."""
        if announced_s is None:
            return self.hello_interval_s
        return min(announced_s, self.max_interval_s)

    def timeout_of(self, nb: Neighbour) -> float:
        """How long ``nb`` may stay silent before it is gone."""
        return max(self.timeout_s, TIMEOUT_INTERVALS * nb.interval_s)

    def reclass(self, nb: Neighbour, now: float) -> bool:
        """Rate the link again; True when its class changed."""
        cls = link_class(nb.quality(now, self.hello_interval_s), self.min_quality)
        changed, nb.link_class = cls != nb.link_class, cls
        return changed

    def upsert(self, *, node_id: NodeId, key: bytes, addr: LinkAddr, role: str,
               hello_no: int, seq: int, now: float,
               interval_s: float | None = None) -> tuple[Neighbour | None, bool]:
        """Record a HELLO (announcing ``interval_s``, None: none); returns (neighbour,
        is_new), (None, False) if refused (full)."""
        believed = self.interval_of(interval_s)
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
            nb = Neighbour(node_id, key, addr, role, now, hello_no, seq, alpha=self.alpha,
                           interval_s=believed)
            nb.link_class = link_class(nb.q_fwd, self.min_quality)
            self.by_addr[addr] = nb
            self.by_id[node_id] = nb
            self.hosts[host] = self.hosts.get(host, 0) + 1
            return nb, True
        nb.heard_hello(hello_no, now)
        nb.last_seq = seq
        nb.role = role
        nb.interval_s = believed
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
        gone = [nb for nb in self.by_addr.values() if now - nb.last_heard > self.timeout_of(nb)]
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
