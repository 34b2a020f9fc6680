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
* ``key = BLAKE2b-256(X25519(eph, dst) | eph_pub | dst_pub, person=KEY_PERSON)``; the
  message's nonce is its number in the session (a 2-byte counter, expanded to XChaCha20's
  24 bytes with zeros): the key is new with every session, so (key, nonce) never repeats,
  also across a sender restart (a restarted sender has no sessions and draws new ephemeral
  keys; the key source must be a CSPRNG at the runtime, as it is);
* XChaCha20-Poly1305 (IETF) over the message, the associated data binding the sender's
  Ed25519 key, the destination node id, the application kind (:func:`associated_data`)
  and the form byte (FULL, SHORT). The destination keeps the keys of recent sessions
  (bounded, least recently used evicted), so within a session it does no X25519 either.

Sealed forms (the first byte, :class:`SealForm`; issue 13: no field the receiver holds)::

    FULL   2 | ephemeral public key 32 | counter 2 | ciphertext n | tag 16   (51 bytes more)
    SHORT  3 | session id 4 | counter 2 | ciphertext n | tag 16             (23 bytes more)
    LEGACY 1 | ephemeral public key 32 | nonce 24 | ciphertext n | tag 16   (opened, not made)

The session id is ``BLAKE2b-32(eph_pub)``; the destination keeps session keys by (sender
key, session id), least recently used evicted. A sender uses the SHORT form only once the
session is *confirmed*: it sent the session's key in a FULL message and has since opened a
message from that destination whose form byte carries :data:`HELD_FLAG` (0x80: "I hold
the session of the last message of yours I opened"; :meth:`Sealer.confirm`). A
destination that cannot open a SHORT message (it restarted, evicted the session, or the
FULL one has not arrived yet) answers with a small unsealed signal (``NACK 4 | session
id 4 | counter 2``, inside the destination's signed envelope; meshcomm.node.e2e_sip),
and the sender sends that message again in the FULL form (:meth:`Sealer.unconfirm`) from
the copy it keeps of its recent SHORT messages: nothing is lost. Store-and-forward
parcels, opened days later, are always FULL.

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
a session does not (and a static-static key, which would need no session state at the
destination, would let a stolen sender key read what that sender sent: not done), and a
ratchet would add state that must survive restarts and store-and-forward delays of days.
Only the session secret's lifetime grows (to :data:`SESSION_LIFETIME_S` in the sender's
memory); it is never stored.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import nacl.bindings
import nacl.exceptions

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.types import NODE_ID_LEN, PUBLIC_KEY_LEN
from meshcomm.wire import limits


class SealForm(IntEnum):
    LEGACY = 1      # eph 32 | random nonce 24 (before issue 13; opened, never made)
    FULL = 2        # eph 32 | counter 2
    SHORT = 3       # session id 4 | counter 2
    NACK = 4        # unsealed signal: session id 4 | counter 2 (meshcomm.node.e2e_sip)


#: The first byte of a legacy sealed message (kept for parcels held before issue 13).
E2E_VERSION: Final = SealForm.LEGACY
#: Flag on a FULL or SHORT form byte: the sender holds the session of the destination's
#: that it last opened a message of (the destination may then send SHORT).
HELD_FLAG: Final = 0x80
#: First bytes of sealed messages (SIP text never starts with any of them).
SEALED_FORMS: Final = frozenset({SealForm.LEGACY, SealForm.FULL, SealForm.SHORT,
                                 SealForm.FULL | HELD_FLAG, SealForm.SHORT | HELD_FLAG})
EPHEMERAL_KEY_BYTES: Final = 32
SESSION_ID_BYTES: Final = 4
COUNTER_BYTES: Final = 2
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
KEY_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
LEGACY_HEADER_BYTES: Final = 1 + EPHEMERAL_KEY_BYTES + NONCE_BYTES
FULL_HEADER_BYTES: Final = 1 + EPHEMERAL_KEY_BYTES + COUNTER_BYTES
SHORT_HEADER_BYTES: Final = 1 + SESSION_ID_BYTES + COUNTER_BYTES
#: What sealing adds to a message (at most: the FULL form; SHORT adds
#: :data:`SHORT_OVERHEAD_BYTES`).
SEAL_OVERHEAD_BYTES: Final = FULL_HEADER_BYTES + TAG_BYTES
SHORT_OVERHEAD_BYTES: Final = SHORT_HEADER_BYTES + TAG_BYTES
#: The unsealed signal a destination sends for a SHORT message it could not open.
NACK_BYTES: Final = SHORT_HEADER_BYTES
#: Largest sealed message: the largest unicast message (16 fragments of a unicast body;
#: a test checks it equals ``meshcomm.overlay.forwarding.MAX_MESSAGE_BYTES``).
MAX_SEALED_BYTES: Final = 16 * limits.MAX_UNICAST_BODY_BYTES
MAX_PLAINTEXT_BYTES: Final = MAX_SEALED_BYTES - SEAL_OVERHEAD_BYTES
MAX_KIND: Final = 255
#: Destination sessions kept by a sender (least recently used evicted beyond).
MAX_CACHED_PEERS: Final = 512
#: Session keys kept by a destination (least recently used evicted).
MAX_CACHED_EPHEMERALS: Final = 512
#: A sender draws a new ephemeral key for a destination after this long or this many
#: messages (the counter must not wrap: 2 bytes).
SESSION_LIFETIME_S: Final = 60.0
SESSION_MAX_MESSAGES: Final = 1000
assert SESSION_MAX_MESSAGES < 1 << (8 * COUNTER_BYTES)
AD_DOMAIN: Final = b"meshcomm-e2e-ad-v1\x00"
KEY_PERSON: Final = b"meshcomm-e2ek-v1"
SESSION_ID_PERSON: Final = b"meshcomm-e2esid1"


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


def session_id_of(eph_public: bytes) -> bytes:
    """The short name of a session: BLAKE2b-32 of its ephemeral public key."""
    return hashlib.blake2b(eph_public, digest_size=SESSION_ID_BYTES,
                           person=SESSION_ID_PERSON).digest()


def counter_nonce(counter: int) -> bytes:
    """The 24-byte nonce of message ``counter`` of a session (its key is the session's)."""
    return counter.to_bytes(NONCE_BYTES, "big")


@dataclass(slots=True)
class _Session:
    eph_public: bytes
    session_id: bytes
    key: bytes = field(repr=False)
    started_s: float
    messages: int = 0
    full_sent: bool = False     # a FULL message of the session went out
    confirmed: bool = False     # ... and a message from the destination opened since


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed message and its name in the session (for a NACK's re-send)."""

    data: bytes
    session_id: bytes
    counter: int
    form: SealForm


@dataclass(frozen=True, slots=True)
class Opened:
    """An opened message: its form (LEGACY carries plain SIP), session and counter;
    ``held``: its sender holds a session of ours (:data:`HELD_FLAG`)."""

    message: bytes
    form: SealForm
    session_id: bytes
    counter: int
    held: bool = False


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
        session = _Session(eph_public, session_id_of(eph_public),
                           _session_key(shared, eph_public, dst_curve), now)
        self._sessions.pop(dst_key, None)
        while len(self._sessions) >= MAX_CACHED_PEERS:
            self._sessions.popitem(last=False)
        self._sessions[dst_key] = session
        return session

    def seal(self, message: bytes, dst_key: bytes, kind: int, now: float) -> bytes:
        """``message`` sealed to the node of Ed25519 key ``dst_key`` in the FULL form
        (opens without session state: parcels). LocalProtocolError if it is too long or
        the key is unusable."""
        return self.seal_session(message, dst_key, kind, now, short_ok=False).data

    def seal_session(self, message: bytes, dst_key: bytes, kind: int, now: float, *,
                     short_ok: bool, held: bool = False) -> Sealed:
        """``message`` sealed to ``dst_key``: SHORT when ``short_ok`` and the session is
        confirmed, else FULL; ``held`` sets :data:`HELD_FLAG` (we hold a session of
        theirs: :meth:`Opener.holds_from`)."""
        if len(message) > MAX_PLAINTEXT_BYTES:
            raise LocalProtocolError(f"message over {MAX_PLAINTEXT_BYTES} bytes")
        session = self._session(dst_key, now)
        counter = session.messages
        session.messages += 1
        form = SealForm.SHORT if short_ok and session.confirmed else SealForm.FULL
        first = bytes([form | (HELD_FLAG if held else 0)])     # authenticated too
        sealed: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            message, associated_data(self.sender_key, node_id_of(dst_key), kind) + first,
            counter_nonce(counter), session.key)
        name = counter.to_bytes(COUNTER_BYTES, "big")
        if form is SealForm.SHORT:
            return Sealed(first + session.session_id + name + sealed, session.session_id,
                          counter, form)
        session.full_sent = True
        return Sealed(first + session.eph_public + name + sealed, session.session_id,
                      counter, form)

    def confirm(self, dst_key: bytes) -> None:
        """A message from ``dst_key``'s node with :data:`HELD_FLAG` opened here: a session
        whose key went out FULL is taken as held there (a NACK corrects the rare wrong
        guess: the flag named the previous session, rotated meanwhile)."""
        session = self._sessions.get(dst_key)
        if session is not None and session.full_sent:
            session.confirmed = True

    def unconfirm(self, dst_key: bytes, session_id: bytes) -> bool:
        """``dst_key``'s node could not open a SHORT message of ``session_id``: FULL again
        until confirmed. False if that is not the current session."""
        session = self._sessions.get(dst_key)
        if session is None or session.session_id != session_id:
            return False
        session.confirmed = session.full_sent = False
        return True


class Opener:
    """Opens messages sealed to this node."""

    def __init__(self, identity: Identity) -> None:
        self.node_id = identity.node_id
        self._secret = curve_secret_key(identity)
        self._public: bytes = nacl.bindings.crypto_scalarmult_base(self._secret)
        #: Session keys by ephemeral key (LEGACY) or sender key + session id.
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        #: The session id of the latest FULL or SHORT message opened, by sender key.
        self._latest: OrderedDict[bytes, bytes] = OrderedDict()

    def holds_from(self, sender_key: bytes) -> bool:
        """Whether this node still holds the session of ``sender_key``'s latest message
        it opened (so that node may send SHORT)."""
        session_id = self._latest.get(sender_key)
        return session_id is not None and sender_key + session_id in self._keys

    def _opened_from(self, sender_key: bytes, session_id: bytes) -> None:
        self._latest.pop(sender_key, None)
        while len(self._latest) >= MAX_CACHED_EPHEMERALS:
            self._latest.popitem(last=False)
        self._latest[sender_key] = session_id

    def _remember(self, name: bytes, key: bytes) -> None:
        self._keys.pop(name, None)
        while len(self._keys) >= MAX_CACHED_EPHEMERALS:
            self._keys.popitem(last=False)
        self._keys[name] = key

    def _key_for(self, eph_public: bytes) -> bytes:
        """The session key of a sender's ephemeral key (raises nacl errors)."""
        key = self._keys.get(eph_public)
        if key is not None:
            self._keys.move_to_end(eph_public)
            return key
        shared: bytes = nacl.bindings.crypto_scalarmult(self._secret, eph_public)
        return _session_key(shared, eph_public, self._public)

    def open_untrusted(self, sealed: bytes, sender_key: bytes, kind: int) -> bytes:
        """The message inside ``sealed`` (any form), sent by the holder of Ed25519
        ``sender_key`` (the envelope's verified origin) as application ``kind``."""
        return self.open_frame_untrusted(sealed, sender_key, kind).message

    def open_frame_untrusted(self, sealed: bytes, sender_key: bytes, kind: int) -> Opened:
        """``sealed`` opened. Raises only DecodeError (reason ``truncated``, ``malformed``,
        ``oversized``, ``version``, ``unknown_session`` for a SHORT message of a session
        not held here, or ``bad_signature`` when it does not authenticate)."""
        size = len(sealed)
        if size > MAX_SEALED_BYTES:
            raise DecodeError("sealed message too large", reason="oversized")
        if size < 1 or sealed[0] not in SEALED_FORMS:
            raise DecodeError(f"unknown sealing form {sealed[:1].hex()}", reason="version")
        form = SealForm(sealed[0] & ~HELD_FLAG)
        header = {SealForm.LEGACY: LEGACY_HEADER_BYTES, SealForm.FULL: FULL_HEADER_BYTES,
                  SealForm.SHORT: SHORT_HEADER_BYTES}[form]
        if size < header + TAG_BYTES:
            raise DecodeError("sealed message truncated", reason="truncated")
        if len(sender_key) != PUBLIC_KEY_LEN or not 0 <= kind <= MAX_KIND:
            raise DecodeError("bad sender key or kind", reason="malformed")
        try:
            opened = self._open(form, sealed, header, sender_key, kind)
            if form is not SealForm.LEGACY:
                self._opened_from(sender_key, opened.session_id)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError,
                nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
            raise DecodeError("sealed message does not open", reason="bad_signature") from exc
        if sealed[0] & HELD_FLAG:
            return Opened(opened.message, form, opened.session_id, opened.counter, True)
        return opened

    def _open(self, form: SealForm, sealed: bytes, header: int, sender_key: bytes,
              kind: int) -> Opened:
        """The AEAD step (raises nacl errors, or DecodeError for an unknown session)."""
        ad = AD_DOMAIN + sender_key + self.node_id + bytes([kind])
        if form is not SealForm.LEGACY:
            ad += sealed[:1]                # the form byte, HELD_FLAG included
        if form is SealForm.SHORT:
            session_id = sealed[1:1 + SESSION_ID_BYTES]
            key = self._keys.get(sender_key + session_id)
            if key is None:
                raise DecodeError("sealed message of an unknown session",
                                  reason="unknown_session")
            self._keys.move_to_end(sender_key + session_id)
            counter = int.from_bytes(sealed[1 + SESSION_ID_BYTES:header], "big")
            return Opened(self._decrypt(sealed[header:], ad, counter_nonce(counter), key),
                          form, session_id, counter)
        eph_public = sealed[1:1 + EPHEMERAL_KEY_BYTES]
        key = self._key_for(eph_public)
        session_id = session_id_of(eph_public)
        if form is SealForm.LEGACY:
            message = self._decrypt(sealed[header:], ad, sealed[1 + EPHEMERAL_KEY_BYTES:header],
                                    key)
            self._remember(eph_public, key)
            return Opened(message, form, session_id, 0)
        counter = int.from_bytes(sealed[1 + EPHEMERAL_KEY_BYTES:header], "big")
        message = self._decrypt(sealed[header:], ad, counter_nonce(counter), key)
        self._remember(sender_key + session_id, key)       # authenticated: SHORT may follow
        return Opened(message, form, session_id, counter)

    @staticmethod
    def _decrypt(ciphertext: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
        message: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, ad, nonce, key)
        return message
