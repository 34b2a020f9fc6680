"""Cross-journal checks (issue 11, sans-IO): what one journal cannot show on its own.

Each journal verifies alone (:mod:`meshcomm.journal.audit`), but a device that holds its
key can rewrite its history, chain it again and sign it again, or cut its tail, and the
result verifies. The other devices' journals remember what it was:

* **Witnesses.** Nodes journal the signed checkpoints they hear from others
  (``journal.witnessed``: ``node`` full node id hex, ``seq``, ``head`` hex entry hash at
  ``seq``, ``sig`` hex signature). A claim whose node's journal holds another entry at
  ``seq`` is named on that node at ``seq``: ``fork`` when the signature verifies with the
  node's public key (the node signed that head, and its journal now says otherwise: proof
  that it rewrote its history), ``witness-contradicts`` when no key was given (the
  witness's word against the journal). A claim beyond the journal's last entry is
  ``truncated``, named at the first missing entry (the tail was cut, or this copy was
  taken before the witnessed checkpoint: the record lacks what a witness saw either way).
  A claim whose signature does not verify with the node's key, or that is malformed, is
  ``bad-witness``, named on the witness's device and entry. Two heads signed for one seq
  (an equivocation two witnesses heard) are a ``fork`` even without the node's journal.
* **Receipts.** A ``sip.message`` received from the mesh (``from-mesh``) with an envelope
  id (``env``) was sent (``to-mesh``, same ``env``) by the device its ``peer`` names. When
  that device's journal is in the export and covers the receipt's time (its first entry,
  seq 1, is before the receipt, or a later first entry long enough before; it ends after
  the receipt by a margin that includes both clock offsets' uncertainty; it lost no events
  around then: no ``journal.dropped`` entry, restart or seq gap within
  :data:`RECEIPT_LOOKBACK_S`), a missing send is named on the sender
  (``receipt-without-send``: its send was removed) at its first entry stamped after the
  receipt (the send, had it been kept, precedes it), the receipt's device and entry in the
  detail (a forged receipt reads the same: the detail says where to look). Records
  without ``env`` are not checked.

Findings are one row per device and kind: the lowest entry, and how many more there were.

Order and memory. The pipeline adds entries device by device, each device in seq order,
once (a device whose own verification fails is taken back with
:meth:`CrossCheck.discard` before the next: what its journal says is not evidence); a
claim may come before or after the journal it is about, and a receipt before or after
its send. So claims are kept (one per node and seq: a checkpoint many neighbours
witnessed costs one slot, and its signature is checked once) and resolved in
:meth:`CrossCheck.problems`; each device keeps the first :data:`HASH_PREFIX_BYTES` bytes
of every entry hash (forging a rewritten entry whose hash matches a witnessed prefix takes
about 2**64 hashing per witnessed seq) and its wall time as a float32 from its first entry:
12 bytes an entry. Sends are 8-byte envelope prefixes per device (sorted once the device is
done); a receipt whose sender is already done is checked at once, the others are kept
until :meth:`CrossCheck.problems`. Every table has a named limit (:class:`CrossLimits`);
what does not fit is counted (:meth:`CrossCheck.counts`) and its check skipped: fewer
checks, never a false finding.
"""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import nacl.exceptions
import nacl.signing

from meshcomm.errors import LocalProtocolError
from meshcomm.export.clocks import ClockEstimate
from meshcomm.export.exchanges import (
    FROM_MESH,
    MESH_PEER_SUFFIX,
    PEER_HEX_CHARS,
    SIP_TYPE,
    TO_MESH,
)
from meshcomm.journal.chain import SIGNATURE_LEN, JournalEntry, checkpoint_message
from meshcomm.journal.codec import FIRST_SEQ, HASH_LEN, MAX_NODE_ID_BYTES
from meshcomm.journal.events import JournalEventType
from meshcomm.security.identity import node_id_of
from meshcomm.types import PUBLIC_KEY_LEN

