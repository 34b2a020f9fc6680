"""Trust records: signed revocations and agency-key additions (issue 12 point 4).

A trust record is a signed envelope (:attr:`MsgType.TRUST`) whose origin key is the
*signer*: an agency key (offline, ``meshcomm revoke``) or a device whose credential has the
command role (``ctl revoke`` on a command node; the credential rides in the record). The
envelope binds the record to its incident. Payload::

    [kind, subject (32 bytes), issued_at (int s, signer's clock), note (str), credential]

Kinds (:class:`TrustKind`): revoke a device key, revoke a credential (subject: the
SHA-256 of the credential's signed body, :func:`credential_id`), revoke an agency key,
add an agency key (a mutual-aid agency). The record id is a hash of (kind, subject,
signer): a second record with the same three says nothing new and is a duplicate.

**Who may sign what** (:meth:`TrustState.compute`, a stratified evaluation, so the outcome
does not depend on the order records arrive in):

1. A root key (``[trust] agency_keys``) is *active* unless it revoked itself.
2. Agency-key revocations count when signed by an active root (any added key, or itself).
3. Trusted agency keys: the active roots, plus keys added (ADD_AGENCY) by a trusted key,
   transitively, never a revoked one. A revoked key's additions are void with it.
4. Device and credential revocations count when signed by a trusted agency key, or by a
   command device whose credential chains to a trusted agency key, was valid when the
   record was signed, and neither it nor its device key was revoked by an agency key.

A record whose signer is not (or no longer) authorised is refused before its signature is
checked, and dropped from the store when its signer loses authority, so every node
converges on the same set. Revocations cannot be undone: a captured device gets a new key.

**Bounds** (:class:`TrustStore`): records are precious, so the store never evicts a
record to admit one from the same authority (the agency a signer speaks for). Each
authority holds at most :data:`MAX_RECORDS_PER_AUTHORITY`, each command device at most
:data:`MAX_RECORDS_PER_COMMAND_DEVICE`, each signer adds at most
:data:`MAX_ADDITIONS_PER_SIGNER` agency keys; when the whole store
(:data:`MAX_TRUST_RECORDS`) is full, a newcomer evicts the newest record of the authority
holding most, and only if that authority holds more than the newcomer's.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.security.credentials import Credential, decode_credential_untrusted
from meshcomm.security.identity import Identity, fingerprint, verify_signature
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import SIGNATURE_LEN
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import Envelope, MsgType, decode_signed_untrusted, seal

TRUST_ID_LEN: Final = 8
SUBJECT_LEN: Final = 32
MAX_NOTE_LEN: Final = 64
MAX_TIME_S: Final = 1 << 40
#: Largest trust record file / blob accepted ([signed envelope, signature]).
MAX_RECORD_BYTES: Final = 1000
#: Roles of a credential that may sign revocations.
COMMAND_ROLES: Final = frozenset({"command"})
#: The store's bounds (see the module docstring).
MAX_TRUST_RECORDS: Final = 1024
MAX_RECORDS_PER_AUTHORITY: Final = 256
MAX_RECORDS_PER_COMMAND_DEVICE: Final = 64
MAX_ADDITIONS_PER_SIGNER: Final = 8
#: Trusted agency keys at most (roots plus additions).
MAX_TRUSTED_AGENCIES: Final = 64
#: Latest records shown by ``ctl status``.
STATUS_LATEST: Final = 5


class TrustKind(IntEnum):
    REVOKE_DEVICE = 1
    REVOKE_CREDENTIAL = 2
    REVOKE_AGENCY = 3
    ADD_AGENCY = 4


KIND_NAMES: Final[dict[TrustKind, str]] = {
    TrustKind.REVOKE_DEVICE: "revoke-device",
    TrustKind.REVOKE_CREDENTIAL: "revoke-credential",
    TrustKind.REVOKE_AGENCY: "revoke-agency",
    TrustKind.ADD_AGENCY: "add-agency",
}


class Refusal(StrEnum):
    """Why a trust record was not stored (counted, journaled as envelope drops)."""

    MALFORMED = "malformed"
    WRONG_INCIDENT = "wrong_incident"
    UNAUTHORISED = "trust_unauthorised"
    BAD_SIGNATURE = "bad_signature"
    QUOTA = "trust_quota"
    FUTURE_DATED = "future_dated"
    NOT_DURABLE = "trust_not_durable"


@dataclass(frozen=True, slots=True)
class TrustRecord:
    kind: TrustKind
    subject: bytes
    issued_at: int
    note: str
    credential: bytes | None
    envelope: Envelope
    record_id: bytes

    @property
    def signer(self) -> bytes:
        return self.envelope.origin_key

    def to_bytes(self) -> bytes:
        """The record as stored and filed: ``[signed envelope bytes, signature]``."""
        return codec.pack([self.envelope.signed_bytes, self.envelope.signature])

    def describe(self) -> dict[str, object]:
        """Plain summary for ``ctl status`` and the journal (keys never logged whole)."""
        return {"id": self.record_id.hex(), "kind": KIND_NAMES[self.kind],
                "subject": self.subject.hex(), "signer": fingerprint(self.signer),
                "issued_at": self.issued_at, "note": self.note}


def trust_id_of(kind: TrustKind, subject: bytes, signer: bytes) -> bytes:
    data = b"meshcomm-trust-id\x00" + bytes([int(kind)]) + subject + signer
    return hashlib.sha256(data).digest()[:TRUST_ID_LEN]


def credential_id(cred: Credential | bytes) -> bytes:
    """The subject naming a credential: SHA-256 of its signed body."""
    if isinstance(cred, bytes):
        cred = decode_credential_untrusted(cred)
    return hashlib.sha256(cred.signed_bytes).digest()


def make_trust_record(signer: Identity, *, incident: str, kind: TrustKind, subject: bytes,
                      issued_at: int, note: str = "",
                      credential: bytes | None = None) -> TrustRecord:
    """Sign a trust record (``credential``: the signer's own, for a command device)."""
    if len(subject) != SUBJECT_LEN:
        raise ValueError(f"subject must be {SUBJECT_LEN} bytes")
    if len(note.encode()) > MAX_NOTE_LEN:
        raise ValueError(f"note longer than {MAX_NOTE_LEN} bytes")
    if not 0 <= issued_at <= MAX_TIME_S:
        raise ValueError("issue time out of range")
    payload = [int(kind), subject, issued_at, note, credential]
    env = seal(signer, MsgType.TRUST, incident, issued_at * 1000, payload)
    return trust_record_from_envelope_untrusted(env)


def trust_record_from_envelope_untrusted(env: Envelope) -> TrustRecord:
    """Validate a TRUST envelope's payload (the signature is checked by the caller)."""
    if env.msg_type is not MsgType.TRUST:
        raise DecodeError("not a trust record envelope")
    fields = codec.read_tuple(env.payload, "trust", 5)
    raw_kind = codec.read_int(fields[0], "trust.kind", 1, max(TrustKind))
    credential = fields[4]
    if credential is not None:
        credential = codec.read_bytes(credential, "trust.credential",
                                      max_len=limits.MAX_CREDENTIAL_BYTES)
    kind = TrustKind(raw_kind)
    subject = codec.read_bytes(fields[1], "trust.subject", exact=SUBJECT_LEN)
    return TrustRecord(kind=kind, subject=subject,
                       issued_at=codec.read_int(fields[2], "trust.issued_at", 0, MAX_TIME_S),
                       note=codec.read_str(fields[3], "trust.note", MAX_NOTE_LEN),
                       credential=credential, envelope=env,
                       record_id=trust_id_of(kind, subject, env.origin_key))


def decode_trust_record_untrusted(data: bytes) -> TrustRecord:
    """A record from a file, a database row or a ctl request: ``[signed, signature]``."""
    if len(data) > MAX_RECORD_BYTES:
        raise DecodeError("trust record too large", reason="oversized")
    outer = codec.read_tuple(codec.unpack_untrusted(data, max_bytes=MAX_RECORD_BYTES),
                             "trust_record", 2)
    signed = codec.read_bytes(outer[0], "trust_record.signed", max_len=MAX_RECORD_BYTES)
    signature = codec.read_bytes(outer[1], "trust_record.signature", exact=SIGNATURE_LEN)
    return trust_record_from_envelope_untrusted(decode_signed_untrusted(signed, signature))


# --------------------------------------------------------------------------- state
#: Checks a signature (key, message, signature); the store passes its caching verifier, so
#: a command credential is checked once, not at every recomputation.
Verify = Callable[[bytes, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class TrustState:
    """What the stored records amount to (see the module docstring)."""

    trusted_agencies: frozenset[bytes]
    revoked_agencies: frozenset[bytes]
    revoked_devices: frozenset[bytes]
    revoked_credentials: frozenset[bytes]
    #: ids of the records whose signer is authorised
    valid: frozenset[bytes]

    @classmethod
    def compute(cls, roots: frozenset[bytes], records: Iterable[TrustRecord],
                verify: Verify = verify_signature) -> TrustState:
        recs = sorted(records, key=lambda r: r.record_id)
        by_kind: dict[TrustKind, list[TrustRecord]] = {k: [] for k in TrustKind}
        for r in recs:
            by_kind[r.kind].append(r)
        self_revoked = {r.subject for r in by_kind[TrustKind.REVOKE_AGENCY]
                        if r.subject == r.signer and r.signer in roots}
        active = roots - self_revoked
        agency_revs = [r for r in by_kind[TrustKind.REVOKE_AGENCY]
                       if r.signer in active and (r.subject not in roots)]
        revoked_agencies = self_revoked | {r.subject for r in agency_revs}
        trusted = set(active)
        adds = [r for r in by_kind[TrustKind.ADD_AGENCY] if r.subject not in revoked_agencies]
        grown = True
        while grown and len(trusted) < MAX_TRUSTED_AGENCIES:
            grown = False
            for r in adds:
                if r.signer in trusted and r.subject not in trusted:
                    trusted.add(r.subject)
                    grown = True
                    if len(trusted) >= MAX_TRUSTED_AGENCIES:
                        break
        valid = {r.record_id for r in agency_revs}
        valid |= {r.record_id for r in by_kind[TrustKind.REVOKE_AGENCY]
                  if r.signer in roots and r.subject == r.signer}
        valid |= {r.record_id for r in adds if r.signer in trusted and r.subject in trusted}
        device_revs = by_kind[TrustKind.REVOKE_DEVICE] + by_kind[TrustKind.REVOKE_CREDENTIAL]
        by_agency = [r for r in device_revs if r.signer in trusted]
        gone_devices = {r.subject for r in by_agency if r.kind is TrustKind.REVOKE_DEVICE}
        gone_creds = {r.subject for r in by_agency if r.kind is TrustKind.REVOKE_CREDENTIAL}
        by_command = [r for r in device_revs if r.signer not in trusted
                      and command_authority(r, frozenset(trusted), verify) is not None
                      and r.signer not in gone_devices
                      and credential_id_of_record(r) not in gone_creds]
        valid |= {r.record_id for r in by_agency + by_command}
        devices = gone_devices | {r.subject for r in by_command
                                  if r.kind is TrustKind.REVOKE_DEVICE}
        creds = gone_creds | {r.subject for r in by_command
                              if r.kind is TrustKind.REVOKE_CREDENTIAL}
        return cls(frozenset(trusted), frozenset(revoked_agencies), frozenset(devices),
                   frozenset(creds), frozenset(valid))


def credential_id_of_record(record: TrustRecord) -> bytes:
    if record.credential is None:
        return b""
    try:
        return credential_id(record.credential)
    except DecodeError:
        return b""


def command_authority(record: TrustRecord, trusted: frozenset[bytes],
                      verify: Verify = verify_signature) -> bytes | None:
    """The agency a command device's record speaks for (its credential's issuer), or None
    if the record carries no usable command credential (signatures of the credential are
    checked here; the record's own by the caller)."""
    if record.credential is None or record.kind in (TrustKind.REVOKE_AGENCY,
                                                    TrustKind.ADD_AGENCY):
        return None
    try:
        cred = decode_credential_untrusted(record.credential)
    except DecodeError:
        return None
    if (cred.agency_key not in trusted or cred.device_key != record.signer
            or cred.role not in COMMAND_ROLES
            or not cred.issued_at <= record.issued_at <= cred.expires_at
            or not verify(cred.agency_key, cred.signed_bytes, cred.signature)):
        return None
    return cred.agency_key


# --------------------------------------------------------------------------- store
#: Writes accepted records durably before they take effect (the runtime's SQLite store);
#: returns False if the write failed. Tests and the simulator keep records in memory.
Persist = Callable[[TrustRecord], bool]


def _in_memory(_record: TrustRecord) -> bool:
    return True


class TrustStore:
    """The records a node holds, their state, and the bounds (sans-IO)."""

    def __init__(self, incident: str, roots: frozenset[bytes], verifier: SignatureVerifier,
                 *, persist: Persist = _in_memory,
                 forget: Callable[[bytes], None] = lambda _rid: None,
                 max_records: int = MAX_TRUST_RECORDS) -> None:
        self.incident = incident
        self.roots = roots
        self._verifier = verifier
        self.persist = persist
        #: removes a record id from durable storage (pruned or evicted records)
        self.forget = forget
        self.max_records = max_records
        self._records: dict[bytes, TrustRecord] = {}
        self._authority: dict[bytes, bytes] = {}
        self.state = TrustState.compute(roots, ())
        self._hash = 0
        self.refused: Counter[str] = Counter()
        #: called with (record, now) when a record was stored (see overlay.trustsync)
        self.observers: list[Callable[[TrustRecord, float], None]] = []
        #: records accepted, in arrival order (bounded by the store)
        self._order: list[bytes] = []

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TrustRecord]:
        return iter(list(self._records.values()))

    def get(self, record_id: bytes) -> TrustRecord | None:
        return self._records.get(record_id)

    def ids(self) -> list[bytes]:
        return sorted(self._records)

    @property
    def set_hash(self) -> int:
        """XOR of the records' 64-bit ids: equal sets, equal hashes (0: empty)."""
        return self._hash

    def latest(self, count: int = STATUS_LATEST) -> list[TrustRecord]:
        return [self._records[rid] for rid in self._order[-count:]]

    def set_roots(self, roots: frozenset[bytes]) -> None:
        """Change the configured agency keys (the records are judged again)."""
        self.roots = roots
        self._recompute()

    # ------------------------------------------------------------ admission
    def restore(self, records: Iterable[TrustRecord]) -> int:
        """Records read back from disk: admitted without writing again (untrusted input:
        each is checked like one from the mesh). Returns how many were kept."""
        pending = sorted(records, key=lambda r: r.kind != TrustKind.ADD_AGENCY)
        for _ in range(3):  # additions first; signers added later admit their records
            pending = [r for r in pending if self.offer(r, MAX_TIME_S, durable=False) is not None]
        return len(self._records)

    def authority_of(self, record: TrustRecord) -> bytes | None:
        """The authority a record counts against, if its signer may sign it now (cheap:
        no signature of the record is checked; a command credential's is)."""
        trusted = self.state.trusted_agencies
        if record.kind is TrustKind.REVOKE_AGENCY:
            ok = record.signer in self.roots and (record.signer == record.subject or (
                record.signer in trusted and record.subject not in self.roots))
            return record.signer if ok else None
        if record.kind is TrustKind.ADD_AGENCY:
            ok = record.signer in trusted and record.subject not in self.state.revoked_agencies
            return record.signer if ok else None
        if record.signer in trusted:
            return record.signer
        authority = command_authority(record, trusted, self._verifier.verify)
        if authority is None or record.signer in self.state.revoked_devices:
            return None
        if credential_id_of_record(record) in self.state.revoked_credentials:
            return None
        return authority

    def offer(self, record: TrustRecord, wall_now: float, *,
              durable: bool = True) -> Refusal | str | None:
        """Store ``record`` if authorised and within bounds. Returns None if stored,
        ``"duplicate"`` if already held, else the :class:`Refusal`. Everything cheap is
        checked before the record's signature; the write (``persist``) comes last, before
        the record takes effect."""
        if record.record_id in self._records:
            return "duplicate"
        refusal, authority, victim = self._admission(record, wall_now)
        if refusal is None and durable and not self.persist(record):
            refusal = Refusal.NOT_DURABLE
        if refusal is not None:
            self.refused[refusal] += 1
            return refusal
        if victim is not None:
            self._remove(victim)
            self.forget(victim)
        self._add(record, authority)
        self._recompute()
        return None

    def _admission(self, record: TrustRecord,
                   wall_now: float) -> tuple[Refusal | None, bytes, bytes | None]:
        """(refusal, authority, record to evict for it)."""
        if record.envelope.incident != self.incident:
            return Refusal.WRONG_INCIDENT, b"", None
        if record.issued_at > wall_now + limits.MAX_FUTURE_SKEW_S:
            return Refusal.FUTURE_DATED, b"", None
        authority = self.authority_of(record)
        if authority is None:
            return Refusal.UNAUTHORISED, b"", None
        ok, victim = self._room_for(record, authority)
        if not ok:
            return Refusal.QUOTA, b"", None
        if not record.envelope.verify(self._verifier):
            return Refusal.BAD_SIGNATURE, b"", None
        return None, authority, victim

    def _room_for(self, record: TrustRecord, authority: bytes) -> tuple[bool, bytes | None]:
        """Whether the bounds admit ``record``, and the record it would evict."""
        held = Counter(self._authority.values())
        if held[authority] >= MAX_RECORDS_PER_AUTHORITY:
            return False, None
        signed = [r for r in self._records.values() if r.signer == record.signer]
        if record.signer != authority and len(signed) >= MAX_RECORDS_PER_COMMAND_DEVICE:
            return False, None
        if record.kind is TrustKind.ADD_AGENCY and sum(
                1 for r in signed if r.kind is TrustKind.ADD_AGENCY) >= MAX_ADDITIONS_PER_SIGNER:
            return False, None
        if len(self._records) < self.max_records:
            return True, None
        biggest, count = max(held.items(), key=lambda kv: (kv[1], kv[0]))
        if count <= held[authority] + 1:
            return False, None
        victim = max((r for r in self._records.values()
                      if self._authority[r.record_id] == biggest),
                     key=lambda r: (r.issued_at, r.record_id))
        return True, victim.record_id

    def _add(self, record: TrustRecord, authority: bytes) -> None:
        rid = record.record_id
        self._records[rid] = record
        self._authority[rid] = authority
        self._order.append(rid)
        self._hash ^= int.from_bytes(rid, "big")

    def _remove(self, rid: bytes) -> None:
        del self._records[rid]
        del self._authority[rid]
        self._order.remove(rid)
        self._hash ^= int.from_bytes(rid, "big")

    def _recompute(self) -> None:
        """Recompute the state; drop records whose signer lost its authority."""
        while True:
            self.state = TrustState.compute(self.roots, self._records.values(),
                                            self._verifier.verify)
            void = [rid for rid in self._records if rid not in self.state.valid]
            if not void:
                return
            for rid in void:
                self._remove(rid)
                self.forget(rid)

    # ------------------------------------------------------------ enforcement
    def key_revoked(self, key: bytes) -> bool:
        state = self.state
        return key in state.revoked_devices or key in state.revoked_agencies

    def binding_refusal(self, key: bytes, credential: bytes | None) -> str:
        """Why a binding signed by ``key`` carrying ``credential`` is refused ('' if not)."""
        if not self._records:
            return ""
        if self.key_revoked(key):
            return "revoked"
        if credential is not None and self.state.revoked_credentials:
            try:
                if credential_id(credential) in self.state.revoked_credentials:
                    return "credential_revoked"
            except DecodeError:
                return ""
        return ""
