"""The device side of journal collection: answer JOURNAL_PULLs of authorised collectors
(sans-IO; a piece of :class:`meshcomm.node.collect.Collect`).

**Who may collect.** A pull is answered only when the collector's key (the unicast
envelope's origin key, checked at every hop) or its node id is listed in the profile's
``[export] collectors``, or when the pull carries an agency credential that a trusted agency
key (``[trust] agency_keys``) signed for that very device key with a role listed in
``[export] collector_roles`` (default ``command``) and that has not expired. Anyone else is
refused: counted, journaled as ``envelope.dropped`` (reason ``collect_unauthorised``, kind
``journal_pull``; at most :data:`REFUSAL_JOURNAL_PER_S` across all senders) and answered
REFUSED within a small budget per sender (:data:`REFUSAL_REPLY_BURST`, refilled at
:data:`REFUSAL_REPLY_PER_S`) and across all senders (so a mis-configured command post
learns why, also when it asks again at once; a flood earns nothing more).

**Reading.** An accepted pull becomes a :class:`JournalRead` event: the edge reads at most
``max_rows`` rows of its journal (bounded by rows and bytes, never the whole file) and hands
them back with :meth:`CollectServer.rows_read`. The rows are packed verbatim, compressed,
and cut down until the chunk fits :data:`~meshcomm.node.collect_wire.CHUNK_TARGET_BYTES`
(a row too large alone travels in parts).

**Lowest traffic class.** The overlay has no priority queues (every frame leaves in the pump
run that produced it), so bulk collection yields instead: a chunk is sent only while the
node's unicast backlog (envelopes waiting for a per-hop ACK) is at most
``busy_backlog``, and within a per-collector byte budget (``rate_bytes_per_s``). Waiting
chunks are retried every :data:`SPARE_POLL_S`.

**Bounds.** At most :data:`MAX_SERVED` collectors are served at once, one read each (a new
pull of a collector replaces its old one); when all slots are taken by others the pull is
answered BUSY (the collector asks again later). Pulls per sender are rate-limited
(:data:`PULLS_PER_S`) before anything else (before a credential's signature is checked);
senders remembered for refusals are bounded (oldest forgotten).
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import EnvelopeDropped
from meshcomm.node.collect_wire import (
    CHUNK_TARGET_BYTES,
    MAX_ROWS_PER_CHUNK,
    ChunkStatus,
    JournalChunk,
    JournalPull,
    compress_rows,
    encode_chunk,
    row_to_wire,
)
from meshcomm.overlay.ratelimit import TokenBucket, TokenBuckets
from meshcomm.security.credentials import decode_credential_untrusted
from meshcomm.security.identity import verify_signature
from meshcomm.types import NodeId

#: Collectors served at once (one read each).
MAX_SERVED: Final = 8
#: Pulls per second (and burst) accepted from one collector; the rest are dropped, counted.
PULLS_PER_S: Final = 20.0
PULLS_BURST: Final = 40
#: REFUSED answers to one sender: burst, then this many per second.
REFUSAL_REPLY_BURST: Final = 3
REFUSAL_REPLY_PER_S: Final = 0.1
#: Senders remembered for that (the oldest is forgotten first).
MAX_REFUSED_REMEMBERED: Final = 256
#: Refusals journaled per second across all senders (and burst); the rest only counted.
REFUSAL_JOURNAL_PER_S: Final = 0.5
REFUSAL_JOURNAL_BURST: Final = 5
#: REFUSED/BUSY answers per second across all senders (and burst).
REFUSAL_REPLIES_PER_S: Final = 2.0
REFUSAL_REPLIES_BURST: Final = 10
#: A read the edge never answered, or a chunk that found no spare capacity, is dropped
#: after this long (the collector asks again).
SLOT_TIMEOUT_S: Final = 30.0
#: How often a chunk waiting for spare capacity looks again.
SPARE_POLL_S: Final = 0.2
#: Drop reason and kind of a journaled refusal.
REFUSAL_REASON: Final = "collect_unauthorised"
REFUSAL_KIND: Final = "journal_pull"


class ServeCounter(StrEnum):
    PULLS = "collect_pulls_received"
    CHUNKS_SENT = "collect_chunks_sent"
    ROWS_SENT = "collect_rows_sent"
    BYTES_SENT = "collect_bytes_sent"
    REFUSED = "collect_refused_unauthorised"
    REFUSED_RATE = "collect_refused_rate_limited"
    BUSY = "collect_busy"
    REPLACED = "collect_reads_replaced"
    DEFERRED = "collect_chunks_deferred"
    EXPIRED = "collect_slots_expired"
    NO_JOURNAL = "collect_no_journal"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Who may collect this device's journal, and how fast (``[export]`` of the profile)."""

    #: Node ids and public keys (32 bytes each) of authorised collectors.
    collectors: frozenset[bytes] = frozenset()
    #: Credential roles that authorise a collector (with a trusted agency key).
    collector_roles: frozenset[str] = frozenset({"command"})
    #: Trusted agency keys ([trust] agency_keys).
    agency_keys: frozenset[bytes] = frozenset()
    #: Byte budget per collector (sustained; the burst is one second's worth, at least
    #: one chunk).
    rate_bytes_per_s: float = 16_000.0
    #: Bulk waits while more unicast envelopes than this wait for a per-hop ACK.
    busy_backlog: int = 4


