"""The hash chain of a node journal (sans-IO: no SQLite, no clock).

Entry ``n`` carries ``prev_hash`` = hash of entry ``n-1`` (32 zero bytes for the first
entry, seq 1) and ``entry_hash`` = SHA-256(prev_hash || canonical(seq, mono_s, wall_s,
node_id, type, data)), see :func:`meshcomm.journal.codec.compute_entry_hash`. Editing,
removing or reordering an entry breaks either its own hash or the link from its successor.

A *checkpoint* is an ordinary entry of type ``journal.checkpoint`` whose data carries an
Ed25519 signature by the node key over (node id, head seq, head hash) of the entry before
it. Someone without the key who rewrites entries before a checkpoint cannot produce a
matching signature; :mod:`meshcomm.journal.verify` checks them given the public key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.codec import (
    FIRST_SEQ,
    GENESIS_HASH,
    HASH_LEN,
    MAX_NODE_ID_BYTES,
    MAX_SEQ,
    check_timestamp,
    check_type_name,
    compute_entry_hash,
    normalize_data,
)
from meshcomm.journal.events import JournalEventType, JournalRecord

#: Domain separation prefix of checkpoint signatures.
CHECKPOINT_CONTEXT: Final = b"meshcomm/journal-checkpoint/v1\x00"
#: Keys of a checkpoint entry's data.
CHECKPOINT_HEAD_SEQ: Final = "head_seq"
CHECKPOINT_HEAD_HASH: Final = "head_hash"
CHECKPOINT_SIGNATURE: Final = "signature"
#: Length of an Ed25519 detached signature.
SIGNATURE_LEN: Final = 64

#: A detached Ed25519 signer, e.g. ``Identity.sign`` (message -> 64-byte signature).
Signer = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One entry of a node journal, as built by :class:`JournalChain` or read from disk."""

    seq: int
    mono_s: float
    wall_s: float
    node_id: bytes
    type: str
    data: Mapping[str, object]
    prev_hash: bytes
    entry_hash: bytes


class JournalWriter(Protocol):
    """What a node driver appends to: the SQLite store or an in-memory journal."""

    def append(self, type: JournalEventType | str, data: Mapping[str, object],
               mono_s: float, wall_s: float) -> JournalEntry: ...

    def append_record(self, record: JournalRecord, mono_s: float,
                      wall_s: float) -> JournalEntry: ...


def checkpoint_message(node_id: bytes, head_seq: int, head_hash: bytes) -> bytes:
    """The bytes a checkpoint signature covers."""
    return b"".join((CHECKPOINT_CONTEXT, len(node_id).to_bytes(1, "big"), bytes(node_id),
                     head_seq.to_bytes(8, "big"), bytes(head_hash)))


def _check_node_id(node_id: bytes) -> bytes:
    if not isinstance(node_id, bytes | bytearray) or not 0 < len(node_id) <= MAX_NODE_ID_BYTES:
        raise LocalProtocolError(f"node_id must be 1..{MAX_NODE_ID_BYTES} bytes")
    return bytes(node_id)


def _check_head(head: tuple[int, bytes] | None) -> tuple[int, bytes] | None:
    if head is None:
        return None
    seq, head_hash = head
    if isinstance(seq, bool) or not isinstance(seq, int) or not FIRST_SEQ <= seq < MAX_SEQ:
        raise LocalProtocolError(f"head seq must be {FIRST_SEQ}..{MAX_SEQ - 1}")
    if not isinstance(head_hash, bytes) or len(head_hash) != HASH_LEN:
        raise LocalProtocolError(f"head hash must be {HASH_LEN} bytes")
    return seq, head_hash