WITNESSED_TYPE: Final = JournalEventType.WITNESSED.value
#: meshcomm.journal.store.DROPPED_ENTRY_TYPE (the store is an IO adapter: not imported).
DROPPED_TYPE: Final = "journal.dropped"
STARTED_TYPE: Final = JournalEventType.NODE_STARTED.value
#: Bytes of each entry hash kept per device.
HASH_PREFIX_BYTES: Final = 8
#: Bytes of an envelope id a send or receipt is matched by.
ENV_PREFIX_BYTES: Final = 8
#: Envelope ids outside this length (bytes) are not checked.
MIN_ENV_BYTES: Final = ENV_PREFIX_BYTES
MAX_ENV_BYTES: Final = 64
#: Highest seq a claim may name (claims are keyed by node index and seq in one integer).
MAX_CLAIM_SEQ: Final = 2**48 - 1
#: Time a sender's journal must reach past a receipt, beyond the clocks' uncertainty (s).
COVER_MARGIN_S: Final = 5.0
#: Before a receipt, this long the sender's journal must have lost nothing (s).
RECEIPT_LOOKBACK_S: Final = 120.0

_ZERO_PREFIX: Final = bytes(HASH_PREFIX_BYTES)
_SEQ_BITS: Final = 48
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1
#: A stored claim: head, signature digest, witness index, witness entry seq, state.
_CLAIM: Final = struct.Struct("<32s8sIqB")
_UNCHECKED: Final = 0          # no key for the node: the signature was not checked
_SIGNED: Final = 1             # the signature verifies with the node's key
_BAD: Final = 2                # it does not (never stored: reported at once)


class CheckKind(StrEnum):
    WITNESS_CONTRADICTS = "witness-contradicts"
    FORK = "fork"
    TRUNCATED = "truncated"
    BAD_WITNESS = "bad-witness"
    RECEIPT_WITHOUT_SEND = "receipt-without-send"


@dataclass(frozen=True, slots=True)
class CrossLimits:
    """Every table's bound (the defaults keep a million-event export near 20 MB)."""

    #: entries indexed (hash prefix + time, 12 bytes each) over all devices
    indexed_entries: int = 4_000_000
    #: longest run of missing seqs filled in a device's index (else its index stops)
    max_seq_gap: int = 4_096
    #: distinct claims (node, seq) kept, about 160 bytes each
    claims: int = 150_000
    #: distinct claims one witness's journal may add (one liar cannot fill the table)
    claims_per_witness: int = 50_000
    #: node ids named by claims (the export's own devices always get one)
    nodes: int = 16_384
    #: second heads claimed for a (node, seq) already claimed
    conflicts: int = 1_024
    #: sends kept (8 bytes each) over all devices
    sends: int = 2_000_000
    #: receipts waiting for their sender's journal (36 bytes each)
    receipts: int = 500_000
    #: spans a device may have lost events in (drops, restarts, gaps)
    spans_per_device: int = 256


@dataclass(frozen=True, slots=True)
class CrossProblem:
    """One finding, as :class:`meshcomm.export.pipeline.ProblemRow`: ``entry`` is a seq
    of ``device``'s journal."""

    device: str
    entry: int
    kind: str
    detail: str = ""


