"""Store-and-forward beyond the island (issue 10): a mixin of
:class:`meshcomm.node.storeforward.StoreForward`.

A held MESSAGE whose To AoR has no binding in the island may live in another island. With
:attr:`RemoteDelivery.remote_delivery` set (the node core sets it when the node can reach
other islands), such a message is handed back to the node's gateway as an
:class:`SfRemoteTry` on the holder's usual backoff; the gateway resolves the AoR (the DHT,
through an uplinked relay of the island) and sends the MESSAGE across, and reports with
:meth:`RemoteDelivery.remote_delivery_done`: a 2xx settles the message as delivered (the far
gateway delivers once per message id, so every holder trying is harmless), anything else
waits for the next try. :meth:`RemoteDelivery.remote_reachable` (an uplink came up) tries
them all at once, so messages held while the uplink was down leave as soon as it returns.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshcomm.node.sf_counters import SfCounter

if TYPE_CHECKING:
    from meshcomm.node.storeforward import StoreForwardConfig, _Entry

#: Holder label of a message delivered beyond the island.
REMOTE_HOLDER = "remote"
#: Tries with the gateway at once (more wait for the next poll: the gateway keeps room for
#: other traffic), and how long a try may stay unanswered before another may start.
MAX_REMOTE_IN_FLIGHT = 32
REMOTE_TRY_TIMEOUT_S = 30.0
#: Wake-ups closer together than this are one (news of the uplink comes in bursts).
REMOTE_WAKE_GAP_S = 1.0


@dataclass(frozen=True, slots=True)
class SfRemoteTry:
    """Send held ``sip`` (``msg_id``) beyond the island through the gateway; answer with
    ``StoreForward.remote_delivery_done``."""

    msg_id: bytes
    sip: bytes


class RemoteDelivery:
    """Mixin: needs the store-and-forward core's entries, counters, config, events,
    timer and its ``_is_active`` / ``_delivered_remotely``."""

    _entries: dict[bytes, _Entry]
    counters: Counter[str]
    config: StoreForwardConfig
    _events: deque[Any]
    _tick_at: float

    def __init__(self) -> None:
        #: Set by the node core when the node can reach other islands (a tunnel part).
        self.remote_delivery = False
        #: Tries handed to the gateway and not answered yet: message id -> when.
        self._remote_in_flight: dict[bytes, float] = {}
        self._woken_at = float("-inf")

    def _is_active(self, entry: _Entry) -> bool:
        raise NotImplementedError

    def _delivered_remotely(self, entry: _Entry, now: float) -> None:
        raise NotImplementedError

    def _try_remote(self, entry: _Entry, now: float) -> None:
        msg_id = entry.held.msg_id
        started = self._remote_in_flight.get(msg_id)
        if started is not None and now - started < REMOTE_TRY_TIMEOUT_S:
            return                          # the last try is still out: its answer decides
        for old in [m for m, t in self._remote_in_flight.items()
                    if now - t >= REMOTE_TRY_TIMEOUT_S]:
            del self._remote_in_flight[old]
        if len(self._remote_in_flight) >= MAX_REMOTE_IN_FLIGHT:
            self.counters[SfCounter.REMOTE_DEFERRED] += 1
            return                          # its next_try stays due: the next poll
        self._remote_in_flight[msg_id] = now
        entry.last_try = now
        entry.next_try = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, self.config.retry_max_s)
        self.counters[SfCounter.REMOTE_TRIES] += 1
        self._events.append(SfRemoteTry(entry.held.msg_id, entry.held.parcel.sip))

    def remote_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None:
        """The gateway's verdict on an :class:`SfRemoteTry` (see the module docstring)."""
        self._remote_in_flight.pop(msg_id, None)
        entry = self._entries.get(msg_id)
        if entry is None or not self._is_active(entry):
            return
        if not ok:
            self.counters[SfCounter.REMOTE_FAILED] += 1
            return
        self.counters[SfCounter.REMOTE_DELIVERED] += 1
        self._delivered_remotely(entry, now)

    def remote_reachable(self, now: float) -> None:
        """Other islands became reachable: every message waiting for a destination
        beyond the island is tried at once."""
        if not self.remote_delivery or now - self._woken_at < REMOTE_WAKE_GAP_S:
            return
        self._woken_at = now
        # Tries started while nothing went through may hang on for a while: new ones go
        # now (an older try's late answer only counts; the far end delivers once).
        self._remote_in_flight.clear()
        for entry in self._entries.values():
            if self._is_active(entry) and not entry.bound_nodes:
                entry.next_try = now
                entry.backoff_s = self.config.retry_initial_s
                self.counters[SfCounter.REMOTE_WAKEUPS] += 1
        self._tick_at = min(self._tick_at, now)
