"""End-to-end sealing of a node's SIP traffic (sans-IO), the node core's hook around
:mod:`meshcomm.security.e2e`.

* **Unicast SIP** (``AppKind.SIP``, in the island or tunnelled to another one): the node
  core seals the SIP bytes to the destination node before ``send_unicast`` /
  ``Tunnel.send`` and opens them when a ``UnicastReceived`` of that kind reaches it, with
  the envelope's verified origin key. A message that does not open is dropped and counted;
  nothing of it reaches the gateway or the journal.
* **Store-and-forward parcels**: the origin seals the MESSAGE to the node of the latest
  binding of the To AoR it knows when it holds it (:meth:`SipSealing.seal_for_aor`); relays
  take custody of sealed parcels only. A parcel for an AoR the node has never seen a
  binding of stays in clear in the origin's own store (its own endpoint), is neither
  offered to relays nor sent to any node, and is sealed (:meth:`SipSealing.seal_parcel`)
  as soon as the origin learns a key for the AoR: a binding in its tables
  (:meth:`SipSealing.parcel_key`) or a resolution across sites
  (:mod:`meshcomm.node.sf_remote`). The destination opens it before delivery
  (:meth:`SipSealing.open_parcel`).

**Compact SIP** (issue 13, :mod:`meshcomm.sip.compact`): what is sealed is the SIP
message's compact form, whose context both ends derive from the two node ids (the
gateways' ``<node>.mesh`` hosts and ``mesh=`` parameters); the destination expands it
(bounded by the gateway's largest SIP message) before the gateway sees it, so the gateway
gets exactly the bytes the far gateway sent. Parcels are compacted the same way.

**Short sealing headers**: a unicast goes in the SHORT form once its session is confirmed
(:mod:`meshcomm.security.e2e`); this node keeps a copy of its recent SHORT messages
(bounded: :data:`MAX_RESEND_ENTRIES`, :data:`MAX_RESEND_BYTES`, :data:`RESEND_KEEP_S`).
A SHORT message that does not open here is answered with a NACK (rate-limited per
origin); a NACK for one of ours puts the message back to be sealed FULL
(:meth:`SipSealing.take_outgoing`, sent by the node core).

Destination keys come from what this node has verified: the location tables' bindings
(the island's and the uplink mesh's), origins of envelopes and tunnelled items that
reached it, and keys the tunnel learned from resolutions; a bounded map
(:data:`MAX_KNOWN_KEYS`, least recently used evicted) keeps them by node id. A message to
a node whose key is unknown is not sent (counted :attr:`E2eCounter.NO_KEY`): the mesh never
falls back to clear text.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.location.table import LocationTable
from meshcomm.node.gateway.types import MAX_SIP_MESSAGE_BYTES, MESH_HOST_SUFFIX, NODE_HEX_CHARS
from meshcomm.node.kinds import AppKind
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES, UnicastReceived
from meshcomm.security.e2e import (
    COUNTER_BYTES,
    E2E_VERSION,
    HELD_FLAG,
    MAX_SEALED_BYTES,
    NACK_BYTES,
    SEALED_FORMS,
    SESSION_ID_BYTES,
    Opened,
    Opener,
    Sealer,
    SealForm,
)
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.sip.compact import (
    CompactContext,
    Form,
    Reference,
    UnknownReference,
    compact,
    expand_untrusted,
    reference_words,
)
from meshcomm.types import PUBLIC_KEY_LEN, NodeId

#: Node keys remembered by node id.
MAX_KNOWN_KEYS: Final = 4096
#: Kinds whose body is sealed end to end.
SEALED_KINDS: Final = frozenset({AppKind.SIP})
#: The associated-data kind of a store-and-forward parcel's sealed MESSAGE.
PARCEL_KIND: Final = AppKind.STORE_FORWARD
#: Copies of our SHORT messages kept for a NACK's re-send (oldest dropped beyond any bound).
MAX_RESEND_ENTRIES: Final = 256
MAX_RESEND_BYTES: Final = 512 * 1024
RESEND_KEEP_S: Final = 30.0
#: NACKs sent: at most one per (origin, session) per interval; origins remembered.
NACK_INTERVAL_S: Final = 1.0
MAX_NACK_ORIGINS: Final = 256
#: Compact contexts kept (one per peer node).
MAX_CONTEXTS: Final = 512
#: Requests kept as references for their responses (sent and received, by peer and
#: gateway branch; least recently used evicted: a response whose request is gone is NACKed
#: and sent again without the reference).
MAX_REFERENCES: Final = 1024
#: Messages to send again without state (after a NACK) not yet sealed.
MAX_PLAIN_NEXT: Final = 256
#: The gateway's own top Via branch (meshcomm.node.gateway.core._prepare) names a request.
_GATEWAY_BRANCH: Final = re.compile(
    rb"\r\n(?:Via|v): SIP/2\.0/UDP [0-9a-f]{16}\.mesh;branch=z9hG4bK([0-9a-f]{16})\r\n")
#: A reference names a request by its branch and this digest of its lines; requests of
#: one branch kept (an INVITE, its CANCEL, an ACK).
REFERENCE_DIGEST_BYTES: Final = 2
MAX_REQUESTS_PER_BRANCH: Final = 4
_CSEQ_LINE: Final = re.compile(rb"\r\nCSeq: [^\r\n]*")
_SENT: Final = b"s"
_RECEIVED: Final = b"r"

assert MAX_SEALED_BYTES == MAX_MESSAGE_BYTES
assert E2E_VERSION == SealForm.LEGACY


class E2eCounter(StrEnum):
    SEALED = "e2e_sealed"                  # SIP unicasts sealed to their destination
    SEALED_SHORT = "e2e_sealed_short"      # ... of them with the short header
    OPENED = "e2e_opened"                  # ... opened here
    NO_KEY = "e2e_no_key"                  # not sent: the destination's key is unknown
    OPEN_FAILED = "e2e_open_failed"        # dropped: did not open (forged, wrong key, bad)
    UNKNOWN_SESSION = "e2e_unknown_session"  # a SHORT message of a session not held here
    NACK_SENT = "e2e_nack_sent"            # ... answered with a NACK
    NACK_RECEIVED = "e2e_nack_received"    # a NACK for one of ours
    RESENT_FULL = "e2e_resent_full"        # ... whose message went again, FULL
    NACK_MISSED = "e2e_nack_missed"        # ... for a message no longer kept (or not ours)
    EXPAND_FAILED = "e2e_expand_failed"    # opened, but its compact SIP did not expand
    UNKNOWN_REFERENCE = "e2e_unknown_reference"  # ... it named a request not held here
    REFERENCED = "e2e_referenced"          # responses written against their request
    COMPACT_SAVED = "e2e_compact_saved_bytes"  # bytes compaction took off SIP messages
    PARCEL_SEALED = "e2e_parcel_sealed"    # held MESSAGEs sealed to the To AoR's node
    PARCEL_CLEAR = "e2e_parcel_clear"      # held in clear at the origin (no key known)
    PARCEL_OPEN_FAILED = "e2e_parcel_open_failed"


def is_sealed(body: bytes) -> bool:
    """Whether a held MESSAGE is in sealed form (SIP text never starts with these bytes)."""
    return bool(body) and body[0] in SEALED_FORMS


def compact_context(sender: bytes, receiver: bytes) -> CompactContext:
    """What both gateways derive from the two node ids: their mesh hosts, ``mesh=``
    values, and the top Via each puts on a message to the other (meshcomm.node.gateway)."""
    snd, rcv = sender.hex()[:NODE_HEX_CHARS], receiver.hex()[:NODE_HEX_CHARS]
    snd_host, rcv_host = snd + MESH_HOST_SUFFIX, rcv + MESH_HOST_SUFFIX
    return CompactContext((
        f"\r\nVia: SIP/2.0/UDP {snd_host};branch=z9hG4bK",
        f"\r\nVia: SIP/2.0/UDP {rcv_host};branch=z9hG4bK",
        f";lr;mesh={snd}>", f";lr;mesh={rcv}>", snd_host, rcv_host, snd, rcv),
        MAX_SIP_MESSAGE_BYTES)


@dataclass(frozen=True, slots=True)
class E2eOutgoing:
    """A SIP unicast the node core sends for the sealing layer: ``seal`` True: a SIP
    message to seal and send again (after a NACK); False: a NACK to send as is."""

    dst: bytes
    body: bytes
    seal: bool


def _reference_name(sip: bytes) -> bytes | None:
    """The gateway branch of ``sip``'s top Via (a request's name for its responses)."""
    head = sip.partition(b"\r\n\r\n")[0] + b"\r\n"
    starts = [i for i in (head.find(b"\r\nVia:"), head.find(b"\r\nv:")) if i >= 0]
    match = _GATEWAY_BRANCH.match(head, min(starts)) if starts else None
    return bytes.fromhex(match.group(1).decode("ascii")) if match is not None else None


@dataclass(frozen=True, slots=True)
class _Kept:
    sip: bytes
    at_s: float


class SipSealing:
    """Seals and opens one node's SIP payloads; remembers verified node keys."""

    def __init__(self, identity: Identity, rng: random.Random,
                 tables: Iterable[LocationTable] = (),
                 counters: Counter[str] | None = None) -> None:
        self.node_id = identity.node_id
        self.sealer = Sealer(identity.public_key, rng)
        self.opener = Opener(identity)
        self.tables = list(tables)
        #: :class:`E2eCounter` counts (the node core passes the node's counters, which
        #: ``ctl status`` shows).
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._contexts: OrderedDict[tuple[bytes, bytes], CompactContext] = OrderedDict()
        #: Our SHORT messages by (destination key, session id, counter).
        self._kept: OrderedDict[tuple[bytes, bytes, int], _Kept] = OrderedDict()
        self._kept_bytes = 0
        self._nacked: OrderedDict[bytes, float] = OrderedDict()
        self._outgoing: list[E2eOutgoing] = []
        #: Requests by (peer, gateway branch, sent or received): their lines by digest.
        self._references: OrderedDict[tuple[bytes, bytes, bytes],
                                      dict[bytes, tuple[str, ...]]] = OrderedDict()
        #: Digests of (destination, message) to seal FULL and without a reference next.
        self._plain_next: OrderedDict[bytes, None] = OrderedDict()
        self.learn(identity.public_key)

    # ------------------------------------------------------------ keys
    def learn(self, public_key: bytes) -> None:
        """A node key this node verified (a signature by it checked, or a binding)."""
        if len(public_key) != PUBLIC_KEY_LEN:
            return
        node_id = node_id_of(public_key)
        if node_id in self._keys:
            self._keys.move_to_end(node_id)
            return
        while len(self._keys) >= MAX_KNOWN_KEYS:
            self._keys.popitem(last=False)
        self._keys[node_id] = public_key

    def key_of(self, node_id: bytes) -> bytes | None:
        key = self._keys.get(node_id)
        if key is not None:
            self._keys.move_to_end(node_id)
            return key
        for table in self.tables:
            for stored in table:
                if stored.binding.node_id == node_id:
                    self.learn(stored.binding.key)
                    return stored.binding.key
        return None

    # ------------------------------------------------------------ compact SIP
    def _context(self, sender: bytes, receiver: bytes) -> CompactContext:
        name = (sender, receiver)
        ctx = self._contexts.get(name)
        if ctx is None:
            ctx = compact_context(sender, receiver)
            while len(self._contexts) >= MAX_CONTEXTS:
                self._contexts.popitem(last=False)
            self._contexts[name] = ctx
        return ctx

    def _compact(self, sip: bytes, dst: bytes, stateless: bool = False) -> bytes:
        """``sip`` compacted for ``dst``: a response against its request when both hold
        it (not ``stateless``); a request is remembered for its responses."""
        ref = None
        branch = _reference_name(sip)
        if branch is not None and sip.startswith(b"SIP/2.0 "):
            ref = None if stateless else self._reference_for(dst, branch, sip)
        elif branch is not None:
            self._remember_request(dst, branch, _SENT, sip)
        compacted = compact(sip, self._context(self.node_id, dst), ref)
        if compacted[0] in (Form.REF, Form.REF_Z):
            self.counters[E2eCounter.REFERENCED] += 1
        self.counters[E2eCounter.COMPACT_SAVED] += len(sip) - len(compacted)
        return compacted

    def _reference_for(self, dst: bytes, branch: bytes, response: bytes) -> Reference | None:
        """The request from ``dst`` that ``response`` answers: same gateway branch and
        the same CSeq line (an INVITE and its CANCEL share the branch). Its name is the
        branch and a digest of its lines, so a peer holding another request of that
        branch finds nothing (and NACKs) rather than the wrong lines."""
        held = self._references.get((dst, branch, _RECEIVED))
        match = _CSEQ_LINE.search(response.partition(b"\r\n\r\n")[0])
        if held is None or match is None:
            return None
        cseq = match.group().decode("latin-1")
        for digest, words in held.items():
            if cseq in words:
                return Reference(branch + digest, words)
        return None

    def _remember_request(self, peer: bytes, branch: bytes, way: bytes, sip: bytes) -> None:
        key = (peer, branch, way)
        held = self._references.pop(key, {})
        words = reference_words(sip)
        digest = hashlib.blake2b("".join(words).encode("latin-1"),
                                 digest_size=REFERENCE_DIGEST_BYTES).digest()
        held.pop(digest, None)
        held[digest] = words
        while len(held) > MAX_REQUESTS_PER_BRANCH:
            del held[next(iter(held))]
        while len(self._references) >= MAX_REFERENCES:
            self._references.popitem(last=False)
        self._references[key] = held

    def _sent_request(self, origin: bytes, name: bytes) -> tuple[str, ...] | None:
        """The lines of our request to ``origin`` named ``name`` (branch + digest)."""
        held = self._references.get((origin, name[:-REFERENCE_DIGEST_BYTES], _SENT))
        return None if held is None else held.get(name[-REFERENCE_DIGEST_BYTES:])

    def _expand(self, opened: Opened, origin: bytes) -> bytes:
        """The SIP message an opened plaintext stands for (LEGACY: itself); a request
        is remembered for the responses to it."""
        if opened.form is SealForm.LEGACY:
            return opened.message
        sip = expand_untrusted(opened.message, self._context(origin, self.node_id),
                               lambda name: self._sent_request(origin, name))
        name = _reference_name(sip)
        if name is not None and not sip.startswith(b"SIP/2.0 "):
            self._remember_request(origin, name, _RECEIVED, sip)
        return sip

    # ------------------------------------------------------------ unicast
    def seal(self, dst: bytes, kind: int, body: bytes, now: float) -> bytes | None:
        """``body`` (SIP) compacted and sealed to node ``dst``; None (counted) when its key
        is unknown or the sealed form would not fit one unicast message."""
        key = self.key_of(dst)
        if key is None:
            self.counters[E2eCounter.NO_KEY] += 1
            return None
        digest = hashlib.blake2b(dst + body, digest_size=16).digest()
        stateless = digest in self._plain_next
        self._plain_next.pop(digest, None)
        try:
            compacted = self._compact(body, dst, stateless)
            sealed = self.sealer.seal_session(compacted, key, kind, now, short_ok=True,
                                              held=self.opener.holds_from(key))
        except LocalProtocolError:
            self.counters[E2eCounter.NO_KEY] += 1
            return None
        self.counters[E2eCounter.SEALED] += 1
        if sealed.form is SealForm.SHORT:
            self.counters[E2eCounter.SEALED_SHORT] += 1
        if sealed.form is SealForm.SHORT or compacted[0] in (Form.REF, Form.REF_Z):
            self._keep((key, sealed.session_id, sealed.counter), body, now)
        return sealed.data

    def open(self, event: UnicastReceived, now: float) -> UnicastReceived | None:
        """The event with its body opened and expanded; None (counted) if it does not
        open, or if it was a NACK (handled here: see :meth:`take_outgoing`)."""
        if event.body[:1] == bytes([SealForm.NACK]):
            self._on_nack(event, now)
            return None
        try:
            opened = self.opener.open_frame_untrusted(event.body, event.origin_key, event.kind)
        except DecodeError as exc:
            self.counters[E2eCounter.OPEN_FAILED] += 1
            if event.body and event.body[0] & ~HELD_FLAG == SealForm.SHORT:
                self._nack(event, exc, now)
            return None
        self.counters[E2eCounter.OPENED] += 1
        self.learn(event.origin_key)
        if opened.held:
            self.sealer.confirm(event.origin_key)
        try:
            body = self._expand(opened, event.origin)
        except UnknownReference:
            self.counters[E2eCounter.UNKNOWN_REFERENCE] += 1
            self._send_nack(event.origin, opened.session_id, opened.counter, now)
            return None
        except DecodeError:
            self.counters[E2eCounter.EXPAND_FAILED] += 1
            return None
        return UnicastReceived(NodeId(event.origin), event.origin_key, event.kind, body,
                               event.hops, event.seq, event.env)

    def take_outgoing(self) -> list[E2eOutgoing]:
        """NACKs to send and messages to seal again (the node core sends them)."""
        out, self._outgoing = self._outgoing, []
        return out

    # ------------------------------------------------------------ NACK and re-send
    def _keep(self, name: tuple[bytes, bytes, int], sip: bytes, now: float) -> None:
        self._expire_kept(now)
        self._kept[name] = _Kept(sip, now)
        self._kept_bytes += len(sip)
        while self._kept and (len(self._kept) > MAX_RESEND_ENTRIES
                              or self._kept_bytes > MAX_RESEND_BYTES):
            self._kept_bytes -= len(self._kept.popitem(last=False)[1].sip)

    def _expire_kept(self, now: float) -> None:
        while self._kept:
            name, kept = next(iter(self._kept.items()))
            if kept.at_s + RESEND_KEEP_S > now >= kept.at_s:
                return
            del self._kept[name]
            self._kept_bytes -= len(kept.sip)

    def _nack(self, event: UnicastReceived, exc: DecodeError, now: float) -> None:
        """A SHORT message that did not open: ask its origin for it FULL (rate-limited
        per origin and session: a flood of them costs at most one NACK per interval)."""
        if exc.reason == "unknown_session":
            self.counters[E2eCounter.UNKNOWN_SESSION] += 1
        name = event.body[1:NACK_BYTES]
        if len(name) == SESSION_ID_BYTES + COUNTER_BYTES:
            self._send_nack(event.origin, name[:SESSION_ID_BYTES],
                            int.from_bytes(name[SESSION_ID_BYTES:], "big"), now)

    def _send_nack(self, origin: bytes, session_id: bytes, counter: int, now: float) -> None:
        """Ask ``origin`` for its message ``counter`` of ``session_id`` again, FULL and
        without state (at most one NACK per origin, session and counter per interval)."""
        key = origin + session_id + counter.to_bytes(COUNTER_BYTES, "big")
        last = self._nacked.get(key)
        if last is not None and last <= now < last + NACK_INTERVAL_S:
            return
        self._nacked.pop(key, None)
        while len(self._nacked) >= MAX_NACK_ORIGINS:
            self._nacked.popitem(last=False)
        self._nacked[key] = now
        self.counters[E2eCounter.NACK_SENT] += 1
        self._outgoing.append(E2eOutgoing(origin, bytes([SealForm.NACK]) + key[len(origin):],
                                          False))

    def _on_nack(self, event: UnicastReceived, now: float) -> None:
        """A NACK from ``event.origin``: that node does not hold our session; the message
        it names goes again FULL (once: the copy is dropped)."""
        self.counters[E2eCounter.NACK_RECEIVED] += 1
        body = event.body
        if len(body) != NACK_BYTES:
            self.counters[E2eCounter.NACK_MISSED] += 1
            return
        session_id = body[1:1 + SESSION_ID_BYTES]
        counter = int.from_bytes(body[1 + SESSION_ID_BYTES:], "big")
        self.sealer.unconfirm(event.origin_key, session_id)
        self._expire_kept(now)
        kept = self._kept.pop((event.origin_key, session_id, counter), None)
        if kept is None:
            self.counters[E2eCounter.NACK_MISSED] += 1
            return
        self._kept_bytes -= len(kept.sip)
        self.counters[E2eCounter.RESENT_FULL] += 1
        digest = hashlib.blake2b(event.origin + kept.sip, digest_size=16).digest()
        while len(self._plain_next) >= MAX_PLAIN_NEXT:
            self._plain_next.popitem(last=False)
        self._plain_next[digest] = None
        self._outgoing.append(E2eOutgoing(event.origin, kept.sip, True))

    # ------------------------------------------------------------ store-and-forward
    def seal_for_aor(self, to_aor: str, sip: bytes, now: float) -> bytes:
        """A MESSAGE to hold: sealed to the node of the latest binding of ``to_aor`` this
        node knows (tombstones included: a departed node keeps its key), else as is."""
        key = self.parcel_key(to_aor)
        sealed = self.seal_parcel(sip, key, now) if key is not None else None
        if sealed is not None:
            return sealed
        self.counters[E2eCounter.PARCEL_CLEAR] += 1
        return sip

    def parcel_key(self, to_aor: str) -> bytes | None:
        """The key of the latest binding of ``to_aor`` in the location tables (None: the
        node has seen no binding of it)."""
        latest = None
        for table in self.tables:
            for stored in table.lookup(to_aor):
                if latest is None or stored.binding.issued_at > latest.issued_at:
                    latest = stored.binding
        return latest.key if latest is not None else None

    def seal_parcel(self, sip: bytes, key: bytes, now: float) -> bytes | None:
        """A held MESSAGE compacted and sealed FULL to node key ``key`` (a binding's, or
        the key a resolution named); None if it does not fit."""
        try:
            sealed = self.sealer.seal(self._compact(sip, node_id_of(key)), key, PARCEL_KIND,
                                      now)
        except LocalProtocolError:
            return None
        self.counters[E2eCounter.PARCEL_SEALED] += 1
        return sealed

    def open_parcel(self, sip: bytes, origin_key: bytes) -> bytes | None:
        """The MESSAGE of a parcel delivered here (opened and expanded if sealed); None if
        it does not open (sealed to another node, or forged)."""
        if not is_sealed(sip):
            return sip
        try:
            opened = self.opener.open_frame_untrusted(sip, origin_key, PARCEL_KIND)
            return self._expand(opened, node_id_of(origin_key))
        except DecodeError:
            self.counters[E2eCounter.PARCEL_OPEN_FAILED] += 1
            return None