class _Device:
    """What is kept of one device's journal."""

    __slots__ = ("finished", "first_seq", "first_wall", "index_open", "last_seq",
                 "last_wall", "name", "node", "prefixes", "prev_wall", "sends",
                 "sends_complete", "sends_sorted", "spans", "spans_complete", "times")

    def __init__(self, name: str, node: int) -> None:
        self.name = name
        self.node = node
        self.first_seq = FIRST_SEQ
        self.last_seq = 0                  # 0: no entry yet
        self.first_wall = self.last_wall = self.prev_wall = 0.0
        self.prefixes = bytearray()        # HASH_PREFIX_BYTES per seq from first_seq
        self.times = array("f")            # wall - first_wall per seq from first_seq
        self.index_open = True
        self.sends = array("Q")
        self.sends_sorted = True
        self.sends_complete = True
        self.spans: list[tuple[float, float]] = []
        self.spans_complete = True
        self.finished = False

    def prefix_at(self, seq: int) -> bytes | None:
        pos = (seq - self.first_seq) * HASH_PREFIX_BYTES
        if pos < 0 or pos + HASH_PREFIX_BYTES > len(self.prefixes):
            return None
        prefix = bytes(self.prefixes[pos:pos + HASH_PREFIX_BYTES])
        return None if prefix == _ZERO_PREFIX else prefix

    def seq_after(self, wall: float) -> int:
        """The first seq stamped after ``wall`` (its own clock), as far as indexed."""
        return self.first_seq + bisect_right(self.times, wall - self.first_wall)

    def lost_between(self, start: float, end: float) -> bool:
        return any(s <= end and e >= start for s, e in self.spans)

    def has_sent(self, env: int) -> bool:
        if not self.sends_sorted:
            self.sends = array("Q", sorted(self.sends))
            self.sends_sorted = True
        i = bisect_left(self.sends, env)
        return i < len(self.sends) and self.sends[i] == env


@dataclass(slots=True)
class _Undo:
    """What the device being fed added, so that :meth:`CrossCheck.discard` can take it
    back: the claims it was first to make, and where the conflicts and receipts stood."""

    conflicts: int = 0
    receipts: int = 0
    claims: list[int] = field(default_factory=list)


class _Row:
    __slots__ = ("count", "detail", "entry")

    def __init__(self, entry: int, detail: str, count: int) -> None:
        self.entry, self.detail, self.count = entry, detail, count


