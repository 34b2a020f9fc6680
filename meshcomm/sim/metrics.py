"""What a simulation run measures: coverage, convergence, cost on air, drops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from meshcomm.overlay.counters import OverlayCounter


class SimCounter(StrEnum):
    """Counters of the simulator itself (the nodes' own counters are the cores')."""

    MEDIUM_LOST = "medium_lost"                        # frames the lossy medium dropped
    SIP_TO_ABSENT_CLIENT = "sip_to_absent_client"      # gateway SIP, no client running
    MEDIA_TO_ABSENT_CLIENT = "media_to_absent_client"  # relay media, no client running
    MEDIA_WITHOUT_SESSION = "media_without_session"    # a client frame no call port took
    SIP_NOT_FOR_CLIENT = "sip_not_for_client"          # gateway SIP for another address
    UNDECODABLE_FRAMES = "undecodable_frames"          # client media that is not ours
    DHT_OPS_DROPPED = "dht_ops_dropped"                # a bridge's DHT op, no WAN in the run
    UPLINK_WITHOUT_WAN = "uplink_without_wan"          # an uplink datagram, no WAN in the run


#: Counters that are frames carrying binding records (for transmissions per binding).
BINDING_FRAME_COUNTERS = (OverlayCounter.TX_BINDING, OverlayCounter.TX_RECORDS)


@dataclass(slots=True)
class _Announcement:
    origin: str
    seq: int
    at: float
    tombstone: bool
    holders: set[str] = field(default_factory=set)
    done_at: float | None = None


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


ConvergedHook = Callable[[str, int, bool, float], None]


class Metrics:
    """``islands`` (node -> island, for runs with uplinks): a binding is expected, and
    converges, only in its own island (remote bindings are resolved on demand, never
    flooded across)."""

    def __init__(self, on_converged: ConvergedHook | None = None,
                 islands: dict[str, int] | None = None) -> None:
        self.on_converged = on_converged
        self.islands = islands
        self.live: set[str] = set()
        self._live_in: dict[int, set[str]] = {}
        self._by_record: dict[bytes, list[_Announcement]] = {}
        self._latest: dict[str, tuple[bytes, int, bool]] = {}
        self.frames = 0
        self.bytes_on_air = 0

    def node_up(self, name: str) -> None:
        self.live.add(name)
        if self.islands is not None:
            self._live_in.setdefault(self.islands[name], set()).add(name)

    def node_down(self, name: str) -> None:
        self.live.discard(name)
        if self.islands is not None:
            self._live_in.get(self.islands[name], set()).discard(name)

    def _scope(self, origin: str) -> set[str]:
        """The live nodes that should learn ``origin``'s bindings."""
        if self.islands is None:
            return self.live
        return self._live_in.get(self.islands[origin], set())

    def transmitted(self, size: int) -> None:
        self.frames += 1
        self.bytes_on_air += size

    def announced(self, origin: str, record: bytes, seq: int, tombstone: bool,
                  now: float) -> None:
        ann = _Announcement(origin, seq, now, tombstone)
        self._by_record.setdefault(record, []).append(ann)
        self._latest[origin] = (record, seq, tombstone)
        self.learned(origin, record, seq, now)

    def learned(self, name: str, record: bytes, seq: int, now: float) -> None:
        for ann in self._by_record.get(record, ()):
            if ann.done_at is not None or ann.seq > seq:
                continue
            ann.holders.add(name)
            scope = self._scope(ann.origin)
            if len(ann.holders) >= len(scope) and scope <= ann.holders:
                ann.done_at = now
                if self.on_converged is not None:
                    self.on_converged(ann.origin, ann.seq, ann.tombstone, now - ann.at)

    def report(self, now: float, holdings: dict[str, dict[bytes, bool]],
               counters: Counter[str]) -> dict[str, object]:
        announcements = [a for anns in self._by_record.values() for a in anns]
        done = [a.done_at - a.at for a in announcements if a.done_at is not None]
        live_bindings = [(origin, rec) for origin, (rec, seq, tomb) in self._latest.items()
                         if origin in self.live and not tomb]
        isl = self.islands
        expected = [(held, rec) for name, held in holdings.items()
                    for origin, rec in live_bindings
                    if isl is None or isl[name] == isl[origin]]
        pairs = len(expected)
        # A node knows a binding when it holds a live (non-tombstone) copy of that
        # (AoR, key) record; a refresh still spreading at the end does not count against it.
        known = sum(1 for held, rec in expected if held.get(rec) is False)
        binding_frames = sum(counters.get(c, 0) for c in BINDING_FRAME_COUNTERS)
        rejected = {k.removeprefix("drop_"): v for k, v in sorted(counters.items())
                    if k.startswith("drop_") and k != "drop_journal_suppressed"}
        return {
            "nodes": len(holdings),
            "bindings": len(live_bindings),
            "announcements": len(announcements),
            "coverage": round(known / pairs, 6) if pairs else 1.0,
            "convergence_s": {
                "p50": round(percentile(done, 0.5), 4),
                "p99": round(percentile(done, 0.99), 4),
                "max": round(max(done, default=0.0), 4),
                "converged": len(done),
            },
            "unconverged": len(announcements) - len(done),
            "transmissions_per_binding": round(binding_frames / max(1, len(announcements)), 3),
            "frames_total": self.frames,
            "bytes_on_air": self.bytes_on_air,
            "duplicates_received": counters.get(OverlayCounter.RX_DUPLICATES, 0),
            "rejected": rejected,
        }
