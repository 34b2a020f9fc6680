"""Trust records: codec, who may sign what, order independence, bounds."""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import (
    MAX_ADDITIONS_PER_SIGNER,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_AUTHORITY,
    MAX_RECORDS_PER_COMMAND_DEVICE,
    Refusal,
    TrustKind,
    TrustRecord,
    TrustState,
    TrustStore,
    credential_id,
    decode_trust_record_untrusted,
    make_trust_record,
)
from meshcomm.security.verify import SignatureVerifier

INCIDENT = "inc"
ROOT = Identity(b"R" * 32)
ROOT2 = Identity(b"S" * 32)
AID = Identity(b"A" * 32)      # a mutual-aid agency
AID2 = Identity(b"B" * 32)
DEVICE = Identity(b"D" * 32)
CMD = Identity(b"C" * 32)      # a command-role device of ROOT
WALL = 1_000_000.0


def rec(signer: Identity, kind: TrustKind, subject: bytes, *, at: int = 1000,
        credential: bytes | None = None, incident: str = INCIDENT) -> TrustRecord:
    return make_trust_record(signer, incident=incident, kind=kind, subject=subject,
                             issued_at=at, note="lost handset", credential=credential)


def store(*roots: Identity, max_records: int = 1024) -> TrustStore:
    return TrustStore(INCIDENT, frozenset(r.public_key for r in roots), SignatureVerifier(),
                      max_records=max_records)


def command_cred(agency: Identity = ROOT, role: str = "command",
                 device: Identity = CMD) -> bytes:
    return issue_credential(agency, aor_pattern="sip:*@fire.example", role=role,
                            device_key=device.public_key, issued_at=0,
                            expires_at=10_000_000).to_bytes()


# ------------------------------------------------------------------ codec
def test_round_trip() -> None:
    r = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key)
    back = decode_trust_record_untrusted(r.to_bytes())
    assert back == r and back.signer == ROOT.public_key
    assert back.describe()["kind"] == "revoke-device"


def test_same_kind_subject_signer_is_one_record() -> None:
    a = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key, at=1)
    b = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key, at=2)
    assert a.record_id == b.record_id
    s = store(ROOT)
    assert s.offer(a, WALL) is None and s.offer(b, WALL) == "duplicate"


@given(st.binary(max_size=1500))
@settings(max_examples=300)
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_trust_record_untrusted(data)


def test_truncations_and_oversize_raise_decode_error() -> None:
    blob = rec(CMD, TrustKind.REVOKE_DEVICE, DEVICE.public_key,
               credential=command_cred()).to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(DecodeError):
            decode_trust_record_untrusted(blob[:cut])
    with pytest.raises(DecodeError):
        decode_trust_record_untrusted(blob + b"\x00")
    with pytest.raises(DecodeError):
        decode_trust_record_untrusted(b"\x92" + b"\xc5" + (MAX_RECORD_BYTES + 10).to_bytes(2, "big")
                                      + bytes(MAX_RECORD_BYTES + 10))


def test_flipped_bytes_never_escape_decode_error() -> None:
    blob = rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key).to_bytes()
    rng = random.Random(4)
    s = store(ROOT)
    for _ in range(500):
        data = bytearray(blob)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            r = decode_trust_record_untrusted(bytes(data))
        except DecodeError:
            continue
        assert s.offer(r, WALL) in (None, "duplicate", *list(Refusal))
    assert len(s) <= 1


def test_bad_values_refused_at_signing() -> None:
    with pytest.raises(ValueError):
        rec(ROOT, TrustKind.REVOKE_DEVICE, b"short")
    with pytest.raises(ValueError):
        make_trust_record(ROOT, incident=INCIDENT, kind=TrustKind.REVOKE_DEVICE,
                          subject=DEVICE.public_key, issued_at=1, note="x" * 65)


