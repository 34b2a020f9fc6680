"""Traffic of a simulated incident: MESSAGEs and calls between the nodes' SIP clients.

A :class:`TrafficPlan` says what to send: single events (``[[traffic]]`` entries with
``at_s``), rates (``rate_per_s`` between ``start_s`` and ``end_s``) and a number of random
messages and calls (``--messages N``, ``--calls N``) spread uniformly over the traffic
window, which opens once the clients have registered and closes early enough for the last
message and call to complete before the run ends. :meth:`TrafficPlan.expand` turns it into
timed :class:`TrafficEvent` s, deterministically for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from meshcomm.errors import ConfigError

#: Traffic starts this long after the last node registered (the mesh converges first).
TRAFFIC_SETTLE_S = 10.0
#: The last message or call leaves this long before the end of the run (it completes).
TRAFFIC_DRAIN_S = 25.0
#: How long a call lasts unless its entry says otherwise.
DEFAULT_CALL_S = 10.0
#: Planned traffic events in one run (a rate entry cannot plan more).
MAX_TRAFFIC_EVENTS = 200_000


class TrafficKind(Enum):
    MESSAGE = "message"
    CALL = "call"


@dataclass(frozen=True, slots=True)
class TrafficEvent:
    """One MESSAGE or call from ``src``'s client to ``dst``'s, at ``at_s``."""

    at_s: float
    kind: TrafficKind
    src: str
    dst: str
    duration_s: float = DEFAULT_CALL_S


@dataclass(frozen=True, slots=True)
class TrafficRate:
    """``rate_per_s`` events, evenly spaced from ``start_s`` to ``end_s`` (None: the
    window's bounds), between ``src`` and ``dst`` (None: a random pair each time)."""

    kind: TrafficKind
    rate_per_s: float
    start_s: float | None = None
    end_s: float | None = None
    src: str | None = None
    dst: str | None = None
    duration_s: float = DEFAULT_CALL_S


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    events: tuple[TrafficEvent, ...] = ()
    rates: tuple[TrafficRate, ...] = ()
    random_messages: int = 0
    random_calls: int = 0
    call_duration_s: float = DEFAULT_CALL_S
    #: Fraction of the random pairs (random messages and calls, rates without from/to)
    #: whose two nodes are in different islands (radio components); 0: any pair.
    cross_site: float = 0.0

    @property
    def empty(self) -> bool:
        return not (self.events or self.rates or self.random_messages or self.random_calls)

    def window(self, duration_s: float, register_by_s: float,
               kind: TrafficKind) -> tuple[float, float]:
        """When random traffic of ``kind`` may start (a call must also end in time)."""
        start = register_by_s + TRAFFIC_SETTLE_S
        end = duration_s - TRAFFIC_DRAIN_S
        if kind is TrafficKind.CALL:
            end -= self.call_duration_s
        return start, end

    def expand(self, names: list[str], rng: random.Random, duration_s: float,
               register_by_s: float,
               islands: dict[str, int] | None = None) -> list[TrafficEvent]:
        """Every planned event, in time order (ties keep plan order). ``islands`` (node
        -> island) lets :attr:`cross_site` pick pairs across islands."""
        pair = _Pairs(names, rng, self.cross_site, islands or {})
        out = list(self.events)
        for kind, count in ((TrafficKind.MESSAGE, self.random_messages),
                            (TrafficKind.CALL, self.random_calls)):
            if not count:
                continue
            start, end = self.window(duration_s, register_by_s, kind)
            if end <= start or len(names) < 2:
                raise ConfigError("--duration" if len(names) >= 2 else "--nodes",
                                  f"too short a run (or too few nodes) for random "
                                  f"{kind.value} traffic: it would start at {start:.0f} s "
                                  f"and must leave by {end:.0f} s")
            for _ in range(count):
                src, dst = pair()
                out.append(TrafficEvent(rng.uniform(start, end), kind, src, dst,
                                        self.call_duration_s))
        for rate in self.rates:
            out.extend(_rate_events(rate, names, rng, pair,
                                    self.window(duration_s, register_by_s, rate.kind)))
        if len(out) > MAX_TRAFFIC_EVENTS:
            raise ConfigError("traffic", f"more than {MAX_TRAFFIC_EVENTS} events planned")
        return sorted(out, key=lambda e: e.at_s)


class _Pairs:
    """Random (src, dst) pairs; a ``cross_site`` fraction across islands."""

    def __init__(self, names: list[str], rng: random.Random, cross_site: float,
                 islands: dict[str, int]) -> None:
        self.names = names
        self.rng = rng
        self.cross_site = cross_site
        self.islands = islands
        if cross_site > 0 and len({islands.get(n) for n in names}) < 2:
            raise ConfigError("cross_site", "cross-site traffic needs nodes in at least two "
                                            "islands (radio components)")

    def __call__(self) -> tuple[str, str]:
        rng = self.rng
        if self.cross_site > 0 and rng.random() < self.cross_site:
            src = rng.choice(self.names)
            home = self.islands.get(src)
            return src, rng.choice([n for n in self.names if self.islands.get(n) != home])
        src, dst = rng.sample(self.names, 2)
        return src, dst


def _rate_events(rate: TrafficRate, names: list[str], rng: random.Random,
                 pair: _Pairs, window: tuple[float, float]) -> list[TrafficEvent]:
    start = window[0] if rate.start_s is None else rate.start_s
    end = window[1] if rate.end_s is None else rate.end_s
    if rate.rate_per_s <= 0 or end <= start:
        return []
    count = int((end - start) * rate.rate_per_s)
    if count > MAX_TRAFFIC_EVENTS:
        raise ConfigError("traffic", f"a rate plans more than {MAX_TRAFFIC_EVENTS} events")
    out = []
    for i in range(count):
        if rate.src is not None and rate.dst is not None:
            src, dst = rate.src, rate.dst
        elif rate.src is not None:
            src, dst = rate.src, rng.choice([n for n in names if n != rate.src])
        elif rate.dst is not None:
            src, dst = rng.choice([n for n in names if n != rate.dst]), rate.dst
        else:
            src, dst = pair()
        out.append(TrafficEvent(start + i / rate.rate_per_s, rate.kind, src, dst,
                                rate.duration_s))
    return out
