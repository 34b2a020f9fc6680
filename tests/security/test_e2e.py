"""End-to-end sealing (meshcomm.security.e2e): round trips, sessions (ephemeral key per
destination, rotated; counter nonces; SHORT headers once confirmed; the LEGACY form still
opens), and every bad input -- garbage, truncation, oversize, wrong key,
wrong sender, wrong kind, tampering -- raises only DecodeError; the sealed form hides the
message and never repeats."""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES
from meshcomm.security.e2e import (
    MAX_CACHED_EPHEMERALS,
    MAX_PLAINTEXT_BYTES,
    MAX_SEALED_BYTES,
    SEAL_OVERHEAD_BYTES,
    SESSION_LIFETIME_S,
    SESSION_MAX_MESSAGES,
    SHORT_OVERHEAD_BYTES,
    Opener,
    Sealer,
    SealForm,
    associated_data,
    random_secret,
)
from meshcomm.security.identity import Identity

ALICE = Identity(hashlib.sha256(b"e2e-alice").digest())
BOB = Identity(hashlib.sha256(b"e2e-bob").digest())
MALLORY = Identity(hashlib.sha256(b"e2e-mallory").digest())
TEXT = b"MESSAGE sip:bob@incident.local SIP/2.0\r\n\r\nsecret: the roof is failing"
SIP = 1


def _sealer(seed: int = 1) -> Sealer:
    return Sealer(ALICE.public_key, random.Random(seed))


def test_round_trip_and_overhead() -> None:
    sealed = _sealer().seal(TEXT, BOB.public_key, SIP, 0.0)
    assert len(sealed) == len(TEXT) + SEAL_OVERHEAD_BYTES == len(TEXT) + 51
    assert sealed[0] == SealForm.FULL
    assert TEXT not in sealed and b"roof" not in sealed
    assert Opener(BOB).open_untrusted(sealed, ALICE.public_key, SIP) == TEXT
    assert MAX_SEALED_BYTES == MAX_MESSAGE_BYTES


def test_sessions_share_an_ephemeral_key_never_a_nonce_and_rotate() -> None:
    sealer = _sealer()
    a = sealer.seal(TEXT, BOB.public_key, SIP, 0.0)
    b = sealer.seal(TEXT, BOB.public_key, SIP, 1.0)
    assert a[1:33] == b[1:33] and a[33:35] != b[33:35] and a != b    # same session
    assert (a[33:35], b[33:35]) == (b"\x00\x00", b"\x00\x01")      # counter nonces
    other = sealer.seal(TEXT, MALLORY.public_key, SIP, 1.0)
    assert other[1:33] != a[1:33]                                  # per destination
    later = sealer.seal(TEXT, BOB.public_key, SIP, SESSION_LIFETIME_S + 0.5)
    assert later[1:33] != a[1:33]                                  # rotated by age
    eph = {later[1:33]}
    for _ in range(SESSION_MAX_MESSAGES + 1):
        eph.add(sealer.seal(TEXT, BOB.public_key, SIP, SESSION_LIFETIME_S + 1)[1:33])
    assert len(eph) == 2                                           # rotated by count
    assert sealer.seal(TEXT, BOB.public_key, SIP, -5.0)[1:33] not in eph | {a[1:33]}
    opener = Opener(BOB)
    for sealed in (a, b, later):
        assert opener.open_untrusted(sealed, ALICE.public_key, SIP) == TEXT
    # deterministic for a seed (the simulator), different across seeds
    assert _sealer(5).seal(TEXT, BOB.public_key, SIP, 0.0) == _sealer(5).seal(
        TEXT, BOB.public_key, SIP, 0.0)
    assert _sealer(5).seal(TEXT, BOB.public_key, SIP, 0.0) != _sealer(6).seal(
        TEXT, BOB.public_key, SIP, 0.0)


def test_a_flood_of_ephemeral_keys_stays_bounded_and_known_senders_still_open() -> None:
    opener = Opener(BOB)
    for seed in range(MAX_CACHED_EPHEMERALS + 50):
        sealed = _sealer(seed + 100).seal(TEXT, BOB.public_key, SIP, 0.0)
        assert opener.open_untrusted(sealed, ALICE.public_key, SIP) == TEXT
    assert len(opener._keys) == MAX_CACHED_EPHEMERALS
    old = _sealer(100).seal(TEXT, BOB.public_key, SIP, 0.0)        # evicted, recomputed
    assert opener.open_untrusted(old, ALICE.public_key, SIP) == TEXT


@pytest.mark.parametrize("who, sender, kind", [
    (MALLORY, ALICE.public_key, SIP),      # wrong key: not the destination
    (BOB, MALLORY.public_key, SIP),        # re-signed by another origin
    (BOB, ALICE.public_key, 2),            # moved to another application kind
])
def test_wrong_key_sender_or_kind_does_not_open(who: Identity, sender: bytes, kind: int) -> None:
    sealed = _sealer().seal(TEXT, BOB.public_key, SIP, 0.0)
    with pytest.raises(DecodeError) as info:
        Opener(who).open_untrusted(sealed, sender, kind)
    assert info.value.reason == "bad_signature"


