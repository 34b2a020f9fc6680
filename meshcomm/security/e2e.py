"""End-to-end encryption of unicast payloads to the destination node (sans-IO).

A SIP message travels inside a UNICAST envelope signed by its origin; relays, holders and
listeners must see only origin, destination and size. The origin seals the message to the
destination node's key, libsodium "sealed box" style but with an AEAD and associated data:

* the destination's X25519 key is derived from its Ed25519 node key
  (``crypto_sign_ed25519_pk_to_curve25519``; the destination converts its secret the same
  way), so there is nothing to configure or announce;
* the origin draws an ephemeral X25519 key per destination *session* from the injected key
  source (a ``random.Random``: ``random.SystemRandom`` at the runtime edge, a seeded one in
  the simulator and tests: never ``os.urandom`` inside a core); a session lasts at most
  :data:`SESSION_LIFETIME_S` or :data:`SESSION_MAX_MESSAGES` messages, then a new
  ephemeral key is drawn;
* ``key = BLAKE2b-256(X25519(eph, dst) | eph_pub | dst_pub, person=KEY_PERSON)``; every
  message has its own random 24-byte nonce (XChaCha20's nonce is large enough to draw at
  random under one key);
* XChaCha20-Poly1305 (IETF) over the message, the associated data binding the sender's
  Ed25519 key, the destination node id and the application kind
  (:func:`associated_data`). The destination keeps the keys of recent ephemeral keys
  (bounded, least recently used evicted), so within a session it does no X25519 either.

Sealed form (``SEAL_OVERHEAD_BYTES`` = 73 bytes more than the message)::

    version 1 | ephemeral public key 32 | nonce 24 | ciphertext n | tag 16

The envelope around it is still signed by the origin (the signature covers the
ciphertext); the associated data makes a box that another node re-signs under its own key
fail to open. The envelope's sequence number is not part of the associated data: one box
may span several fragments (each its own envelope and seq) and a held message is carried
again in new envelopes; replays of envelopes are the overlay's (seen-caches, seq).

Why a short session rather than a key per message or a ratchet: a fresh key per message
costs two X25519 operations at the origin and one at the destination per message (about
100 microseconds per MESSAGE transaction at each end here, +10 % of the software time of a
4-hop MESSAGE; ``tools/bench/e2e_hop.py``); within a session the cost is the AEAD alone.
Sealing to the destination's static key gives no forward secrecy whatever the sender does
(the destination's key opens every message), so a per-message ephemeral key buys nothing
a session does not, and a ratchet would add state that must survive restarts and
store-and-forward delays of days. Only the session secret's lifetime grows (to
:data:`SESSION_LIFETIME_S` in the sender's memory); it is never stored.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings
import nacl.exceptions

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.types import NODE_ID_LEN, PUBLIC_KEY_LEN
from meshcomm.wire import limits

E2E_VERSION: Final = 1
EPHEMERAL_KEY_BYTES: Final = 32
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
KEY_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
HEADER_BYTES: Final = 1 + EPHEMERAL_KEY_BYTES + NONCE_BYTES
#: What sealing adds to a message.
SEAL_OVERHEAD_BYTES: Final = HEADER_BYTES + TAG_BYTES
#: Largest sealed message: the largest unicast message (16 fragments of a unicast body;
#: a test checks it equals ``meshcomm.overlay.forwarding.MAX_MESSAGE_BYTES``).
MAX_SEALED_BYTES: Final = 16 * limits.MAX_UNICAST_BODY_BYTES
MAX_PLAINTEXT_BYTES: Final = MAX_SEALED_BYTES - SEAL_OVERHEAD_BYTES
MAX_KIND: Final = 255
#: Destination sessions kept by a sender (least recently used evicted beyond).
MAX_CACHED_PEERS: Final = 512
#: Keys of senders' ephemeral keys kept by a destination (least recently used evicted).
MAX_CACHED_EPHEMERALS: Final = 512
#: A sender draws a new ephemeral key for a destination after this long or this many
#: messages.
SESSION_LIFETIME_S: Final = 60.0
SESSION_MAX_MESSAGES: Final = 1000
AD_DOMAIN: Final = b"meshcomm-e2e-ad-v1\x00"
KEY_PERSON: Final = b"meshcomm-e2ek-v1"


def curve_public_key(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 node key. LocalProtocolError if unusable."""
    if len(ed25519_public) != PUBLIC_KEY_LEN:
        raise LocalProtocolError("an Ed25519 public key is 32 bytes")
    try:
        curve: bytes = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError) as exc:
        raise LocalProtocolError("key is not a usable Ed25519 point") from exc
    return curve


def curve_secret_key(identity: Identity) -> bytes:
    """The X25519 secret key of a node identity (never logged)."""
    _public, secret64 = nacl.bindings.crypto_sign_seed_keypair(identity.seed)
    secret: bytes = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret64)
    return secret


def associated_data(sender_key: bytes, dst: bytes, kind: int) -> bytes:
    """What the AEAD binds besides the message: sender key, destination id, kind."""
    if len(sender_key) != PUBLIC_KEY_LEN or len(dst) != NODE_ID_LEN or not 0 <= kind <= MAX_KIND:
        raise LocalProtocolError("bad sender key, destination id or kind")
    return AD_DOMAIN + sender_key + dst + bytes([kind])


