"""Wire format of the store-and-forward custody protocol (mesh unicast kind STORE_FORWARD).

Every message is ``msgpack([SF_VERSION, type, blob, signature])``:

* ``OFFER`` (origin node -> relay) and ``DELIVER`` (holder -> destination node): ``blob``
  is a signed *parcel*, ``signature`` the origin node's Ed25519 signature over
  ``PARCEL_DOMAIN + blob``. A parcel is
  ``msgpack([SF_VERSION, incident, msg_id, from_aor, to_aor, created_wall_s, origin_key,
  sip])``; it travels unchanged from the origin through any relay to the destination, so
  every receiver checks that the origin node made it.
* ``ACCEPT`` (relay -> origin node): ``blob`` is the msg_id, ``signature`` empty; the mesh
  unicast envelope around it is signed by the relay and checked at every hop.
* ``RECEIPT`` (destination -> holders): ``blob`` is
  ``msgpack([SF_VERSION, incident, msg_id, to_aor, dest_key, delivered_wall_s])`` signed
  by the destination node (``RECEIPT_DOMAIN + blob``); holders accept it only if
  ``dest_key`` holds a usable binding of the message's To AoR.
* ``PROBE`` (holder -> destination node, while messages wait for it) and ``PROBE_ACK``
  (the answer): ``blob`` is an 8-byte nonce, ``signature`` empty; the signed unicast
  envelope says who sent it (see :mod:`meshcomm.node.sf_probe`).

Decoders end in ``_untrusted`` and raise only :class:`~meshcomm.errors.DecodeError`;
signatures are checked separately (:func:`parcel_signature_ok`, :func:`receipt_signature_ok`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypedDict

from meshcomm.errors import DecodeError
from meshcomm.location.binding import MAX_WALL_TIME_S
from meshcomm.node.sf_probe import PROBE_NONCE_BYTES
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES
from meshcomm.security.identity import Identity, node_id_of, verify_signature
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import PUBLIC_KEY_LEN, SIGNATURE_LEN, NodeId
from meshcomm.wire import codec, limits

SF_VERSION = 1
PARCEL_DOMAIN = b"meshcomm-sf-parcel-v1\x00"
RECEIPT_DOMAIN = b"meshcomm-sf-receipt-v1\x00"
#: A message id is chosen by the origin's gateway (random, unique per message).
MIN_MSG_ID_BYTES = 8
MAX_MSG_ID_BYTES = 32
#: Largest SIP request a parcel carries.
MAX_SIP_BYTES = 12 * 1024
#: Room in a parcel for everything but the SIP bytes (ids, AoRs, key, framing).
PARCEL_OVERHEAD_BYTES = 1024
MAX_PARCEL_BYTES = MAX_SIP_BYTES + PARCEL_OVERHEAD_BYTES
MAX_RECEIPT_BYTES = 512
#: Largest protocol message: one mesh unicast message.
MAX_SF_MESSAGE_BYTES = MAX_MESSAGE_BYTES
_MESSAGE_FIELDS = 4
_PARCEL_FIELDS = 8
_RECEIPT_FIELDS = 6


class SfMsgType(IntEnum):
    OFFER = 1      # custody offer: origin node -> relay (signed parcel)
    ACCEPT = 2     # custody accepted: relay -> origin node
    DELIVER = 3    # delivery attempt: holder -> destination node (signed parcel)
    RECEIPT = 4    # delivery receipt: destination node -> holders (signed)
    PROBE = 5      # reachability probe: holder -> destination node (nonce)
    PROBE_ACK = 6  # its answer: destination node -> holder (the nonce)


@dataclass(frozen=True, slots=True)
class SfMessage:
    """One decoded protocol message; ``blob``/``signature`` are still to be read."""

    type: SfMsgType
    blob: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Parcel:
    """A MESSAGE in custody, as signed by its origin node."""

    incident: str
    msg_id: bytes
    from_aor: str
    to_aor: str
    created_wall_s: float
    origin_key: bytes
    sip: bytes
    signed: bytes
    signature: bytes

    @property
    def origin(self) -> NodeId:
        return node_id_of(self.origin_key)


class ParcelIds(TypedDict):
    """The fields every store-and-forward journal payload names its message by (hex ids;
    never the SIP body)."""

    msg_id: str
    from_aor: str
    to_aor: str
    origin: str


def journal_ids(parcel: Parcel) -> ParcelIds:
    """``SfHeld(**journal_ids(parcel), state=...)``: the parcel's ids for the journal."""
    return ParcelIds(msg_id=parcel.msg_id.hex(), from_aor=parcel.from_aor,
                     to_aor=parcel.to_aor, origin=parcel.origin.hex())


@dataclass(frozen=True, slots=True)
class Receipt:
    """The destination node's signed statement that it delivered ``msg_id``."""

    incident: str
    msg_id: bytes
    to_aor: str
    dest_key: bytes
    delivered_wall_s: float
    signed: bytes
    signature: bytes

    @property
    def dest(self) -> NodeId:
        return node_id_of(self.dest_key)


# ---------------------------------------------------------------------- building
def encode_message(msg_type: SfMsgType, blob: bytes, signature: bytes = b"") -> bytes:
    return codec.pack([SF_VERSION, int(msg_type), blob, signature])


def make_parcel(identity: Identity, *, incident: str, msg_id: bytes, from_aor: str,
                to_aor: str, created_wall_s: float, sip: bytes) -> Parcel:
    """Sign a parcel as its origin node (arguments are checked by the caller)."""
    signed = codec.pack([SF_VERSION, incident, msg_id, from_aor, to_aor,
                         float(created_wall_s), identity.public_key, sip])
    return Parcel(incident, msg_id, from_aor, to_aor, float(created_wall_s),
                  bytes(identity.public_key), sip, signed,
                  identity.sign(PARCEL_DOMAIN + signed))