# ------------------------------------------------------------------ authority
def test_unauthorised_signers_refused_before_the_signature() -> None:
    s = store(ROOT)
    verifier_calls = s._verifier
    before = verifier_calls.verified
    assert s.offer(rec(DEVICE, TrustKind.REVOKE_DEVICE, CMD.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert s.offer(rec(AID, TrustKind.ADD_AGENCY, AID2.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert verifier_calls.verified == before  # no signature checked for them
    assert len(s) == 0


def test_forged_signature_refused() -> None:
    good = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key)
    env = good.envelope
    forged = type(env)(env.msg_type, env.incident, env.origin_key, env.origin, env.seq,
                       env.payload, env.signed_bytes, bytes(64))
    r = TrustRecord(good.kind, good.subject, good.issued_at, good.note, None, forged,
                    good.record_id)
    s = store(ROOT)
    assert s.offer(r, WALL) is Refusal.BAD_SIGNATURE and len(s) == 0


def test_wrong_incident_and_future_dated_refused() -> None:
    s = store(ROOT)
    assert s.offer(rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key, incident="other"),
                   WALL) is Refusal.WRONG_INCIDENT
    assert s.offer(rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key,
                       at=int(WALL) + 2 * 86400), WALL) is Refusal.FUTURE_DATED


def test_added_agency_is_trusted_and_can_revoke() -> None:
    s = store(ROOT)
    assert s.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert s.offer(rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key), WALL) is None
    assert AID.public_key in s.state.trusted_agencies
    assert s.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL) is None
    assert s.key_revoked(DEVICE.public_key)