def _session_key(shared: bytes, eph_public: bytes, dst_curve: bytes) -> bytes:
    return hashlib.blake2b(shared + eph_public + dst_curve, digest_size=KEY_BYTES,
                           person=KEY_PERSON).digest()


def random_secret(rng: random.Random) -> bytes:
    """32 bytes from the injected key source (``random.SystemRandom`` at the runtime)."""
    return rng.getrandbits(EPHEMERAL_KEY_BYTES * 8).to_bytes(EPHEMERAL_KEY_BYTES, "little")


@dataclass(slots=True)
class _Session:
    eph_public: bytes
    key: bytes = field(repr=False)
    started_s: float
    messages: int = 0


class Sealer:
    """Seals messages to destination nodes, one ephemeral key per destination session."""

    def __init__(self, sender_key: bytes, rng: random.Random) -> None:
        self.sender_key = sender_key
        self._rng = rng
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()

    def _session(self, dst_key: bytes, now: float) -> _Session:
        session = self._sessions.get(dst_key)
        if (session is not None and session.messages < SESSION_MAX_MESSAGES
                and session.started_s <= now < session.started_s + SESSION_LIFETIME_S):
            self._sessions.move_to_end(dst_key)
            return session
        dst_curve = curve_public_key(dst_key)
        eph_secret = random_secret(self._rng)
        eph_public: bytes = nacl.bindings.crypto_scalarmult_base(eph_secret)
        try:
            shared: bytes = nacl.bindings.crypto_scalarmult(eph_secret, dst_curve)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError) as exc:
            raise LocalProtocolError("destination key gives no shared secret") from exc
        session = _Session(eph_public, _session_key(shared, eph_public, dst_curve), now)
        self._sessions.pop(dst_key, None)
        while len(self._sessions) >= MAX_CACHED_PEERS:
            self._sessions.popitem(last=False)
        self._sessions[dst_key] = session
        return session

    def seal(self, message: bytes, dst_key: bytes, kind: int, now: float) -> bytes:
        """``message`` sealed to the node of Ed25519 key ``dst_key``. LocalProtocolError
        if it is too long or the key is unusable."""
        if len(message) > MAX_PLAINTEXT_BYTES:
            raise LocalProtocolError(f"message over {MAX_PLAINTEXT_BYTES} bytes")
        session = self._session(dst_key, now)
        session.messages += 1
        nonce = self._rng.getrandbits(NONCE_BYTES * 8).to_bytes(NONCE_BYTES, "little")
        sealed: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            message, associated_data(self.sender_key, node_id_of(dst_key), kind), nonce,
            session.key)
        return bytes([E2E_VERSION]) + session.eph_public + nonce + sealed


class Opener:
    """Opens messages sealed to this node."""

    def __init__(self, identity: Identity) -> None:
        self.node_id = identity.node_id
        self._secret = curve_secret_key(identity)
        self._public: bytes = nacl.bindings.crypto_scalarmult_base(self._secret)
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()

    def _key_for(self, eph_public: bytes) -> bytes:
        """The session key of a sender's ephemeral key (cached; raises nacl errors)."""
        key = self._keys.get(eph_public)
        if key is not None:
            self._keys.move_to_end(eph_public)
            return key
        shared: bytes = nacl.bindings.crypto_scalarmult(self._secret, eph_public)
        key = _session_key(shared, eph_public, self._public)
        while len(self._keys) >= MAX_CACHED_EPHEMERALS:
            self._keys.popitem(last=False)
        self._keys[eph_public] = key
        return key

    def open_untrusted(self, sealed: bytes, sender_key: bytes, kind: int) -> bytes:
        """The message inside ``sealed``, sent by the holder of Ed25519 ``sender_key``
        (the envelope's verified origin) as application ``kind``. Raises only DecodeError
        (reason ``truncated``, ``malformed``, ``oversized``, ``version``, or ``bad_signature``
        when it does not authenticate)."""
        size = len(sealed)
        if size > MAX_SEALED_BYTES:
            raise DecodeError("sealed message too large", reason="oversized")
        if size < SEAL_OVERHEAD_BYTES:
            raise DecodeError("sealed message truncated", reason="truncated")
        if sealed[0] != E2E_VERSION:
            raise DecodeError(f"unknown sealing version {sealed[0]}", reason="version")
        if len(sender_key) != PUBLIC_KEY_LEN or not 0 <= kind <= MAX_KIND:
            raise DecodeError("bad sender key or kind", reason="malformed")
        eph_public = sealed[1:1 + EPHEMERAL_KEY_BYTES]
        nonce = sealed[1 + EPHEMERAL_KEY_BYTES:HEADER_BYTES]
        try:
            key = self._key_for(eph_public)
            message: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[HEADER_BYTES:], AD_DOMAIN + sender_key + self.node_id + bytes([kind]),
                nonce, key)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError,
                nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
            raise DecodeError("sealed message does not open", reason="bad_signature") from exc
        return message
