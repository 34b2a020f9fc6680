"""Round-trip time per link, for the per-hop retransmission timers (RFC 6298's estimator).

A radio hop answers in milliseconds; an uplink hop over a satellite takes 600 ms and more.
A fixed acknowledgement timeout tuned for the radio retransmits every frame on such a hop,
several times, before its acknowledgement can arrive (wasting the WAN's capacity, and
failing unicasts that would have been acknowledged). So each link keeps a smoothed
round-trip time and variance from the acknowledgements of frames sent once (Karn's rule:
a retransmitted frame's acknowledgement is ambiguous; see :meth:`LinkRtt.acked` for the
first sample), and the timeout of the next frame to
that link is ``SRTT + max(G, 4 * RTTVAR)`` (RFC 6298 §2), never below the configured
timeout (the radio's tuning stays the floor) and never above a ceiling.

Sans-IO (times are given); bounded: at most :data:`MAX_LINKS` links, least recently
sampled forgotten first. Only acknowledgements matched to frames this node sent to that
link produce samples, so an outsider cannot grow the table beyond the links we send to.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from meshcomm.types import LinkAddr

#: Links whose estimate is kept (neighbours on every radio and the uplink, with room).
MAX_LINKS: Final = 1024
#: RFC 6298 §2: gains of the smoothed RTT and of its variance, and the variance factor.
ALPHA: Final = 1 / 8
BETA: Final = 1 / 4
K: Final = 4
#: Clock granularity G, seconds.
GRANULARITY_S: Final = 0.001
#: A sample longer than this is not a round trip but a late acknowledgement: ignored.
MAX_SAMPLE_S: Final = 10.0


class LinkRtt:
    """Smoothed round-trip time and variance per link address."""

    def __init__(self, max_links: int = MAX_LINKS) -> None:
        self._max = max_links
        self._links: OrderedDict[LinkAddr, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._links)

    def sample(self, link: LinkAddr, rtt_s: float) -> None:
        """One measured round trip to ``link`` (a frame sent once and acknowledged)."""
        if not 0.0 <= rtt_s <= MAX_SAMPLE_S:
            return
        known = self._links.pop(link, None)
        if known is None:
            srtt, rttvar = rtt_s, rtt_s / 2            # RFC 6298 §2.2
        else:
            srtt, rttvar = known                       # RFC 6298 §2.3
            rttvar = (1 - BETA) * rttvar + BETA * abs(srtt - rtt_s)
            srtt = (1 - ALPHA) * srtt + ALPHA * rtt_s
        self._links[link] = (srtt, rttvar)
        while len(self._links) > self._max:
            self._links.popitem(last=False)

    def acked(self, link: LinkAddr, first_sent_s: float, retransmitted: bool,
              now: float) -> None:
        """A frame first sent to ``link`` at ``first_sent_s`` was acknowledged at ``now``.

        Karn's rule: the acknowledgement of a retransmitted frame may answer any copy, so
        it is no sample -- except while the link has no estimate at all, where it counts
        as measured from the first copy (an upper bound). Without that, a link slower
        than the configured timeout would never be sampled: every frame is retransmitted
        before its acknowledgement can arrive (RFC 6298 gets out of this with a 1 s
        initial timeout, too slow for a radio hop)."""
        if not retransmitted or link not in self._links:
            self.sample(link, now - first_sent_s)

    def srtt(self, link: LinkAddr) -> float | None:
        """The smoothed round-trip time to ``link`` (None before its first sample)."""
        known = self._links.get(link)
        return None if known is None else known[0]

    def rto(self, link: LinkAddr, floor_s: float, ceiling_s: float) -> float:
        """The retransmission timeout for a frame to ``link``: ``floor_s`` before any sample,
        else SRTT + max(G, K * RTTVAR) within ``[floor_s, ceiling_s]``."""
        known = self._links.get(link)
        if known is None:
            return floor_s
        srtt, rttvar = known
        return min(ceiling_s, max(floor_s, srtt + max(GRANULARITY_S, K * rttvar)))

    def forget(self, link: LinkAddr) -> None:
        self._links.pop(link, None)
