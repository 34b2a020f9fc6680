"""Fair load shedding of the SIP gateway (sans-IO): who gets a request in, and who may
put MESSAGEs into store-and-forward.

The gateway asks :meth:`Admission.check` for every request from a local client before it
journals or routes it. The rules (issue 8, item 2):

* Requests that free resources are never refused: BYE, CANCEL and ACK (and responses,
  which never come here). They are still counted as pending transactions.
* Each source (a UDP address or a TCP connection) has its own token bucket
  (``client_rate_per_s`` / ``client_burst`` of the gateway config).
* All sources together share a global rate (:data:`GLOBAL_RATE_PER_S`), of which
  :data:`RESERVED_SHARE` is kept for *registered, behaving* clients: a source that is the
  address of a live local registration and was not shed in the last
  :data:`BEHAVING_WINDOW_S`. Anonymous sources (a flood from a hundred sockets) can use
  only the unreserved part, so they cannot starve registered clients. Both parts are
  cut in equal slices (each with a burst of :data:`FAIR_BURST`): the reserved part among
  the registered sources active in the last :data:`BEHAVING_WINDOW_S`, so registered
  flooders (at most 64 per host, see gateway.regquota) cannot starve a registered client
  that sends less than its slice; the unreserved part among the source *hosts* active in
  that window, so a hundred sockets on one host get what one other host gets (a new
  client registers during a scan). A registered source over its slice competes for its
  host's unreserved slice.
* Pending transactions are split the same way: anonymous sources together may hold at
  most :data:`MAX_ANON_PENDING` (and at most ``(1 - RESERVED_SHARE)`` of
  ``max_pending_transactions``), any single source at most
  :data:`MAX_PENDING_PER_SOURCE`. This bounds what a flood puts on the radio.
* Requests from the mesh hold at most half of ``max_pending_transactions``
  (:meth:`Admission.mesh_full`), and at most :data:`MAX_STALE_PER_DESTINATION`
  transactions may wait longer than :data:`STALE_S` for one local client
  (:meth:`Admission.forwarding`): a flood toward a client that never answers cannot fill
  the table others need, while a burst toward a client that answers passes.
* Refusals are 503 with Retry-After; at most :data:`MAX_SHED_RECORDS_PER_S` of them a
  second are journaled (the rest are counted), so a flood cannot fill the journal.
* Store-and-forward quota (:meth:`Admission.may_hold`): a registered client may have
  :data:`HOLD_BURST` MESSAGEs taken into store-and-forward at once, then one every
  ``1 / HOLD_RATE_PER_S`` seconds; anonymous sources share a per-host quota and one
  quota for all anonymous hosts together (:data:`ANON_HOLD_BURST`). The node's built-in
  UA is not limited.

Every table is bounded (:data:`MAX_SOURCES`, :data:`MAX_HOLD_KEYS`): the least recently
seen source is forgotten first; a forgotten source starts again with a full bucket, which
is no more than a fresh socket gets.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import TokenBucket
from meshcomm.node.gateway.types import BUILTIN_ADDR, Address

#: Methods that end calls or transactions: never refused by a limit.
FREEING_METHODS: Final = frozenset({"BYE", "CANCEL", "ACK"})
#: Requests per second admitted from all local sources together (BYE, CANCEL, ACK
#: aside): most go over the radio, where each MESSAGE costs four to six frames of the
#: overlay's per-neighbour budget (200 frames/s).
GLOBAL_RATE_PER_S: Final = 60.0
#: Share of the global rate and of the pending transactions kept for registered clients.
RESERVED_SHARE: Final = 0.5
#: A registered source shed within this many seconds counts as anonymous.
BEHAVING_WINDOW_S: Final = 10.0
#: Burst of a slice: one second of its rate, at least MIN_FAIR_BURST, at most FAIR_BURST
#: (so many sources together cannot burst far beyond the global rate).
FAIR_BURST: Final = 10
MIN_FAIR_BURST: Final = 2
#: Pending transactions a registered source may always have (its slice is larger while
#: few registered clients are active).
MIN_FAIR_PENDING: Final = 4
#: Pending transactions of one source at most.
MAX_PENDING_PER_SOURCE: Final = 32
#: Pending transactions of all anonymous sources together at most (and at most the
#: unreserved share of ``max_pending_transactions``). Most of what they send goes over
#: the radio: a flood of MESSAGEs waiting 6 s for a silent far client must not fill the
#: overlay's per-neighbour frame budget, or everybody's messages wait for retransmissions.
MAX_ANON_PENDING: Final = 24
#: Transactions waiting longer than STALE_S for one local client at most (beyond: 503).
MAX_STALE_PER_DESTINATION: Final = 16
STALE_S: Final = 2.0
#: Sources whose bucket is kept (least recently seen forgotten first).
MAX_SOURCES: Final = 4096
#: Journal records of refused requests per second (the rest are only counted).
MAX_SHED_RECORDS_PER_S: Final = 5.0
#: Store-and-forward quota of a registered client: burst, then this rate.
HOLD_BURST: Final = 128
HOLD_RATE_PER_S: Final = 2.0
#: Store-and-forward quota of one anonymous host, and of all anonymous hosts together.
ANON_HOST_HOLD_BURST: Final = 4
ANON_HOLD_BURST: Final = 8
ANON_HOLD_RATE_PER_S: Final = 1.0 / 30.0
#: Hold quota keys kept (least recently used forgotten first).
MAX_HOLD_KEYS: Final = 1024
#: Key of the quota shared by every anonymous host.
_ANON_ALL: Final = "*anonymous*"


class Shed(enum.StrEnum):
    """Why a request was refused (its counter: :data:`SHED_COUNTERS`)."""

    SOURCE_RATE = "source_rate"        # the source's own bucket is empty
    GLOBAL_RATE = "global_rate"        # the (unreserved part of the) global budget is spent
    SOURCE_PENDING = "source_pending"  # the source has too many pending transactions
    PENDING = "pending"                # the gateway (or its anonymous share) is full


#: The counter of each shed verdict (a test checks every verdict has one).
SHED_COUNTERS: Final[Mapping[Shed, GatewayCounter]] = {
    Shed.SOURCE_RATE: GatewayCounter.SHED_SOURCE_RATE,
    Shed.GLOBAL_RATE: GatewayCounter.SHED_GLOBAL_RATE,
    Shed.SOURCE_PENDING: GatewayCounter.SHED_SOURCE_PENDING,
    Shed.PENDING: GatewayCounter.SHED_PENDING,
}


@dataclass(slots=True)
class _Source:
    host: str
    bucket: TokenBucket
    #: This source's slice of the reserved rate (registered sources only).
    fair: TokenBucket
    pending: int = 0
    shed_at: float = float("-inf")


@dataclass(slots=True)
class _Open:
    src: Address | None          # None: a request from the mesh or store-and-forward
    reserved: bool
    #: The local client it waits for (set by Admission.forwarding), if any.
    dest: Address | None = None


@dataclass(slots=True)
class Admission:
    """Per-source and global budgets of one gateway (see the module docstring)."""

    rate_per_s: float
    burst: int
    max_pending: int
    counters: Counter[str]
    now: float
    _sources: OrderedDict[Address, _Source] = field(default_factory=OrderedDict)
    _open: dict[int, _Open] = field(default_factory=dict)
    _pending_anon: int = 0
    _pending_mesh: int = 0
    #: Pending transactions per local client they wait for: tx id -> forwarded at.
    _toward: dict[Address, OrderedDict[int, float]] = field(default_factory=dict)
    #: Per host: its slice of the unreserved rate, and when it was last seen.
    _hosts: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)
    _host_seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _shed_log: TokenBucket = field(init=False)
    _holds: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)
    #: Registered sources seen within BEHAVING_WINDOW_S, least recent first.
    _active: OrderedDict[Address, float] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._shed_log = TokenBucket(MAX_SHED_RECORDS_PER_S, self.now)

    # ------------------------------------------------------------ requests
    def check(self, method: str, src: Address, registered: bool, now: float) -> Shed | None:
        """None: admit the request of ``method`` from ``src``; else why it is shed.
        ``registered``: ``src`` is the address of a live local registration."""
        if method in FREEING_METHODS or src == BUILTIN_ADDR:
            return None
        source = self._source(src, now)
        reserved = registered and now - source.shed_at >= BEHAVING_WINDOW_S
        if reserved:
            self._note_active(src, now)
        verdict = self._verdict(source, reserved, now)
        if verdict is not None:
            source.shed_at = now
            self.counters[SHED_COUNTERS[verdict]] += 1
        return verdict

    def _verdict(self, source: _Source, reserved: bool, now: float) -> Shed | None:
        if not source.bucket.take(now, self.rate_per_s, self.burst):
            return Shed.SOURCE_RATE
        if source.pending >= MAX_PENDING_PER_SOURCE:
            return Shed.SOURCE_PENDING
        if reserved:
            return self._reserved_verdict(source, now)
        if len(self._open) >= self.max_pending or self._pending_anon >= self._anon_cap:
            return Shed.PENDING
        return None if self._take_shared(source, now) else Shed.GLOBAL_RATE

    def _reserved_verdict(self, source: _Source, now: float) -> Shed | None:
        """A registered, behaving source: within its equal slice of the reserved rate and
        of the reserved pending transactions it is admitted (the slices add up to the
        reserved rate plus one FAIR_BURST each, and to the reserved pending transactions
        plus at most MIN_FAIR_PENDING each); beyond, it competes for the shared part."""
        active = max(1, len(self._active))
        pending_slice = max(MIN_FAIR_PENDING, (self.max_pending - self._anon_cap) // active)
        slice_rate = GLOBAL_RATE_PER_S * RESERVED_SHARE / active
        if source.pending < pending_slice and source.fair.take(now, slice_rate,
                                                               _fair_burst(slice_rate)):
            return None
        if len(self._open) >= self.max_pending:
            return Shed.PENDING
        return None if self._take_shared(source, now) else Shed.GLOBAL_RATE

    @property
    def _anon_cap(self) -> int:
        return min(MAX_ANON_PENDING, int(self.max_pending * (1 - RESERVED_SHARE)))

    def _take_shared(self, source: _Source, now: float) -> bool:
        """One request from the unreserved part: the source's host takes from its equal
        slice (the hosts active in the last BEHAVING_WINDOW_S share it), so a hundred
        sockets on one host get what one other host gets."""
        host = self._hosts.get(source.host)
        if host is None:
            host = TokenBucket(float(FAIR_BURST), now)
            self._hosts[source.host] = host
        self._hosts.move_to_end(source.host)
        self._host_seen[source.host] = now
        self._host_seen.move_to_end(source.host)
        while self._host_seen and next(iter(self._host_seen.values())) < now - BEHAVING_WINDOW_S:
            self._host_seen.popitem(last=False)
        while len(self._hosts) > MAX_SOURCES:
            self._hosts.popitem(last=False)
        while len(self._host_seen) > MAX_SOURCES:
            self._host_seen.popitem(last=False)
        rate = GLOBAL_RATE_PER_S * (1 - RESERVED_SHARE) / max(1, len(self._host_seen))
        return host.take(now, rate, _fair_burst(rate))

    def _source(self, src: Address, now: float) -> _Source:
        source = self._sources.get(src)
        if source is None:
            source = _Source(src[0], TokenBucket(float(self.burst), now),
                             TokenBucket(float(FAIR_BURST), now))
            self._sources[src] = source
            while len(self._sources) > MAX_SOURCES:
                self._forget_oldest_source()
        else:
            self._sources.move_to_end(src)
        return source

    def _note_active(self, src: Address, now: float) -> None:
        """``src`` is an active registered source; forget those silent for the window."""
        self._active[src] = now
        self._active.move_to_end(src)
        while self._active and next(iter(self._active.values())) < now - BEHAVING_WINDOW_S:
            self._active.popitem(last=False)
        while len(self._active) > MAX_SOURCES:
            self._active.popitem(last=False)

    def _forget_oldest_source(self) -> None:
        """Drop the least recently seen source without pending transactions (or, if all
        have some, the least recently seen: its transactions are still counted)."""
        for addr, source in self._sources.items():
            if source.pending == 0:
                del self._sources[addr]
                return
        self._sources.popitem(last=False)

    def may_journal_shed(self, now: float) -> bool:
        """Whether this refusal may be journaled (:data:`MAX_SHED_RECORDS_PER_S`)."""
        burst = max(1, int(MAX_SHED_RECORDS_PER_S))
        if self._shed_log.take(now, MAX_SHED_RECORDS_PER_S, burst):
            return True
        self.counters[GatewayCounter.SHED_NOT_JOURNALED] += 1
        return False

    # ------------------------------------------------------------ pending transactions
    def opened(self, tx_id: int, src: Address | None, method: str, registered: bool) -> None:
        """A transaction of ``method`` from local client ``src`` (None: from the mesh or
        the store) is pending until :meth:`closed`. ``registered`` (or a method that frees
        resources, never refused): it does not count in the anonymous share."""
        if tx_id in self._open or src == BUILTIN_ADDR:
            return
        reserved = registered or method in FREEING_METHODS
        self._open[tx_id] = _Open(src, reserved)
        if not reserved:
            self._pending_anon += 1
        if src is None:
            self._pending_mesh += 1
        source = self._sources.get(src) if src is not None else None
        if source is not None:
            source.pending += 1

    def closed(self, tx_id: int) -> None:
        """The transaction got its final answer (idempotent)."""
        entry = self._open.pop(tx_id, None)
        if entry is None:
            return
        if not entry.reserved:
            self._pending_anon -= 1
        if entry.src is None:
            self._pending_mesh -= 1
        waiting = self._toward.get(entry.dest) if entry.dest is not None else None
        if waiting is not None and entry.dest is not None:
            waiting.pop(tx_id, None)
            if not waiting:
                del self._toward[entry.dest]
        source = self._sources.get(entry.src) if entry.src is not None else None
        if source is not None and source.pending > 0:
            source.pending -= 1

    def forwarding(self, tx_id: int, dest: Address, method: str, now: float) -> bool:
        """Transaction ``tx_id`` is about to wait for local client ``dest``: False (shed
        it) when MAX_STALE_PER_DESTINATION already wait for it longer than STALE_S (it is
        not answering); BYE, CANCEL and ACK always pass."""
        entry = self._open.get(tx_id)
        if entry is None or entry.dest is not None or dest == BUILTIN_ADDR:
            return True
        waiting = self._toward.setdefault(dest, OrderedDict())
        if method not in FREEING_METHODS and _stale(waiting, now) >= MAX_STALE_PER_DESTINATION:
            if not waiting:
                del self._toward[dest]
            self.counters[GatewayCounter.SHED_DESTINATION_STALE] += 1
            return False
        entry.dest = dest
        waiting[tx_id] = now
        return True

    def mesh_full(self) -> bool:
        """Requests from the mesh hold half of the pending transactions at most."""
        return self._pending_mesh >= self.max_pending // 2

    @property
    def pending(self) -> int:
        return len(self._open)

    @property
    def sources(self) -> int:
        return len(self._sources)

    # ------------------------------------------------------------ store-and-forward quota
    def may_hold(self, src: Address, registered: bool, now: float) -> bool:
        """Whether a MESSAGE of ``src`` may be taken into store-and-forward now (one
        quota unit is spent when True)."""
        if src == BUILTIN_ADDR:
            return True
        if registered:
            ok = self._hold_bucket(f"c:{src[0]}:{src[1]}", now).take(
                now, HOLD_RATE_PER_S, HOLD_BURST)
        else:
            host = self._hold_bucket(f"h:{src[0]}", now, ANON_HOST_HOLD_BURST)
            every = self._hold_bucket(_ANON_ALL, now, ANON_HOLD_BURST)
            ok = (host.take(now, ANON_HOLD_RATE_PER_S, ANON_HOST_HOLD_BURST)
                  and every.take(now, ANON_HOLD_RATE_PER_S, ANON_HOLD_BURST))
        if not ok:
            self.counters[GatewayCounter.HOLD_QUOTA_REFUSED] += 1
        return ok

    def _hold_bucket(self, key: str, now: float, burst: int = HOLD_BURST) -> TokenBucket:
        bucket = self._holds.get(key)
        if bucket is None:
            bucket = TokenBucket(float(burst), now)
            self._holds[key] = bucket
            while len(self._holds) > MAX_HOLD_KEYS:
                oldest = next(iter(self._holds))
                if oldest == _ANON_ALL:          # the shared quota is never forgotten
                    self._holds.move_to_end(oldest)
                    oldest = next(iter(self._holds))
                del self._holds[oldest]
        else:
            self._holds.move_to_end(key)
        return bucket


def _fair_burst(rate_per_s: float) -> int:
    return max(MIN_FAIR_BURST, min(FAIR_BURST, int(rate_per_s)))


def _stale(waiting: OrderedDict[int, float], now: float) -> int:
    """How many of ``waiting`` (oldest first) were forwarded over STALE_S ago, counted up
    to MAX_STALE_PER_DESTINATION."""
    count = 0
    for since in waiting.values():
        if since > now - STALE_S or count >= MAX_STALE_PER_DESTINATION:
            break
        count += 1
    return count
