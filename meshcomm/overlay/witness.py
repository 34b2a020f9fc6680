"""Checkpoint witnesses (issue 11): every node's latest signed journal checkpoint rides on
its HELLOs, and each neighbour that hears it checks the signature and journals it
(``journal.witnessed``). Other devices then hold signed heads of every journal, so a
device that later rewrites its history (a fork, a truncation) is contradicted by the
copies its neighbours kept -- the witness idea of RFC 6962 and C2SP checkpoints.

**Wire.** A HELLO's payload is ``[hello_no, role, report]`` or, carrying a checkpoint,
``[hello_no, role, report, [head_seq, head_hash, signature, sent_wall]]``: ``head_hash``
(32 bytes) is the entry hash of the journal's entry ``head_seq``, ``signature`` (64 bytes)
exactly the one of the checkpoint entry, Ed25519 by the node key over
:func:`meshcomm.journal.chain.checkpoint_message` (node id, head_seq, head_hash). The key
is the one that signed the HELLO: node id = SHA-256(key)
(:func:`meshcomm.security.identity.node_id_of`), so a receiver needs nothing else.
``sent_wall`` (optional, float seconds) is the sender's wall clock when it sealed the HELLO:
the witness journals it, so each witness record is also a send/receipt pair between the two
devices' clocks, which the after-action export uses to estimate the offsets of relays that
journal no SIP message (:mod:`meshcomm.export.exchanges`).
Old HELLOs (three fields) still decode; a node without a checkpoint sends none.

**Beacon interval (issue 13).** A node whose HELLOs follow a Trickle timer
(:mod:`meshcomm.overlay.trickle`) appends a fifth field, ``interval_ms``: the longest its
next Trickle interval may be (its next HELLO comes within 1.5x that), an integer
1..:data:`MAX_HELLO_INTERVAL_MS`; the checkpoint field is then nil when it carries none:
``[hello_no, role, report, checkpoint | nil, interval_ms]``. The receiver caps the value at
its own Imax (:mod:`meshcomm.overlay.neighbours`): a hostile HELLO cannot stay "alive"
for longer by announcing a huge interval.

**Airtime.** The field costs :data:`CHECKPOINT_FIELD_BYTES` bytes. A node attaches it only
to the first HELLO after its checkpoint changed and, unchanged, to every
:data:`CHECKPOINT_EVERY_HELLOS`-th HELLO (for neighbours that arrived since)
(:class:`CheckpointBeacon`).

**Witnessing.** :class:`WitnessTable` decides what is journaled: a node's checkpoint only
when its head moved since the one last journaled for that node, and at most once per
``interval_s`` per node (a node whose head moves faster is journaled with its latest head
once the interval has passed); a bounded table (:data:`MAX_WITNESSED_NODES`) into which
nodes not yet in it are admitted at :data:`WITNESS_ADMIT_PER_S` (burst
:data:`WITNESS_ADMIT_BURST`), the least recently heard one evicted to make room: a flood
of fresh identities can neither grow the journal nor push honest neighbours out faster
than that rate, while those neighbours refresh their place every few HELLOs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.chain import SIGNATURE_LEN
from meshcomm.journal.codec import FIRST_SEQ, HASH_LEN, MAX_SEQ
from meshcomm.overlay.counters import OverlayCounter
from meshcomm.overlay.ratelimit import TokenBucket
from meshcomm.wire import codec

#: An unchanged checkpoint rides on every this-many-th HELLO (a changed one on the next).
CHECKPOINT_EVERY_HELLOS: Final = 10
#: Bytes the checkpoint field adds to a HELLO at most (msgpack: array header, a uint64,
#: bin8 of 32 and of 64 bytes).
CHECKPOINT_FIELD_BYTES: Final = 1 + 9 + (2 + HASH_LEN) + (2 + SIGNATURE_LEN) + 9
#: The checkpoint field: seq, head and signature, and the sender's wall clock (optional).
CHECKPOINT_FIELDS: Final = 3
CHECKPOINT_FIELDS_WITH_WALL: Final = 4
#: Latest wall clock a HELLO may claim (seconds since the epoch, as a binding's issue time).
MAX_SENT_WALL_S: Final = float(1 << 40)
#: A node's checkpoint is journaled at most once per this long (the default of
#: ``interval_s``; the overlay passes ``OverlayConfig.witness_interval_s``).
WITNESS_INTERVAL_S: Final = 60.0
#: Nodes whose last witnessed checkpoint is remembered.
MAX_WITNESSED_NODES: Final = 256
#: Nodes new to the table admitted per second, and at once.
WITNESS_ADMIT_PER_S: Final = 1.0
WITNESS_ADMIT_BURST: Final = 32
#: Length of a HELLO that carries a checkpoint (``[hello_no, role, report, checkpoint]``).
HELLO_FIELDS_WITH_CHECKPOINT: Final = 4
#: ... and one that also announces its beacon interval (the checkpoint may then be nil).
HELLO_FIELDS_WITH_INTERVAL: Final = 5
#: Range of the announced beacon interval (ms): the Trickle bound (one hour).
MAX_HELLO_INTERVAL_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A node's signed journal checkpoint as it travels: the head it covers and the
    signature of the checkpoint entry."""

    seq: int
    head: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if (isinstance(self.seq, bool) or not isinstance(self.seq, int)
                or not FIRST_SEQ <= self.seq < MAX_SEQ):
            raise LocalProtocolError(f"checkpoint seq must be {FIRST_SEQ}..{MAX_SEQ - 1}")
        if not isinstance(self.head, bytes) or len(self.head) != HASH_LEN:
            raise LocalProtocolError(f"checkpoint head must be {HASH_LEN} bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LEN:
            raise LocalProtocolError(f"checkpoint signature must be {SIGNATURE_LEN} bytes")

    def wire_value(self, sent_wall: float | None = None) -> list[object]:
        value: list[object] = [self.seq, self.head, self.signature]
        if sent_wall is not None:
            value.append(float(sent_wall))
        return value


def decode_checkpoint_untrusted(value: object) -> SignedCheckpoint:
    """The checkpoint field of a HELLO (its decoded msgpack value); raises only
    DecodeError (not a list of three or four, a seq outside 1..2^63-2, wrong lengths, a
    sent wall clock that is not a number within 0..2^40)."""
    fields = codec.read_list(value, "hello.checkpoint", CHECKPOINT_FIELDS_WITH_WALL)
    if len(fields) < CHECKPOINT_FIELDS:
        raise DecodeError(f"hello.checkpoint: {len(fields)} fields, expected 3 or 4")
    if len(fields) == CHECKPOINT_FIELDS_WITH_WALL:
        decode_sent_wall_untrusted(fields)
    seq = codec.read_int(fields[0], "hello.checkpoint.seq", FIRST_SEQ, MAX_SEQ - 1)
    head = codec.read_bytes(fields[1], "hello.checkpoint.head", exact=HASH_LEN)
    signature = codec.read_bytes(fields[2], "hello.checkpoint.signature", exact=SIGNATURE_LEN)
    return SignedCheckpoint(seq, head, signature)


def decode_sent_wall_untrusted(value: object) -> float | None:
    """The sender's wall clock in a HELLO's checkpoint field (None: the field has none);
    raises only DecodeError."""
    fields = codec.read_list(value, "hello.checkpoint", CHECKPOINT_FIELDS_WITH_WALL)
    if len(fields) < CHECKPOINT_FIELDS_WITH_WALL:
        return None
    return codec.read_float(fields[3], "hello.checkpoint.sent_wall", 0.0, MAX_SENT_WALL_S)


def decode_hello_untrusted(payload: object) -> tuple[list[object], SignedCheckpoint | None]:
    """A HELLO payload's three base fields and its checkpoint (None in an old HELLO or
    one without); raises only DecodeError."""
    fields = codec.read_list(payload, "hello", HELLO_FIELDS_WITH_INTERVAL)
    if len(fields) == HELLO_FIELDS_WITH_INTERVAL:
        hello_interval_untrusted(fields)
        cp = None if fields[3] is None else decode_checkpoint_untrusted(fields[3])
        return list(fields[:3]), cp
    if len(fields) == HELLO_FIELDS_WITH_CHECKPOINT:
        return list(fields[:3]), decode_checkpoint_untrusted(fields[3])
    return list(codec.read_tuple(fields, "hello", 3)), None


def hello_interval_untrusted(payload: object) -> float | None:
    """The beacon interval (s) a HELLO announces, None if it announces none (an old or
    fixed-rate sender); raises only DecodeError (not an integer 1..MAX_HELLO_INTERVAL_MS)."""
    fields = codec.read_list(payload, "hello", HELLO_FIELDS_WITH_INTERVAL)
    if len(fields) < HELLO_FIELDS_WITH_INTERVAL:
        return None
    return codec.read_int(fields[4], "hello.interval_ms", 1, MAX_HELLO_INTERVAL_MS) / 1000.0


def hello_payload(hello_no: int, role: str, report: list[list[object]],
                  checkpoint: list[object] | None, interval_s: float | None) -> list[object]:
    """A HELLO's payload (see the module docstring for the shapes)."""
    payload: list[object] = [hello_no, role, report]
    if interval_s is not None:
        ms = min(MAX_HELLO_INTERVAL_MS, max(1, round(interval_s * 1000)))
        payload.extend((checkpoint, ms))
    elif checkpoint is not None:
        payload.append(checkpoint)
    return payload


class CheckpointBeacon:
    """Which HELLOs carry this node's checkpoint (see the module docstring)."""

    __slots__ = ("_hellos_without", "_latest", "_sent", "every")

    def __init__(self, every: int = CHECKPOINT_EVERY_HELLOS) -> None:
        if every < 1:
            raise LocalProtocolError("a checkpoint must ride on every n-th HELLO, n >= 1")
        self.every = every
        self._latest: SignedCheckpoint | None = None
        self._sent: SignedCheckpoint | None = None
        self._hellos_without = 0

    @property
    def latest(self) -> SignedCheckpoint | None:
        return self._latest

    def set(self, checkpoint: SignedCheckpoint) -> None:
        """The node signed a new checkpoint (it goes out on the next HELLO)."""
        self._latest = checkpoint

    def for_hello(self) -> SignedCheckpoint | None:
        """The checkpoint to attach to the HELLO being sent, or None."""
        latest = self._latest
        if latest is None:
            return None
        if latest != self._sent or self._hellos_without + 1 >= self.every:
            self._sent = latest
            self._hellos_without = 0
            return latest
        self._hellos_without += 1
        return None


class Heard(Enum):
    """What :meth:`WitnessTable.offer` made of a checkpoint."""

    JOURNAL = "journal"          # new for this node: verify it, then :meth:`witnessed`
    UNCHANGED = "unchanged"      # the head already journaled for this node
    TOO_SOON = "too_soon"        # moved, but journaled for this node within the interval
    NOT_ADMITTED = "not_admitted"  # a node new to the table while admission is spent


#: The counter of each outcome of :meth:`WitnessTable.offer` (JOURNAL: counted once the
#: signature checked out, as witness_journaled).
HEARD_COUNTERS: Final[dict[Heard, OverlayCounter]] = {
    Heard.JOURNAL: OverlayCounter.WITNESS_JOURNALED,
    Heard.UNCHANGED: OverlayCounter.WITNESS_UNCHANGED,
    Heard.TOO_SOON: OverlayCounter.WITNESS_TOO_SOON,
    Heard.NOT_ADMITTED: OverlayCounter.WITNESS_NOT_ADMITTED,
}


@dataclass(slots=True)
class _Witnessed:
    seq: int
    head: bytes
    journaled_at: float


class WitnessTable:
    """The last checkpoint journaled per witnessed node (bounded, see the module)."""

    def __init__(self, now: float, interval_s: float = WITNESS_INTERVAL_S,
                 max_nodes: int = MAX_WITNESSED_NODES,
                 admit_per_s: float = WITNESS_ADMIT_PER_S,
                 admit_burst: int = WITNESS_ADMIT_BURST) -> None:
        if interval_s < 0 or max_nodes < 1 or admit_per_s <= 0 or admit_burst < 1:
            raise LocalProtocolError("witness table limits must be positive")
        self.interval_s = interval_s
        self.max_nodes = max_nodes
        self._admit = TokenBucket(admit_per_s, admit_burst, now)
        #: node id -> last journaled; least recently heard first
        self._nodes: OrderedDict[bytes, _Witnessed] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def offer(self, node: bytes, checkpoint: SignedCheckpoint, now: float) -> Heard:
        """Whether ``node``'s (signed, not yet verified) checkpoint is to be journaled.
        Hearing a node keeps its place in the table; nothing else changes until
        :meth:`witnessed` (a checkpoint whose signature fails changes nothing)."""
        known = self._nodes.get(node)
        if known is None:
            return Heard.JOURNAL if self._admit.available(now) >= 1.0 else Heard.NOT_ADMITTED
        self._nodes.move_to_end(node)
        if known.seq == checkpoint.seq and known.head == checkpoint.head:
            return Heard.UNCHANGED
        if now - known.journaled_at < self.interval_s:
            return Heard.TOO_SOON
        return Heard.JOURNAL

    def witnessed(self, node: bytes, checkpoint: SignedCheckpoint, now: float) -> None:
        """``node``'s checkpoint, verified, is being journaled now."""
        known = self._nodes.get(node)
        if known is None:
            self._admit.take(now)
            while len(self._nodes) >= self.max_nodes:
                self._nodes.popitem(last=False)          # the least recently heard
                self.evicted += 1
        self._nodes[node] = _Witnessed(checkpoint.seq, checkpoint.head, now)
        self._nodes.move_to_end(node)
