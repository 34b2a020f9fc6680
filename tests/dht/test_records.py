"""The DHT record: keys, sealing, the untrusted decoder, privacy and verification."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.dht.port import DHT_KEY_BYTES, MAX_VALUE_BYTES
from meshcomm.dht.records import (
    MAX_UPLINK_ADDRS,
    NONCE_BYTES,
    DhtRecord,
    RecordReject,
    binding_hash,
    check_uplink_addr,
    decode_dht_value_untrusted,
    encode_dht_value,
    keys_for,
    make_attachment,
    secret_for,
    verify_record,
)
from meshcomm.errors import DecodeError
from meshcomm.location.freshness import FreshnessMemory
from meshcomm.location.table import TrustMode
from meshcomm.security.credentials import issue_credential
from meshcomm.wire import codec

from .helpers import (
    AGENCY,
    ALICE,
    AOR,
    INCIDENT,
    MALLORY,
    RELAY_A,
    WALL,
    attach,
    binding,
    context,
    nonce,
    record,
)

SECRET = secret_for(INCIDENT, b"a configured secret of the incident")
KEYS = keys_for(SECRET, AOR)


def sealed(rec: DhtRecord | None = None, n: int = 1) -> bytes:
    return encode_dht_value(rec if rec is not None else record(), KEYS, nonce(n))


# ---------------------------------------------------------------- secret and keys
def test_secret_private_only_when_configured() -> None:
    derived = secret_for(INCIDENT, None)
    assert not derived.private and SECRET.private
    assert derived.key != SECRET.key
    assert secret_for("other-incident", b"a configured secret of the incident").key != SECRET.key
    assert "key" not in repr(SECRET) or SECRET.key.hex() not in repr(SECRET)
    with pytest.raises(ValueError):
        secret_for(INCIDENT, b"short")


def test_keys_are_normalised_and_keyed() -> None:
    assert keys_for(SECRET, " SIP:Medic@Fire.Example ").dht_key == KEYS.dht_key
    assert len(KEYS.dht_key) == DHT_KEY_BYTES
    other = keys_for(secret_for(INCIDENT, None), AOR)
    assert other.dht_key != KEYS.dht_key
    # without the secret the key is not the plain hash of the AoR
    for person in (b"", b"meshcomm-dhtkey"):
        plain = hashlib.blake2b(AOR.encode(), digest_size=DHT_KEY_BYTES, person=person)
        assert plain.digest() != KEYS.dht_key


# ---------------------------------------------------------------- round trip and privacy
def test_round_trip_keeps_the_owner_bytes_unchanged() -> None:
    rec = record()
    got = decode_dht_value_untrusted(sealed(rec), KEYS)
    assert got.binding.envelope.signed_bytes == rec.binding.envelope.signed_bytes
    assert got.binding.envelope.signature == rec.binding.envelope.signature
    assert got.attachment == rec.attachment
    assert got.attachment.binding_hash == binding_hash(rec.binding)
    assert verify_record(got, AOR, context(), WALL + 1) is None


def test_ciphertext_reveals_nothing_and_wrong_secret_cannot_open() -> None:
    rec = record()
    value = sealed(rec)
    for needle in (AOR.encode(), b"medic", ALICE.public_key, RELAY_A.public_key,
                   rec.binding.envelope.signature, b"192.0.2.7", INCIDENT.encode()):
        assert needle not in value
    assert sealed(rec, 1) != sealed(rec, 2)  # fresh nonces: no linkable repeats
    for wrong in (keys_for(secret_for(INCIDENT, None), AOR),
                  keys_for(SECRET, "sip:other@fire.example"),
                  keys_for(secret_for("incident-11", b"a configured secret of the incident"),
                           AOR)):
        with pytest.raises(DecodeError):
            decode_dht_value_untrusted(value, wrong)


# ---------------------------------------------------------------- the untrusted decoder
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_VALUE_BYTES + 8))
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(data, KEYS)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_flipped_values_are_decode_errors(data: st.DataObject) -> None:
    value = sealed()
    cut = data.draw(st.integers(0, len(value) - 1))
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(value[:cut], KEYS)
    pos = data.draw(st.integers(0, len(value) - 1))
    flipped = value[:pos] + bytes([value[pos] ^ 0x40]) + value[pos + 1:]
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(flipped, KEYS)


def _seal_plain(obj: object) -> bytes:
    return bytes(KEYS.box.encrypt(msgpack.packb(obj, use_bin_type=True), nonce(9)))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats()
                    | st.text(max_size=20) | st.binary(max_size=40),
                    lambda inner: st.lists(inner, max_size=6), max_leaves=30))
def test_sealed_garbage_plaintext_is_a_decode_error(obj: object) -> None:
    """Values that open (an insider's junk) but hold anything at all."""
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(_seal_plain(obj), KEYS)


def _fields() -> list[object]:
    rec = record()
    env, att = rec.binding.envelope, rec.attachment
    return [1, env.signed_bytes, env.signature, att.signed_bytes, att.signature]


@pytest.mark.parametrize("index, bad", [
    (0, 2),                       # wrong version
    (1, b"\x00" * 10),            # not an envelope
    (2, b"\x01" * 63),            # signature length
    (3, b"\x93\x01\x02\x03"),     # attachment of the wrong shape
    (4, b"\x01" * 65),
    (3, b"\x00" * 600),           # oversized attachment
])
def test_bad_fields_are_decode_errors(index: int, bad: object) -> None:
    fields = _fields()
    fields[index] = bad
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(_seal_plain(fields), KEYS)


def _attachment_with(addrs: list[str], version: int = 1) -> bytes:
    b = binding()
    signed = codec.pack([version, INCIDENT, RELAY_A.public_key, addrs, binding_hash(b),
                         WALL, WALL + 60, 1])
    env = b.envelope
    return _seal_plain([1, env.signed_bytes, env.signature, signed, RELAY_A.sign(signed)])


@pytest.mark.parametrize("addrs, version", [
    (["192.0.2.1:1"] * (MAX_UPLINK_ADDRS + 1), 1),
    (["host.example:5060"], 1),
    (["2001:db8::1:5060"], 1),
    (["[192.0.2.1]:5060"], 1),
    (["192.0.2.1:0"], 1),
    (["192.0.2.1:70000"], 1),
    (["192.0.2.1"], 1),
    (["192.0.2.1:5060"], 2),
])
def test_bad_addresses_and_versions_are_decode_errors(addrs: list[str], version: int) -> None:
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(_attachment_with(addrs, version), KEYS)


def test_good_addresses() -> None:
    for addr in ("192.0.2.1:5060", "[2001:db8::1]:5060", "[::1]:1"):
        assert check_uplink_addr(addr) == addr
    value = _attachment_with(["192.0.2.1:5060", "[2001:db8::1]:65535"])
    assert decode_dht_value_untrusted(value, KEYS).attachment.addrs[1] == "[2001:db8::1]:65535"


def test_oversized_value() -> None:
    with pytest.raises(DecodeError, match="DHT value"):
        decode_dht_value_untrusted(b"\x00" * (MAX_VALUE_BYTES + 1), KEYS)
    with pytest.raises(DecodeError):
        decode_dht_value_untrusted(b"\x00" * NONCE_BYTES, KEYS)


# ---------------------------------------------------------------- verification
def _reason(rec: DhtRecord, *, wall: float = WALL + 1, **ctx: object) -> RecordReject | None:
    return verify_record(decode_dht_value_untrusted(sealed(rec), KEYS), AOR,
                         context(**ctx), wall)  # type: ignore[arg-type]


def _forge_binding_signature(rec: DhtRecord) -> DhtRecord:
    good = rec.binding
    bad_sig = MALLORY.sign(b"meshcomm-envelope-v1\x00" + good.envelope.signed_bytes)
    env = type(good.envelope)(good.envelope.msg_type, good.envelope.incident,
                              good.envelope.origin_key, good.envelope.origin, good.seq,
                              good.envelope.payload, good.envelope.signed_bytes, bad_sig)
    forged = type(good)(good.aor, good.contacts, good.issued_at, good.lifetime_s, good.hold_s,
                        good.caps, good.credential, env, good.record_id)
    return DhtRecord(forged, attach(forged))


def test_forged_owner_signature() -> None:
    assert _reason(_forge_binding_signature(record())) is RecordReject.BAD_SIGNATURE


def test_forged_attachment_signature() -> None:
    rec = record()
    att = rec.attachment
    forged = type(att)(att.incident, att.relay_key, att.addrs, att.binding_hash, att.issued_at,
                       att.expires_at, att.seq, att.signed_bytes,
                       MALLORY.sign(att.signed_bytes))
    assert _reason(DhtRecord(rec.binding, forged)) is RecordReject.ATTACH_BAD_SIGNATURE


def test_attachment_for_another_binding() -> None:
    other = binding(seq=2)
    assert _reason(DhtRecord(binding(seq=1), attach(other))) is RecordReject.ATTACH_WRONG_BINDING


def test_other_incident() -> None:
    b = binding(incident="incident-other")
    assert _reason(DhtRecord(b, attach(b))) is RecordReject.WRONG_INCIDENT
    b = binding()
    assert _reason(DhtRecord(b, attach(b, incident="incident-other"))) is \
        RecordReject.ATTACH_WRONG_INCIDENT


def test_another_aor_under_this_key() -> None:
    b = binding(aor="sip:chief@fire.example")
    value = encode_dht_value(DhtRecord(b, attach(b)), KEYS, nonce(3))
    got = decode_dht_value_untrusted(value, KEYS)
    assert verify_record(got, AOR, context(), WALL + 1) is RecordReject.WRONG_AOR


def test_stale_sequence_via_freshness_memory() -> None:
    memory = FreshnessMemory()
    memory.accepted(binding(seq=5), WALL, credentialed=False)
    assert _reason(record(binding(seq=4)), freshness=memory) is RecordReject.STALE
    assert _reason(record(binding(seq=5)), freshness=memory) is None
    assert _reason(record(binding(seq=6)), freshness=memory) is None


def test_expired_binding_and_attachment() -> None:
    old = binding(issued_at=WALL - 2 * 86400 - 100, lifetime_s=60)
    assert _reason(DhtRecord(old, attach(old))) is RecordReject.EXPIRED
    rec = record(ttl_s=60.0)
    assert _reason(rec, wall=WALL + 30) is None
    assert _reason(rec, wall=WALL + 61) is RecordReject.ATTACH_EXPIRED
    future = record(issued_at=WALL + 3600)
    assert _reason(future) is RecordReject.ATTACH_FUTURE_DATED
    too_long = DhtRecord(binding(), make_attachment(
        RELAY_A, incident=INCIDENT, binding=binding(), addrs=(), issued_at=WALL,
        expires_at=WALL + 7200, seq=1))
    assert _reason(too_long) is RecordReject.ATTACH_FUTURE_DATED


def test_binding_within_clock_tolerance_passes() -> None:
    """Gossip's rule: a binding's signed end is honoured with the clock-skew tolerance."""
    slow = binding(issued_at=WALL - 4000, lifetime_s=3600)   # signer's clock 400 s behind
    assert _reason(DhtRecord(slow, attach(slow))) is None


def test_trust_policy_agency() -> None:
    agency = frozenset({AGENCY.public_key})
    assert _reason(record(), mode=TrustMode.AGENCY, agency_keys=agency) is \
        RecordReject.NO_CREDENTIAL
    cred = issue_credential(AGENCY, aor_pattern="sip:*@fire.example", role="medic",
                            device_key=ALICE.public_key, issued_at=int(WALL - 10),
                            expires_at=int(WALL + 86400)).to_bytes()
    good = binding(credential=cred)
    assert _reason(DhtRecord(good, attach(good)), mode=TrustMode.AGENCY,
                   agency_keys=agency) is None
    rogue = issue_credential(MALLORY, aor_pattern="sip:*@fire.example", role="medic",
                             device_key=ALICE.public_key, issued_at=int(WALL - 10),
                             expires_at=int(WALL + 86400)).to_bytes()
    bad = binding(credential=rogue)
    assert _reason(DhtRecord(bad, attach(bad)), mode=TrustMode.AGENCY,
                   agency_keys=agency) is RecordReject.BAD_CREDENTIAL


_ADDR = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
).flatmap(lambda host: st.integers(1, 65535).map(lambda port: f"{host}:{port}"))


@settings(max_examples=100, deadline=None)
@given(addrs=st.lists(_ADDR, max_size=MAX_UPLINK_ADDRS), seq=st.integers(0, (1 << 64) - 1),
       ttl=st.floats(1.0, 3600.0), n=st.integers(0, 1 << 64))
def test_round_trip_property(addrs: list[str], seq: int, ttl: float, n: int) -> None:
    b = binding(seq=1 + seq % 1000)
    rec = DhtRecord(b, make_attachment(RELAY_A, incident=INCIDENT, binding=b,
                                       addrs=tuple(addrs), issued_at=WALL,
                                       expires_at=WALL + ttl, seq=seq))
    got = decode_dht_value_untrusted(encode_dht_value(rec, KEYS, nonce(n % (1 << 192))), KEYS)
    assert got.attachment == rec.attachment
    assert got.binding.envelope.signed_bytes == b.envelope.signed_bytes
    assert verify_record(got, AOR, context(), WALL + ttl / 2) is None
