"""The messages two devices both journaled: the send/receive pairs that tie their clocks
together (issue 11, sans-IO).

A SIP message one gateway sent over the mesh (``sip.message`` with direction ``to-mesh``,
its peer the receiving node) and the other received (``from-mesh``, its peer the sender)
is the same message when Call-ID, CSeq, method and status match. A retransmission is
journaled again on both sides; a receipt is paired with the *first* send of its message,
never a later one, so the bound it gives (:mod:`meshcomm.export.clocks`) always holds.

Memory is bounded: at most :data:`MAX_KEYS` first sends and as many receipts are kept
(the oldest are dropped first and counted: a longer export gives fewer pairs, never wrong
ones).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TypeVar

from meshcomm.export.clocks import Exchange
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.events import JournalEventType

#: First sends, and receipts, kept at once.
MAX_KEYS = 1_000_000
SIP_TYPE = JournalEventType.SIP_MESSAGE.value
TO_MESH = "to-mesh"
FROM_MESH = "from-mesh"
#: A gateway names a mesh peer by the first 8 bytes of its node id (gateway.parts).
PEER_HEX_CHARS = 16
MESH_PEER_SUFFIX = ".mesh"

_Key = tuple[str, int, str, int]
_V = TypeVar("_V", tuple[str, float], tuple[str, float, str])


def _key(data: Mapping[str, object]) -> _Key | None:
    call_id, cseq, method, status = (data.get("call_id"), data.get("cseq"),
                                     data.get("method"), data.get("status"))
    if not isinstance(call_id, str) or not isinstance(method, str):
        return None
    if not isinstance(cseq, int) or (status is not None and not isinstance(status, int)):
        return None
    return call_id, cseq, method, -1 if status is None else status


def _peer_of(device_hex: str) -> str:
    return device_hex[:PEER_HEX_CHARS] + MESH_PEER_SUFFIX


class ExchangeFinder:
    """Feed every device's entries (:meth:`add`, any order), then take :meth:`exchanges`."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._sends: OrderedDict[tuple[str, _Key], tuple[str, float]] = OrderedDict()
        #: receipts by (receiver as a peer name, message): (receiver, wall, sender's name)
        self._receipts: OrderedDict[tuple[str, _Key], tuple[str, float, str]] = OrderedDict()
        #: first sends / receipts dropped to stay within max_keys
        self.dropped = 0

    def add(self, device_hex: str, entry: JournalEntry) -> None:
        if entry.type != SIP_TYPE:
            return
        direction, peer = entry.data.get("dir"), entry.data.get("peer")
        key = _key(entry.data)
        if key is None or not isinstance(peer, str):
            return
        if direction == TO_MESH:
            self._keep(self._sends, (peer, key), (device_hex, entry.wall_s))
        elif direction == FROM_MESH:
            self._keep(self._receipts, (_peer_of(device_hex), key),
                       (device_hex, entry.wall_s, peer))

    def _keep(self, table: OrderedDict[tuple[str, _Key], _V], key: tuple[str, _Key],
              value: _V) -> None:
        """The first stamp of each message (a retransmission journals it again)."""
        found = table.get(key)
        if found is not None:
            if value[1] < found[1]:
                table[key] = value
            return
        if len(table) >= self.max_keys:
            table.popitem(last=False)
            self.dropped += 1
        table[key] = value

    def exchanges(self) -> Iterator[Exchange]:
        """Each message seen sent by one device and received by the one it was sent to."""
        for (receiver_peer, key), (receiver, recv_wall, from_peer) in self._receipts.items():
            sent = self._sends.get((receiver_peer, key))
            if sent is None:
                continue
            sender, send_wall = sent
            if sender != receiver and from_peer == _peer_of(sender):
                yield Exchange(sender, receiver, send_wall, recv_wall)
