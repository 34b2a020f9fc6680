"""RFC 3261 transaction timers (§17, Table 4) derived from T1, T2 and T4.

Defaults are chosen for a lossy, multi-hop ad-hoc radio rather than a wired LAN:

* ``t1_s = 1.0`` -- RFC 3261 uses 500 ms as an RTT estimate. A SIP request that crosses
  three or four hops of contended 802.11 ad-hoc radio, with per-hop retransmission and
  store-and-forward on the way, routinely takes several hundred milliseconds one way, so a
  500 ms T1 would make the first retransmission race the original and double the load on a
  channel that is already the bottleneck. §17.1.1.1 allows a larger T1 when the RTT is
  known to be larger ("T1 MAY be chosen larger"). One second keeps Timer B/F at 64 s, which
  is still short enough for a responder to see a failed call within about a minute.
* ``t2_s = 8.0`` -- the cap on non-INVITE retransmission intervals (RFC default 4 s). With
  T1 doubled, doubling T2 keeps the same number of retransmissions per transaction (about
  eleven over Timer F) instead of flooding every 4 s.
* ``t4_s = 10.0`` -- the longest a message may stay in the network (RFC default 5 s). The
  mesh's store-and-forward can hold a datagram for longer than a wired network, so the
  absorbing Timers I and K are doubled.

All timers are in seconds. The values of the derived timers follow Table 4 of RFC 3261 for
an unreliable transport (UDP and the mesh both are); RFC 6026 adds Timers L and M.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from meshcomm.errors import ConfigError

#: §17.1.1.2: Timer D is "at least 32 seconds for unreliable transports".
TIMER_D_MIN_S = 32.0
#: §13.3.1.1/Table 4: Timer C (proxy INVITE) is greater than 3 minutes; a UAC uses it to
#: give up on a call that rings forever when no final response arrives.
TIMER_C_S = 180.0
#: Upper bound accepted for T1, T2 and T4 (a misconfiguration guard).
MAX_BASE_TIMER_S = 120.0


class TimerName(enum.Enum):
    """The timers of RFC 3261 Table 4 (plus L and M of RFC 6026 §8.11)."""

    A = "A"  # INVITE request retransmit interval (client, §17.1.1.2)
    B = "B"  # INVITE transaction timeout (client, §17.1.1.2)
    C = "C"  # proxy INVITE timeout (§16.6); used by the UAC core for a ringing-forever call
    D = "D"  # wait time for response retransmits (INVITE client, §17.1.1.2)
    E = "E"  # non-INVITE request retransmit interval (client, §17.1.2.2)
    F = "F"  # non-INVITE transaction timeout (client, §17.1.2.2)
    G = "G"  # INVITE response retransmit interval (server, §17.2.1)
    H = "H"  # wait time for ACK receipt (server, §17.2.1)
    I = "I"  # noqa: E741  -- wait time for ACK retransmits (server, §17.2.1)
    J = "J"  # wait time for non-INVITE request retransmits (server, §17.2.2)
    K = "K"  # wait time for response retransmits (non-INVITE client, §17.1.2.2)
    L = "L"  # RFC 6026: INVITE server, Accepted state (absorb INVITE retransmissions)
    M = "M"  # RFC 6026: INVITE client, Accepted state (absorb 2xx retransmissions)


def timer_problems(t1_s: float, t2_s: float, t4_s: float) -> list[tuple[str, str]]:
    """What is wrong with T1/T2/T4, as ``(name, message)`` pairs (empty: they are valid);
    :class:`TimerConfig` raises the first, a config loader can list them all."""
    problems: list[tuple[str, str]] = []
    for name, value in (("t1_s", t1_s), ("t2_s", t2_s), ("t4_s", t4_s)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append((name, "must be a number of seconds"))
        elif not 0.0 < float(value) <= MAX_BASE_TIMER_S:
            problems.append((name, f"must be > 0 and <= {MAX_BASE_TIMER_S} s, got {value}"))
    if not problems and t2_s < t1_s:
        problems.append(("t2_s", "must be >= t1_s (RFC 3261 §17.1.2.2)"))
    return problems


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the derived RFC 3261 timers, all in seconds (see module docstring)."""

    t1_s: float = 1.0
    t2_s: float = 8.0
    t4_s: float = 10.0

    def __post_init__(self) -> None:
        problems = timer_problems(self.t1_s, self.t2_s, self.t4_s)
        if problems:
            name, message = problems[0]
            raise ConfigError(f"sip.timers.{name}", message)

    # --- Table 4 ---------------------------------------------------------------------
    @property
    def timer_a_s(self) -> float:
        """Initial INVITE retransmit interval: T1 (doubles on each firing)."""
        return self.t1_s

    @property
    def timer_b_s(self) -> float:
        """INVITE client transaction timeout: 64*T1."""
        return 64.0 * self.t1_s

    @property
    def timer_c_s(self) -> float:
        """Ringing-forever guard, > 3 min."""
        return TIMER_C_S

    @property
    def timer_d_s(self) -> float:
        """INVITE client Completed state: > 32 s for unreliable transports (and >= 64*T1)."""
        return max(TIMER_D_MIN_S, 64.0 * self.t1_s)

    @property
    def timer_e_s(self) -> float:
        """Initial non-INVITE retransmit interval: T1 (doubles, capped at T2)."""
        return self.t1_s

    @property
    def timer_f_s(self) -> float:
        """Non-INVITE client transaction timeout: 64*T1."""
        return 64.0 * self.t1_s

    @property
    def timer_g_s(self) -> float:
        """Initial INVITE response retransmit interval: T1 (doubles, capped at T2)."""
        return self.t1_s

    @property
    def timer_h_s(self) -> float:
        """Wait for ACK: 64*T1."""
        return 64.0 * self.t1_s

    @property
    def timer_i_s(self) -> float:
        """Absorb ACK retransmissions: T4."""
        return self.t4_s

    @property
    def timer_j_s(self) -> float:
        """Absorb non-INVITE request retransmissions: 64*T1."""
        return 64.0 * self.t1_s

    @property
    def timer_k_s(self) -> float:
        """Absorb non-INVITE response retransmissions: T4."""
        return self.t4_s

    @property
    def timer_l_s(self) -> float:
        """RFC 6026 Accepted state of the INVITE server: 64*T1."""
        return 64.0 * self.t1_s

    @property
    def timer_m_s(self) -> float:
        """RFC 6026 Accepted state of the INVITE client: 64*T1."""
        return 64.0 * self.t1_s

    def duration_s(self, timer: TimerName) -> float:
        """The (initial) duration of ``timer`` in seconds, by explicit table."""
        return _DURATIONS[timer](self)

    def next_retransmit_interval_s(self, timer: TimerName, current_s: float) -> float:
        """Interval after a retransmission timer fired with ``current_s``.

        Timer A doubles without cap (§17.1.1.2); Timers E and G double up to T2
        (§17.1.2.2, §17.2.1).
        """
        if timer is TimerName.A:
            return 2.0 * current_s
        if timer in (TimerName.E, TimerName.G):
            return min(2.0 * current_s, self.t2_s)
        raise ValueError(f"timer {timer.value} is not a retransmission timer")