@dataclass(frozen=True, slots=True)
class JournalRead:
    """For the edge: read at most ``max_rows`` rows of the node's journal with
    ``seq >= from_seq``; answer with ``Collect.rows_read(read_id, ...)``."""

    read_id: int
    from_seq: int
    max_rows: int


@dataclass(slots=True)
class _Slot:
    read_id: int
    pull: JournalPull
    started: float
    body: bytes | None = None      # the chunk, once read and packed
    rows: int = 0


class CollectServer:
    """See the module docstring. ``send(dst, body)`` sends a JOURNAL_CHUNK unicast;
    ``spare()`` says whether the node has spare capacity for bulk traffic."""

    def __init__(self, config: ServeConfig, counters: Counter[str],
                 events: deque[object]) -> None:
        self.config = config
        self.counters = counters
        self._events = events
        self._slots: dict[NodeId, _Slot] = {}
        self._read_ids = itertools.count(1)
        self._pulls = TokenBuckets(PULLS_PER_S, PULLS_BURST, max_keys=MAX_REFUSED_REMEMBERED)
        burst = max(config.rate_bytes_per_s, float(CHUNK_TARGET_BYTES * 2))
        self._budgets = TokenBuckets(config.rate_bytes_per_s, burst, max_keys=MAX_SERVED * 4)
        self._refused: OrderedDict[NodeId, TokenBucket] = OrderedDict()
        self._journal_budget = TokenBucket(REFUSAL_JOURNAL_PER_S, REFUSAL_JOURNAL_BURST)
        self._reply_budget = TokenBucket(REFUSAL_REPLIES_PER_S, REFUSAL_REPLIES_BURST)
        #: (dst, body) of chunks to send now (the part drains it).
        self.outbox: list[tuple[NodeId, bytes]] = []
        self._poll_at: float | None = None

    # ------------------------------------------------------------ inputs
    def on_pull(self, origin: NodeId, origin_key: bytes, pull: JournalPull, now: float,
                wall_now: float) -> None:
        self.counters[ServeCounter.PULLS] += 1
        if not self._pulls.bucket(origin.hex(), now).take(now):    # before any signature
            self.counters[ServeCounter.REFUSED_RATE] += 1          # check (a credential's)
            return
        if not self.authorised(origin, origin_key, pull.credential, wall_now):
            self._refuse(origin, pull.from_seq, now)
            return
        self._expire(now)
        if origin in self._slots:
            self.counters[ServeCounter.REPLACED] += 1
        elif len(self._slots) >= MAX_SERVED:
            self.counters[ServeCounter.BUSY] += 1
            self._answer_status(origin, ChunkStatus.BUSY, pull.from_seq, now)
            return
        read_id = next(self._read_ids)
        self._slots[origin] = _Slot(read_id, pull, now)
        self._events.append(JournalRead(read_id, pull.from_seq,
                                        min(pull.max_rows, MAX_ROWS_PER_CHUNK)))

    def rows_read(self, read_id: int, rows: list[tuple[object, ...]], head_seq: int,
                  ok: bool, now: float) -> None:
        """The edge's answer to :class:`JournalRead` ``read_id`` (``ok`` False: no journal
        or it could not be read)."""
        found = [(node, slot) for node, slot in self._slots.items() if slot.read_id == read_id]
        if not found:
            return                          # replaced or expired meanwhile
        node, slot = found[0]
        if not ok:
            del self._slots[node]
            self.counters[ServeCounter.NO_JOURNAL] += 1
            self.outbox.append((node, encode_chunk(JournalChunk(
                ChunkStatus.NO_JOURNAL, slot.pull.from_seq, head_seq=head_seq))))
            return
        try:
            chunk, count = pack_chunk(slot.pull, rows, head_seq)
        except DecodeError:                 # a part offset beyond the row: a bad pull
            del self._slots[node]
            return
        slot.body, slot.rows = encode_chunk(chunk), count

    # ------------------------------------------------------------ sending
    def flush(self, now: float, spare: Callable[[], bool]) -> None:
        """Send the chunks that are ready, within budget, while ``spare()`` holds."""
        self._poll_at = None
        for node, slot in list(self._slots.items()):
            if slot.body is None:
                continue
            budget = self._budgets.bucket(node.hex(), now)
            if not spare() or budget.available(now) < len(slot.body):
                self.counters[ServeCounter.DEFERRED] += 1
                self._poll_at = now + SPARE_POLL_S
                continue
            budget.tokens -= len(slot.body)
            del self._slots[node]
            self.outbox.append((node, slot.body))
            self.counters[ServeCounter.CHUNKS_SENT] += 1
            self.counters[ServeCounter.ROWS_SENT] += slot.rows
            self.counters[ServeCounter.BYTES_SENT] += len(slot.body)

    def next_timer(self) -> float | None:
        if self._poll_at is not None:
            return self._poll_at
        if self._slots:
            return min(s.started for s in self._slots.values()) + SLOT_TIMEOUT_S
        return None

    def on_timer(self, now: float, spare: Callable[[], bool]) -> None:
        self._expire(now)
        self.flush(now, spare)

    # ------------------------------------------------------------ authorisation
    def authorised(self, origin: NodeId, origin_key: bytes, credential: bytes,
                   wall_now: float) -> bool:
        listed = self.config.collectors
        if origin in listed or origin_key in listed:
            return True
        if not credential or not self.config.agency_keys:
            return False
        try:
            cred = decode_credential_untrusted(credential)
        except DecodeError:
            return False
        return (cred.agency_key in self.config.agency_keys
                and cred.device_key == origin_key
                and cred.role in self.config.collector_roles
                and cred.issued_at <= wall_now + CREDENTIAL_SKEW_S
                and wall_now <= cred.expires_at
                and verify_signature(cred.agency_key, cred.signed_bytes, cred.signature))

    def _refuse(self, origin: NodeId, from_seq: int, now: float) -> None:
        self.counters[ServeCounter.REFUSED] += 1
        if self._journal_budget.take(now):
            self._events.append(JournalRecord.of(EnvelopeDropped(
                reason=REFUSAL_REASON, src=origin.hex(), kind=REFUSAL_KIND)))
        bucket = self._refused.get(origin)
        if bucket is None:
            bucket = self._refused[origin] = TokenBucket(REFUSAL_REPLY_PER_S,
                                                         REFUSAL_REPLY_BURST, now)
            while len(self._refused) > MAX_REFUSED_REMEMBERED:
                self._refused.popitem(last=False)      # the oldest sender is forgotten
        self._refused.move_to_end(origin)
        if bucket.take(now):
            self._answer_status(origin, ChunkStatus.REFUSED, from_seq, now)

    def _answer_status(self, origin: NodeId, status: ChunkStatus, from_seq: int,
                       now: float) -> None:
        if self._reply_budget.take(now):
            self.outbox.append((origin, encode_chunk(JournalChunk(status, from_seq))))

    def _expire(self, now: float) -> None:
        for node in [n for n, s in self._slots.items() if now - s.started >= SLOT_TIMEOUT_S]:
            del self._slots[node]
            self.counters[ServeCounter.EXPIRED] += 1

    @property
    def serving(self) -> int:
        return len(self._slots)