def make_receipt(identity: Identity, *, incident: str, msg_id: bytes, to_aor: str,
                 delivered_wall_s: float) -> Receipt:
    signed = codec.pack([SF_VERSION, incident, msg_id, to_aor, identity.public_key,
                         float(delivered_wall_s)])
    return Receipt(incident, msg_id, to_aor, bytes(identity.public_key),
                   float(delivered_wall_s), signed, identity.sign(RECEIPT_DOMAIN + signed))


def parcel_signature_ok(parcel: Parcel, verifier: SignatureVerifier | None = None) -> bool:
    message = PARCEL_DOMAIN + parcel.signed
    if verifier is None:
        return verify_signature(parcel.origin_key, message, parcel.signature)
    return verifier.verify(parcel.origin_key, message, parcel.signature)


def receipt_signature_ok(receipt: Receipt, verifier: SignatureVerifier) -> bool:
    return verifier.verify(receipt.dest_key, RECEIPT_DOMAIN + receipt.signed,
                           receipt.signature)


# ---------------------------------------------------------------------- decoding
def check_aor(value: object, name: str) -> str:
    """A sip:/sips: AoR within MAX_AOR_LEN (DecodeError otherwise)."""
    aor = codec.read_str(value, name, limits.MAX_AOR_LEN)
    if not aor.startswith(("sip:", "sips:")) or "@" not in aor:
        raise DecodeError(f"{name}: {aor[:40]!r} is not a sip: address", reason="bad_aor")
    return aor


def check_msg_id(value: object, name: str) -> bytes:
    raw = codec.read_bytes(value, name, max_len=MAX_MSG_ID_BYTES)
    if len(raw) < MIN_MSG_ID_BYTES:
        raise DecodeError(f"{name}: shorter than {MIN_MSG_ID_BYTES} bytes")
    return raw


def _version(value: object, name: str) -> None:
    if codec.read_int(value, name, 0, 255) != SF_VERSION:
        raise DecodeError(f"{name}: unsupported version", reason="bad_version")


def decode_message_untrusted(body: bytes) -> SfMessage:
    """The outer protocol message (a mesh unicast body of kind STORE_FORWARD)."""
    value = codec.unpack_untrusted(body, max_bytes=MAX_SF_MESSAGE_BYTES, check_depth=False)
    fields = codec.read_tuple(value, "sf", _MESSAGE_FIELDS)
    _version(fields[0], "sf.version")
    raw_type = codec.read_int(fields[1], "sf.type", 0, 255)
    try:
        msg_type = SfMsgType(raw_type)
    except ValueError:
        raise DecodeError(f"sf.type: unknown type {raw_type}", reason="unknown_type") from None
    blob = codec.read_bytes(fields[2], "sf.blob", max_len=MAX_PARCEL_BYTES)
    if msg_type is SfMsgType.ACCEPT:
        check_msg_id(blob, "sf.accept.msg_id")
        codec.read_bytes(fields[3], "sf.signature", exact=0)
    elif msg_type in (SfMsgType.PROBE, SfMsgType.PROBE_ACK):
        codec.read_bytes(blob, "sf.probe.nonce", exact=PROBE_NONCE_BYTES)
        codec.read_bytes(fields[3], "sf.signature", exact=0)
    else:
        codec.read_bytes(fields[3], "sf.signature", exact=SIGNATURE_LEN)
    return SfMessage(msg_type, blob, fields[3])


def _signed_fields(signed: bytes, signature: bytes, name: str, max_bytes: int,
                   n_fields: int) -> Sequence[Any]:
    """The versioned field list of a signed blob, and a signature of the right size."""
    codec.read_bytes(signature, f"{name}.signature", exact=SIGNATURE_LEN)
    value = codec.unpack_untrusted(signed, max_bytes=max_bytes, check_depth=False)
    fields = codec.read_tuple(value, name, n_fields)
    _version(fields[0], f"{name}.version")
    return fields


def decode_parcel_untrusted(signed: bytes, signature: bytes) -> Parcel:
    """A parcel's signed bytes (shape and limits; the signature is checked separately)."""
    f = _signed_fields(signed, signature, "parcel", MAX_PARCEL_BYTES, _PARCEL_FIELDS)
    return Parcel(
        incident=codec.read_str(f[1], "parcel.incident", limits.MAX_INCIDENT_LEN),
        msg_id=check_msg_id(f[2], "parcel.msg_id"),
        from_aor=check_aor(f[3], "parcel.from"),
        to_aor=check_aor(f[4], "parcel.to"),
        created_wall_s=codec.read_float(f[5], "parcel.created", 0.0, MAX_WALL_TIME_S),
        origin_key=codec.read_bytes(f[6], "parcel.origin_key", exact=PUBLIC_KEY_LEN),
        sip=codec.read_bytes(f[7], "parcel.sip", max_len=MAX_SIP_BYTES),
        signed=signed, signature=signature)


def decode_receipt_untrusted(signed: bytes, signature: bytes) -> Receipt:
    f = _signed_fields(signed, signature, "receipt", MAX_RECEIPT_BYTES, _RECEIPT_FIELDS)
    return Receipt(
        incident=codec.read_str(f[1], "receipt.incident", limits.MAX_INCIDENT_LEN),
        msg_id=check_msg_id(f[2], "receipt.msg_id"),
        to_aor=check_aor(f[3], "receipt.to"),
        dest_key=codec.read_bytes(f[4], "receipt.dest_key", exact=PUBLIC_KEY_LEN),
        delivered_wall_s=codec.read_float(f[5], "receipt.delivered", 0.0, MAX_WALL_TIME_S),
        signed=signed, signature=signature)