class _Findings:
    """One row per (device, kind): the lowest entry, its detail, how many in all."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, CheckKind], _Row] = {}

    def add(self, device: str, entry: int, kind: CheckKind, detail: str,
            count: int = 1) -> None:
        row = self.rows.get((device, kind))
        if row is None:
            self.rows[(device, kind)] = _Row(entry, detail, count)
            return
        row.count += count
        if entry < row.entry:
            row.entry, row.detail = entry, detail

    def merged(self, other: _Findings) -> _Findings:
        out = _Findings()
        for source in (self, other):
            for (device, kind), row in source.rows.items():
                out.add(device, row.entry, kind, row.detail, row.count)
        return out

    def problems(self) -> list[CrossProblem]:
        out = []
        for (device, kind), row in self.rows.items():
            more = row.count - 1
            text = row.detail + (f" ({more} more like it)" if more else "")
            out.append(CrossProblem(device, row.entry, kind.value, text))
        return sorted(out, key=lambda p: (p.device, p.entry, p.kind))


def _hex_bytes(value: object, size: int | None, lo: int = 1, hi: int = 1 << 16) -> bytes | None:
    """``value`` (bytes, or a hex str) as bytes of ``size`` (or lo..hi) bytes; else None."""
    if isinstance(value, str):
        if len(value) % 2 or len(value) > 2 * hi:
            return None
        try:
            value = bytes.fromhex(value)
        except ValueError:
            return None
    if not isinstance(value, bytes):
        return None
    ok = len(value) == size if size is not None else lo <= len(value) <= hi
    return value if ok else None


_Claim = tuple[str, int, bytes, bytes]


def parse_claim(data: Mapping[str, object]) -> _Claim | str:
    """(node hex, seq, head, signature) of a ``journal.witnessed`` record, or why not."""
    node = _hex_bytes(data.get("node"), None, 1, MAX_NODE_ID_BYTES)
    seq = data.get("seq")
    head = _hex_bytes(data.get("head"), HASH_LEN)
    sig = _hex_bytes(data.get("sig"), SIGNATURE_LEN)
    if node is None:
        return "witness record without a valid node id"
    if type(seq) is not int or not FIRST_SEQ <= seq <= MAX_CLAIM_SEQ:
        return f"witness record with seq {seq!r} out of range"
    if head is None or sig is None:
        return "witness record without a 32-byte head and a 64-byte signature"
    return node.hex(), seq, head, sig


def _env_of(value: object) -> int | None:
    env = _hex_bytes(value, None, MIN_ENV_BYTES, MAX_ENV_BYTES)
    return None if env is None else int.from_bytes(env[:ENV_PREFIX_BYTES], "big")


def _peer_prefix(peer: object) -> int | None:
    """The 8-byte node id prefix of a mesh peer name ``<16 hex>.mesh``."""
    if not isinstance(peer, str) or len(peer) != PEER_HEX_CHARS + len(MESH_PEER_SUFFIX):
        return None
    if not peer.endswith(MESH_PEER_SUFFIX):
        return None
    try:
        return int(peer[:PEER_HEX_CHARS], 16)
    except ValueError:
        return None


def _name_prefix(name: str) -> int | None:
    try:
        return int(name[:PEER_HEX_CHARS], 16) if len(name) >= PEER_HEX_CHARS else None
    except ValueError:
        return None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class CrossCheck:
    """Feed :meth:`add` every entry of every merged device (device by device, each in seq
    order; :meth:`begin` names a device whose journal is empty; :meth:`discard` takes back
    the device being fed), then take :meth:`problems`. ``keys``: device (full node id
    hex) -> its Ed25519 public key, for the witnessed signatures (a key whose node id is
    not the device's is ignored)."""

    def __init__(self, keys: Mapping[str, bytes] | None = None,
                 limits: CrossLimits | None = None) -> None:
        self.limits = limits or CrossLimits()
        self._node_ids: dict[str, int] = {}
        self._names: list[str] = []
        self._devices: dict[int, _Device] = {}
        self._current: _Device | None = None
        #: a device was fed again after another: receipts are no longer checked at once
        self._resumed = False
        self._undo = _Undo()
        self._by_prefix: dict[int, _Device | None] = {}    # None: two devices share it
        self._verifiers: dict[int, nacl.signing.VerifyKey] = {}
        self._claims: dict[int, bytes] = {}
        self._claims_by: dict[int, int] = {}
        self._conflicts: list[tuple[int, bytes]] = []
        self._receipts = (array("I"), array("q"), array("d"), array("Q"), array("Q"))
        self._found = _Findings()
        self._indexed = self._sends = 0
        self._counts = dict.fromkeys((
            "keys_rejected", "claims_dropped", "conflicts_dropped", "receipts_dropped",
            "sends_dropped", "entries_out_of_order", "index_stopped",
            "claims_after_copy"), 0)
        #: device -> (collector, the collector's wall clock when it last heard the
        #: device, the head the device reported then): from a collection's copy.json
        self._copies: dict[str, tuple[str, float, int]] = {}
        self._handlers: dict[str, Callable[[_Device, JournalEntry], None]] = {
            WITNESSED_TYPE: self._on_witnessed, SIP_TYPE: self._on_sip,
            DROPPED_TYPE: self._on_dropped, STARTED_TYPE: self._on_started}
        for device, key in (keys or {}).items():
            self._add_key(device, key)

    def copied(self, device_hex: str, collector_hex: str, heard_wall_s: float,
               head_seq: int) -> None:
        """``device_hex``'s journal is a copy a collector (``collector_hex``, one of the
        devices) took while the device kept writing: it last heard the device at
        ``heard_wall_s`` on its own clock, when the device's head was ``head_seq``. A
        checkpoint witnessed beyond the copy's end is then a cut tail only when it was
        witnessed before that moment and lies beyond that head."""
        if math.isfinite(heard_wall_s) and head_seq >= 0:
            self._copies[device_hex] = (collector_hex, heard_wall_s, head_seq)

    def _add_key(self, device: str, key: bytes) -> None:
        name = device.lower()
        if (not isinstance(key, bytes) or len(key) != PUBLIC_KEY_LEN
                or node_id_of(key).hex() != name):
            self._counts["keys_rejected"] += 1
            return
        node = self._node(name, force=True)
        assert node is not None
        self._verifiers[node] = nacl.signing.VerifyKey(key)

    def _node(self, name: str, *, force: bool = False) -> int | None:
        node = self._node_ids.get(name)
        if node is None and (force or len(self._names) < self.limits.nodes):
            node = self._node_ids[name] = len(self._names)
            self._names.append(name)
        return node

    # ------------------------------------------------------------------ feeding
    def begin(self, device_hex: str) -> None:
        """Start (or resume) ``device_hex``'s journal; :meth:`add` calls it as needed."""
        self._switch(device_hex)

    def _switch(self, device_hex: str) -> _Device:
        if self._current is not None:
            self._current.finished = True
        node = self._node(device_hex, force=True)
        assert node is not None
        dev = self._devices.get(node)
        if dev is None:
            dev = self._devices[node] = _Device(device_hex, node)
            prefix = _name_prefix(device_hex)
            if prefix is not None:
                self._by_prefix[prefix] = None if prefix in self._by_prefix else dev
        elif dev.finished:
            self._resumed = True
        dev.finished = False
        self._current = dev
        self._undo = _Undo(len(self._conflicts), len(self._receipts[0]))
        return dev

    def discard(self, device_hex: str) -> None:
        """Forget the journal of ``device_hex``, the device being fed (e.g. one whose
        verification failed and that is refused): as if it had never been added. Only the
        current device can be discarded (LocalProtocolError otherwise)."""
        dev = self._current
        if dev is None or dev.name != device_hex or self._resumed:
            raise LocalProtocolError(f"only the device being fed can be discarded, "
                                     f"not {device_hex}")
        for key in self._undo.claims:
            del self._claims[key]
        self._claims_by.pop(dev.node, None)
        del self._conflicts[self._undo.conflicts:]
        for column in self._receipts:
            del column[self._undo.receipts:]
        self._found.rows.pop((dev.name, CheckKind.BAD_WITNESS), None)
        self._indexed -= len(dev.times)
        self._sends -= len(dev.sends)
        del self._devices[dev.node]
        prefix = _name_prefix(dev.name)
        if prefix is not None and self._by_prefix.get(prefix) is dev:
            del self._by_prefix[prefix]
        self._current = None

    def add(self, device_hex: str, entry: JournalEntry) -> None:
        """One entry of ``device_hex``'s journal (in seq order after the previous one)."""
        dev = self._current
        if dev is None or dev.name != device_hex:
            dev = self._switch(device_hex)
        if entry.seq == dev.last_seq + 1 and dev.last_seq and dev.index_open and (
                self._indexed < self.limits.indexed_entries):
            dev.prefixes += entry.entry_hash[:HASH_PREFIX_BYTES]
            dev.times.append(entry.wall_s - dev.first_wall)
            self._indexed += 1
            dev.prev_wall, dev.last_seq, dev.last_wall = dev.last_wall, entry.seq, entry.wall_s
        elif not self._index_slow(dev, entry):
            return
        handler = self._handlers.get(entry.type)
        if handler is not None:
            handler(dev, entry)

    def _index_slow(self, dev: _Device, entry: JournalEntry) -> bool:
        """The first entry, a gap, an entry out of order, a full index. False: skip it."""
        seq = entry.seq
        if dev.last_seq == 0:
            dev.first_seq, dev.first_wall = seq, entry.wall_s
        elif seq <= dev.last_seq:
            self._counts["entries_out_of_order"] += 1
            return False
        else:
            gap = seq - dev.last_seq - 1
            if gap:
                self._lost(dev, dev.last_wall, entry.wall_s)
            if gap > self.limits.max_seq_gap or (
                    self._indexed + gap >= self.limits.indexed_entries):
                self._stop_index(dev)
            elif dev.index_open and gap:
                dev.prefixes += _ZERO_PREFIX * gap
                dev.times.extend(array("f", [dev.times[-1]]) * gap)
                self._indexed += gap
        if dev.index_open and self._indexed >= self.limits.indexed_entries:
            self._stop_index(dev)
        if dev.index_open:
            dev.prefixes += entry.entry_hash[:HASH_PREFIX_BYTES]
            dev.times.append(entry.wall_s - dev.first_wall)
            self._indexed += 1
        dev.prev_wall, dev.last_seq, dev.last_wall = dev.last_wall, seq, entry.wall_s
        return True

    def _stop_index(self, dev: _Device) -> None:
        if dev.index_open:
            dev.index_open = False
            self._counts["index_stopped"] += 1

    def _lost(self, dev: _Device, start: float, end: float) -> None:
        """``dev`` may have lost events between ``start`` and ``end`` (its clock)."""
        if len(dev.spans) >= self.limits.spans_per_device:
            dev.spans_complete = False
            return
        dev.spans.append((min(start, end), max(start, end)))

    def _on_dropped(self, dev: _Device, entry: JournalEntry) -> None:
        first = _finite(entry.data.get("first_wall_s"))
        last = _finite(entry.data.get("last_wall_s"))
        self._lost(dev, entry.wall_s if first is None else first,
                   entry.wall_s if last is None else last)

    def _on_started(self, dev: _Device, entry: JournalEntry) -> None:
        if entry.seq > dev.first_seq:       # a restart: what was not flushed is gone
            self._lost(dev, dev.prev_wall, entry.wall_s)

    def _on_witnessed(self, dev: _Device, entry: JournalEntry) -> None:
        parsed = parse_claim(entry.data)
        if isinstance(parsed, str):
            self._found.add(dev.name, entry.seq, CheckKind.BAD_WITNESS, parsed)
            return
        node_hex, seq, head, sig = parsed
        if node_hex == dev.name:
            return                              # a node's word about itself adds nothing
        node = self._node(node_hex)
        if node is None:
            self._counts["claims_dropped"] += 1
            return
        key = node << _SEQ_BITS | seq
        digest = hashlib.blake2b(sig, digest_size=8).digest()
        found = self._claims.get(key)
        if found is not None and found[:HASH_LEN] == head and found[HASH_LEN:40] == digest:
            return                              # the same claim, heard again or by another
        state = self._signature(node, node_hex, seq, head, sig)
        if state == _BAD:
            self._found.add(dev.name, entry.seq, CheckKind.BAD_WITNESS,
                            f"the signature of {node_hex[:16]}'s checkpoint of entry {seq} "
                            "does not verify with its key")
            return
        value = _CLAIM.pack(head, digest, dev.node, entry.seq, state)
        if found is None:
            self._keep_claim(dev, key, value)
        elif found[:HASH_LEN] != head:
            if len(self._conflicts) < self.limits.conflicts:
                self._conflicts.append((key, value))
            else:
                self._counts["conflicts_dropped"] += 1

    def _keep_claim(self, dev: _Device, key: int, value: bytes) -> None:
        made = self._claims_by.get(dev.node, 0)
        if len(self._claims) >= self.limits.claims or made >= self.limits.claims_per_witness:
            self._counts["claims_dropped"] += 1
            return
        self._claims[key] = value
        self._claims_by[dev.node] = made + 1
        self._undo.claims.append(key)

    def _signature(self, node: int, node_hex: str, seq: int, head: bytes, sig: bytes) -> int:
        verifier = self._verifiers.get(node)
        if verifier is None:
            return _UNCHECKED
        try:
            verifier.verify(checkpoint_message(bytes.fromhex(node_hex), seq, head), sig)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return _BAD
        return _SIGNED

    def _on_sip(self, dev: _Device, entry: JournalEntry) -> None:
        direction = entry.data.get("dir")
        if direction != TO_MESH and direction != FROM_MESH:
            return
        env = _env_of(entry.data.get("env"))
        if env is None:
            return
        if direction == TO_MESH:
            if self._sends >= self.limits.sends:
                dev.sends_complete = False
                self._counts["sends_dropped"] += 1
                return
            self._sends += 1
            dev.sends_sorted = dev.sends_sorted and (not dev.sends or dev.sends[-1] <= env)
            dev.sends.append(env)
            return
        sender = _peer_prefix(entry.data.get("peer"))
        if sender is None:
            return
        done = self._by_prefix.get(sender)
        if (done is not None and done.finished and not self._resumed
                and done.sends_complete and done.has_sent(env)):
            return                              # sent: nothing to keep
        devices, seqs, walls, senders, envs = self._receipts
        if len(devices) >= self.limits.receipts:
            self._counts["receipts_dropped"] += 1
            return
        devices.append(dev.node)
        seqs.append(entry.seq)
        walls.append(entry.wall_s)
        senders.append(sender)
        envs.append(env)

    # ------------------------------------------------------------------ results
    def counts(self) -> dict[str, int]:
        """What was kept and what did not fit (its check skipped)."""
        return {"devices": len(self._devices), "claims": len(self._claims),
                "conflicts": len(self._conflicts), "receipts_waiting": len(self._receipts[0]),
                "sends": self._sends, "indexed_entries": self._indexed, **self._counts}

    def problems(self, clocks: ClockEstimate | None = None) -> list[CrossProblem]:
        """The findings (see the module docstring). ``clocks``: the export's offsets (the
        receipts' coverage is judged on corrected time; a device without an offset is not
        judged); None: every device's clock is taken as right."""
        if self._current is not None:
            self._current.finished = True
        found = _Findings()
        for key, value in self._claims.items():
            self._resolve_claim(found, key, value, clocks)
        for key, value in self._conflicts:
            self._resolve_claim(found, key, value, clocks)
            self._equivocation(found, key, value)
        self._resolve_receipts(found, clocks)
        return self._found.merged(found).problems()

    def _witness(self, value: bytes) -> tuple[bytes, bool, str]:
        """(head, signature verified, who holds it) of a stored claim."""
        head, _digest, witness, witness_seq, state = _CLAIM.unpack(value)
        return head, state == _SIGNED, f"{self._names[witness][:16]} entry {witness_seq}"

    def _resolve_claim(self, found: _Findings, key: int, value: bytes,
                       clocks: ClockEstimate | None = None) -> None:
        dev = self._devices.get(key >> _SEQ_BITS)
        if dev is None:
            return                              # that node's journal is not in the export
        seq = key & _SEQ_MASK
        head, signed, witness = self._witness(value)
        what = f"{'signed ' if signed else ''}checkpoint of entry {seq} (head {head.hex()})"
        if seq > dev.last_seq and not self._before_copy(dev, seq, value, clocks):
            self._counts["claims_after_copy"] += 1
            return
        if seq > dev.last_seq:
            first = dev.last_seq + 1
            found.add(dev.name, first, CheckKind.TRUNCATED,
                      f"the journal ends at entry {dev.last_seq}, but {witness} holds its "
                      f"{what}: entries {first}..{seq} are missing (its tail was cut, or "
                      "this copy was taken before)")
            return
        prefix = dev.prefix_at(seq)
        if prefix is None or prefix == head[:HASH_PREFIX_BYTES]:
            return
        if signed:
            found.add(dev.name, seq, CheckKind.FORK,
                      f"entry {seq} differs from the {what} {witness} holds: the device "
                      "signed that head, so this history was rewritten")
        else:
            found.add(dev.name, seq, CheckKind.WITNESS_CONTRADICTS,
                      f"entry {seq} differs from the {what} {witness} holds (no key to "
                      "tell whether the journal or the witness lies)")

    def _before_copy(self, dev: _Device, seq: int, value: bytes,
                     clocks: ClockEstimate | None) -> bool:
        """Whether a claim beyond ``dev``'s end can tell a cut tail: always for a journal
        that is no collected copy; for a copy, only when the device's head then was below
        the claimed entry and the claim was witnessed (corrected time, with margins)
        before the collector last heard the device."""
        copy = self._copies.get(dev.name)
        if copy is None:
            return True
        collector, heard_wall, head_seq = copy
        if seq <= head_seq:
            return False                # the device had it: the copy is incomplete
        _head, _digest, witness_node, witness_seq, _state = _CLAIM.unpack(value)
        witness = self._devices.get(witness_node)
        shift_w, shift_c = _shift(clocks, self._names[witness_node]), _shift(clocks, collector)
        if witness is None or shift_w is None or shift_c is None:
            return False                # cannot place the two moments: no judgement
        pos = witness_seq - witness.first_seq
        if not 0 <= pos < len(witness.times):
            return False
        witnessed = witness.first_wall + float(witness.times[pos]) - shift_w[0]
        heard = heard_wall - shift_c[0]
        return witnessed < heard - COVER_MARGIN_S - shift_w[1] - shift_c[1]

    def _equivocation(self, found: _Findings, key: int, value: bytes) -> None:
        first = self._claims.get(key)
        if first is None:
            return
        head, signed, witness = self._witness(value)
        other, other_signed, other_witness = self._witness(first)
        if signed and other_signed:
            seq = key & _SEQ_MASK
            found.add(self._names[key >> _SEQ_BITS], seq, CheckKind.FORK,
                      f"two heads signed for entry {seq}: {other.hex()} (held by "
                      f"{other_witness}) and {head.hex()} (held by {witness})")

    def _resolve_receipts(self, found: _Findings, clocks: ClockEstimate | None) -> None:
        devices, seqs, walls, senders, envs = self._receipts
        for i, env in enumerate(envs):
            sender = self._by_prefix.get(senders[i])
            receiver = self._devices[devices[i]]
            if (sender is None or sender is receiver or not sender.sends_complete
                    or not sender.spans_complete or sender.has_sent(env)):
                continue
            when = self._covered(sender, receiver, walls[i], clocks)
            if when is None:
                continue
            entry = sender.seq_after(when)
            found.add(sender.name, entry, CheckKind.RECEIPT_WITHOUT_SEND,
                      f"{receiver.name[:16]} entry {seqs[i]} received envelope "
                      f"{env:016x}... from this device, whose journal covers that time "
                      f"and holds no send of it (the send was removed, or the receipt "
                      f"forged); the send would precede entry {entry}")

    def _covered(self, sender: _Device, receiver: _Device, recv_wall: float,
                 clocks: ClockEstimate | None) -> float | None:
        """The receipt's time on the sender's clock when the sender's journal covers it
        (see the module docstring); else None."""
        if sender.last_seq == 0:
            return None
        shift_r, shift_s = _shift(clocks, receiver.name), _shift(clocks, sender.name)
        if shift_r is None or shift_s is None:
            return None
        when = recv_wall - shift_r[0] + shift_s[0]
        margin = COVER_MARGIN_S + shift_r[1] + shift_s[1]
        lookback = 0.0 if sender.first_seq == FIRST_SEQ else RECEIPT_LOOKBACK_S
        starts_before = sender.first_wall <= when - lookback - margin
        if not starts_before or sender.last_wall < when + margin:
            return None
        if sender.lost_between(when - RECEIPT_LOOKBACK_S - margin, when + margin):
            return None
        if not sender.index_open and when >= sender.first_wall + (
                float(sender.times[-1]) if sender.times else 0.0):
            return None                         # beyond its index: cannot name the entry
        return when


def _shift(clocks: ClockEstimate | None, device: str) -> tuple[float, float] | None:
    """(offset, uncertainty) of ``device``'s clock; (0, 0) without an estimate at all."""
    if clocks is None:
        return 0.0, 0.0
    found = clocks.offsets.get(device)
    return None if found is None else (found.offset_s, found.uncertainty_s)
