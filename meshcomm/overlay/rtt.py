"""Round-trip time per link, for the per-hop retransmission timers.

A radio hop answers in milliseconds; an uplink hop over a satellite takes 600 ms and more.
So each link's timeout follows its measured round trip -- but not with RFC 6298 alone. A
radio link carries few acknowledgements, and one round trip stretched by a busy CPU (RFC
6298's first sample sets SRTT = R, RTTVAR = R/2) held a link's timeout near its ceiling
for minutes once; a lost fragment of an INVITE then waited seconds per try and a call
failed. The estimate here is built to forget such samples quickly:

* **base** -- the smallest sample of the last ``window_s`` seconds (a windowed minimum,
  as BBR's min_rtt): a stretched sample never lowers it, and one normal sample after a
  stretched one brings it straight back down;
* **deviation** -- a smoothed mean of how far samples lie above the base (gain
  :data:`BETA`), whose share of the timeout is capped relative to the base
  (``max(VAR_CAP_FACTOR * base, VAR_CAP_MIN_S)``): a burst of stretched samples cannot
  push the timeout further than that above the base;
* **staleness** -- once the newest sample is older than ``window_s``, the estimate may
  still shorten the timeout but never hold it above the caller's initial timeout (the
  value used before any sample): a link that went quiet after stretched samples starts
  afresh instead of keeping them;
* Karn's rule and algorithm (see :meth:`LinkRtt.acked`): the acknowledgement of a
  retransmitted frame gives no sample (except on a link never sampled), but it backs the
  link's timeout off (x :data:`AMBIGUOUS_BACKOFF`, up to :data:`MAX_LINK_BACKOFF`) until a
  clean sample comes: a link whose round trip grew past its timeout, or a stale one
  slower than the initial timeout (a satellite hop after a quiet spell), gets there in a
  few frames instead of retransmitting every one for ever.

The timeout is ``(base + max(G, min(K * deviation, cap))) * backoff`` within the
caller's floor and ceiling (a radio's floor is a few milliseconds). The backoff of one
frame's retransmissions is the caller's (meshcomm.overlay.forwarding).
:meth:`LinkRtt.srtt` keeps RFC 6298's smoothed round trip for callers that want it.

Sans-IO (times are given); bounded: at most :data:`MAX_LINKS` links, least recently
sampled forgotten first, and at most :data:`MAX_WINDOW_SAMPLES` window entries per link.
Only acknowledgements matched to frames this node sent to that link produce samples, so
an outsider cannot grow the table beyond the links we send to.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from meshcomm.types import LinkAddr

#: Links whose estimate is kept (neighbours on every radio and the uplink, with room).
MAX_LINKS: Final = 1024
#: Gains of the smoothed RTT (RFC 6298 ALPHA) and of the deviation (BETA), and the
#: deviation factor K.
ALPHA: Final = 1 / 8
BETA: Final = 1 / 4
K: Final = 4
#: Clock granularity G, seconds.
GRANULARITY_S: Final = 0.001
#: A sample longer than this is not a round trip but a late acknowledgement: ignored.
MAX_SAMPLE_S: Final = 10.0
#: Default length of the minimum's window, seconds (the overlay passes its config's).
WINDOW_S: Final = 5.0
#: Entries of the sliding-minimum deque kept per link (an increasing run of samples).
MAX_WINDOW_SAMPLES: Final = 32
#: The deviation term is at most this many times the base, or VAR_CAP_MIN_S if more.
VAR_CAP_FACTOR: Final = 1.0
VAR_CAP_MIN_S: Final = 0.02
#: A link's timeout grows by this for each ambiguous acknowledgement (of a retransmitted
#: frame) until a clean sample, by at most MAX_LINK_BACKOFF in all.
AMBIGUOUS_BACKOFF: Final = 1.5
MAX_LINK_BACKOFF: Final = 16.0


@dataclass(slots=True)
class _Link:
    srtt: float
    deviation: float
    last_at: float
    #: Karn's backoff, reset by a clean sample
    backoff: float = 1.0
    #: (time, sample), times and samples both increasing: the front is the window's min.
    window: deque[tuple[float, float]] = field(default_factory=deque)

    @property
    def base(self) -> float:
        return self.window[0][1]


class LinkRtt:
    """A robust round-trip estimate per link address (see the module docstring)."""

    def __init__(self, max_links: int = MAX_LINKS, window_s: float = WINDOW_S) -> None:
        self._max = max_links
        self.window_s = window_s
        self._links: OrderedDict[LinkAddr, _Link] = OrderedDict()

    def __len__(self) -> int:
        return len(self._links)

    def sample(self, link: LinkAddr, rtt_s: float, now: float = 0.0) -> None:
        """One measured round trip to ``link`` (a frame sent once and acknowledged)."""
        if not 0.0 <= rtt_s <= MAX_SAMPLE_S:
            return
        known = self._links.pop(link, None)
        first = known is None
        if known is None:
            known = _Link(rtt_s, rtt_s / 2, now)   # as RFC 6298 §2.2: a wide first margin
        else:
            known.srtt = (1 - ALPHA) * known.srtt + ALPHA * rtt_s
        window = known.window
        while window and window[-1][1] >= rtt_s:
            window.pop()
        window.append((now, rtt_s))
        while window[0][0] < now - self.window_s or len(window) > MAX_WINDOW_SAMPLES:
            window.popleft()                       # (the newest entry always stays)
        if not first:
            known.deviation = (1 - BETA) * known.deviation + BETA * (rtt_s - known.base)
        known.last_at = now
        known.backoff = 1.0
        self._links[link] = known
        while len(self._links) > self._max:
            self._links.popitem(last=False)

    def fresh(self, link: LinkAddr, now: float) -> bool:
        """Whether ``link`` has a sample from the last ``window_s`` seconds."""
        known = self._links.get(link)
        return known is not None and now - known.last_at <= self.window_s

    def acked(self, link: LinkAddr, first_sent_s: float, retransmitted: bool,
              now: float) -> None:
        """A frame first sent to ``link`` at ``first_sent_s`` was acknowledged at ``now``.

        Karn's rule: the acknowledgement of a retransmitted frame may answer any copy, so
        it is no sample -- except while the link has no estimate at all, where it counts
        as measured from the first copy (an upper bound: a link slower than the initial
        timeout is sampled at once; a too-high bound is forgotten by the windowed minimum
        at the next clean sample). Otherwise it backs the link's timeout off until a
        clean sample (Karn's algorithm): if the timeout was too short, it grows until a
        frame is acknowledged before its retransmission."""
        known = self._links.get(link)
        if not retransmitted or known is None:
            self.sample(link, now - first_sent_s, now)
        else:
            known.backoff = min(MAX_LINK_BACKOFF, known.backoff * AMBIGUOUS_BACKOFF)

    def srtt(self, link: LinkAddr) -> float | None:
        """The smoothed round-trip time to ``link`` (None before its first sample)."""
        known = self._links.get(link)
        return None if known is None else known.srtt

    def base(self, link: LinkAddr) -> float | None:
        """The windowed minimum round trip to ``link`` (None before its first sample)."""
        known = self._links.get(link)
        return None if known is None else known.base

    def estimate(self, link: LinkAddr) -> float | None:
        """base + max(G, min(K * deviation, cap)), unbounded (None before any sample)."""
        known = self._links.get(link)
        if known is None:
            return None
        base = known.base
        cap = max(VAR_CAP_FACTOR * base, VAR_CAP_MIN_S)
        return base + max(GRANULARITY_S, min(K * known.deviation, cap))

    def rto(self, link: LinkAddr, floor_s: float, ceiling_s: float) -> float:
        """The retransmission timeout for a frame to ``link``: ``floor_s`` before any
        sample, else :meth:`estimate` within ``[floor_s, ceiling_s]``."""
        estimate = self.estimate(link)
        if estimate is None:
            return floor_s
        return min(ceiling_s, max(floor_s, estimate))

    def timeout(self, link: LinkAddr, now: float, *, initial_s: float, floor_s: float,
                ceiling_s: float) -> float:
        """The timeout for a frame to ``link`` sent at ``now``: ``initial_s`` before any
        sample; :meth:`estimate` within ``[floor_s, ceiling_s]`` while fresh; once stale,
        that but at most ``initial_s``; times the link's Karn backoff (see the module
        docstring)."""
        known = self._links.get(link)
        estimate = self.estimate(link)
        if known is None or estimate is None:
            return initial_s
        rto = min(ceiling_s, max(floor_s, estimate))
        if not self.fresh(link, now):
            rto = min(rto, max(initial_s, floor_s))
        return min(ceiling_s, rto * known.backoff)

    def forget(self, link: LinkAddr) -> None:
        self._links.pop(link, None)
