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
already is matched at once; one whose partner comes later waits for it, and what waited
for a device is dropped once that device has been fed. So only records waiting for a
device not yet fed are held, compactly: a record with an envelope id as 18 bytes (the
id's first 8 bytes, its time, its direction, whether it paired; one sorted run per
device and partner, searched by bisection), one without as a dict entry (~280 bytes).
At most :data:`MAX_WAITING_PER_RUN` records of one device wait for one partner and
:data:`MAX_WAITING` in all; beyond that new ones are not kept, and counted. A longer
export gives fewer pairs, never wrong ones. Records naming a partner that is not in the
export (when the devices are announced, :meth:`ExchangeFinder.expect`) are not kept.

A ``journal.witnessed`` record with ``sent_wall`` is a pair by itself: the witnessed node
sealed the HELLO at ``sent_wall`` on its clock, the witness journaled it at the record's
stamp on its own (:mod:`meshcomm.overlay.witness`). These tie the clocks of neighbours that
journal no SIP message (relays).

The clocks need only the tightest pair of each ordered device pair; that is what
:meth:`ExchangeFinder.exchanges` keeps (and :attr:`ExchangeFinder.pairs` counts them all).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from meshcomm.export.clocks import Exchange
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.events import JournalEventType

#: Records of one device waiting for one partner device, and records waiting in all.
MAX_WAITING_PER_RUN: Final = 200_000
MAX_WAITING: Final = 4_000_000
#: Kept for callers that named the per-partner bound.
MAX_WAITING_PER_PEER: Final = MAX_WAITING_PER_RUN
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
#: Envelope ids are matched by their first 8 bytes (16 hex digits; a chance collision
#: within one pair of devices is ~n^2 / 2^65), and taken up to this length.
ENV_PREFIX_CHARS: Final = 16
MAX_ENV_CHARS: Final = 128
#: Longest Call-ID taken into a key (longer ones are not paired).
MAX_CALL_ID_CHARS: Final = 1024

_HEX_DIGITS: Final = "0123456789abcdef"
_SEND: Final = 0
_RECEIPT: Final = 1
#: (peer holding the record, direction, Call-ID, CSeq, method, status)
_Key = tuple[object, ...]
#: A waiting record without an envelope id: (its device, wall time, direction)
_Held = tuple[str, float, str]


def _env_prefix(data: Mapping[str, object]) -> int | None:
    env = data.get("env")
    if type(env) is not str or not ENV_PREFIX_CHARS <= len(env) <= MAX_ENV_CHARS:
        return None
    prefix = env[:ENV_PREFIX_CHARS].lower()
    if prefix.strip(_HEX_DIGITS):                 # int() would take signs, spaces, "_"
        return None
    return int(prefix, 16)


def _call_key(data: Mapping[str, object], holder_peer: str, direction: str) -> _Key | None:
    """What a record without an envelope id waits under: the message's Call-ID, CSeq,
    method and status with the peer that holds it and the direction."""
    call_id, cseq, method, status = (data.get("call_id"), data.get("cseq"),
                                     data.get("method"), data.get("status"))
    if type(call_id) is not str or type(method) is not str or len(call_id) > MAX_CALL_ID_CHARS:
        return None
    if type(cseq) is not int or (status is not None and type(status) is not int):
        return None
    return holder_peer, direction, call_id, cseq, method, -1 if status is None else status


def peer_name(device_hex: str) -> str:
    """How a gateway names the device as a mesh peer."""
    return device_hex[:PEER_HEX_CHARS] + MESH_PEER_SUFFIX


class _Run:
    """The records with an envelope id one device holds for one partner: appended in seq
    order, sorted by id (stably: the first of equal ids first) once the device is done."""

    __slots__ = ("envs", "kinds", "used", "walls")

    def __init__(self) -> None:
        self.envs = array("Q")
        self.walls = array("d")
        self.kinds = bytearray()
        self.used = bytearray()

    def __len__(self) -> int:
        return len(self.envs)

    def seal(self) -> None:
        order = sorted(range(len(self.envs)), key=self.envs.__getitem__)
        self.envs = array("Q", [self.envs[i] for i in order])
        self.walls = array("d", [self.walls[i] for i in order])
        self.kinds = bytearray(self.kinds[i] for i in order)
        self.used = bytearray(len(order))

    def take(self, env: int, kind: int) -> float | None:
        """The time of the first unpaired record of ``env`` and ``kind``, now paired."""
        i = bisect_left(self.envs, env)
        while i < len(self.envs) and self.envs[i] == env:
            if self.kinds[i] == kind:
                if self.used[i]:
                    return None             # its first counterpart was paired already
                self.used[i] = 1
                return self.walls[i]
            i += 1
        return None


