"""Registrar bounds per client and per source host (issue 8, item 5), sans-IO.

A REGISTER scan (sipvicious ``svwar``: hundreds of names from one socket, or from many)
must not fill the gateway's registrar nor push bindings into the mesh for names nobody
uses, and a legitimate client must still register while it runs. A *new* AoR is admitted
by :meth:`RegistrationQuota.admit_new`:

* one client (the REGISTER's source address, or TCP connection) holds at most
  :data:`MAX_AORS_PER_CLIENT` AoRs: beyond, 403 (retrying does not help; refreshing or
  removing its own AoRs does);
* one source host holds at most :data:`MAX_AORS_PER_HOST`: beyond, the host's oldest
  *unused* registration is evicted to make room (503 + Retry-After if all are used);
* a host announces at most :data:`ANNOUNCE_BURST_PER_HOST` new AoRs to the mesh at once,
  then one every ``1 / ANNOUNCE_RATE_PER_HOST_S`` seconds: beyond, 503 + Retry-After;
* the registrar holds :data:`~meshcomm.node.gateway.types.MAX_LOCAL_REGISTRATIONS`: when
  full, the oldest unused registration of the host holding the most is evicted (503 +
  Retry-After if none is unused).

"Used" means a request other than REGISTER came from the registration's source, or a
request was routed to it: a scanner's names never are, a phone's soon are. Refreshes of
an AoR already held cost nothing.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Final, TypeVar

from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import LocalRegistration, TokenBucket
from meshcomm.node.gateway.types import MAX_LOCAL_REGISTRATIONS, Address

#: AoRs one client (source address) may hold.
MAX_AORS_PER_CLIENT: Final = 4
#: AoRs one source host may hold (a quarter of the registrar).
MAX_AORS_PER_HOST: Final = MAX_LOCAL_REGISTRATIONS // 4
#: New AoRs one host may announce to the mesh at once, then this many per second.
ANNOUNCE_BURST_PER_HOST: Final = 16
ANNOUNCE_RATE_PER_HOST_S: Final = 0.2
#: Hosts whose announce budget is kept (least recently used forgotten first).
MAX_ANNOUNCE_HOSTS: Final = 1024
FORBIDDEN: Final = 403
UNAVAILABLE: Final = 503

_K = TypeVar("_K")

#: ``(status, headers)`` of a refused REGISTER.
Refusal = tuple[int, list[tuple[str, str]]]
#: Removes a registration (and withdraws its mesh binding).
Evict = Callable[[str, float], None]


class RegistrationQuota:
    """Indexes registrations by source and host; decides whether a new AoR gets in."""

    def __init__(self, regs: dict[str, LocalRegistration], *, retry_after_s: int,
                 counters: Counter[str]) -> None:
        self._regs = regs
        self.retry_after_s = retry_after_s
        self.counters = counters
        self._by_source: dict[Address, set[str]] = {}
        self._by_host: dict[str, set[str]] = {}
        self._announce: OrderedDict[str, TokenBucket] = OrderedDict()

    # ------------------------------------------------------------ index
    def added(self, reg: LocalRegistration) -> None:
        self._by_source.setdefault(reg.source, set()).add(reg.aor)
        self._by_host.setdefault(reg.source[0], set()).add(reg.aor)

    def removed(self, reg: LocalRegistration) -> None:
        _discard(self._by_source, reg.source, reg.aor)
        _discard(self._by_host, reg.source[0], reg.aor)

    def is_client(self, src: Address) -> bool:
        return src in self._by_source

    def note_request(self, src: Address, method: str) -> bool:
        """A request from ``src``: marks its registrations used (not for REGISTER).
        True if ``src`` is a registered client."""
        aors = self._by_source.get(src)
        if aors is None:
            return False
        if method != "REGISTER":
            for aor in aors:
                self._regs[aor].used = True
        return True

    # ------------------------------------------------------------ admission
    def admit_new(self, source: Address, now: float, evict: Evict) -> Refusal | None:
        """May ``source`` register one more AoR? None: yes (after evicting, if needed,
        through ``evict``); else the refusal."""
        if len(self._by_source.get(source, ())) >= MAX_AORS_PER_CLIENT:
            self.counters[GatewayCounter.REGISTER_CLIENT_QUOTA] += 1
            return FORBIDDEN, []
        host = source[0]
        if len(self._by_host.get(host, ())) >= MAX_AORS_PER_HOST:
            victim = self._oldest_unused(self._by_host.get(host, set()))
            if victim is None:
                return self._busy(GatewayCounter.REGISTER_HOST_FULL)
            self.counters[GatewayCounter.REGISTER_EVICTED_HOST_QUOTA] += 1
            evict(victim, now)
        if not self._announce_bucket(host, now).take(now, ANNOUNCE_RATE_PER_HOST_S,
                                                     ANNOUNCE_BURST_PER_HOST):
            return self._busy(GatewayCounter.REGISTER_ANNOUNCE_LIMITED)
        if len(self._regs) >= MAX_LOCAL_REGISTRATIONS:
            victim = self._fair_victim()
            if victim is None:
                return self._busy(GatewayCounter.REGISTER_FULL)
            self.counters[GatewayCounter.REGISTER_EVICTED_FULL] += 1
            evict(victim, now)
        return None

    def _busy(self, counter: GatewayCounter) -> Refusal:
        self.counters[counter] += 1
        return UNAVAILABLE, [("Retry-After", str(self.retry_after_s))]

    def _oldest_unused(self, aors: set[str]) -> str | None:
        unused = [self._regs[a] for a in aors if not self._regs[a].used]
        return min(unused, key=lambda r: (r.since, r.aor)).aor if unused else None

    def _fair_victim(self) -> str | None:
        """The oldest unused registration of the host holding the most (ties: any host
        with unused ones, most first)."""
        for _host, aors in sorted(self._by_host.items(), key=lambda kv: -len(kv[1])):
            victim = self._oldest_unused(aors)
            if victim is not None:
                return victim
        return None

    def _announce_bucket(self, host: str, now: float) -> TokenBucket:
        bucket = self._announce.get(host)
        if bucket is None:
            bucket = TokenBucket(float(ANNOUNCE_BURST_PER_HOST), now)
            self._announce[host] = bucket
            while len(self._announce) > MAX_ANNOUNCE_HOSTS:
                self._announce.popitem(last=False)
        else:
            self._announce.move_to_end(host)
        return bucket


def _discard(index: dict[_K, set[str]], key: _K, aor: str) -> None:
    aors = index.get(key)
    if aors is not None:
        aors.discard(aor)
        if not aors:
            del index[key]
