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

    def _is_active(self, entry: _Entry) -> bool:
        raise NotImplementedError

    def _delivered_remotely(self, entry: _Entry, now: float) -> None:
        raise NotImplementedError

    def _try_remote(self, entry: _Entry, now: float) -> None:
        entry.last_try = now
        entry.next_try = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, self.config.retry_max_s)
        self.counters[SfCounter.REMOTE_TRIES] += 1
        self._events.append(SfRemoteTry(entry.held.msg_id, entry.held.parcel.sip))

    def remote_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None:
        """The gateway's verdict on an :class:`SfRemoteTry` (see the module docstring)."""
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
        if not self.remote_delivery:
            return
        for entry in self._entries.values():
            if self._is_active(entry) and not entry.bound_nodes:
                entry.next_try = now
                entry.backoff_s = self.config.retry_initial_s
                self.counters[SfCounter.REMOTE_WAKEUPS] += 1
        self._tick_at = min(self._tick_at, now)
