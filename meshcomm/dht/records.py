"""The DHT record of one AoR at one relay: key, encryption, format, decoding, verification.

**Key.** ``BLAKE2b(normalised AoR, key=secret, person="meshcomm-dhtkey", 20 bytes)``: a
DHT node without the incident's secret cannot tell which responder a key belongs to, nor
find the key of a responder it knows.

**Value.** ``nonce(24) || SecretBox(plaintext)`` under ``BLAKE2b(normalised AoR,
key=secret, person="meshcomm-dhtval", 32 bytes)`` (XSalsa20-Poly1305, PyNaCl), where the
plaintext is ``msgpack([version, binding_signed, binding_signature, attachment_signed,
attachment_signature])``:

* ``binding_signed`` / ``binding_signature``: the owner-signed BINDING envelope exactly as
  gossip carries it (:mod:`meshcomm.wire.envelope`), never re-signed;
* the attachment, signed by the relay over :data:`ATTACH_DOMAIN` + ``attachment_signed``,
  ``attachment_signed = msgpack([version, incident, relay_key, [uplink "host:port", ...],
  binding_hash, issued_at, expires_at, relay_seq])``: which relay reaches that binding, at
  which uplink addresses, until when (the relay's wall clock). ``binding_hash`` names the
  exact binding bytes it attaches (:func:`binding_hash`).

:func:`decode_dht_value_untrusted` checks structure and limits only and raises only
:class:`~meshcomm.errors.DecodeError`; :func:`precheck_record` and
:func:`verify_signatures` check a decoded record as gossip checks a binding (incident,
signature, trust policy, highest sequence per (AoR, key) through the freshness memory,
expiry within the clock tolerance) plus the attachment (signature, the very binding,
expiry). The cheap checks come first, so a flood costs signature checks only for records
that pass them (the bridge budgets those).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.secret

from meshcomm.errors import DecodeError, ReasonEnum, TrustError
from meshcomm.location.binding import (
    CLOCK_SKEW_TOLERANCE_S,
    MAX_WALL_TIME_S,
    Binding,
    binding_from_envelope_untrusted,
)
from meshcomm.location.freshness import FreshEntry, FreshnessMemory
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.security.roles import check_trust_field
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import SIGNATURE_LEN, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import decode_signed_untrusted

from .port import DHT_KEY_BYTES, MAX_VALUE_BYTES

DHT_RECORD_VERSION: Final = 1
ATTACH_VERSION: Final = 1
#: Domain prefix of the relay's attachment signature (never valid as another signature).
ATTACH_DOMAIN: Final = b"meshcomm-dht-attach-v1\x00"
NONCE_BYTES: Final = nacl.secret.SecretBox.NONCE_SIZE
MAC_BYTES: Final = nacl.secret.SecretBox.MACBYTES
SECRET_BYTES: Final = 32
VALUE_KEY_BYTES: Final = nacl.secret.SecretBox.KEY_SIZE
#: A configured incident secret must have at least this many bytes.
MIN_CONFIGURED_SECRET_BYTES: Final = 16
MAX_CONFIGURED_SECRET_BYTES: Final = 1024
#: Uplink addresses one attachment may name, and the longest ("[IPv6%scope]:port").
MAX_UPLINK_ADDRS: Final = 4
MAX_UPLINK_ADDR_LEN: Final = 64
MAX_ATTACH_BYTES: Final = 512
BINDING_HASH_BYTES: Final = 32
#: An attachment claims at most this long (issued_at .. expires_at): one DHT record TTL.
MAX_ATTACH_LIFETIME_S: Final = 3600.0
#: How far ahead of ours a relay's clock may date an attachment (attachments are
#: short-lived, so this is much smaller than a binding's tolerance; uplinked relays
#: usually have NTP or GPS time). Expiry is read on our clock, capped by the lifetime.
ATTACH_CLOCK_TOLERANCE_S: Final = 300.0

_PERSON_KEY: Final = b"meshcomm-dhtkey"
_PERSON_VALUE: Final = b"meshcomm-dhtval"
_PERSON_SECRET: Final = b"meshcomm-dhtsec"
_PERSON_INCIDENT: Final = b"meshcomm-dhtinc"
_PERSON_BINDING: Final = b"meshcomm-dhtbind"


# ---------------------------------------------------------------- secret and keys
@dataclass(frozen=True, slots=True)
class DhtSecret:
    """The incident's DHT secret. ``private`` False: derived from the incident id alone,
    so anyone who knows the incident id can find and read the records (status and docs
    say so)."""

    key: bytes = field(repr=False)
    private: bool


def secret_for(incident: str, configured: bytes | None) -> DhtSecret:
    """The DHT secret of ``incident``: from the configured secret (bound to the incident,
    so one secret used in two incidents gives unrelated keys), else from the id alone."""
    if configured is None:
        key = hashlib.blake2b(incident.encode(), digest_size=SECRET_BYTES,
                              person=_PERSON_INCIDENT).digest()
        return DhtSecret(key, private=False)
    if not MIN_CONFIGURED_SECRET_BYTES <= len(configured) <= MAX_CONFIGURED_SECRET_BYTES:
        raise ValueError(f"the DHT secret must have {MIN_CONFIGURED_SECRET_BYTES}.."
                         f"{MAX_CONFIGURED_SECRET_BYTES} bytes")
    inner = hashlib.blake2b(configured, digest_size=SECRET_BYTES).digest()
    key = hashlib.blake2b(incident.encode(), key=inner, digest_size=SECRET_BYTES,
                          person=_PERSON_SECRET).digest()
    return DhtSecret(key, private=True)


def normalise_aor(aor: str) -> str:
    """The form of an AoR that keys are derived from (the table's lookup form)."""
    return aor.strip().lower()


@dataclass(frozen=True, slots=True)
class AorKeys:
    """What one AoR's records are stored under and sealed with."""

    aor: str                       # normalised
    dht_key: bytes
    box: nacl.secret.SecretBox = field(repr=False, compare=False)


def keys_for(secret: DhtSecret, aor: str) -> AorKeys:
    norm = normalise_aor(aor)
    raw = norm.encode()
    dht_key = hashlib.blake2b(raw, key=secret.key, digest_size=DHT_KEY_BYTES,
                              person=_PERSON_KEY).digest()
    value_key = hashlib.blake2b(raw, key=secret.key, digest_size=VALUE_KEY_BYTES,
                                person=_PERSON_VALUE).digest()
    return AorKeys(norm, dht_key, nacl.secret.SecretBox(value_key))


def binding_hash(binding: Binding) -> bytes:
    """Names the exact owner-signed bytes of a binding (signature is fixed-length)."""
    env = binding.envelope
    return hashlib.blake2b(env.signature + env.signed_bytes, digest_size=BINDING_HASH_BYTES,
                           person=_PERSON_BINDING).digest()


# ---------------------------------------------------------------- attachment
@dataclass(frozen=True, slots=True)
class Attachment:
    """A relay's signed statement: it reaches the binding named by ``binding_hash``."""

    incident: str
    relay_key: bytes
    addrs: tuple[str, ...]
    binding_hash: bytes
    issued_at: float
    expires_at: float
    seq: int
    signed_bytes: bytes
    signature: bytes

    @property
    def relay(self) -> NodeId:
        return node_id_of(self.relay_key)

    def verify(self, verifier: SignatureVerifier) -> bool:
        return verifier.verify(self.relay_key, ATTACH_DOMAIN + self.signed_bytes,
                               self.signature)


def make_attachment(identity: Identity, *, incident: str, binding: Binding,
                    addrs: tuple[str, ...], issued_at: float, expires_at: float,
                    seq: int) -> Attachment:
    """Sign an attachment of ``binding`` by the relay ``identity``."""
    for addr in addrs:
        check_uplink_addr(addr)
    if len(addrs) > MAX_UPLINK_ADDRS:
        raise ValueError(f"at most {MAX_UPLINK_ADDRS} uplink addresses")
    bhash = binding_hash(binding)
    signed = codec.pack([ATTACH_VERSION, incident, identity.public_key, list(addrs), bhash,
                         float(issued_at), float(expires_at), seq])
    return Attachment(incident, identity.public_key, addrs, bhash, float(issued_at),
                      float(expires_at), seq, signed, identity.sign(ATTACH_DOMAIN + signed))


def check_uplink_addr(addr: str) -> str:
    """``addr`` if it is ``a.b.c.d:port`` or ``[v6]:port`` (port 1..65535), else
    DecodeError."""
    if len(addr) > MAX_UPLINK_ADDR_LEN:
        raise DecodeError("uplink address too long", reason="oversized")
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise DecodeError(f"uplink address {addr!r}: no port", reason="bad_addr")
    v6 = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if v6 else host)
    except ValueError as exc:
        raise DecodeError(f"uplink address {addr!r}: not an IP address",
                          reason="bad_addr") from exc
    if (ip.version == 6) != v6:
        raise DecodeError(f"uplink address {addr!r}: IPv6 needs brackets", reason="bad_addr")
    return addr


