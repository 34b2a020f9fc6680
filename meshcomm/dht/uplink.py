"""The uplink state machine: is the DHT usable, with hysteresis (sans-IO).

Inputs are the DHT node's health samples (:class:`~meshcomm.dht.port.DhtPeers`, classified
as GOOD: at least ``min_peers`` good peers, FEW: some but fewer, NONE) and the expiry of
the state's timer. The machine is one table ``(state, input) -> state``:

* ``DOWN`` -> ``JOINING`` on a GOOD sample; ``JOINING`` -> ``UP`` only when GOOD samples
  held for ``stable_s`` (any FEW/NONE sample on the way starts over from ``DOWN``);
* ``UP`` -> ``GRACE`` when the peers drop to none; ``GRACE`` -> ``UP`` as soon as any peer
  returns, -> ``DOWN`` when ``grace_s`` passes without one.

So a satellite link that flaps faster than ``stable_s`` never brings the DHT mode up, and
one that flaps faster than ``grace_s`` never takes it down. ``is_up`` (the mode: UP or
GRACE) is what the bridge acts on: it publishes and resolves while up, and stops
publishing (and republishes everything when it comes back) while down.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshcomm.errors import LocalProtocolError


class UplinkState(enum.Enum):
    DOWN = "down"          # no usable DHT: gossip only
    JOINING = "joining"    # enough peers, not yet for stable_s (still down for the mode)
    UP = "up"              # DHT mode: publish, resolve, watch
    GRACE = "grace"        # peers lost; still up for grace_s


class UplinkInput(enum.Enum):
    GOOD = "peers-good"        # a sample with >= min_peers good peers
    FEW = "peers-few"          # a sample with 1 .. min_peers-1 good peers
    NONE = "peers-none"        # a sample with no good peer
    STABLE = "stable-timer"    # JOINING held for stable_s
    GRACE_OVER = "grace-timer"  # GRACE held for grace_s


U, In = UplinkState, UplinkInput
UplinkTable = dict[tuple[UplinkState, UplinkInput], UplinkState]

#: The hysteresis table (issue 10: "up when the DHT node has held good peers for a stable
#: period and down after a grace period without them").
UPLINK_TABLE: UplinkTable = {
    (U.DOWN, In.GOOD): U.JOINING,
    (U.DOWN, In.FEW): U.DOWN,
    (U.DOWN, In.NONE): U.DOWN,
    (U.JOINING, In.GOOD): U.JOINING,
    (U.JOINING, In.FEW): U.DOWN,          # not stable: start over
    (U.JOINING, In.NONE): U.DOWN,
    (U.JOINING, In.STABLE): U.UP,
    (U.UP, In.GOOD): U.UP,
    (U.UP, In.FEW): U.UP,                 # some peers still: the DHT still answers
    (U.UP, In.NONE): U.GRACE,
    (U.GRACE, In.GOOD): U.UP,
    (U.GRACE, In.FEW): U.UP,
    (U.GRACE, In.NONE): U.GRACE,
    (U.GRACE, In.GRACE_OVER): U.DOWN,
}

#: States whose timer matters, and the input its expiry is.
TIMER_INPUT: dict[UplinkState, UplinkInput] = {U.JOINING: In.STABLE, U.GRACE: In.GRACE_OVER}
#: The states in which the DHT mode is on.
UP_STATES = frozenset({U.UP, U.GRACE})


def uplink_transition(state: UplinkState, event: UplinkInput) -> UplinkState:
    """The next state; :class:`LocalProtocolError` when the table has no entry."""
    nxt = UPLINK_TABLE.get((state, event))
    if nxt is None:
        raise LocalProtocolError(f"uplink: {event.value} not allowed in {state.value}")
    return nxt


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    min_peers: int = 1
    stable_s: float = 10.0
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_peers < 1:
            raise ValueError("uplink.min_peers must be >= 1")
        if not self.stable_s > 0 or not self.grace_s > 0:
            raise ValueError("uplink.stable_s and uplink.grace_s must be > 0")


@dataclass(frozen=True, slots=True)
class UplinkChange:
    previous: UplinkState
    state: UplinkState
    peers: int
    at: float


class Uplink:
    """The machine above, with its one timer."""

    def __init__(self, config: UplinkConfig, now: float) -> None:
        self.config = config
        self.state = UplinkState.DOWN
        self.peers = 0
        #: when the current state was entered
        self.since = now
        self._deadline: float | None = None

    @property
    def is_up(self) -> bool:
        return self.state in UP_STATES

    def classify(self, good: int) -> UplinkInput:
        if good >= self.config.min_peers:
            return UplinkInput.GOOD
        return UplinkInput.FEW if good > 0 else UplinkInput.NONE

    def on_peers(self, good: int, now: float) -> UplinkChange | None:
        """A health sample: ``good`` peers now."""
        self.peers = max(0, good)
        return self._apply(self.classify(self.peers), now)

    def next_timer(self) -> float | None:
        return self._deadline

    def on_timer(self, now: float) -> UplinkChange | None:
        if self._deadline is None or now < self._deadline:
            return None
        return self._apply(TIMER_INPUT[self.state], now)

    def _apply(self, event: UplinkInput, now: float) -> UplinkChange | None:
        previous = self.state
        nxt = uplink_transition(previous, event)
        if nxt is previous:
            return None
        self.state, self.since = nxt, now
        self._deadline = (now + self.config.stable_s if nxt is UplinkState.JOINING else
                          now + self.config.grace_s if nxt is UplinkState.GRACE else None)
        return UplinkChange(previous, nxt, self.peers, now)