#: Share of the chunk target aimed at when the rows compressed so far did not fit.
PACK_MARGIN: Final = 0.92
#: A credential issued this far in the future (a clock behind) is still accepted.
CREDENTIAL_SKEW_S: Final = 300.0


def pack_chunk(pull: JournalPull, rows: list[tuple[object, ...]],
               head_seq: int) -> tuple[JournalChunk, int]:
    """The chunk answering ``pull`` from ``rows`` (read from ``pull.from_seq`` on):
    as many rows as fit :data:`CHUNK_TARGET_BYTES` compressed (halving), or one part of a
    row too large alone. Returns the chunk and its row count (0 when no rows are left)."""
    wire = [row_to_wire(row) for row in rows[:1 if pull.part_offset else MAX_ROWS_PER_CHUNK]]
    if not wire:
        return JournalChunk(ChunkStatus.OK, pull.from_seq, head_seq=head_seq), 0
    count = len(wire)
    while True:
        rows_z = compress_rows(wire[:count])
        if len(rows_z) <= CHUNK_TARGET_BYTES and not pull.part_offset:
            last_seq = wire[count - 1][0]
            assert isinstance(last_seq, int)
            return JournalChunk(ChunkStatus.OK, pull.from_seq, rows_z, count,
                                more=last_seq < head_seq, head_seq=head_seq), count
        if count == 1:
            break
        # As many rows as the ratio so far says fit (with a margin), at most half as many.
        fitting = int(count * CHUNK_TARGET_BYTES * PACK_MARGIN / len(rows_z))
        count = max(1, min(count // 2 if fitting >= count else fitting, count - 1))
    if pull.part_offset >= len(rows_z):
        raise DecodeError("part offset beyond the row")
    part = rows_z[pull.part_offset:pull.part_offset + CHUNK_TARGET_BYTES]
    return JournalChunk(ChunkStatus.OK, pull.from_seq, part, 1, more=True,
                        part_total=len(rows_z), head_seq=head_seq,
                        part_offset=pull.part_offset), 1