def _attachment_untrusted(signed: bytes, signature: bytes) -> Attachment:
    fields = codec.read_tuple(codec.unpack_untrusted(signed, max_bytes=MAX_ATTACH_BYTES),
                              "attachment", 8)
    version = codec.read_int(fields[0], "attachment.version", 0, 255)
    if version != ATTACH_VERSION:
        raise DecodeError(f"attachment version {version}", reason="version")
    addrs = codec.read_str_list(fields[3], "attachment.addrs", MAX_UPLINK_ADDRS,
                                MAX_UPLINK_ADDR_LEN)
    for addr in addrs:
        check_uplink_addr(addr)
    return Attachment(
        incident=codec.read_str(fields[1], "attachment.incident", limits.MAX_INCIDENT_LEN),
        relay_key=codec.read_bytes(fields[2], "attachment.relay", exact=32),
        addrs=addrs,
        binding_hash=codec.read_bytes(fields[4], "attachment.binding",
                                      exact=BINDING_HASH_BYTES),
        issued_at=codec.read_float(fields[5], "attachment.issued_at", 0.0, MAX_WALL_TIME_S),
        expires_at=codec.read_float(fields[6], "attachment.expires_at", 0.0, MAX_WALL_TIME_S),
        seq=codec.read_int(fields[7], "attachment.seq"),
        signed_bytes=signed, signature=signature)


