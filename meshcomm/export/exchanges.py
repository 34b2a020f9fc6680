"""The messages two devices both journaled: the send/receive pairs that tie their clocks
together (issue 11, sans-IO).

A SIP message one gateway sent over the mesh (``sip.message`` with direction ``to-mesh``,
its peer the receiving node) and the other received (``from-mesh``, its peer the sender)
is the same message when

* both records carry the same ``env`` (the overlay envelope id, the same on every device
  it crossed): an exact match; or, for records without one,
* Call-ID, CSeq, method and status match.

A retransmission is journaled again on both sides; a receipt is paired with the *first*
send of its message (in the sender's seq order), and only the first receipt counts, so
the bound each pair gives (:mod:`meshcomm.export.clocks`) always holds: the first receipt
came after the first send, whatever the wall clocks say.

Streaming: devices are fed one after the other (:meth:`ExchangeFinder.add`, each
device's entries together and in seq order). A record whose partner device was fed
already is matched at once; one whose partner comes later waits in that partner's table,
which is dropped once the partner has been fed. So only records waiting for a device not
yet fed are held: at most :data:`MAX_WAITING_PER_PEER` per partner (the oldest dropped
first) and :data:`MAX_WAITING` in all (then new ones are not kept), each dropped record
counted. A longer export gives fewer pairs, never wrong ones. Records naming a partner
that is not in the export (when the devices are announced, :meth:`ExchangeFinder.expect`)
are not kept at all.

A ``journal.witnessed`` record with ``sent_wall`` is a pair by itself: the witnessed node
sealed the HELLO at ``sent_wall`` on its clock, the witness journaled it at the record's
stamp on its own (:mod:`meshcomm.overlay.witness`). These tie the clocks of neighbours that
journal no SIP message (relays).

The clocks need only the tightest pair of each ordered device pair; that is what
:meth:`ExchangeFinder.exchanges` keeps (and :attr:`ExchangeFinder.pairs` counts them all).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from meshcomm.export.clocks import Exchange
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.events import JournalEventType

#: Records waiting for one partner device, and in all (about 270 bytes each).
MAX_WAITING_PER_PEER: Final = 50_000
MAX_WAITING: Final = 300_000
#: Kept for compatibility with callers that bound the tables as a whole.
MAX_KEYS: Final = MAX_WAITING
SIP_TYPE: Final = JournalEventType.SIP_MESSAGE.value
WITNESSED_TYPE: Final = JournalEventType.WITNESSED.value
#: A node id in a witness record: 32 bytes, hex.
NODE_HEX_CHARS: Final = 64
TO_MESH: Final = "to-mesh"
FROM_MESH: Final = "from-mesh"
#: A gateway names a mesh peer by the first 8 bytes of its node id (gateway.parts).
PEER_HEX_CHARS: Final = 16
MESH_PEER_SUFFIX: Final = ".mesh"
#: Longest envelope id (hex) taken as a key.
MAX_ENV_CHARS: Final = 128
#: Longest Call-ID taken into a key (longer ones are not paired).
MAX_CALL_ID_CHARS: Final = 1024

#: An envelope id, or (peer holding the record, direction, Call-ID, CSeq, method, status)
_Key = str | tuple[object, ...]
#: A waiting record: (its device, wall time, direction)
_Held = tuple[str, float, str]


def _key(data: Mapping[str, object], sender_peer: str, direction: str) -> _Key | None:
    """What a record waits under: its envelope id (unique: who sent it and which way are
    checked when it is found), else the message's Call-ID, CSeq, method and status with
    the peer that holds it and the direction (as its partner will look for it)."""
    env = data.get("env")
    if type(env) is str and 0 < len(env) <= MAX_ENV_CHARS:
        return env
    call_id, cseq, method, status = (data.get("call_id"), data.get("cseq"),
                                     data.get("method"), data.get("status"))
    if type(call_id) is not str or type(method) is not str or len(call_id) > MAX_CALL_ID_CHARS:
        return None
    if type(cseq) is not int or (status is not None and type(status) is not int):
        return None
    return sender_peer, direction, call_id, cseq, method, -1 if status is None else status


def peer_name(device_hex: str) -> str:
    """How a gateway names the device as a mesh peer."""
    return device_hex[:PEER_HEX_CHARS] + MESH_PEER_SUFFIX


class ExchangeFinder:
    """Feed every device's entries (:meth:`add`: device after device, each device's
    entries in seq order), then take :meth:`exchanges`."""

    def __init__(self, max_keys: int = MAX_WAITING,
                 max_per_peer: int = MAX_WAITING_PER_PEER) -> None:
        self.max_keys = max_keys
        self.max_per_peer = max_per_peer
        #: partner peer name -> records waiting for it: key -> (device, wall)
        self._waiting: dict[str, OrderedDict[_Key, _Held]] = {}
        self._peers: dict[str, str] = {}
        self._held = 0
        self._expected: frozenset[str] | None = None
        self._done: set[str] = set()
        self._current: str | None = None
        self._current_peer = ""
        #: the tightest pair per (sender, receiver)
        self._best: dict[tuple[str, str], Exchange] = {}
        #: pairs found
        self.pairs = 0
        #: records not kept (a table full)
        self.dropped = 0

    def expect(self, devices: Iterable[str]) -> None:
        """The devices that will be fed: records naming any other partner are not kept."""
        self._expected = frozenset(peer_name(d) for d in devices)

    def add(self, device_hex: str, entry: JournalEntry) -> None:
        if device_hex != self._current:
            self._switch(device_hex)
        if entry.type != SIP_TYPE:
            if entry.type == WITNESSED_TYPE:
                self._witnessed(device_hex, entry)
            return
        data = entry.data
        direction, partner = data.get("dir"), data.get("peer")
        if direction == TO_MESH:
            direction, other = TO_MESH, FROM_MESH       # the shared constants, not copies
        elif direction == FROM_MESH:
            direction, other = FROM_MESH, TO_MESH
        else:
            return
        if type(partner) is not str or partner == self._current_peer:
            return
        key = _key(data, partner, other)
        if key is None:
            return
        mine = self._waiting.get(self._current_peer)
        found = mine.get(key) if mine is not None else None
        if (mine is not None and found is not None and found[2] is other
                and self._peers[found[0]] == partner):
            del mine[key]
            self._held -= 1
            if direction is TO_MESH:
                self._pair(device_hex, found[0], entry.wall_s, found[1])
            else:
                self._pair(found[0], device_hex, found[1], entry.wall_s)
            return
        if partner in self._done or (self._expected is not None
                                     and partner not in self._expected):
            return
        self._hold(partner, _key(data, self._current_peer, direction) or key,
                   (device_hex, entry.wall_s, direction))

    def _witnessed(self, device_hex: str, entry: JournalEntry) -> None:
        """A witness record with the sender's sealing time: a pair at once."""
        node, sent = entry.data.get("node"), entry.data.get("sent_wall")
        if (type(node) is not str or len(node) != NODE_HEX_CHARS or node == device_hex
                or type(sent) is not float or not math.isfinite(sent)):
            return
        if self._expected is not None and peer_name(node) not in self._expected:
            return
        self._pair(node, device_hex, sent, entry.wall_s)

    def _switch(self, device_hex: str) -> None:
        """The previous device is complete: what waited for it can no longer match."""
        if self._current is not None:
            self._done.add(self._current_peer)
            finished = self._waiting.pop(self._current_peer, None)
            if finished is not None:
                self._held -= len(finished)
        self._current = device_hex
        self._current_peer = self._peers.setdefault(device_hex, peer_name(device_hex))

    def _hold(self, partner: str, key: _Key, value: _Held) -> None:
        table = self._waiting.get(partner)
        if table is None:
            table = self._waiting[partner] = OrderedDict()
        elif key in table:
            return                          # a retransmission: the first one counts
        if len(table) >= self.max_per_peer:
            table.popitem(last=False)
            self._held -= 1
            self.dropped += 1
        if self._held >= self.max_keys:
            self.dropped += 1
            return
        table[key] = value
        self._held += 1

    def _pair(self, sender: str, receiver: str, send: float, recv: float) -> None:
        self.pairs += 1
        best = self._best.get((sender, receiver))
        if best is None or recv - send < best.recv - best.send:
            self._best[(sender, receiver)] = Exchange(sender, receiver, send, recv)

    @property
    def held(self) -> int:
        """Records waiting for their partner now."""
        return self._held

    def exchanges(self) -> Iterator[Exchange]:
        """The tightest message seen sent by one device and received by the one it was
        sent to, per ordered pair of devices (all the clocks need)."""
        yield from self._best.values()
