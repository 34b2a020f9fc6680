"""Signed envelopes, the one shape of everything on the mesh.

Two forms of the same envelope (wire version 2, issue 13 "short on the wire"):

* The **canonical form** ``signed_bytes = msgpack([version, type, incident, origin_key,
  seq, payload])`` is what the origin signs (Ed25519 over ``SIGNATURE_DOMAIN +
  signed_bytes``) and what records carry where they travel or rest on their own (a
  binding inside a RECORDS page, the DHT, the tunnel, the trust store): it holds the full
  incident name and the full origin key, so the signature binds both. It must be packed
  canonically (the decoder re-packs the header and refuses anything else), so that every
  device rebuilds it byte for byte. ``Envelope.digest`` (duplicate suppression, ack ids,
  the envelope ids that journals and the export pair across devices) is computed from it,
  so it does not depend on how a frame was shortened on the air.

* The **radio frame** carries neither the incident name nor (often) the key, and no
  msgpack framing around the header; the receiver rebuilds the canonical form from what it
  already holds (its own incident name; the origin's key from its key directory)::

      flags  type  tag  origin  seq  signature  [hop]  [acks]  payload
       1      1     4   32|8    var     64     2+var+var  1+6n+8  msgpack (rest)

  - ``flags``: 0xE0 | bits (0x01 full key carried, 0x02 hop part present, 0x04
    addressed, 0x08 acks present; 0x10 must be 0). 0xE0..0xEF is a msgpack negative fixint,
    which no other frame starts with (media frames are msgpack arrays 0x96/0x92, the link
    ack frame is 0xC1), so one byte tells them apart.
  - ``tag``: INCIDENT_TAG_LEN bytes of BLAKE2b(domain, incident name): a cheap filter. A
    frame of another incident whose tag collides is rebuilt with our incident name and
    fails its signature.
  - ``origin``: the 32-byte public key, or (key elided) the first ORIGIN_SHORT_LEN bytes of
    the origin's NodeId. The signature covers the full key, so a short id can never be
    re-bound to another key; a receiver without the key (or holding two keys under that
    short id) drops the frame unacknowledged (``drop_unknown_origin`` /
    ``drop_ambiguous_origin``) and the sender's retransmission, which always carries the
    key, gets through. Who may elide: :mod:`meshcomm.overlay.keydir`.
  - ``seq``: unsigned LEB128 varint (<= MAX_SEQ).
  - hop part (hop-mutable, outside the signature; absent when all zero): ``ttl`` (1 byte,
    <= MAX_TTL), ``hops`` (1 byte, <= MAX_HOPS), ``metric`` and ``age_ms`` (varints,
    <= MAX_METRIC / MAX_AGE_MS).
  - addressed (a flag, no bytes): a routed unicast sent to the receiving neighbour as its
    next hop, which acknowledges and forwards it; a scoped flood's copies are not. The
    link layer names the receiver (UDP to its address, Ethernet to its MAC; the radios
    drop frames for other hosts), so the 4-byte next-hop id of earlier drafts said
    nothing the receiver did not know.
  - ``acks``: per-hop acknowledgements piggybacked on a frame to one neighbour: a count
    byte (1..MAX_ACK_IDS), the ack ids (ACK_ID_LEN bytes each) and their LINK_MAC_LEN-byte
    MAC under the key of this link (meshcomm.overlay.acks).
  - ``payload``: the msgpack payload, byte for byte as in the canonical form.

  A UNICAST's payload is ``[dst, kind, body, flags, frag]`` where ``dst`` is the first
  DST_PREFIX_LEN bytes of the destination's NodeId (meshcomm.overlay.forwarding).

A standalone per-hop acknowledgement is no envelope but a *link ack frame*:
``LINK_ACK_MARKER || ids || mac`` (raw bytes, 1 + 6n + 8: 15 bytes for one frame).
``LINK_ACK_MARKER`` is 0xC1, the one byte msgpack never uses.

Decoding is in two steps: :func:`parse_frame_untrusted` checks structure and limits (a pure
function of the bytes, which the simulator memoises across nodes) and
:meth:`WireFrame.resolve` rebuilds the envelope with the receiver's incident and the
origin's key. The signature is checked by the caller through a
:class:`~meshcomm.security.verify.SignatureVerifier` so that it is done once per envelope.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import SIGNATURE_LEN, NodeId
from meshcomm.wire import codec, limits

SIGNATURE_DOMAIN = b"meshcomm-envelope-v2\x00"
INCIDENT_TAG_DOMAIN = b"meshcomm-incident-tag\x00"
MAX_METRIC = 1 << 20
MAX_AGE_MS = limits.MAX_LIFETIME_S * 1000
#: Short id of a next hop in a unicast's ``to`` (and in HELLO neighbour reports).
SHORT_ID_LEN = 4
INCIDENT_TAG_LEN = limits.INCIDENT_TAG_LEN
ORIGIN_SHORT_LEN = limits.SHORT_NODE_ID_LEN
DST_PREFIX_LEN = limits.SHORT_NODE_ID_LEN
KEY_LEN = 32
#: First byte of a link ack frame (msgpack's "never used" code).
LINK_ACK_MARKER = b"\xc1"
#: High bits of an envelope frame's first byte, and its flag bits.
FRAME_MARK = 0xE0
FLAG_FULL_KEY = 0x01
FLAG_HOP = 0x02
FLAG_TO = 0x04
FLAG_ACKS = 0x08
_FLAGS_KNOWN = FLAG_FULL_KEY | FLAG_HOP | FLAG_TO | FLAG_ACKS
#: msgpack fixarray of 6: the first byte of every canonical signed part.
_CANONICAL_FIRST = 0x96
#: Smallest frame: flags, type, tag, short origin, 1-byte seq, signature, 1 payload byte.
MIN_FRAME_BYTES = 2 + INCIDENT_TAG_LEN + ORIGIN_SHORT_LEN + 1 + SIGNATURE_LEN + 1
_MAX_VARINT_BYTES = 10


class MsgType(IntEnum):
    HELLO = 1      # one-hop beacon: neighbour discovery and link quality
    BINDING = 2    # a signed registration (flooded, stored, pulled)
    DIGEST = 3     # anti-entropy: bucket hashes of the binding table
    SUMMARY = 4    # anti-entropy: (record id, seq) of the buckets that differ
    PULL = 5       # anti-entropy: ids of records wanted
    RECORDS = 6    # anti-entropy: binding envelopes carried inside
    UNICAST = 7    # routed data for one destination node
    ACK = 8        # per-hop acknowledgement of a UNICAST
    TRUST = 9      # a signed revocation or agency-key addition (flooded, stored, pulled)
    TRUST_IDS = 10  # trust anti-entropy: ids of the trust records the sender holds
    TRUST_PULL = 11  # trust anti-entropy: ids of trust records wanted


_MSG_TYPES = {int(t): t for t in MsgType}


@lru_cache(maxsize=16)
def incident_tag(incident: str) -> bytes:
    """The INCIDENT_TAG_LEN-byte tag of an incident name carried in radio frames."""
    return hashlib.blake2b(INCIDENT_TAG_DOMAIN + incident.encode(),
                           digest_size=INCIDENT_TAG_LEN).digest()


@lru_cache(maxsize=16)
def _packed_incident(incident: str) -> bytes:
    return codec.pack(incident)


#: msgpack: a 6-array, then the version (a positive fixint).
_HEAD_START = bytes((_CANONICAL_FIRST, limits.WIRE_VERSION))
#: msgpack bin8 header of a 32-byte key.
_KEY_HEAD = b"\xc4\x20"


def _head(msg_type: int, incident: str, origin_key: bytes, seq: int) -> bytes:
    """The canonical signed part up to the payload (msgpack, as codec.pack packs it: the
    type is a positive fixint, the key 32 bytes; a test checks it against codec.pack)."""
    return b"".join((_HEAD_START, bytes((msg_type,)), _packed_incident(incident), _KEY_HEAD,
                     origin_key, codec.pack(seq)))


def _uint_len(value: int) -> int:
    """Bytes msgpack packs a non-negative int into."""
    return (1 if value < 0x80 else 2 if value < 0x100 else 3 if value < 0x10000
            else 5 if value < 0x100000000 else 9)


@lru_cache(maxsize=16)
def _incident_wire(incident: str) -> tuple[bytes, int]:
    """An incident's tag, and the length of a canonical header before its seq."""
    return incident_tag(incident), (len(_HEAD_START) + 1 + len(_packed_incident(incident))
                                    + len(_KEY_HEAD) + KEY_LEN)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope. ``signed_bytes`` (canonical) + ``signature`` are what the
    origin signed."""

    msg_type: MsgType
    incident: str
    origin_key: bytes
    origin: NodeId
    seq: int
    payload: Any
    signed_bytes: bytes
    signature: bytes
    #: The digest, computed once (a relay reads it several times per frame).
    _digest: bytes = field(default=b"", init=False, compare=False, repr=False)

    @property
    def digest(self) -> bytes:
        """Identity of these exact envelope bytes, for duplicate suppression (16 bytes)."""
        digest = self._digest
        if not digest:
            digest = hashlib.sha256(self.signature + self.signed_bytes).digest()[:16]
            object.__setattr__(self, "_digest", digest)
        return digest

    @property
    def ack_id(self) -> bytes:
        """The short name of this envelope in per-hop acknowledgements (ACK_ID_LEN bytes
        of its digest)."""
        return self.digest[:limits.ACK_ID_LEN]

    @property
    def short_origin(self) -> bytes:
        """The origin's short id on the wire (ORIGIN_SHORT_LEN bytes of its NodeId)."""
        return self.origin[:ORIGIN_SHORT_LEN]

    def verify(self, verifier: SignatureVerifier) -> bool:
        return verifier.verify(self.origin_key, SIGNATURE_DOMAIN + self.signed_bytes,
                               self.signature)


