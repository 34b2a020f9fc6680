"""Per-hop acks on the wire (issue 13): link ack frames and acks in a frame's hop part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    LINK_ACK_MARKER,
    Hop,
    MsgType,
    decode_frame_untrusted,
    decode_link_ack_untrusted,
    encode_frame,
    encode_link_ack,
    seal,
    split_ack_ids,
)

ID = limits.ACK_ID_LEN
MAC = b"m" * limits.LINK_MAC_LEN
ENV = seal(Identity(b"k" * 32), MsgType.UNICAST, "default", 1, [b"d" * 32, 7, b"x", 0, []])


def test_link_ack_round_trip_and_size() -> None:
    for n in (1, 5, limits.MAX_ACK_IDS):
        ids = bytes(range(n * ID))
        frame = encode_link_ack(ids, MAC)
        assert len(frame) == 1 + n * ID + limits.LINK_MAC_LEN
        assert decode_link_ack_untrusted(frame) == (ids, MAC)
        assert split_ack_ids(ids) == [ids[i:i + ID] for i in range(0, n * ID, ID)]
    assert len(encode_link_ack(b"i" * ID, MAC)) == 15


@pytest.mark.parametrize("frame,reason", [
    (b"", "unknown_type"),
    (LINK_ACK_MARKER, "truncated"),
    (LINK_ACK_MARKER + MAC, "truncated"),                          # no id
    (LINK_ACK_MARKER + b"i" * (ID - 1) + MAC, "truncated"),
    (LINK_ACK_MARKER + b"i" * (ID + 1) + MAC, "malformed"),        # not whole ids
    (LINK_ACK_MARKER + b"i" * (ID * (limits.MAX_ACK_IDS + 1)) + MAC, "oversized"),
    (b"\x93" + b"i" * ID + MAC, "unknown_type"),
])
def test_bad_link_acks_have_reasons(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_link_ack_untrusted(frame)
    assert info.value.reason == reason


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_link_ack_any_bytes_give_value_or_decode_error(data: bytes) -> None:
    for frame in (data, LINK_ACK_MARKER + data):
        try:
            ids, mac = decode_link_ack_untrusted(frame)
        except DecodeError:
            continue
        assert 1 <= len(ids) // ID <= limits.MAX_ACK_IDS and len(ids) % ID == 0
        assert len(mac) == limits.LINK_MAC_LEN


def test_acks_ride_in_the_hop_part_outside_the_signature() -> None:
    plain = encode_frame(ENV, Hop(ttl=5, to=b"abcd"))
    ids = b"i" * (3 * ID)
    carrying = encode_frame(ENV, Hop(ttl=5, to=b"abcd", acks=ids, mac=MAC))
    assert len(carrying) - len(plain) == 2 + 3 * ID + 2 + limits.LINK_MAC_LEN
    env, hop = decode_frame_untrusted(carrying)
    assert env.signed_bytes == ENV.signed_bytes and env.signature == ENV.signature
    assert (hop.acks, hop.mac, hop.ttl, hop.to) == (ids, MAC, 5, b"abcd")
    assert decode_frame_untrusted(plain)[1].acks == b""


def _with_hop(fields: list[object]) -> bytes:
    return codec.pack([ENV.signed_bytes, ENV.signature, fields])


@pytest.mark.parametrize("extra", [
    [b"", MAC],                                       # no ids
    [b"i" * (ID + 2), MAC],                           # not whole ids
    [b"i" * (ID * (limits.MAX_ACK_IDS + 1)), MAC],    # too many
    [b"i" * ID, MAC[:-1]],                            # short MAC
    [b"i" * ID, MAC + b"x"],
    ["i" * ID, MAC],                                  # wrong types
    [b"i" * ID, 7],
    [b"i" * ID],                                      # 6 fields
    [b"i" * ID, MAC, b""],                            # 8 fields
])
def test_bad_acks_in_the_hop_part_are_decode_errors(extra: list[object]) -> None:
    with pytest.raises(DecodeError):
        decode_frame_untrusted(_with_hop([5, 0, 0, 0, b"abcd", *extra]))


@given(st.lists(st.one_of(st.integers(-5, 1 << 20), st.binary(max_size=120),
                          st.text(max_size=8), st.none()), max_size=9))
@settings(max_examples=400)
def test_any_hop_part_gives_value_or_decode_error(fields: list[object]) -> None:
    try:
        _, hop = decode_frame_untrusted(_with_hop(fields))
    except DecodeError:
        return
    assert bool(hop.acks) == bool(hop.mac)
    assert len(hop.acks) % ID == 0 and len(hop.acks) <= ID * limits.MAX_ACK_IDS