# ---------------------------------------------------------------- record
@dataclass(frozen=True, slots=True)
class DhtRecord:
    """One decoded DHT value: an owner's binding and the relay attachment that carries it."""

    binding: Binding
    attachment: Attachment


def encode_dht_value(record: DhtRecord, keys: AorKeys, nonce: bytes) -> bytes:
    """Seal ``record`` for ``keys``' AoR (``nonce``: 24 fresh bytes, never reused)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must have {NONCE_BYTES} bytes")
    env = record.binding.envelope
    plain = codec.pack([DHT_RECORD_VERSION, env.signed_bytes, env.signature,
                        record.attachment.signed_bytes, record.attachment.signature])
    value = bytes(keys.box.encrypt(plain, nonce))
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"DHT value of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
    return value


def decode_dht_value_untrusted(value: bytes, keys: AorKeys) -> DhtRecord:
    """Open and decode one value read under ``keys``' DHT key; raises only DecodeError
    (oversize, truncation, a wrong key or garbage, wrong version, bad lengths or fields)."""
    if len(value) > MAX_VALUE_BYTES:
        raise DecodeError(f"{len(value)}-byte DHT value", reason="oversized")
    if len(value) < NONCE_BYTES + MAC_BYTES + 1:
        raise DecodeError("DHT value too short", reason="truncated")
    try:
        plain = keys.box.decrypt(value)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecodeError("DHT value does not open", reason="undecryptable") from exc
    fields = codec.read_tuple(codec.unpack_untrusted(plain, max_bytes=MAX_VALUE_BYTES),
                              "dht record", 5)
    version = codec.read_int(fields[0], "dht record version", 0, 255)
    if version != DHT_RECORD_VERSION:
        raise DecodeError(f"DHT record version {version}", reason="version")
    env = decode_signed_untrusted(
        codec.read_bytes(fields[1], "binding", max_len=limits.MAX_DATAGRAM_BYTES),
        codec.read_bytes(fields[2], "binding signature", exact=SIGNATURE_LEN))
    binding = binding_from_envelope_untrusted(env)
    attachment = _attachment_untrusted(
        codec.read_bytes(fields[3], "attachment", max_len=MAX_ATTACH_BYTES),
        codec.read_bytes(fields[4], "attachment signature", exact=SIGNATURE_LEN))
    return DhtRecord(binding, attachment)


# ---------------------------------------------------------------- verification
class RecordReject(ReasonEnum):
    """Why a value read from the DHT was dropped."""

    UNDECODABLE = "undecodable"
    WRONG_AOR = "wrong_aor"
    WRONG_INCIDENT = "wrong_incident"
    BAD_SIGNATURE = "bad_signature"
    NO_CREDENTIAL = "no_credential"
    BAD_CREDENTIAL = "bad_credential"
    FUTURE_DATED = "future_dated"
    EXPIRED = "expired"
    STALE = "stale"
    ATTACH_WRONG_INCIDENT = "attach_wrong_incident"
    ATTACH_WRONG_BINDING = "attach_wrong_binding"
    ATTACH_BAD_SIGNATURE = "attach_bad_signature"
    ATTACH_EXPIRED = "attach_expired"
    ATTACH_FUTURE_DATED = "attach_future_dated"
    CLAIMS_FULL = "claims_full"
    RELAYS_FULL = "relays_full"
    REVOKED = "revoked"                      # the binding's key (or agency) is revoked
    CREDENTIAL_REVOKED = "credential_revoked"
    RELAY_REVOKED = "relay_revoked"          # the attaching relay's key is revoked
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """What a record is checked against: the node's incident, trust policy, verifier and
    freshness memory (the location table's, so gossip and DHT share one memory)."""

    incident: str
    policy: TrustPolicy
    verifier: SignatureVerifier
    freshness: FreshnessMemory


def precheck_record(record: DhtRecord, aor: str, ctx: VerifyContext,
                    wall_now: float) -> RecordReject | None:
    """The checks that need no signature: the AoR looked up, incident, dates, the
    attachment naming this binding, and the freshness floor (stale sequence)."""
    binding, att = record.binding, record.attachment
    if normalise_aor(binding.aor) != normalise_aor(aor):
        return RecordReject.WRONG_AOR
    if binding.envelope.incident != ctx.incident:
        return RecordReject.WRONG_INCIDENT
    if att.incident != ctx.incident:
        return RecordReject.ATTACH_WRONG_INCIDENT
    if binding.issued_at > wall_now + limits.MAX_FUTURE_SKEW_S:
        return RecordReject.FUTURE_DATED
    if binding.signed_end + CLOCK_SKEW_TOLERANCE_S <= wall_now:
        return RecordReject.EXPIRED
    if att.binding_hash != binding_hash(binding):
        return RecordReject.ATTACH_WRONG_BINDING
    if (att.issued_at > wall_now + ATTACH_CLOCK_TOLERANCE_S
            or not 0 < att.expires_at - att.issued_at <= MAX_ATTACH_LIFETIME_S):
        return RecordReject.ATTACH_FUTURE_DATED
    if att.expires_at <= wall_now:
        return RecordReject.ATTACH_EXPIRED
    floor = ctx.freshness.floor(binding.record_id, wall_now)
    if floor is not None and binding.seq < floor.seq:
        return RecordReject.STALE
    return None


def verify_signatures(record: DhtRecord, ctx: VerifyContext,
                      wall_now: float) -> RecordReject | None:
    """The owner's signature, the trust policy (credential) and the relay's signature."""
    binding = record.binding
    if not binding.envelope.verify(ctx.verifier):
        return RecordReject.BAD_SIGNATURE
    trust = trust_reject(binding, ctx.policy, wall_now)
    if trust is not None:
        return trust
    if not record.attachment.verify(ctx.verifier):
        return RecordReject.ATTACH_BAD_SIGNATURE
    return None


def verify_record(record: DhtRecord, aor: str, ctx: VerifyContext,
                  wall_now: float) -> RecordReject | None:
    """Every check of a decoded record (None: it may be merged)."""
    return precheck_record(record, aor, ctx, wall_now) or verify_signatures(record, ctx,
                                                                             wall_now)


def credentialed(binding: Binding, policy: TrustPolicy, wall_now: float) -> bool:
    """True if a valid agency credential vouches for ``binding``."""
    if binding.credential is None:
        return False
    try:   # pattern and role too (a hand-over's signer is the location table's to check)
        check_trust_field(binding.credential, trusted_agency_keys=policy.agency_keys,
                          role_table=policy.role_table(), device_key=binding.key,
                          aor=binding.aor, wall_time_s=wall_now)
    except TrustError:
        return False
    return True


def trust_reject(binding: Binding, policy: TrustPolicy, wall_now: float) -> RecordReject | None:
    """The trust policy as the location table applies it: under ``agency`` a binding needs
    a valid credential; under ``open`` any self-signed binding passes."""
    if policy.mode is not TrustMode.AGENCY:
        return None
    if binding.credential is None:
        return RecordReject.NO_CREDENTIAL
    return None if credentialed(binding, policy, wall_now) else RecordReject.BAD_CREDENTIAL


def binding_life_left_s(binding: Binding, wall_now: float,
                        remembered: FreshEntry | None) -> float:
    """How long a binding read from the DHT lives here (the table's rule with no hop age):
    its life, capped by its signed end plus the skew tolerance and, for a sequence this
    node accepted before, by first acceptance plus its life."""
    life = float(binding.life_s)
    left = min(life, binding.signed_end + CLOCK_SKEW_TOLERANCE_S - wall_now)
    if remembered is not None and remembered.seq == binding.seq:
        left = min(left, remembered.first_wall + life - wall_now)
    return left


def attachment_life_left_s(att: Attachment, wall_now: float) -> float:
    """How long an attachment is live here: until its signed expiry on our clock, never
    longer than it claims to last (a relay whose clock runs ahead gains nothing)."""
    return min(att.expires_at - att.issued_at, att.expires_at - wall_now)
