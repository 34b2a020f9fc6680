"""Journal collection over the mesh (issue 11, point 2): a part of
:class:`~meshcomm.node.core.NodeCore` (sans-IO).

``meshcomm ctl collect --out DIR`` on the command post pulls the journal of every device it
reaches. Both sides live in :class:`Collect`:

* the **collector** (:class:`Collector`): :meth:`Collect.start` is given the devices to
  collect with the head each already has in DIR (seq and entry hash; none: from seq 1). It
  sends each a JOURNAL_PULL from the next seq (at most ``window`` pulls in flight, only
  while the node has spare capacity, see :mod:`.collect_serve`), checks every chunk that
  comes back as a continuation of the chain DIR holds (:func:`check_rows`: contiguous seqs,
  each ``prev_hash`` the previous ``entry_hash``, each ``entry_hash`` recomputed, every row
  the device's own), and hands the verified rows to the edge (:class:`CollectRows`), which
  appends them to ``DIR/<node id hex>/journal.sqlite`` durably and answers with
  :meth:`Collect.stored`; only then is the next chunk pulled. A chunk that does not chain
  on is refused and the device reported failed, naming the seq (a rewritten history, a
  removed entry); a device that does not answer ``max_tries`` pulls in a row is reported
  failed ("no answer"); REFUSED is reported as refused; BUSY waits and asks again.
* the **device** (:class:`~meshcomm.node.collect_serve.CollectServer`): answers pulls of
  authorised collectors from its journal through the edge (:class:`JournalRead`).

Wire format: :mod:`meshcomm.node.collect_wire`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from meshcomm.deadlines import DeadlineHeap
from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.codec import (
    FIRST_SEQ,
    GENESIS_HASH,
    canonical_data_untrusted,
    compute_entry_hash,
    decode_data_untrusted,
)
from meshcomm.journal.events import JournalRecord
from meshcomm.node.collect_serve import CollectServer, JournalRead, ServeConfig
from meshcomm.node.collect_wire import (
    MAX_CREDENTIAL_BYTES,
    MAX_PART_TOTAL,
    MAX_ROWS_PER_CHUNK,
    ChunkStatus,
    JournalChunk,
    JournalPull,
    WireRow,
    decode_chunk_untrusted,
    decode_pull_untrusted,
    decompress_rows_untrusted,
    encode_pull,
)
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.types import NodeId

#: Devices one collection covers (the rest are left out, reported).
MAX_COLLECT_DEVICES: Final = 1024
#: A pull unanswered this long is sent again (a chunk is up to 8 fragments, per-hop ARQ).
PULL_TIMEOUT_S: Final = 8.0
#: Pulls in a row without an answer before a device is reported unreachable.
MAX_TRIES: Final = 4
#: A BUSY device, or a pull held back for want of spare capacity, is asked again after this.
RETRY_AFTER_S: Final = 1.0
SPARE_POLL_S: Final = 0.2


#: Sends one collection message: (destination node id, unicast kind, body, now).
SendFn = Callable[[bytes, int, bytes, float], None]


def _no_remote_nodes(_now: float) -> list[NodeId]:
    return []


class CollectCounter(StrEnum):
    PULLS_SENT = "collect_pulls_sent"
    CHUNKS = "collect_chunks_received"
    ROWS = "collect_rows_received"
    WIRE_BYTES = "collect_wire_bytes_received"
    TIMEOUTS = "collect_pull_timeouts"
    HELD_BACK = "collect_pulls_held_back"
    DROP_MALFORMED = "collect_drop_malformed"
    DROP_UNEXPECTED = "collect_drop_unexpected"
    CHAIN_REFUSED = "collect_chain_refused"


class DeviceState(StrEnum):
    WAITING = "waiting"        # a pull is due (window, spare capacity, BUSY)
    PULLING = "pulling"        # a pull is out
    STORING = "storing"        # verified rows are with the edge
    COMPLETE = "complete"
    FAILED = "failed"
    REFUSED = "refused"


#: States a device does not leave within a collection.
FINAL_STATES: Final = frozenset({DeviceState.COMPLETE, DeviceState.FAILED,
                                 DeviceState.REFUSED})


@dataclass(frozen=True, slots=True)
class CollectConfig:
    serve: ServeConfig = field(default_factory=ServeConfig)
    #: The node's agency credential, presented with every pull (b"": none).
    credential: bytes = b""
    #: Pulls in flight at once (over all devices; one per device).
    window: int = 2


@dataclass(frozen=True, slots=True)
class CollectRows:
    """For the edge: append ``rows`` (verified to chain onto what DIR holds) to the copy
    of ``node``'s journal; answer with ``Collect.stored(node, ok, error)``."""

    node: NodeId
    public_key: bytes
    rows: tuple[WireRow, ...]
    #: the head of the device's journal when it answered (its chunk said so)
    head_seq: int = 0


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    node: NodeId
    state: DeviceState
    next_seq: int              # the first seq DIR does not hold yet
    rows: int                  # rows collected in this run
    wire_bytes: int            # chunk bytes received in this run
    head_seq: int              # the device's newest seq, as it last said
    error: str