class ExchangeFinder:
    """Feed every device's entries (:meth:`add`: device after device, each device's
    entries in seq order), then take :meth:`exchanges`."""

    def __init__(self, max_keys: int = MAX_WAITING,
                 max_per_peer: int = MAX_WAITING_PER_RUN) -> None:
        self.max_keys = max_keys
        self.max_per_peer = max_per_peer
        #: partner peer name -> device that holds them -> its records with an id
        self._runs: dict[str, dict[str, _Run]] = {}
        #: the current device's runs, by partner peer name (sealed when it is done)
        self._pending: dict[str, _Run] = {}
        #: partner peer name -> records without an id waiting for it
        self._waiting: dict[str, dict[_Key, _Held]] = {}
        self._peers: dict[str, str] = {}
        self._devices_by_peer: dict[str, str | None] = {}
        self._held = 0
        self._expected: frozenset[str] | None = None
        self._expected_devices: frozenset[str] = frozenset()
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
        self._expected_devices = frozenset(devices)
        self._expected = frozenset(peer_name(d) for d in self._expected_devices)

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
        env = _env_prefix(data)
        if partner in self._done:
            self._match(device_hex, entry, partner, direction, env, other)
        elif self._expected is None or partner in self._expected:
            self._hold(device_hex, entry, partner, direction, env)

    def _match(self, device_hex: str, entry: JournalEntry, partner: str, direction: str,
               env: int | None, other: str) -> None:
        """``entry`` against what its partner, fed already, holds for this device."""
        if env is not None:
            holder = self._devices_by_peer.get(partner)
            run = self._runs.get(self._current_peer, {}).get(holder) if holder else None
            kind = _SEND if other is TO_MESH else _RECEIPT
            wall = run.take(env, kind) if run is not None else None
            if wall is None or holder is None:
                return
            found: _Held = (holder, wall, other)
        else:
            key = _call_key(entry.data, partner, other)
            mine = self._waiting.get(self._current_peer)
            held = mine.pop(key, None) if mine is not None and key is not None else None
            if held is None or held[2] is not other or self._peers[held[0]] != partner:
                return
            self._held -= 1
            found = held
        if direction is TO_MESH:
            self._pair(device_hex, found[0], entry.wall_s, found[1])
        else:
            self._pair(found[0], device_hex, found[1], entry.wall_s)

    def _hold(self, device_hex: str, entry: JournalEntry, partner: str, direction: str,
              env: int | None) -> None:
        """Keep ``entry`` for its partner, still to come (the first of each message)."""
        if self._held >= self.max_keys:
            self.dropped += 1
            return
        if env is not None:
            run = self._pending.get(partner)
            if run is None:
                run = self._pending[partner] = _Run()
            if len(run) >= self.max_per_peer:
                self.dropped += 1
                return
            run.envs.append(env)
            run.walls.append(entry.wall_s)
            run.kinds.append(_SEND if direction is TO_MESH else _RECEIPT)
            self._held += 1
            return
        key = _call_key(entry.data, self._current_peer, direction)
        if key is None:
            return
        table = self._waiting.setdefault(partner, {})
        if key in table:
            return                          # a retransmission: the first one counts
        if len(table) >= self.max_per_peer:
            self.dropped += 1
            return
        table[key] = (device_hex, entry.wall_s, direction)
        self._held += 1

    def _witnessed(self, device_hex: str, entry: JournalEntry) -> None:
        """A witness record with the sender's sealing time: a pair at once."""
        node, sent = entry.data.get("node"), entry.data.get("sent_wall")
        if (type(node) is not str or len(node) != NODE_HEX_CHARS or node == device_hex
                or type(sent) is not float or not math.isfinite(sent)):
            return
        if self._expected is not None and node not in self._expected_devices:
            return                          # the full id: a shared 8-byte prefix is not it
        self._pair(node, device_hex, sent, entry.wall_s)

    def _switch(self, device_hex: str) -> None:
        """The previous device is complete: what waited for it can no longer match, and
        what it holds for others is sealed for them."""
        if self._current is not None:
            self._done.add(self._current_peer)
            for run in self._runs.pop(self._current_peer, {}).values():
                self._held -= len(run)
            finished = self._waiting.pop(self._current_peer, None)
            if finished is not None:
                self._held -= len(finished)
            for partner, run in self._pending.items():
                run.seal()
                self._runs.setdefault(partner, {})[self._current] = run
            self._pending = {}
        self._current = device_hex
        self._current_peer = self._peers.setdefault(device_hex, peer_name(device_hex))
        seen = self._devices_by_peer.get(self._current_peer, device_hex)
        self._devices_by_peer[self._current_peer] = device_hex if seen == device_hex else None

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
