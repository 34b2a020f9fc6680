"""Tunables of the gossip overlay (the ``[overlay]`` section of a field config)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

#: The uplink mesh's HELLO timing (see OverlayConfig.for_uplink): every member of an uplink
#: mesh, relays and dht-nodes alike, uses these whatever its island radio's tuning.
UPLINK_HELLO_INTERVAL_S: Final = 1.0
UPLINK_HELLO_JITTER: Final = 0.25
#: ... three HELLOs missed (the longest jittered gap, 1.25 s, and then some).
UPLINK_NEIGHBOUR_TIMEOUT_S: Final = 3.5
#: The uplink's round-trip window (per-hop reliability, issue 13): WAN links carry sparse
#: acks and their round trips (a satellite's 600 ms) exceed the initial timeout.
UPLINK_RTO_WINDOW_S: Final = 30.0
#: Trickle (issue 13): bounds of the doublings, of Imax (s) and of the redundancy constant.
MAX_TRICKLE_DOUBLINGS: Final = 10
MAX_TRICKLE_INTERVAL_S: Final = 600.0
MAX_TRICKLE_K: Final = 16


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """Defaults suit a 10-200 node incident mesh on 802.11 ad-hoc at a few Mbit/s."""

    #: HELLO beacon period and its uniform jitter fraction (avoids synchronised beacons).
    hello_interval_s: float = 2.0
    hello_jitter: float = 0.25
    #: A neighbour not heard for this long is down.
    neighbour_timeout_s: float = 7.0
    #: Window (in HELLO periods) of the delivery-ratio estimate of a link.
    link_window: int = 8
    #: Links below this estimated delivery ratio are not used for routes.
    min_link_quality: float = 0.2
    #: Flooding: initial TTL and the random assessment delay before a rebroadcast.
    flood_ttl: int = 16
    rad_min_s: float = 0.002
    rad_max_s: float = 0.06
    #: Cancel a pending rebroadcast once this many copies were overheard (counter scheme).
    suppress_copies: int = 3
    #: Anti-entropy digest period (jittered) and how many records a pull reply may carry.
    anti_entropy_interval_s: float = 2.0
    #: Duplicate-suppression cache size (envelope digests).
    seen_cache_entries: int = 8192
    # per-hop reliability (issue 13)
    #: Per-hop unicast reliability. The acknowledgement timeout follows each link's
    #: measured round trip (meshcomm.overlay.rtt: a windowed minimum plus a capped
    #: deviation), never below ``rto_min_s``; ``ack_timeout_s`` is the timeout before a
    #: link has a sample, and the most a stale estimate (none in ``rto_window_s``) holds.
    ack_timeout_s: float = 0.15
    rto_min_s: float = 0.005
    rto_window_s: float = 5.0
    #: Retransmissions of a frame on one hop (doubling the timeout each time): at least
    #: ``max_retransmits``, and more (up to forwarding.MAX_TRIES) until
    #: ``retransmit_span_s`` has passed since its first copy -- a fast link's short
    #: timeouts must not give up on a hop that is busy for a moment.
    max_retransmits: int = 4
    retransmit_span_s: float = 1.5
    #: A receiver holds a per-hop acknowledgement up to this long for a frame going back
    #: to that neighbour to carry it (a SIP response often does within milliseconds),
    #: then sends it alone, batched with any others owed to that neighbour (0: at once).
    ack_delay_s: float = 0.01
    #: Hop limit of the scoped flood used when no route is known.
    scoped_flood_ttl: int = 8
    #: A route not refreshed by a flood for this long is dropped.
    route_timeout_s: float = 600.0
    #: Per-neighbour token bucket: sustained frames/s and burst.
    rate_limit_fps: float = 200.0
    rate_burst: int = 400
    #: Queue bound for unicast envelopes waiting for a route or an ack.
    max_pending_unicast: int = 256
    #: Media frames: per-hop ack timeout and retransmissions (no backoff: late voice is
    #: useless), and their own per-neighbour budget (frames/s and burst).
    media_ack_timeout_s: float = 0.03
    media_retries: int = 3
    #: ... and no retransmission of a frame this long after its first send on that hop
    #: (the per-link timeout grows with the hop's round trip: on a slow uplink a frame gets
    #: fewer tries, since voice later than the receiver's playout is useless).
    media_max_late_s: float = 0.3
    #: Media's per-hop ack timeouts follow each link's measured round trip
    #: (meshcomm.overlay.rtt) instead of staying at media_ack_timeout_s. On for the uplink
    #: mesh (for_uplink: WAN round trips are long and unknown); off on the radio. (Unicast
    #: timeouts always follow the link's round trip, with the robust estimator.)
    adaptive_rto: bool = False
    media_rate_limit_fps: float = 1000.0
    media_rate_burst: int = 500
    #: Bound of the binding table (records and tombstones; see location.table).
    max_bindings: int = 4096
    #: Admission of identities never seen before ((AoR, key) records new to the table),
    #: per sending device: one heard in a verified HELLO (a neighbour) and any other host
    #: (a stranger: e.g. an injector rotating source ports). Refreshes are not charged.
    admit_neighbour_per_s: float = 50.0
    admit_neighbour_burst: int = 300
    admit_stranger_per_s: float = 2.0
    admit_stranger_burst: int = 10
    #: ... and across all senders together.
    admit_global_per_s: float = 100.0
    admit_global_burst: int = 500
    #: Re-flood budget: records re-flooded per second (the per-sender share is the
    #: admission rate of that sender); what is over budget spreads by anti-entropy only.
    reflood_per_s: float = 100.0
    reflood_burst: int = 500
    #: Journaled drops per second across all sources (the rest are only counted).
    journal_drops_per_s: float = 5.0
    journal_drops_burst: int = 50
    #: A neighbour's signed journal checkpoint (heard with its HELLOs) is journaled as
    #: witnessed when its head moved, at most once per this long per neighbour.
    witness_interval_s: float = 60.0
    # Trickle (issue 13) ------------------------------------------------------------
    #: HELLO beacons and anti-entropy digests follow Trickle timers (RFC 6206,
    #: meshcomm.overlay.trickle): from hello_interval_s / anti_entropy_interval_s (Imin)
    #: the interval doubles while neighbours agree, up to Imin * 2**doublings (Imax), and
    #: falls back to Imin when anything changes. Off: the fixed periods (the uplink mesh).
    trickle: bool = True
    #: Doublings of the HELLO interval (Imax = hello_interval_s * 2**n; 2 s -> 32 s). A
    #: neighbour's timeout follows the interval it advertises (3.5x, capped at our Imax).
    trickle_hello_doublings: int = 4
    #: Doublings of the digest interval (Imax = anti_entropy_interval_s * 2**n; 2 s -> 64 s).
    trickle_digest_doublings: int = 5
    #: Redundancy constant k: a digest is not sent when k equal ones were heard in its
    #: interval (per-node digest traffic stays bounded however many neighbours).
    trickle_digest_k: int = 2

    def for_uplink(self) -> OverlayConfig:
        """This configuration as the uplink mesh uses it: the HELLO interval and neighbour
        timeout replaced by the uplink's own (UPLINK_*), the rest kept.

        A node judges a neighbour dead against its *own* neighbour timeout, while the
        neighbour sends HELLOs at *its* interval: on the uplink, where relays meet
        dht-nodes and relays of other agencies, members must agree, so an island's radio
        tuning (say HELLOs every 0.3 s, dead after 1.5 s) must not reach it. Such a relay
        declared a default dht-node (HELLOs every 2 s) dead every 1.7 s, and each time
        its routes across sites vanished for up to a second, voice included. The
        acknowledgement timeouts follow each link's round trip there (``adaptive_rto``,
        meshcomm.overlay.rtt): a satellite hop's is unknown in advance. Trickle is off
        there (fixed HELLOs: members of other agencies judge us by the fixed timeout)."""
        return replace(self, hello_interval_s=UPLINK_HELLO_INTERVAL_S,
                       hello_jitter=UPLINK_HELLO_JITTER,
                       neighbour_timeout_s=UPLINK_NEIGHBOUR_TIMEOUT_S, adaptive_rto=True,
                       trickle=False, rto_min_s=max(self.rto_min_s, self.ack_timeout_s),
                       rto_window_s=max(self.rto_window_s, UPLINK_RTO_WINDOW_S))

    def validate(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs; empty when the values are usable."""
        problems: list[tuple[str, str]] = []
        positive = ("hello_interval_s", "neighbour_timeout_s", "anti_entropy_interval_s",
                    "ack_timeout_s", "route_timeout_s", "rate_limit_fps",
                    "media_ack_timeout_s", "media_max_late_s", "media_rate_limit_fps",
                    "admit_neighbour_per_s",
                    "admit_stranger_per_s", "admit_global_per_s", "reflood_per_s",
                    "journal_drops_per_s")
        for name in positive:
            if getattr(self, name) <= 0:
                problems.append((name, "must be > 0"))
        if not 0 <= self.hello_jitter < 1:
            problems.append(("hello_jitter", "must be in [0, 1)"))
        if not 0 <= self.rad_min_s <= self.rad_max_s:
            problems.append(("rad_max_s", "must be >= rad_min_s >= 0"))
        if not 1 <= self.flood_ttl <= 32:
            problems.append(("flood_ttl", "must be in 1..32"))
        if not 1 <= self.scoped_flood_ttl <= 32:
            problems.append(("scoped_flood_ttl", "must be in 1..32"))
        if self.neighbour_timeout_s <= self.hello_interval_s:
            problems.append(("neighbour_timeout_s", "must exceed hello_interval_s"))
        if not 0 <= self.media_retries <= 10:
            problems.append(("media_retries", "must be in 0..10"))
        for name in ("admit_neighbour_burst", "admit_stranger_burst", "admit_global_burst",
                     "reflood_burst", "journal_drops_burst"):
            if getattr(self, name) < 1:
                problems.append((name, "must be >= 1"))
        if not 64 <= self.max_bindings <= 1_000_000:
            problems.append(("max_bindings", "must be in 64..1000000"))
        if not 0 <= self.witness_interval_s <= 86_400:
            problems.append(("witness_interval_s", "must be in [0, 86400]"))
        if not 0 <= self.min_link_quality <= 1:
            problems.append(("min_link_quality", "must be in [0, 1]"))
        problems.extend(self._trickle_problems())
        problems.extend(self._reliability_problems())
        return problems

    def _reliability_problems(self) -> list[tuple[str, str]]:
        # per-hop reliability (issue 13)
        problems: list[tuple[str, str]] = []
        if not 0.0005 <= self.rto_min_s <= self.ack_timeout_s:
            problems.append(("rto_min_s", "must be in [0.0005, ack_timeout_s]"))
        if not 0.1 <= self.rto_window_s <= 600:
            problems.append(("rto_window_s", "must be in [0.1, 600]"))
        if not 0 <= self.ack_delay_s <= 0.2:
            problems.append(("ack_delay_s", "must be in [0, 0.2]"))
        if not 0 <= self.retransmit_span_s <= 60:
            problems.append(("retransmit_span_s", "must be in [0, 60]"))
        if not 0 <= self.max_retransmits <= 10:
            problems.append(("max_retransmits", "must be in 0..10"))
        return problems

    def _trickle_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for name, imin in (("trickle_hello_doublings", self.hello_interval_s),
                           ("trickle_digest_doublings", self.anti_entropy_interval_s)):
            doublings = getattr(self, name)
            if isinstance(doublings, bool) or not 0 <= doublings <= MAX_TRICKLE_DOUBLINGS:
                problems.append((name, f"must be in 0..{MAX_TRICKLE_DOUBLINGS}"))
            elif imin * (1 << doublings) > MAX_TRICKLE_INTERVAL_S:
                problems.append((name, f"Imax (interval * 2**n) must be <= "
                                       f"{MAX_TRICKLE_INTERVAL_S:g} s"))
        if not 1 <= self.trickle_digest_k <= MAX_TRICKLE_K:
            problems.append(("trickle_digest_k", f"must be in 1..{MAX_TRICKLE_K}"))
        return problems
