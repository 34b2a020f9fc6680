"""Signed envelopes, the one shape of everything on the mesh.

A frame on the radio is ``msgpack([signed_bytes, signature, hop])`` where

* ``signed_bytes = msgpack([version, type, incident, origin_key, seq, payload])`` is signed
  by the origin with Ed25519 (over a domain prefix plus ``signed_bytes``) and never changes
  in transit, and
* ``hop = [ttl, hops, metric, age_ms, to]`` or ``[ttl, hops, metric, age_ms, to, acks,
  mac]`` holds the hop-mutable fields, outside the signature (``to`` is the 4-byte short
  id of the intended next hop of a routed unicast, empty otherwise). ``acks`` are
  per-hop acknowledgements piggybacked on a frame sent to one neighbour: 1..MAX_ACK_IDS
  ack ids (ACK_ID_LEN bytes each, concatenated) of frames that neighbour sent us, and
  ``mac`` their LINK_MAC_LEN-byte MAC under the key of this link (meshcomm.overlay.acks).

A standalone per-hop acknowledgement is no envelope but a *link ack frame*:
``LINK_ACK_MARKER || ids || mac`` (raw bytes, 1 + 6n + 8: 15 bytes for one frame).
``LINK_ACK_MARKER`` is 0xC1, the one byte msgpack never uses, so it cannot be mistaken for
an envelope frame or a media frame (both msgpack arrays).

Decoding checks structure and limits only; the signature is checked by the caller through
a :class:`~meshcomm.security.verify.SignatureVerifier` so that it is done once per envelope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import SIGNATURE_LEN, NodeId
from meshcomm.wire import codec, limits

SIGNATURE_DOMAIN = b"meshcomm-envelope-v1\x00"
MAX_METRIC = 1 << 20
MAX_AGE_MS = limits.MAX_LIFETIME_S * 1000
SHORT_ID_LEN = 4
#: First byte of a link ack frame (msgpack's "never used" code).
LINK_ACK_MARKER = b"\xc1"


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


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope. ``signed_bytes`` + ``signature`` are exactly what came in."""

    msg_type: MsgType
    incident: str
    origin_key: bytes
    origin: NodeId
    seq: int
    payload: Any
    signed_bytes: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        """Identity of these exact envelope bytes, for duplicate suppression (16 bytes)."""
        return hashlib.sha256(self.signature + self.signed_bytes).digest()[:16]

    @property
    def ack_id(self) -> bytes:
        """The short name of this envelope in per-hop acknowledgements (ACK_ID_LEN bytes
        of its digest)."""
        return self.digest[:limits.ACK_ID_LEN]

    def verify(self, verifier: SignatureVerifier) -> bool:
        return verifier.verify(self.origin_key, SIGNATURE_DOMAIN + self.signed_bytes,
                               self.signature)


@dataclass(frozen=True, slots=True)
class Hop:
    """Hop-mutable fields: remaining TTL, hops so far, path metric (1/16 units), age of
    the carried record, the short id of the intended next hop (unicast only), and
    piggybacked acknowledgements with their link MAC (both empty, or both set)."""

    ttl: int = 0
    hops: int = 0
    metric: int = 0
    age_ms: int = 0
    to: bytes = b""
    acks: bytes = b""
    mac: bytes = b""


NO_HOP = Hop()


def seal(identity: Identity, msg_type: MsgType, incident: str, seq: int,
         payload: object) -> Envelope:
    """Build and sign an envelope originated by ``identity``."""
    signed = codec.pack([limits.WIRE_VERSION, int(msg_type), incident, identity.public_key,
                         seq, payload])
    return Envelope(msg_type, incident, identity.public_key, identity.node_id, seq, payload,
                    signed, identity.sign(SIGNATURE_DOMAIN + signed))


def encode_frame(envelope: Envelope, hop: Hop = NO_HOP) -> bytes:
    fields: list[object] = [hop.ttl, hop.hops, hop.metric, hop.age_ms, hop.to]
    if hop.acks:
        fields += [hop.acks, hop.mac]
    return codec.pack([envelope.signed_bytes, envelope.signature, fields])


def split_ack_ids(data: bytes) -> list[bytes]:
    """The ack ids in concatenated ``data`` (its length a checked multiple of ACK_ID_LEN)."""
    n = limits.ACK_ID_LEN
    return [data[i:i + n] for i in range(0, len(data), n)]


def _read_ack_ids(value: object) -> bytes:
    ids = codec.read_bytes(value, "hop.acks", max_len=limits.MAX_ACK_IDS * limits.ACK_ID_LEN)
    if not ids or len(ids) % limits.ACK_ID_LEN:
        raise DecodeError("hop.acks: not a whole number of ack ids")
    return ids


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
    """Decode the signed part of an envelope (structure and limits; no signature check)."""
    inner = codec.read_tuple(codec.unpack_untrusted(signed), "envelope", 6)
    version = codec.read_int(inner[0], "version", 0, 255)
    if version != limits.WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {version}", reason="version")
    raw_type = codec.read_int(inner[1], "type", 0, 255)
    try:
        msg_type = MsgType(raw_type)
    except ValueError as exc:
        raise DecodeError(f"unknown message type {raw_type}", reason="unknown_type") from exc
    origin_key = codec.read_bytes(inner[3], "origin", exact=32)
    return Envelope(
        msg_type=msg_type,
        incident=codec.read_str(inner[2], "incident", limits.MAX_INCIDENT_LEN),
        origin_key=origin_key,
        origin=node_id_of(origin_key),
        seq=codec.read_int(inner[4], "seq"),
        payload=inner[5],
        signed_bytes=signed,
        signature=signature,
    )


def decode_frame_untrusted(data: bytes) -> tuple[Envelope, Hop]:
    """Decode one radio datagram into its envelope and hop fields."""
    # The outer shape is checked completely here (2 byte strings and 5 scalars), so the
    # generic depth walk is only needed for the signed part, which carries the payload.
    outer = codec.read_tuple(codec.unpack_untrusted(data, check_depth=False), "frame", 3)
    signed = codec.read_bytes(outer[0], "signed", max_len=limits.MAX_DATAGRAM_BYTES)
    signature = codec.read_bytes(outer[1], "signature", exact=SIGNATURE_LEN)
    raw_hop = codec.read_list(outer[2], "hop", 7)
    if len(raw_hop) not in (5, 7):
        raise DecodeError("hop: expected 5 or 7 fields")
    acks = mac = b""
    if len(raw_hop) == 7:
        acks = _read_ack_ids(raw_hop[5])
        mac = codec.read_bytes(raw_hop[6], "hop.mac", exact=limits.LINK_MAC_LEN)
    hop = Hop(
        ttl=codec.read_int(raw_hop[0], "ttl", 0, limits.MAX_TTL),
        hops=codec.read_int(raw_hop[1], "hops", 0, limits.MAX_HOPS),
        metric=codec.read_int(raw_hop[2], "metric", 0, MAX_METRIC),
        age_ms=codec.read_int(raw_hop[3], "age_ms", 0, MAX_AGE_MS),
        to=codec.read_bytes(raw_hop[4], "to", max_len=SHORT_ID_LEN),
        acks=acks, mac=mac,
    )
    return decode_signed_untrusted(signed, signature), hop