#: RFC 3261's own values (§17.1.1.1 T1 500 ms, T2 4 s; T4 5 s), for a hop with a LAN's
#: round trip rather than the radio's: the node's gateway toward its own SIP clients, on
#: the same host or link (``[sip] t1_s/t2_s/t4_s`` of the field config; the defaults of
#: :class:`TimerConfig` above are for UAs across the mesh).
RFC3261_TIMERS = TimerConfig(t1_s=0.5, t2_s=4.0, t4_s=5.0)

_DURATIONS: dict[TimerName, Callable[[TimerConfig], float]] = {
    TimerName.A: lambda c: c.timer_a_s,
    TimerName.B: lambda c: c.timer_b_s,
    TimerName.C: lambda c: c.timer_c_s,
    TimerName.D: lambda c: c.timer_d_s,
    TimerName.E: lambda c: c.timer_e_s,
    TimerName.F: lambda c: c.timer_f_s,
    TimerName.G: lambda c: c.timer_g_s,
    TimerName.H: lambda c: c.timer_h_s,
    TimerName.I: lambda c: c.timer_i_s,
    TimerName.J: lambda c: c.timer_j_s,
    TimerName.K: lambda c: c.timer_k_s,
    TimerName.L: lambda c: c.timer_l_s,
    TimerName.M: lambda c: c.timer_m_s,
}