def test_every_flipped_bit_is_refused() -> None:
    sealed = _sealer().seal(TEXT, BOB.public_key, SIP, 0.0)
    opener = Opener(BOB)
    for i in range(len(sealed)):
        for bit in (0, 7):
            tampered = bytearray(sealed)
            tampered[i] ^= 1 << bit
            with pytest.raises(DecodeError):
                opener.open_untrusted(bytes(tampered), ALICE.public_key, SIP)


def test_truncation_oversize_version_and_low_order_keys() -> None:
    sealed = _sealer().seal(TEXT, BOB.public_key, SIP, 0.0)
    opener = Opener(BOB)
    for n in range(len(sealed)):
        with pytest.raises(DecodeError):
            opener.open_untrusted(sealed[:n], ALICE.public_key, SIP)
    with pytest.raises(DecodeError) as info:
        opener.open_untrusted(b"\x01" * (MAX_SEALED_BYTES + 1), ALICE.public_key, SIP)
    assert info.value.reason == "oversized"
    for form in (0, 4, 5, 0x4D):                                   # NACK, SIP text: not sealed
        with pytest.raises(DecodeError) as info:
            opener.open_untrusted(bytes([form]) + sealed[1:], ALICE.public_key, SIP)
        assert info.value.reason == "version"
    for point in (bytes(32), b"\x01" + bytes(31), b"\xff" * 32):   # small-order / invalid
        for form in (1, 2):
            with pytest.raises(DecodeError):
                opener.open_untrusted(bytes([form]) + point + sealed[33:], ALICE.public_key,
                                      SIP)
    with pytest.raises(DecodeError):
        opener.open_untrusted(sealed, b"short", SIP)


def test_sealing_refuses_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        _sealer().seal(b"x" * (MAX_PLAINTEXT_BYTES + 1), BOB.public_key, SIP, 0.0)
    with pytest.raises(LocalProtocolError):
        _sealer().seal(TEXT, b"\x00" * 31, SIP, 0.0)
    big = b"y" * MAX_PLAINTEXT_BYTES
    assert Opener(BOB).open_untrusted(_sealer().seal(big, BOB.public_key, SIP, 0.0),
                                      ALICE.public_key, SIP) == big


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * MAX_SEALED_BYTES))
def test_any_bytes_open_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Opener(BOB).open_untrusted(data, ALICE.public_key, SIP)


def _legacy_seal(message: bytes, seed: int) -> bytes:
    """A message sealed in the LEGACY form (as parcels held before issue 13 are)."""
    import nacl.bindings

    from meshcomm.security.e2e import _session_key, curve_public_key
    rng = random.Random(seed)
    eph_secret = random_secret(rng)
    eph = nacl.bindings.crypto_scalarmult_base(eph_secret)
    dst = curve_public_key(BOB.public_key)
    key = _session_key(nacl.bindings.crypto_scalarmult(eph_secret, dst), eph, dst)
    nonce = bytes(range(24))
    box = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        message, associated_data(ALICE.public_key, BOB.node_id, SIP), nonce, key)
    return b"\x01" + eph + nonce + box


def test_the_legacy_form_still_opens() -> None:
    legacy = _legacy_seal(TEXT, 3)
    opened = Opener(BOB).open_frame_untrusted(legacy, ALICE.public_key, SIP)
    assert opened.message == TEXT and opened.form is SealForm.LEGACY


def test_short_header_once_confirmed_and_its_bytes() -> None:
    sealer, opener = _sealer(), Opener(BOB)
    first = sealer.seal_session(TEXT, BOB.public_key, SIP, 0.0, short_ok=True)
    second = sealer.seal_session(TEXT, BOB.public_key, SIP, 0.1, short_ok=True)
    assert first.form is second.form is SealForm.FULL          # not confirmed yet
    sealer.confirm(BOB.public_key)          # a message from Bob opened here
    third = sealer.seal_session(TEXT, BOB.public_key, SIP, 0.2, short_ok=True)
    assert third.form is SealForm.SHORT and third.session_id == first.session_id
    assert len(third.data) == len(TEXT) + SHORT_OVERHEAD_BYTES == len(TEXT) + 23
    assert sealer.seal(TEXT, BOB.public_key, SIP, 0.3)[0] == SealForm.FULL   # parcels
    for sealed in (first, second, third):
        got = opener.open_frame_untrusted(sealed.data, ALICE.public_key, SIP)
        assert (got.message, got.session_id, got.counter) == (
            TEXT, sealed.session_id, sealed.counter)


