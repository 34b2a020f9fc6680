"""Admission control: how fast identities never seen before may enter this node's table,
and how much this node re-floods, so that one hostile device cannot fill tables mesh-wide
or turn every honest node into an amplifier (compare Reticulum's ingress control for new
announces and gossipsub v1.1's per-peer budgets).

* **New identities** ((AoR, key) records unknown to the table) are charged to a bucket of
  the sending device (its link host: the address without the UDP port, see
  :func:`~meshcomm.overlay.ratelimit.link_host`) and to one bucket for all senders.
  A device heard in a verified HELLO (a neighbour) gets ``admit_neighbour_*``; any other
  host (a stranger, e.g. an injector rotating source ports) the much smaller
  ``admit_stranger_*``. Refreshes and de-registrations of known records are not charged.
* **Re-floods**: a node re-floods only records it admitted as changes, charged to the
  sender's share (its admission rate) and to a global re-flood budget; what is over budget
  still spreads, by anti-entropy, at anti-entropy's pace.

A stranger's flood therefore enters the mesh at ``admit_stranger_per_s`` at the first
honest node and leaves it at most at that rate, well under what the next node admits from
that honest neighbour, so an honest newcomer's flood still passes every hop at once.
"""

from __future__ import annotations

from collections.abc import Callable

from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.ratelimit import TokenBucket, TokenBuckets

#: Senders whose admission and re-flood buckets are tracked at once.
MAX_ADMISSION_HOSTS = 1024


class Admission:
    """New-identity and re-flood budgets of one node (sans-IO; time comes in as ``now``)."""

    def __init__(self, config: OverlayConfig, is_neighbour: Callable[[str], bool]) -> None:
        self.config = config
        self._is_neighbour = is_neighbour
        self._admit = TokenBuckets(config.admit_stranger_per_s, config.admit_stranger_burst,
                                   MAX_ADMISSION_HOSTS)
        self._reflood = TokenBuckets(config.admit_stranger_per_s, config.admit_stranger_burst,
                                     MAX_ADMISSION_HOSTS)
        self._admit_all = TokenBucket(config.admit_global_per_s, config.admit_global_burst)
        self._reflood_all = TokenBucket(config.reflood_per_s, config.reflood_burst)

    def _share(self, buckets: TokenBuckets, host: str, now: float) -> TokenBucket:
        cfg = self.config
        if self._is_neighbour(host):
            return buckets.bucket(host, now, cfg.admit_neighbour_per_s,
                                  cfg.admit_neighbour_burst)
        return buckets.bucket(host, now, cfg.admit_stranger_per_s, cfg.admit_stranger_burst)

    def may_admit(self, host: str, now: float) -> bool:
        """Whether a new identity from ``host`` would be admitted now (charges nothing)."""
        return (self._admit_all.available(now) >= 1.0
                and self._share(self._admit, host, now).available(now) >= 1.0)

    def budget(self, host: str, now: float) -> int:
        """How many new identities from ``host`` would be admitted now."""
        return int(min(self._admit_all.available(now),
                       self._share(self._admit, host, now).available(now)))

    def admitted(self, host: str, now: float) -> None:
        """Charge one admitted new identity to ``host`` and to the global budget."""
        self._share(self._admit, host, now).take(now)
        self._admit_all.take(now)

    def may_reflood(self, host: str, now: float) -> bool:
        """Charge one re-flood of a record received from ``host``; False if over budget."""
        share = self._share(self._reflood, host, now)
        if share.available(now) < 1.0 or self._reflood_all.available(now) < 1.0:
            return False
        share.take(now)
        self._reflood_all.take(now)
        return True

    def tracked_hosts(self) -> int:
        return max(len(self._admit), len(self._reflood))