@dataclass(frozen=True, slots=True)
class Hop:
    """Hop-mutable fields: remaining TTL, hops so far, path metric (1/16 units), age of
    the carried record, whether it is addressed to the receiver as next hop (routed
    unicast only),
    piggybacked acknowledgements with their link MAC (both empty, or both set), and
    whether the frame names its origin by short id instead of carrying its key."""

    ttl: int = 0
    hops: int = 0
    metric: int = 0
    age_ms: int = 0
    addressed: bool = False
    acks: bytes = b""
    mac: bytes = b""
    key_elided: bool = False


NO_HOP = Hop()


@dataclass(frozen=True, slots=True)
class WireFrame:
    """A radio frame parsed but not yet tied to an incident name and an origin key."""

    msg_type: MsgType
    tag: bytes
    #: the carried public key, b"" when elided
    origin_key: bytes
    #: the origin's NodeId when the key was carried, else b""
    origin: bytes
    short_origin: bytes
    seq: int
    payload: Any
    payload_bytes: bytes
    signature: bytes

    def resolve(self, incident: str, origin_key: bytes, origin_id: bytes = b"") -> Envelope:
        """The envelope, its canonical form rebuilt with ``incident`` and ``origin_key``
        (which must be the carried key, if one was carried; ``origin_id``, if given, is
        its NodeId, as a key directory holds it)."""
        signed = _head(self.msg_type, incident, origin_key, self.seq) + self.payload_bytes
        if self.origin and origin_key == self.origin_key:
            origin = NodeId(self.origin)
        else:
            origin = NodeId(origin_id) if origin_id else node_id_of(origin_key)
        return Envelope(self.msg_type, incident, origin_key, origin, self.seq, self.payload,
                        signed, self.signature)


