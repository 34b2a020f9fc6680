"""Verify journal entries (sans-IO): find edited, removed and reordered entries and bad
checkpoints.

The verifier walks the entries in seq order and names the seq of every problem:

* ``EDITED`` -- an entry's content no longer matches its hash, or an entry was replaced
  with a recomputed hash (its successor still links to the old one), or a checkpoint
  shows that entries before it were rewritten.
* ``REMOVED`` -- a gap in the sequence numbers (or the journal ends before an expected
  head); the problem names the first missing seq.
* ``REORDERED`` -- an entry appears under another seq than the one it was written with
  (found by re-hashing it with nearby seqs and the seq its chain link implies), entries
  are out of seq order, or an entry links to a predecessor other than the one before it.
* ``BAD_CHECKPOINT`` -- a checkpoint's head does not match the entry before it, or its
  signature does not verify with the node's public key.
* ``UNDECODABLE`` -- a stored row (or the database itself) cannot be read.

Without checkpoints (or an ``expected_head`` from elsewhere) a consistent rewrite of the
whole tail, or its truncation, cannot be detected: anyone can recompute SHA-256.
:attr:`VerifyReport.unsigned_tail` says how many entries follow the last good checkpoint.

Reading a journal file (SQLite) is :mod:`.verify`'s part, an IO adapter; this module only
walks entries handed to it, so ``tools/check_sansio.py`` holds it to the core rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import nacl.exceptions
import nacl.signing

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.chain import (
    CHECKPOINT_HEAD_HASH,
    CHECKPOINT_HEAD_SEQ,
    CHECKPOINT_SIGNATURE,
    SIGNATURE_LEN,
    JournalEntry,
    checkpoint_message,
)
from meshcomm.journal.codec import (
    FIRST_SEQ,
    GENESIS_HASH,
    HASH_LEN,
    MAX_SEQ,
    canonical_data_untrusted,
    compute_entry_hash,
)
from meshcomm.journal.events import JournalEventType
from meshcomm.types import PUBLIC_KEY_LEN

#: How far from its stored seq the verifier looks for the seq an entry was written with.
MAX_SEQ_SEARCH: Final = 64
#: After this many mismatching entries the verifier stops searching (reports EDITED).
MAX_SEARCHED_ENTRIES: Final = 1_000
#: Start of the message of the problem that stands for a database that cannot be read.
DATABASE_ERROR_PREFIX: Final = "journal database unreadable: "


class ProblemKind(Enum):
    EDITED = "edited"
    REMOVED = "removed"
    REORDERED = "reordered"
    BAD_CHECKPOINT = "bad_checkpoint"
    UNDECODABLE = "undecodable"


_KIND_ORDER: Final = {kind: index for index, kind in enumerate(ProblemKind)}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding; ``seq`` names the entry (for REMOVED: the first missing seq)."""

    seq: int
    kind: ProblemKind
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``ok`` is True when there are no problems; ``count`` = entries (rows) examined.

    ``checkpoints`` counts checkpoints that passed (signature-verified ones only when a
    public key was given); ``head`` is the (seq, hash) of the last entry read;
    ``unsigned_tail`` the entries after the last checkpoint that passed (all of them
    without one); ``readable`` is False when the database itself could not be read
    (not a journal, damaged pages, I/O error), as opposed to entries that fail checks.
    """

    ok: bool
    count: int
    problems: tuple[Problem, ...]
    checkpoints: int = 0
    head: tuple[int, bytes] | None = None
    unsigned_tail: int = 0
    readable: bool = True


@dataclass(frozen=True, slots=True)
class UndecodableRow:
    """A stored row that could not be decoded (stands in for its entry while verifying)."""

    seq: int
    message: str
    #: The database itself failed (not one row): nothing after this could be read.
    database: bool = False


@dataclass(slots=True)
class _Prev:
    seq: int
    entry_hash: bytes | None
    flagged: bool  # already reported: do not blame its successor's link on it


@dataclass(slots=True)
class _Walk:
    public_key: bytes | None
    hash_to_seq: dict[bytes, int]
    problems: list[Problem] = field(default_factory=list)
    relocated: set[int] = field(default_factory=set)  # original seqs of moved entries
    removed: list[tuple[int, int, int]] = field(default_factory=list)  # first, last, before
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    searches: int = 0
    prev: _Prev | None = None
    expected_seq: int | None = None          # seq of an expected head, if one was given
    expected_found: bytes | None = None      # the hash stored under expected_seq
    count: int = 0                           # items (entries and unreadable rows) walked
    since_checkpoint: int = 0                # entries after the last checkpoint that passed
    database_error: bool = False

    def add(self, seq: int, kind: ProblemKind, message: str) -> None:
        self.problems.append(Problem(seq, kind, message))


def _hash_with_seq(entry: JournalEntry, seq: int, data_bytes: bytes) -> bytes:
    return compute_entry_hash(entry.prev_hash, seq, entry.mono_s, entry.wall_s,
                              entry.node_id, entry.type, data_bytes)


def _candidate_seqs(walk: _Walk, entry: JournalEntry) -> Iterator[int]:
    if entry.prev_hash == GENESIS_HASH:
        yield FIRST_SEQ
    linked = walk.hash_to_seq.get(entry.prev_hash)
    if linked is not None:
        yield linked + 1
    for distance in range(1, MAX_SEQ_SEARCH + 1):
        yield entry.seq + distance
        yield entry.seq - distance


def _original_seq(walk: _Walk, entry: JournalEntry, data_bytes: bytes) -> int | None:
    """The seq this entry was written with, if it is intact but stored under another."""
    if walk.searches >= MAX_SEARCHED_ENTRIES:
        return None
    walk.searches += 1
    for seq in _candidate_seqs(walk, entry):
        if seq != entry.seq and FIRST_SEQ <= seq <= MAX_SEQ and (
                _hash_with_seq(entry, seq, data_bytes) == entry.entry_hash):
            return seq
    return None


def _check_link(walk: _Walk, entry: JournalEntry) -> None:
    """Report a gap before ``entry`` or a chain link that skips the entry before it."""
    prev = walk.prev
    expected_seq = FIRST_SEQ if prev is None else prev.seq + 1
    if entry.seq > expected_seq:
        walk.removed.append((expected_seq, entry.seq - 1, entry.seq))
        return
    expected_hash = GENESIS_HASH if prev is None else prev.entry_hash
    if entry.prev_hash == expected_hash or (prev is not None and prev.flagged):
        return
    linked = walk.hash_to_seq.get(entry.prev_hash)
    if linked is not None:
        walk.add(entry.seq, ProblemKind.REORDERED,
                 f"entry {entry.seq} links to entry {linked}, not to entry {entry.seq - 1}")
    elif prev is None:
        walk.add(entry.seq, ProblemKind.EDITED,
                 f"first entry {entry.seq} does not link to the genesis hash")
    else:
        walk.add(prev.seq, ProblemKind.EDITED,
                 f"entry {prev.seq} was replaced (hash recomputed): entry {entry.seq} "
                 "links to a different predecessor")


def _check_checkpoint(walk: _Walk, entry: JournalEntry) -> None:
    head_seq = entry.data.get(CHECKPOINT_HEAD_SEQ)
    head_hash = entry.data.get(CHECKPOINT_HEAD_HASH)
    signature = entry.data.get(CHECKPOINT_SIGNATURE)
    if (type(head_seq) is not int or head_seq != entry.seq - 1
            or head_hash != entry.prev_hash or not isinstance(signature, bytes)
            or len(signature) != SIGNATURE_LEN):
        walk.add(entry.seq, ProblemKind.BAD_CHECKPOINT,
                 f"checkpoint {entry.seq} does not cover entry {entry.seq - 1} "
                 f"(head seq {head_seq!r})")
        return
    if walk.public_key is not None:
        message = checkpoint_message(entry.node_id, head_seq, entry.prev_hash)
        try:
            nacl.signing.VerifyKey(walk.public_key).verify(message, signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            walk.add(entry.seq, ProblemKind.BAD_CHECKPOINT,
                     f"checkpoint {entry.seq}: signature does not verify with the node key "
                     f"(entries up to {head_seq} rewritten, or another key signed it)")
            return
    walk.checkpoints += 1
    walk.last_checkpoint_seq = entry.seq
    walk.since_checkpoint = 0


def _shape_problem(entry: object) -> str | None:
    if not isinstance(entry, JournalEntry):
        return f"not a journal entry: {type(entry).__name__}"
    if (type(entry.seq) is not int or not isinstance(entry.mono_s, float)
            or not isinstance(entry.wall_s, float) or not isinstance(entry.node_id, bytes)
            or not isinstance(entry.type, str) or not isinstance(entry.prev_hash, bytes)
            or not isinstance(entry.entry_hash, bytes) or len(entry.prev_hash) != HASH_LEN):
        return f"entry {entry.seq!r} has fields of the wrong type"
    return None


def _step_entry(walk: _Walk, entry: JournalEntry, data_bytes: bytes | None = None) -> None:
    if walk.prev is not None and entry.seq <= walk.prev.seq:
        walk.add(entry.seq, ProblemKind.REORDERED,
                 f"entry {entry.seq} comes after entry {walk.prev.seq}")
        return
    if data_bytes is None:
        try:
            data_bytes = canonical_data_untrusted(entry.data)
        except DecodeError as exc:
            walk.add(entry.seq, ProblemKind.UNDECODABLE, f"entry {entry.seq}: {exc}")
            walk.prev = _Prev(entry.seq, entry.entry_hash, flagged=True)
            return
    if entry.seq == walk.expected_seq:
        walk.expected_found = entry.entry_hash
    if _hash_with_seq(entry, entry.seq, data_bytes) == entry.entry_hash:
        _check_link(walk, entry)
        if entry.type == JournalEventType.CHECKPOINT:
            _check_checkpoint(walk, entry)
        walk.prev = _Prev(entry.seq, entry.entry_hash, flagged=False)
        return
    original = _original_seq(walk, entry, data_bytes)
    if original is None:
        walk.add(entry.seq, ProblemKind.EDITED,
                 f"entry {entry.seq} does not match its hash (content edited)")
    else:
        walk.add(entry.seq, ProblemKind.REORDERED,
                 f"entry stored as seq {entry.seq} was written as seq {original}")
        walk.relocated.add(original)
        if (original > FIRST_SEQ and entry.prev_hash != GENESIS_HASH
                and entry.prev_hash not in walk.hash_to_seq):
            walk.removed.append((original - 1, original - 1, original))
    walk.prev = _Prev(entry.seq, entry.entry_hash, flagged=True)


def _report_removed(walk: _Walk) -> None:
    for first, last, before in walk.removed:
        if all(seq in walk.relocated for seq in range(first, min(last, first + 1024) + 1)):
            continue  # those entries were moved, not removed (reported as REORDERED)
        span = f"entry {first}" if first == last else f"entries {first}..{last}"
        walk.add(first, ProblemKind.REMOVED, f"{span} missing before entry {before}")


def _check_expected_head(walk: _Walk, expected_head: tuple[int, bytes]) -> None:
    head_seq, head_hash = expected_head
    stored = walk.expected_found
    if stored is None:
        last = walk.prev.seq if walk.prev is not None else 0
        walk.add(head_seq, ProblemKind.REMOVED,
                 f"expected head entry {head_seq} is missing (journal ends at {last})")
    elif stored != head_hash:
        walk.add(head_seq, ProblemKind.EDITED,
                 f"entry {head_seq} differs from the expected head hash")


def verify_entries(entries: Iterable[JournalEntry | UndecodableRow],
                   public_key: bytes | None = None, *,
                   expected_head: tuple[int, bytes] | None = None) -> VerifyReport:
    """Verify a whole journal given as entries in seq order (from seq 1).

    ``public_key`` (the node's raw Ed25519 key) makes checkpoint signatures checked;
    ``expected_head`` (seq, hash), e.g. from a checkpoint seen elsewhere, detects a
    truncated or rewritten tail.
    """
    items = list(entries)
    hash_to_seq = {item.entry_hash: item.seq for item in items
                   if isinstance(item, JournalEntry) and isinstance(item.entry_hash, bytes)}
    return verify_stream(items, hash_to_seq, public_key, expected_head)


def verify_stream(items: Iterable[JournalEntry | UndecodableRow],
                  hash_to_seq: dict[bytes, int], public_key: bytes | None,
                  expected_head: tuple[int, bytes] | None) -> VerifyReport:
    """One pass over ``items`` (streamed: only hashes and problems are kept);
    ``hash_to_seq`` maps the hash of every decodable entry to its seq (a first pass)."""
    verifier = StreamVerifier(public_key, hash_to_seq, expected_head)
    for item in items:
        verifier.feed(item)
    return verifier.report()


class StreamVerifier:
    """The verifier as a stream (a hook for readers that do more in the same pass, such as
    the after-action export): :meth:`feed` each item in stored order, then take
    :meth:`report`.

    Without ``hash_to_seq`` (the first pass that indexes every entry's hash) the verdict
    (``ok``, ``count``, ``checkpoints``, ``head``, ``unsigned_tail``) is the same: the index
    only serves to *name* what went wrong (which entry a bad link points to, where a moved
    entry came from). A reader that finds problems this way verifies again with the index
    (:func:`meshcomm.journal.verify.verify_journal`) for the exact account.
    """

    __slots__ = ("_done", "_expected_head", "_walk")

    def __init__(self, public_key: bytes | None = None,
                 hash_to_seq: dict[bytes, int] | None = None,
                 expected_head: tuple[int, bytes] | None = None) -> None:
        if public_key is not None and (not isinstance(public_key, bytes)
                                       or len(public_key) != PUBLIC_KEY_LEN):
            raise LocalProtocolError(f"public_key must be {PUBLIC_KEY_LEN} raw bytes")
        self._walk = _Walk(public_key=public_key, hash_to_seq=hash_to_seq or {},
                           expected_seq=expected_head[0] if expected_head else None)
        self._expected_head = expected_head
        self._done: VerifyReport | None = None

    def feed(self, item: JournalEntry | UndecodableRow, data_bytes: bytes | None = None) -> None:
        """The next stored item. ``data_bytes``, when given, must be the canonical
        encoding of ``item.data`` (what :func:`canonical_data_untrusted` returns for it):
        a reader that decoded stored bytes it found canonical passes them, saving the
        re-encoding."""
        if self._done is not None:
            raise LocalProtocolError("StreamVerifier: feed after report")
        walk = self._walk
        walk.count += 1
        if isinstance(item, UndecodableRow):
            walk.add(item.seq, ProblemKind.UNDECODABLE, item.message)
            walk.prev = _Prev(item.seq, None, flagged=True)
            walk.database_error = walk.database_error or item.database
            return
        walk.since_checkpoint += 1
        shape = _shape_problem(item)
        if shape is not None:
            walk.add(walk.prev.seq + 1 if walk.prev else FIRST_SEQ,
                     ProblemKind.UNDECODABLE, shape)
            return
        _step_entry(walk, item, data_bytes)

    def report(self) -> VerifyReport:
        """The verdict on everything fed (the stream ends here)."""
        if self._done is not None:
            return self._done
        walk = self._walk
        _report_removed(walk)
        if self._expected_head is not None:
            _check_expected_head(walk, self._expected_head)
        problems = tuple(sorted(walk.problems, key=lambda p: (p.seq, _KIND_ORDER[p.kind])))
        head = None
        if walk.prev is not None and walk.prev.entry_hash is not None:
            head = (walk.prev.seq, walk.prev.entry_hash)
        self._done = VerifyReport(ok=not problems, count=walk.count, problems=problems,
                                  checkpoints=walk.checkpoints, head=head,
                                  unsigned_tail=walk.since_checkpoint,
                                  readable=not walk.database_error)
        return self._done