class ChainBroken(Exception):
    """Rows that do not continue the chain DIR holds (``seq`` names the first bad row)."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


def check_rows(rows: list[WireRow], node_id: bytes,
               head: tuple[int, bytes] | None) -> tuple[int, bytes]:
    """Check that ``rows`` continue ``head`` (seq, entry hash; None: an empty copy) as
    ``node_id``'s chain; return the new head. Raises :class:`ChainBroken`."""
    seq, prev = head if head is not None else (FIRST_SEQ - 1, GENESIS_HASH)
    for row in rows:
        r_seq, mono_s, wall_s, r_node, type_name, data, prev_hash, entry_hash = row
        if r_seq != seq + 1:
            raise ChainBroken(seq + 1, f"entry {seq + 1} missing (got {r_seq}): removed "
                                       "or reordered entries")
        if r_node != node_id:
            raise ChainBroken(r_seq, f"entry {r_seq} is another node's ({r_node.hex()[:16]})")
        if prev_hash != prev:
            raise ChainBroken(r_seq, f"entry {r_seq} does not chain onto entry {seq} held "
                                     "(history rewritten: a fork)")
        try:
            canonical = canonical_data_untrusted(decode_data_untrusted(data))
        except DecodeError as exc:
            raise ChainBroken(r_seq, f"entry {r_seq} undecodable: {exc}") from None
        expected = compute_entry_hash(prev_hash, r_seq, mono_s, wall_s, r_node,
                                      type_name.decode("utf-8"), canonical)
        if expected != entry_hash:
            raise ChainBroken(r_seq, f"entry {r_seq} does not match its hash (edited)")
        seq, prev = r_seq, entry_hash
    return seq, prev


@dataclass(slots=True)
class _Device:
    node: NodeId
    next_seq: int
    head_hash: bytes
    state: DeviceState = DeviceState.WAITING
    key: bytes = b""
    rows: int = 0
    wire_bytes: int = 0
    tries: int = 0
    head_seq: int = 0
    error: str = ""
    part: bytearray = field(default_factory=bytearray)
    more: bool = True
    pending: tuple[int, bytes] | None = None
    pending_rows: int = 0