def seal(identity: Identity, msg_type: MsgType, incident: str, seq: int,
         payload: object) -> Envelope:
    """Build and sign an envelope originated by ``identity``."""
    signed = codec.pack([limits.WIRE_VERSION, int(msg_type), incident, identity.public_key,
                         seq, payload])
    return Envelope(msg_type, incident, identity.public_key, identity.node_id, seq, payload,
                    signed, identity.sign(SIGNATURE_DOMAIN + signed))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_frame(envelope: Envelope, hop: Hop = NO_HOP) -> bytes:
    """The radio frame of ``envelope`` with ``hop`` (see the module docstring)."""
    seq = envelope.seq
    if hop.key_elided:
        flags, origin = FRAME_MARK, envelope.origin[:ORIGIN_SHORT_LEN]
    else:
        flags, origin = FRAME_MARK | FLAG_FULL_KEY, envelope.origin_key
    tag, head_len = _incident_wire(envelope.incident)
    if seq < 0x80:
        seq_bytes, head_len = bytes((seq,)), head_len + 1
    else:
        seq_bytes, head_len = _varint(seq), head_len + _uint_len(seq)
    parts = [b"", tag, origin, seq_bytes, envelope.signature]
    ttl, hops, metric, age_ms = hop.ttl, min(hop.hops, limits.MAX_HOPS), hop.metric, hop.age_ms
    if ttl or hops or metric or age_ms:
        flags |= FLAG_HOP
        if metric < 0x80 and age_ms < 0x80:          # (one-byte varints: most frames)
            parts.append(bytes((ttl, hops, metric, age_ms)))
        else:
            parts += (bytes((ttl, hops)), _varint(metric), _varint(age_ms))
    if hop.addressed:
        flags |= FLAG_TO
    if hop.acks:
        flags |= FLAG_ACKS
        parts += (bytes((len(hop.acks) // limits.ACK_ID_LEN,)), hop.acks, hop.mac)
    parts.append(envelope.signed_bytes[head_len:])
    parts[0] = bytes((flags, envelope.msg_type))
    return b"".join(parts)


def split_ack_ids(data: bytes) -> list[bytes]:
    """The ack ids in concatenated ``data`` (its length a checked multiple of ACK_ID_LEN)."""
    n = limits.ACK_ID_LEN
    return [data[i:i + n] for i in range(0, len(data), n)]


def encode_link_ack(ids: bytes, mac: bytes) -> bytes:
    """A standalone link ack frame (see the module docstring)."""
    return LINK_ACK_MARKER + ids + mac


def decode_link_ack_untrusted(data: bytes) -> tuple[bytes, bytes]:
    """Split a link ack frame into (concatenated ack ids, MAC); raises only DecodeError.
    The MAC is checked by the caller, who knows the link's key."""
    body = len(data) - 1 - limits.LINK_MAC_LEN
    if data[:1] != LINK_ACK_MARKER:
        raise DecodeError("link ack: wrong marker", reason="unknown_type")
    if body < limits.ACK_ID_LEN:
        raise DecodeError("link ack: too short", reason="truncated")
    if body > limits.MAX_ACK_IDS * limits.ACK_ID_LEN:
        raise DecodeError("link ack: too many ids", reason="oversized")
    if body % limits.ACK_ID_LEN:
        raise DecodeError("link ack: not a whole number of ack ids", reason="malformed")
    return data[1:1 + body], data[1 + body:]


def decode_signed_untrusted(signed: bytes, signature: bytes) -> Envelope:
    """Decode the canonical signed part of an envelope (structure, limits and canonical
    packing of the header; no signature check)."""
    inner = codec.read_tuple(codec.unpack_untrusted(signed), "envelope", 6)
    version = codec.read_int(inner[0], "version", 0, 255)
    if version != limits.WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {version}", reason="version")
    msg_type = _msg_type(codec.read_int(inner[1], "type", 0, 255))
    origin_key = codec.read_bytes(inner[3], "origin", exact=KEY_LEN)
    incident = codec.read_str(inner[2], "incident", limits.MAX_INCIDENT_LEN)
    seq = codec.read_int(inner[4], "seq")
    head = _head(msg_type, incident, origin_key, seq)
    if not signed.startswith(head):
        raise DecodeError("envelope: header not canonically packed")
    return Envelope(msg_type=msg_type, incident=incident, origin_key=origin_key,
                    origin=node_id_of(origin_key), seq=seq, payload=inner[5],
                    signed_bytes=signed, signature=signature)


def _msg_type(raw: int) -> MsgType:
    msg_type = _MSG_TYPES.get(raw)
    if msg_type is None:
        raise DecodeError(f"unknown message type {raw}", reason="unknown_type")
    return msg_type


def _take(data: bytes, pos: int, n: int, name: str) -> int:
    """The end of ``n`` bytes of ``name`` at ``pos``; DecodeError if the frame ends first."""
    end = pos + n
    if end > len(data):
        raise DecodeError(f"frame: truncated in {name}", reason="truncated")
    return end


def _read_varint(data: bytes, pos: int, hi: int, name: str) -> tuple[int, int]:
    """An unsigned LEB128 value <= ``hi`` at ``pos``, and the position after it."""
    if pos < len(data) and data[pos] < 0x80 and data[pos] <= hi:   # (one byte: most)
        return data[pos], pos + 1
    value = shift = 0
    for i in range(pos, min(len(data), pos + _MAX_VARINT_BYTES)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > hi:
                raise DecodeError(f"{name}: {value} above {hi}")
            return value, i + 1
        shift += 7
    if pos + _MAX_VARINT_BYTES <= len(data):
        raise DecodeError(f"{name}: varint too long")
    raise DecodeError(f"frame: truncated in {name}", reason="truncated")


def _read_hop(data: bytes, pos: int, flags: int) -> tuple[Hop, int]:
    ttl = hops = metric = age_ms = 0
    if flags & FLAG_HOP:
        end = _take(data, pos, 2, "hop")
        ttl, hops = data[pos], data[pos + 1]
        if ttl > limits.MAX_TTL or hops > limits.MAX_HOPS:
            raise DecodeError(f"hop: ttl {ttl} or hops {hops} out of range")
        if end + 1 < len(data) and data[end] < 0x80 and data[end + 1] < 0x80:
            metric, age_ms, pos = data[end], data[end + 1], end + 2   # (one byte each)
        else:
            metric, pos = _read_varint(data, end, MAX_METRIC, "metric")
            age_ms, pos = _read_varint(data, pos, MAX_AGE_MS, "age_ms")
    addressed = bool(flags & FLAG_TO)
    if not flags & FLAG_ACKS:
        return Hop(ttl, hops, metric, age_ms, addressed,
                   key_elided=not flags & FLAG_FULL_KEY), pos
    acks = mac = b""
    if flags & FLAG_ACKS:
        count = data[_take(data, pos, 1, "acks") - 1]
        if not 1 <= count <= limits.MAX_ACK_IDS:
            raise DecodeError(f"hop.acks: {count} ids outside 1..{limits.MAX_ACK_IDS}")
        end = _take(data, pos + 1, count * limits.ACK_ID_LEN, "acks")
        acks = data[pos + 1:end]
        pos, end = end, _take(data, end, limits.LINK_MAC_LEN, "mac")
        mac, pos = data[pos:end], end
    return Hop(ttl, hops, metric, age_ms, addressed, acks, mac,
               key_elided=not flags & FLAG_FULL_KEY), pos


def parse_frame_untrusted(data: bytes) -> tuple[WireFrame, Hop]:
    """Parse one radio datagram (structure and every limit; a pure function of the bytes).
    Raises only DecodeError."""
    if len(data) > limits.MAX_DATAGRAM_BYTES:
        raise DecodeError(f"frame of {len(data)} bytes", reason="oversized")
    if len(data) < MIN_FRAME_BYTES:
        raise DecodeError("frame: too short", reason="truncated")
    flags = data[0]
    if flags & 0xF0 != FRAME_MARK:
        raise DecodeError(f"frame: unknown first byte {flags:#x}", reason="unknown_type")
    msg_type = _msg_type(data[1])
    tag = data[2:2 + INCIDENT_TAG_LEN]
    pos = 2 + INCIDENT_TAG_LEN
    key = origin = b""
    if flags & FLAG_FULL_KEY:
        end = _take(data, pos, KEY_LEN, "origin")
        key = data[pos:end]
        origin = node_id_of(key)
        short = origin[:ORIGIN_SHORT_LEN]
    else:
        end = pos + ORIGIN_SHORT_LEN
        short = data[pos:end]
    seq, pos = _read_varint(data, end, limits.MAX_SEQ, "seq")
    end = _take(data, pos, SIGNATURE_LEN, "signature")
    signature = data[pos:end]
    hop, pos = _read_hop(data, end, flags)
    payload_bytes = data[pos:]
    if not payload_bytes:
        raise DecodeError("frame: no payload", reason="truncated")
    payload = codec.unpack_untrusted(payload_bytes, max_depth=limits.MAX_NESTING_DEPTH - 1)
    return WireFrame(msg_type, tag, key, origin, short, seq, payload, payload_bytes,
                     signature), hop


#: Finds the key of an origin short id (None: unknown or ambiguous).
KeyLookup = Callable[[bytes], bytes | None]


def decode_frame_untrusted(data: bytes, incident: str,
                           keys: KeyLookup | None = None) -> tuple[Envelope, Hop]:
    """Parse one radio datagram and rebuild its envelope for ``incident``, the origin's
    key from the frame or (elided) from ``keys``. Raises only DecodeError (reason
    ``wrong_incident`` or ``unknown_origin`` for a frame that cannot be rebuilt)."""
    frame, hop = parse_frame_untrusted(data)
    if frame.tag != incident_tag(incident):
        raise DecodeError("frame: another incident's tag", reason="wrong_incident")
    key = frame.origin_key or (keys(frame.short_origin) if keys is not None else None)
    if not key:
        raise DecodeError("frame: origin key not held", reason="unknown_origin")
    return frame.resolve(incident, key), hop