def test_revoked_agency_key_cannot_add_and_loses_its_records() -> None:
    s = store(ROOT)
    s.offer(rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key), WALL)
    assert s.offer(rec(AID, TrustKind.ADD_AGENCY, AID2.public_key), WALL) is None
    assert s.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL) is None
    assert s.offer(rec(ROOT, TrustKind.REVOKE_AGENCY, AID.public_key), WALL) is None
    assert s.state.trusted_agencies == {ROOT.public_key}
    assert not s.key_revoked(DEVICE.public_key)          # its revocation went with it
    assert s.key_revoked(AID.public_key)
    assert len(s) == 1                   # the revocation (the void addition is dropped)
    assert s.offer(rec(AID, TrustKind.ADD_AGENCY, Identity(b"Z" * 32).public_key), WALL) \
        is Refusal.UNAUTHORISED
    # a replayed addition of the revoked key changes nothing
    assert s.offer(rec(ROOT2, TrustKind.ADD_AGENCY, AID.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert s.offer(rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key), WALL) \
        is Refusal.UNAUTHORISED


def test_roots_only_revoke_themselves_not_each_other() -> None:
    s = store(ROOT, ROOT2)
    assert s.offer(rec(ROOT, TrustKind.REVOKE_AGENCY, ROOT2.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert s.offer(rec(ROOT, TrustKind.REVOKE_AGENCY, ROOT.public_key), WALL) is None
    assert s.state.trusted_agencies == {ROOT2.public_key}


def test_command_device_revokes_with_its_credential() -> None:
    s = store(ROOT)
    cred = command_cred()
    r = rec(CMD, TrustKind.REVOKE_DEVICE, DEVICE.public_key, credential=cred)
    assert s.offer(r, WALL) is None and s.key_revoked(DEVICE.public_key)
    medic = rec(CMD, TrustKind.REVOKE_DEVICE, AID.public_key,
                credential=command_cred(role="medic"))
    assert store(ROOT).offer(medic, WALL) is Refusal.UNAUTHORISED
    stolen = rec(DEVICE, TrustKind.REVOKE_DEVICE, AID.public_key, credential=cred)
    assert store(ROOT).offer(stolen, WALL) is Refusal.UNAUTHORISED
    # an agency revoking the command credential voids what the device signed
    assert s.offer(rec(ROOT, TrustKind.REVOKE_CREDENTIAL, credential_id(cred)), WALL) is None
    assert not s.key_revoked(DEVICE.public_key) and len(s) == 1
    assert credential_id(cred) in s.state.revoked_credentials
    # command devices cannot touch agency keys
    assert store(ROOT).offer(rec(CMD, TrustKind.ADD_AGENCY, AID.public_key,
                                 credential=cred), WALL) is Refusal.UNAUTHORISED


def test_state_does_not_depend_on_arrival_order() -> None:
    cred = command_cred()
    records = [rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key),
               rec(AID, TrustKind.ADD_AGENCY, AID2.public_key),
               rec(AID2, TrustKind.REVOKE_DEVICE, DEVICE.public_key),
               rec(CMD, TrustKind.REVOKE_DEVICE, ROOT2.public_key, credential=cred),
               rec(ROOT, TrustKind.REVOKE_AGENCY, AID.public_key)]
    outcomes = set()
    for order in itertools.permutations(records):
        s = store(ROOT)
        for _ in range(3):   # anti-entropy offers again what was refused before
            for r in order:
                s.offer(r, WALL)
        outcomes.add((s.state, frozenset(s.ids())))
    assert len(outcomes) == 1
    (state, _), = outcomes
    assert state == TrustState.compute(frozenset({ROOT.public_key}), records)
    assert state.trusted_agencies == {ROOT.public_key}
    assert state.revoked_devices == {ROOT2.public_key}


# ------------------------------------------------------------------ bounds
def test_flood_from_one_agency_key_is_bounded_and_spares_others() -> None:
    s = store(ROOT, ROOT2, max_records=MAX_RECORDS_PER_AUTHORITY + 10)
    refused = 0
    for n in range(MAX_RECORDS_PER_AUTHORITY + 50):
        if s.offer(rec(ROOT, TrustKind.REVOKE_DEVICE, n.to_bytes(32, "big")), WALL):
            refused += 1
    assert refused == 50 and len(s) == MAX_RECORDS_PER_AUTHORITY
    # the other agency still gets its revocations in (evicting the flooder's newest)
    for n in range(20):
        assert s.offer(rec(ROOT2, TrustKind.REVOKE_DEVICE, (10**6 + n).to_bytes(32, "big")),
                       WALL) is None
    assert len(s) == MAX_RECORDS_PER_AUTHORITY + 10
    assert s.key_revoked((0).to_bytes(32, "big"))      # the flooder's oldest stay


def test_command_device_and_addition_bounds() -> None:
    s = store(ROOT)
    cred = command_cred()
    outcomes = [s.offer(rec(CMD, TrustKind.REVOKE_DEVICE, n.to_bytes(32, "big"),
                            credential=cred), WALL)
                for n in range(MAX_RECORDS_PER_COMMAND_DEVICE + 5)]
    assert outcomes.count(Refusal.QUOTA) == 5
    adds = [s.offer(rec(ROOT, TrustKind.ADD_AGENCY, Identity(bytes([n]) * 32).public_key),
                    WALL) for n in range(MAX_ADDITIONS_PER_SIGNER + 3)]
    assert adds.count(Refusal.QUOTA) == 3


def test_persist_failure_refuses_and_restore_rechecks() -> None:
    written: list[TrustRecord] = []
    s = store(ROOT)
    s.persist = lambda r: False
    assert s.offer(rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL) \
        is Refusal.NOT_DURABLE
    assert len(s) == 0

    def write(record: TrustRecord) -> bool:
        written.append(record)
        return True
    s.persist = write
    s.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL)
    s.offer(rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key), WALL)
    s.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL)
    assert len(written) == 2
    # restored in the order written, additions are admitted first
    again = store(ROOT)
    assert again.restore(reversed(written)) == 2 and again.key_revoked(DEVICE.public_key)
    # a database holding a record of another trust root admits nothing
    assert store(ROOT2).restore(written) == 0