class Collector:
    """The collector side (see the module docstring)."""

    def __init__(self, node: MeshNode, config: CollectConfig, counters: Counter[str],
                 events: deque[object], send: SendFn) -> None:
        self.node = node
        self.config = config
        self.counters = counters
        self._events = events
        self.send = send
        self._devices: dict[NodeId, _Device] = {}
        self._due: DeadlineHeap[NodeId] = DeadlineHeap()
        self._in_flight = 0
        #: Devices left out of the last start (over MAX_COLLECT_DEVICES).
        self.left_out = 0
        #: What a chunk's status means (ARCHITECTURE.md rule 4: a table, keyed by Enum).
        self._by_status: dict[ChunkStatus, Callable[[_Device, JournalChunk, float], None]] = {
            ChunkStatus.OK: self._on_ok,
            ChunkStatus.REFUSED: self._on_refused,
            ChunkStatus.BUSY: self._on_busy,
            ChunkStatus.NO_JOURNAL: self._on_no_journal,
        }

    def start(self, targets: Mapping[NodeId, tuple[int, bytes] | None], now: float) -> None:
        if len(self.config.credential) > MAX_CREDENTIAL_BYTES:
            raise LocalProtocolError("credential too large for a pull")
        self._devices.clear()
        self._due = DeadlineHeap()
        self._in_flight = 0
        nodes = sorted(targets)[:MAX_COLLECT_DEVICES]
        self.left_out = len(targets) - len(nodes)
        for node in nodes:
            head = targets[node]
            seq, head_hash = head if head is not None else (FIRST_SEQ - 1, GENESIS_HASH)
            self._devices[node] = _Device(node, seq + 1, head_hash)
            self._due.schedule(node, now)

    def cancel(self) -> None:
        for dev in self._devices.values():
            if dev.state not in FINAL_STATES:
                dev.state, dev.error = DeviceState.FAILED, "cancelled"
        self._due = DeadlineHeap()
        self._in_flight = 0

    @property
    def running(self) -> bool:
        return any(d.state not in FINAL_STATES for d in self._devices.values())

    def progress(self) -> list[DeviceProgress]:
        return [DeviceProgress(d.node, d.state, d.next_seq, d.rows, d.wire_bytes,
                               d.head_seq, d.error) for d in self._devices.values()]

    # ------------------------------------------------------------ pulls
    def send_due(self, now: float, spare: bool) -> None:
        """Send the pulls that are due, within the window and while there is spare
        capacity."""
        for node in self._due.pop_due(now):
            dev = self._devices.get(node)
            if dev is None or dev.state in FINAL_STATES or dev.state is DeviceState.STORING:
                continue
            if dev.state is DeviceState.PULLING:        # its pull timed out
                self._in_flight -= 1
                dev.tries += 1
                self.counters[CollectCounter.TIMEOUTS] += 1
                if dev.tries >= MAX_TRIES:
                    self._fail(dev, DeviceState.FAILED, f"no answer to {dev.tries} pulls")
                    continue
                dev.state = DeviceState.WAITING
            if self._in_flight >= self.config.window or not spare:
                self.counters[CollectCounter.HELD_BACK] += 1
                self._due.schedule(node, now + SPARE_POLL_S)
                continue
            self._pull(dev, now)

    def _pull(self, dev: _Device, now: float) -> None:
        # The rest of a row travelling in parts: that one row only.
        pull = JournalPull(dev.next_seq, 1 if dev.part else MAX_ROWS_PER_CHUNK,
                           len(dev.part), self.config.credential)
        try:
            self.send(dev.node, AppKind.JOURNAL_PULL, encode_pull(pull), now)
        except LocalProtocolError as exc:
            self._fail(dev, DeviceState.FAILED, f"cannot send: {exc}")
            return
        dev.state = DeviceState.PULLING
        self._in_flight += 1
        self.counters[CollectCounter.PULLS_SENT] += 1
        self._due.schedule(dev.node, now + PULL_TIMEOUT_S)

    def _fail(self, dev: _Device, state: DeviceState, error: str) -> None:
        dev.state, dev.error = state, error
        self._due.discard(dev.node)

    # ------------------------------------------------------------ chunks
    def on_chunk(self, event: UnicastReceived, now: float) -> None:
        dev = self._devices.get(event.origin)
        try:
            chunk = decode_chunk_untrusted(event.body)
        except DecodeError:
            self.counters[CollectCounter.DROP_MALFORMED] += 1
            return
        if (dev is None or dev.state is not DeviceState.PULLING
                or chunk.from_seq != dev.next_seq or chunk.part_offset != len(dev.part)):
            self.counters[CollectCounter.DROP_UNEXPECTED] += 1   # e.g. a late duplicate
            return
        self._in_flight -= 1
        dev.state, dev.tries, dev.key = DeviceState.WAITING, 0, event.origin_key
        dev.wire_bytes += len(event.body)
        dev.head_seq = max(dev.head_seq, chunk.head_seq)
        self.counters[CollectCounter.CHUNKS] += 1
        self.counters[CollectCounter.WIRE_BYTES] += len(event.body)
        self._by_status[chunk.status](dev, chunk, now)

    def _on_refused(self, dev: _Device, _chunk: JournalChunk, _now: float) -> None:
        self._fail(dev, DeviceState.REFUSED, "refused: this node is not an authorised "
                                             "collector in the device's profile")

    def _on_no_journal(self, dev: _Device, _chunk: JournalChunk, _now: float) -> None:
        self._fail(dev, DeviceState.FAILED, "the device keeps no readable journal")

    def _on_busy(self, dev: _Device, _chunk: JournalChunk, now: float) -> None:
        self._due.schedule(dev.node, now + RETRY_AFTER_S)

    def _on_ok(self, dev: _Device, chunk: JournalChunk, now: float) -> None:
        if chunk.part_total:
            self._on_part(dev, chunk, now)
        else:
            self._on_rows(dev, chunk.rows_z, chunk.row_count, chunk.more, now)

    def _on_part(self, dev: _Device, chunk: JournalChunk, now: float) -> None:
        if (not chunk.rows_z
                or len(dev.part) + len(chunk.rows_z) > min(chunk.part_total, MAX_PART_TOTAL)):
            dev.part.clear()
            self._fail(dev, DeviceState.FAILED, f"entry {dev.next_seq}: inconsistent parts")
            return
        dev.part += chunk.rows_z
        if len(dev.part) < chunk.part_total:
            self._due.schedule(dev.node, now)
            return
        whole, dev.part = bytes(dev.part), bytearray()
        self._on_rows(dev, whole, 1, None, now, head_seq=chunk.head_seq)

    def _on_rows(self, dev: _Device, rows_z: bytes, count: int, more: bool | None,
                 now: float, head_seq: int = 0) -> None:
        try:
            rows = decompress_rows_untrusted(rows_z, count) if count else []
            head = check_rows(rows, dev.node,
                              (dev.next_seq - 1, dev.head_hash) if dev.next_seq > FIRST_SEQ
                              else None)
        except DecodeError as exc:
            self.counters[CollectCounter.DROP_MALFORMED] += 1
            self._fail(dev, DeviceState.FAILED, f"entry {dev.next_seq}: bad chunk ({exc})")
            return
        except ChainBroken as exc:
            self.counters[CollectCounter.CHAIN_REFUSED] += 1
            self._fail(dev, DeviceState.FAILED, f"refused at entry {exc.seq}: {exc}")
            return
        dev.more = more if more is not None else bool(rows) and rows[-1][0] < head_seq
        if not rows:
            if dev.head_seq < dev.next_seq - 1:
                self._fail(dev, DeviceState.FAILED, f"the device's journal ends at entry "
                           f"{dev.head_seq}, the copy holds up to {dev.next_seq - 1}: "
                           "truncated or replaced")
                return
            dev.state = DeviceState.COMPLETE
            return
        self.counters[CollectCounter.ROWS] += len(rows)
        dev.state, dev.pending, dev.pending_rows = DeviceState.STORING, head, len(rows)
        self._events.append(CollectRows(dev.node, dev.key, tuple(rows),
                                        max(dev.head_seq, int(rows[-1][0]))))

    def stored(self, node: NodeId, ok: bool, error: str, now: float) -> None:
        """The edge wrote (``ok``) or could not write the last :class:`CollectRows`."""
        dev = self._devices.get(node)
        if dev is None or dev.state is not DeviceState.STORING or dev.pending is None:
            return
        if not ok:
            self._fail(dev, DeviceState.FAILED, error or "could not be written")
            return
        (seq, dev.head_hash), dev.pending = dev.pending, None
        dev.next_seq, dev.rows = seq + 1, dev.rows + dev.pending_rows
        if dev.more:
            dev.state = DeviceState.WAITING
            self._due.schedule(node, now)
        else:
            dev.state = DeviceState.COMPLETE

    def next_timer(self) -> float | None:
        return self._due.next_time()


