"""MEDIA payload codec, tags and the replay window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.media.packet import (
    MAX_MEDIA_PAYLOAD_BYTES,
    MAX_PACKET_BYTES,
    REPLAY_WINDOW_PACKETS,
    TAG_SIZE_BYTES,
    Channel,
    MediaPacket,
    ReplayVerdict,
    ReplayWindow,
    decode_media_untrusted,
    encode_media,
    open_media_untrusted,
)

KEY = bytes(range(32))
STREAM = b"streamid"
RTP = bytes([0x80, 0x00]) + b"\x00" * 10 + b"\xff" * 160


@given(st.binary(max_size=1200))
def test_any_bytes_decode_to_packet_or_decode_error(data: bytes) -> None:
    try:
        media = decode_media_untrusted(data)
    except DecodeError:
        return
    assert isinstance(media, MediaPacket)
    assert len(media.tag) == TAG_SIZE_BYTES


@given(st.binary(max_size=1200))
def test_any_bytes_never_authenticate(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_media_untrusted(KEY, STREAM, data)


@given(counter=st.integers(0, 2**64 - 1), channel=st.sampled_from(Channel),
       packet=st.binary(min_size=12, max_size=MAX_PACKET_BYTES))
def test_round_trip(counter: int, channel: Channel, packet: bytes) -> None:
    payload = encode_media(KEY, STREAM, counter, channel, packet)
    assert len(payload) <= MAX_MEDIA_PAYLOAD_BYTES
    media = open_media_untrusted(KEY, STREAM, payload)
    assert (media.counter, media.channel, media.packet) == (counter, channel, packet)


def test_forgery_is_rejected_for_every_flipped_byte() -> None:
    payload = encode_media(KEY, STREAM, 42, Channel.RTP, RTP)
    for i in range(len(payload)):
        forged = bytearray(payload)
        forged[i] ^= 0x01
        with pytest.raises(DecodeError):
            open_media_untrusted(KEY, STREAM, bytes(forged))


def test_wrong_key_or_stream_is_bad_tag() -> None:
    payload = encode_media(KEY, STREAM, 1, Channel.RTCP, RTP[:8])
    for key, stream in ((bytes(32), STREAM), (KEY, b"otherstr")):
        with pytest.raises(DecodeError) as info:
            open_media_untrusted(key, stream, payload)
        assert info.value.reason == "bad_tag"


def test_truncation_and_oversize_have_their_reasons() -> None:
    payload = encode_media(KEY, STREAM, 1, Channel.RTP, RTP)
    with pytest.raises(DecodeError) as info:
        decode_media_untrusted(payload[:20])
    assert info.value.reason == "truncated"
    with pytest.raises(DecodeError) as info:
        decode_media_untrusted(b"\x00" * (MAX_MEDIA_PAYLOAD_BYTES + 1))
    assert info.value.reason == "oversize"


def test_encoder_refuses_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        encode_media(KEY, STREAM, 0, Channel.RTP, b"x" * (MAX_PACKET_BYTES + 1))
    with pytest.raises(LocalProtocolError):
        encode_media(KEY, STREAM, 0, Channel.RTP, b"x" * 11)
    with pytest.raises(LocalProtocolError):
        encode_media(KEY, STREAM, 2**64, Channel.RTP, RTP)
    with pytest.raises(LocalProtocolError):
        encode_media(KEY, b"short", 0, Channel.RTP, RTP)


def test_replay_window_slides() -> None:
    window = ReplayWindow()
    for counter in (5, 3, 4, 1000):
        assert window.check(counter) is ReplayVerdict.FRESH
        window.accept(counter)
    assert window.check(5) is ReplayVerdict.REPLAY
    assert window.check(2) is ReplayVerdict.FRESH              # late but never seen
    assert window.check(1000 - REPLAY_WINDOW_PACKETS) is ReplayVerdict.TOO_OLD
    window.accept(2**63)                                        # a jump clears the window
    assert window.check(1000) is ReplayVerdict.TOO_OLD
    assert window.check(2**63) is ReplayVerdict.REPLAY
    assert window.check(2**63 - 1) is ReplayVerdict.FRESH


@given(st.lists(st.integers(0, 3000), max_size=300))
def test_replay_window_accepts_each_counter_at_most_once(counters: list[int]) -> None:
    window = ReplayWindow()
    accepted: list[int] = []
    for counter in counters:
        if window.check(counter) is ReplayVerdict.FRESH:
            window.accept(counter)
            accepted.append(counter)
    assert len(accepted) == len(set(accepted))
    # Anything within the window of the highest that we have not accepted is still fresh.
    if accepted:
        top = max(accepted)
        for c in range(max(0, top - REPLAY_WINDOW_PACKETS + 1), top + 1):
            expected = ReplayVerdict.REPLAY if c in accepted else ReplayVerdict.FRESH
            assert window.check(c) is expected