def test_unknown_session_after_a_receiver_restart_then_full_again() -> None:
    sealer = _sealer()
    Opener(BOB).open_untrusted(sealer.seal_session(TEXT, BOB.public_key, SIP, 0.0,
                                                   short_ok=True).data, ALICE.public_key, SIP)
    sealer.confirm(BOB.public_key)
    short = sealer.seal_session(TEXT, BOB.public_key, SIP, 1.0, short_ok=True)
    restarted = Opener(BOB)                 # Bob restarted: no session held
    with pytest.raises(DecodeError) as info:
        restarted.open_untrusted(short.data, ALICE.public_key, SIP)
    assert info.value.reason == "unknown_session"
    assert not sealer.unconfirm(BOB.public_key, b"nope")        # not the current session
    assert sealer.unconfirm(BOB.public_key, short.session_id)
    again = sealer.seal_session(TEXT, BOB.public_key, SIP, 1.1, short_ok=True)
    assert again.form is SealForm.FULL and again.counter > short.counter
    assert restarted.open_untrusted(again.data, ALICE.public_key, SIP) == TEXT
    sealer.confirm(BOB.public_key)
    later = sealer.seal_session(TEXT, BOB.public_key, SIP, 1.2, short_ok=True)
    assert later.form is SealForm.SHORT
    assert restarted.open_untrusted(later.data, ALICE.public_key, SIP) == TEXT


def test_a_session_of_another_sender_is_not_found_by_its_id() -> None:
    """Sessions are held by (sender key, session id): Mallory naming Alice's session id
    under her own key finds nothing."""
    sealer, opener = _sealer(), Opener(BOB)
    opener.open_untrusted(sealer.seal(TEXT, BOB.public_key, SIP, 0.0), ALICE.public_key, SIP)
    sealer.confirm(BOB.public_key)
    short = sealer.seal_session(TEXT, BOB.public_key, SIP, 0.1, short_ok=True).data
    with pytest.raises(DecodeError) as info:
        opener.open_untrusted(short, MALLORY.public_key, SIP)
    assert info.value.reason == "unknown_session"
    assert opener.open_untrusted(short, ALICE.public_key, SIP) == TEXT


def test_a_sender_restart_never_reuses_a_key_and_nonce() -> None:
    """Every restart draws a new ephemeral key (the runtime's key source is a CSPRNG), so
    the counter starting again at 0 is under a new key: no (key, nonce) pair repeats."""
    system = random.SystemRandom()
    seen: set[tuple[bytes, bytes]] = set()
    for _restart in range(20):
        sealer = Sealer(ALICE.public_key, random.Random(system.getrandbits(64)))
        for i in range(5):
            sealed = sealer.seal(TEXT, BOB.public_key, SIP, float(i))
            name = (sealed[1:33], sealed[33:35])
            assert name not in seen
            seen.add(name)
    assert len({eph for eph, _ in seen}) == 20


def test_every_flipped_bit_of_a_short_message_is_refused() -> None:
    sealer, opener = _sealer(), Opener(BOB)
    opener.open_untrusted(sealer.seal(TEXT, BOB.public_key, SIP, 0.0), ALICE.public_key, SIP)
    sealer.confirm(BOB.public_key)
    short = sealer.seal_session(TEXT, BOB.public_key, SIP, 0.1, short_ok=True).data
    for i in range(len(short)):
        tampered = bytearray(short)
        tampered[i] ^= 0x40
        with pytest.raises(DecodeError):
            opener.open_untrusted(bytes(tampered), ALICE.public_key, SIP)


def test_the_held_flag_says_whether_the_sender_holds_our_session() -> None:
    """Bob sets HELD when he holds the session of Alice's last message he opened; Alice
    goes SHORT only after such a message. After Bob restarts he holds nothing: no flag."""
    from meshcomm.security.e2e import HELD_FLAG
    alice, bob_sealer, bob = _sealer(1), Sealer(BOB.public_key, random.Random(2)), Opener(BOB)
    assert not bob.holds_from(ALICE.public_key)
    first = alice.seal_session(TEXT, BOB.public_key, SIP, 0.0, short_ok=True)
    bob.open_untrusted(first.data, ALICE.public_key, SIP)
    assert bob.holds_from(ALICE.public_key)
    reply = bob_sealer.seal_session(TEXT, ALICE.public_key, SIP, 0.1, short_ok=True,
                                    held=bob.holds_from(ALICE.public_key))
    assert reply.data[0] == SealForm.FULL | HELD_FLAG
    opened = Opener(ALICE).open_frame_untrusted(reply.data, BOB.public_key, SIP)
    assert opened.held and opened.message == TEXT
    alice.confirm(BOB.public_key)
    assert alice.seal_session(TEXT, BOB.public_key, SIP, 0.2, short_ok=True).form is (
        SealForm.SHORT)
    assert not Opener(BOB).holds_from(ALICE.public_key)          # restarted: nothing held
    plain = bob_sealer.seal_session(TEXT, ALICE.public_key, SIP, 0.3, short_ok=True)
    assert not Opener(ALICE).open_frame_untrusted(plain.data, BOB.public_key, SIP).held
