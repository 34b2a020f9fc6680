"""End-to-end sealing (meshcomm.security.e2e): round trips, sessions (ephemeral key per
destination, rotated), and every bad input -- garbage, truncation, oversize, wrong key,
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
    Opener,
    Sealer,
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
    assert len(sealed) == len(TEXT) + SEAL_OVERHEAD_BYTES == len(TEXT) + 73
    assert TEXT not in sealed and b"roof" not in sealed
    assert Opener(BOB).open_untrusted(sealed, ALICE.public_key, SIP) == TEXT
    assert MAX_SEALED_BYTES == MAX_MESSAGE_BYTES


def test_sessions_share_an_ephemeral_key_never_a_nonce_and_rotate() -> None:
    sealer = _sealer()
    a = sealer.seal(TEXT, BOB.public_key, SIP, 0.0)
    b = sealer.seal(TEXT, BOB.public_key, SIP, 1.0)
    assert a[1:33] == b[1:33] and a[33:57] != b[33:57] and a != b    # same session
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
    with pytest.raises(DecodeError) as info:
        opener.open_untrusted(b"\x02" + sealed[1:], ALICE.public_key, SIP)
    assert info.value.reason == "version"
    for point in (bytes(32), b"\x01" + bytes(31), b"\xff" * 32):   # small-order / invalid
        with pytest.raises(DecodeError):
            opener.open_untrusted(b"\x01" + point + sealed[33:], ALICE.public_key, SIP)
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
