"""Per-call media keys agreed in the signed signalling (sans-IO).

Each gateway of a call picks a random media nonce and an ephemeral X25519 key pair for
the call and carries the nonce and the ephemeral public key in the SDP it sends over the
mesh (``a=x-meshcomm-nonce:<hex>``, ``a=x-meshcomm-eph:<hex>``); the SIP message is signed
at its origin node (and sealed to the far node, meshcomm.security.e2e), so both are bound
to that node's key. Both gateways then compute

* ``static = X25519(own Ed25519 key as Curve25519, peer Ed25519 key as Curve25519)``;
* ``ephemeral = X25519(own ephemeral secret, peer ephemeral public key)``;
* one key per direction: ``BLAKE2b(key=static | ephemeral, person=KEY_PERSON)`` over the
  Call-ID and (sender public key, nonce, ephemeral key, receiver public key, nonce,
  ephemeral key).

The ephemeral secret is dropped as soon as the call keys are computed and the call keys
when the call ends, so a node key captured later does not open a recorded call (forward
secrecy per call); the static part keeps the keys bound to the two nodes.

Two directional keys (not one shared one) mean a packet reflected back to its sender never
verifies. A third party knows the Call-ID, both nonces and both public keys but not
``shared``, so it cannot compute either key.

Stream ids (the 8-byte demultiplexing label of a MEDIA frame) are derived from the Call-ID,
the sender's nonce and the m-line index, so both ends know them without extra signalling.
Randomness comes from an injected ``random.Random`` (the runtime passes a
``random.SystemRandom``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions

from meshcomm.errors import DecodeError, LocalProtocolError, TrustError
from meshcomm.overlay.media import STREAM_ID_LEN
from meshcomm.security.identity import Identity
from meshcomm.types import PUBLIC_KEY_LEN

NONCE_SIZE_BYTES = 16
KEY_SIZE_BYTES = 32
EPHEMERAL_KEY_BYTES = 32
#: Media stream ids are the overlay's MEDIA frame stream field.
STREAM_ID_SIZE_BYTES = STREAM_ID_LEN
#: Call-IDs longer than this are refused (RFC 3261 sets no bound; our SIP core does).
MAX_CALL_ID_BYTES = 1024
#: m-line indexes are carried in one byte of the stream-id derivation.
MAX_STREAM_INDEX = 255
KEY_PERSON = b"meshcomm-mkey-v2"
STREAM_PERSON = b"meshcomm-strm-v1"


def new_ephemeral_secret(rng: random.Random) -> bytes:
    """A fresh X25519 secret for one call (use a ``random.SystemRandom`` outside tests)."""
    return rng.getrandbits(EPHEMERAL_KEY_BYTES * 8).to_bytes(EPHEMERAL_KEY_BYTES, "little")


def ephemeral_public(secret: bytes) -> bytes:
    public: bytes = nacl.bindings.crypto_scalarmult_base(secret)
    return public


def _hex_untrusted(text: str, size: int, what: str, reason: str) -> bytes:
    """``size`` bytes written as hex in an SDP attribute value. Raises DecodeError."""
    value = text.strip()
    if len(value) != size * 2:
        raise DecodeError(f"{what} has the wrong length", reason=reason)
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise DecodeError(f"{what} is not hex", reason=reason) from exc


def parse_ephemeral_untrusted(text: str) -> bytes:
    """The key of an ``a=x-meshcomm-eph`` attribute value (hex). Raises DecodeError."""
    return _hex_untrusted(text, EPHEMERAL_KEY_BYTES, "ephemeral media key", "bad_media_key")


def new_media_nonce(rng: random.Random) -> bytes:
    """A fresh media nonce (use a ``random.SystemRandom`` outside tests)."""
    return rng.getrandbits(NONCE_SIZE_BYTES * 8).to_bytes(NONCE_SIZE_BYTES, "big")


def parse_nonce_untrusted(text: str) -> bytes:
    """The nonce of an ``a=x-meshcomm-nonce`` attribute value (hex). Raises DecodeError."""
    return _hex_untrusted(text, NONCE_SIZE_BYTES, "media nonce", "bad_media_nonce")


def _call_id_bytes(call_id: str) -> bytes:
    raw = call_id.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_CALL_ID_BYTES:
        raise LocalProtocolError("Call-ID too long for a media key")
    return len(raw).to_bytes(2, "big") + raw


def stream_id(call_id: str, sender_nonce: bytes, index: int) -> bytes:
    """The 8-byte stream id of m-line ``index`` sent by the holder of ``sender_nonce``."""
    if not 0 <= index <= MAX_STREAM_INDEX or len(sender_nonce) != NONCE_SIZE_BYTES:
        raise LocalProtocolError("bad stream index or nonce")
    digest = hashlib.blake2b(_call_id_bytes(call_id) + sender_nonce + bytes([index]),
                             digest_size=STREAM_ID_SIZE_BYTES, person=STREAM_PERSON)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class CallKeys:
    """The two directional keys of one call leg (never logged)."""

    send_key: bytes = field(repr=False)
    receive_key: bytes = field(repr=False)


class KeyAgreement:
    """X25519 between this node's Ed25519 key and a peer's, converted to Curve25519."""

    def __init__(self, identity: Identity) -> None:
        public, secret64 = nacl.bindings.crypto_sign_seed_keypair(identity.seed)
        self.public_key: bytes = public
        self._curve_secret: bytes = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret64)

    def shared_secret(self, peer_public_key: bytes) -> bytes:
        """Raw X25519 output with the peer. Raises TrustError for an unusable peer key."""
        if len(peer_public_key) != PUBLIC_KEY_LEN:
            raise TrustError("peer key has the wrong size", reason="bad_media_key")
        try:
            curve_public = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_public_key)
            shared: bytes = nacl.bindings.crypto_scalarmult(self._curve_secret, curve_public)
        except nacl.exceptions.CryptoError as exc:
            raise TrustError("peer key is not usable for X25519",
                             reason="bad_media_key") from exc
        return shared

    def call_keys(self, peer_public_key: bytes, call_id: str, local_nonce: bytes,
                  peer_nonce: bytes, *, local_eph_secret: bytes,
                  peer_eph: bytes) -> CallKeys:
        """Both directional keys of the call ``call_id`` with the peer node. Raises
        TrustError for an unusable peer key or ephemeral key (a small-order point)."""
        if len(local_nonce) != NONCE_SIZE_BYTES or len(peer_nonce) != NONCE_SIZE_BYTES:
            raise LocalProtocolError("media nonces must be NONCE_SIZE_BYTES long")
        if len(local_eph_secret) != EPHEMERAL_KEY_BYTES:
            raise LocalProtocolError("ephemeral secret must be 32 bytes")
        if len(peer_eph) != EPHEMERAL_KEY_BYTES:
            raise TrustError("peer ephemeral key has the wrong size", reason="bad_media_key")
        try:
            ephemeral: bytes = nacl.bindings.crypto_scalarmult(local_eph_secret, peer_eph)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError) as exc:
            raise TrustError("peer ephemeral key is not usable",
                             reason="bad_media_key") from exc
        shared = self.shared_secret(peer_public_key) + ephemeral
        local_eph = ephemeral_public(local_eph_secret)
        cid = _call_id_bytes(call_id)
        send = _direction_key(shared, cid, self.public_key + local_nonce + local_eph,
                              peer_public_key + peer_nonce + peer_eph)
        receive = _direction_key(shared, cid, peer_public_key + peer_nonce + peer_eph,
                                 self.public_key + local_nonce + local_eph)
        return CallKeys(send_key=send, receive_key=receive)


def _direction_key(shared: bytes, call_id: bytes, sender: bytes, receiver: bytes) -> bytes:
    """``shared`` is static | ephemeral (64 bytes, BLAKE2b's largest key)."""
    digest = hashlib.blake2b(call_id + sender + receiver, key=shared,
                             digest_size=KEY_SIZE_BYTES, person=KEY_PERSON)
    return digest.digest()