class Collect:
    """The node's collection part: collector and device side, one driving API."""

    def __init__(self, node: MeshNode, config: CollectConfig) -> None:
        self.node = node
        self.config = config
        self.counters: Counter[str] = Counter()
        self._events: deque[object] = deque()
        #: Sends a collection message; the node core routes it through its tunnel to
        #: nodes of other islands (:meth:`NodeCore._collect_send`).
        self.send: SendFn = self._send_in_island
        #: Nodes of other islands reachable now (the node core's tunnel; none without).
        self.remote_nodes: Callable[[float], list[NodeId]] = _no_remote_nodes
        self.collector = Collector(node, config, self.counters, self._events,
                                   lambda *args: self.send(*args))
        self.server = CollectServer(config.serve, self.counters, self._events)

    def _send_in_island(self, dst: bytes, kind: int, body: bytes, now: float) -> None:
        self.node.send_unicast(dst, kind, body, now)

    # ------------------------------------------------------------ inputs
    def on_unicast(self, event: UnicastReceived, now: float) -> None:
        if event.kind == AppKind.JOURNAL_CHUNK:
            self.collector.on_chunk(event, now)
        else:
            try:
                pull = decode_pull_untrusted(event.body)
            except DecodeError:
                self.counters[CollectCounter.DROP_MALFORMED] += 1
                return
            self.server.on_pull(event.origin, event.origin_key, pull, now,
                                self.node.overlay.wall_time(now))
        self._work(now)

    def start(self, targets: Mapping[NodeId, tuple[int, bytes] | None], now: float) -> None:
        """Collect the journals of ``targets`` (node id -> the head DIR holds, or None)."""
        self.collector.start(targets, now)
        self._work(now)

    def cancel(self) -> None:
        self.collector.cancel()

    def stored(self, node: NodeId, ok: bool, error: str, now: float) -> None:
        self.collector.stored(node, ok, error, now)
        self._work(now)

    def rows_read(self, read_id: int, rows: list[tuple[object, ...]], head_seq: int,
                  ok: bool, now: float) -> None:
        self.server.rows_read(read_id, rows, head_seq, ok, now)
        self._work(now)

    def reachable(self, now: float) -> list[NodeId]:
        """Devices this node can reach: live routes, the nodes of live bindings, and nodes
        of other islands with a live remote route (cross-site traffic went through)."""
        own = self.node.node_id
        overlay = self.node.overlay
        found = {r.dst for r in overlay.routes.all() if overlay.routes.get(r.dst, now)}
        found.update(NodeId(s.binding.node_id) for s in self.node.table
                     if not s.binding.is_tombstone)
        found.update(self.remote_nodes(now))
        found.discard(NodeId(own))
        return sorted(found)[:MAX_COLLECT_DEVICES]

    # ------------------------------------------------------------ driving API
    def spare(self) -> bool:
        """Spare capacity for bulk traffic: the unicast backlog is small."""
        return (self.node.overlay.forwarder.awaiting_ack
                <= self.config.serve.busy_backlog)

    def next_timer(self) -> float | None:
        times = [t for t in (self.collector.next_timer(), self.server.next_timer())
                 if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        self.server.on_timer(now, self.spare)
        self._work(now)

    def next_event(self) -> JournalRead | CollectRows | JournalRecord | None:
        event = self._events.popleft() if self._events else None
        assert event is None or isinstance(event, JournalRead | CollectRows | JournalRecord)
        return event

    def _work(self, now: float) -> None:
        self.server.flush(now, self.spare)
        for dst, body in self.server.outbox:
            try:
                self.send(dst, AppKind.JOURNAL_CHUNK, body, now)
            except LocalProtocolError:
                self.counters[CollectCounter.DROP_UNEXPECTED] += 1
        self.server.outbox.clear()
        self.collector.send_due(now, self.spare())