class JournalChain:
    """Builds the next entries of one node's chain, starting from a head or from genesis."""

    def __init__(self, node_id: bytes, head: tuple[int, bytes] | None = None) -> None:
        self._node_id = _check_node_id(node_id)
        self._head = _check_head(head)

    @property
    def node_id(self) -> bytes:
        return self._node_id

    @property
    def head(self) -> tuple[int, bytes] | None:
        """(seq, entry_hash) of the last entry built, or None for an empty journal."""
        return self._head

    @property
    def next_seq(self) -> int:
        return FIRST_SEQ if self._head is None else self._head[0] + 1

    def append_encoded(self, type: JournalEventType | str, data: Mapping[str, object],
                       mono_s: float, wall_s: float) -> tuple[JournalEntry, bytes]:
        """Build the next entry; also return the canonical bytes of its data (for storage)."""
        type_name = check_type_name(type)
        mono_s = check_timestamp("mono_s", mono_s)
        wall_s = check_timestamp("wall_s", wall_s)
        plain, data_bytes = normalize_data(data)
        seq = self.next_seq
        prev_hash = GENESIS_HASH if self._head is None else self._head[1]
        entry_hash = compute_entry_hash(prev_hash, seq, mono_s, wall_s, self._node_id,
                                        type_name, data_bytes)
        entry = JournalEntry(seq=seq, mono_s=mono_s, wall_s=wall_s, node_id=self._node_id,
                             type=type_name, data=plain, prev_hash=prev_hash,
                             entry_hash=entry_hash)
        self._head = (seq, entry_hash)
        return entry, data_bytes

    def append(self, type: JournalEventType | str, data: Mapping[str, object],
               mono_s: float, wall_s: float) -> JournalEntry:
        """Build (and make the new head) the next entry of the chain."""
        return self.append_encoded(type, data, mono_s, wall_s)[0]

    def append_record(self, record: JournalRecord, mono_s: float,
                      wall_s: float) -> JournalEntry:
        return self.append(record.type, record.data, mono_s, wall_s)

    def checkpoint_data(self, sign: Signer) -> dict[str, object]:
        """Data of a checkpoint over the current head, signed with ``sign``."""
        head_seq, head_hash = self._head if self._head is not None else (0, GENESIS_HASH)
        signature = sign(checkpoint_message(self._node_id, head_seq, head_hash))
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
            raise LocalProtocolError(f"signer must return a {SIGNATURE_LEN}-byte signature")
        return {CHECKPOINT_HEAD_SEQ: head_seq, CHECKPOINT_HEAD_HASH: head_hash,
                CHECKPOINT_SIGNATURE: signature}

    def checkpoint(self, sign: Signer, mono_s: float, wall_s: float) -> JournalEntry:
        """Append a signed checkpoint entry over the current head."""
        return self.append(JournalEventType.CHECKPOINT, self.checkpoint_data(sign),
                           mono_s, wall_s)


class MemoryJournal:
    """An in-memory journal (the simulator's): a chain plus, optionally, its entries.

    With ``keep_entries=False`` only the head is kept, which is all a trace digest needs.
    """

    def __init__(self, node_id: bytes, *, keep_entries: bool = True) -> None:
        self._chain = JournalChain(node_id)
        self._keep_entries = keep_entries
        self._entries: list[JournalEntry] = []
        self._count = 0

    def append(self, type: JournalEventType | str, data: Mapping[str, object],
               mono_s: float, wall_s: float) -> JournalEntry:
        entry = self._chain.append(type, data, mono_s, wall_s)
        self._record(entry)
        return entry

    def append_record(self, record: JournalRecord, mono_s: float,
                      wall_s: float) -> JournalEntry:
        return self.append(record.type, record.data, mono_s, wall_s)

    def checkpoint(self, sign: Signer, mono_s: float, wall_s: float) -> JournalEntry:
        entry = self._chain.checkpoint(sign, mono_s, wall_s)
        self._record(entry)
        return entry

    def _record(self, entry: JournalEntry) -> None:
        self._count += 1
        if self._keep_entries:
            self._entries.append(entry)

    def entries(self, start_seq: int = 0) -> Iterator[JournalEntry]:
        """Kept entries with ``seq >= start_seq``, in order (none if keep_entries=False)."""
        first = max(start_seq - FIRST_SEQ, 0)
        yield from self._entries[first:]

    def head(self) -> tuple[int, bytes] | None:
        return self._chain.head

    def digest(self) -> bytes:
        """Hash of the last entry (GENESIS_HASH when empty): commits to the whole journal."""
        head = self._chain.head
        return GENESIS_HASH if head is None else head[1]

    def __len__(self) -> int:
        return self._count
