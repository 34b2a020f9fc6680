"""Per-hop acks on the wire (issue 13): link ack frames and acks in a frame's hop part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity
from meshcomm.wire import limits
from meshcomm.wire.envelope import (
    FLAG_ACKS,
    LINK_ACK_MARKER,
    Hop,
    MsgType,
    decode_frame_untrusted,
    decode_link_ack_untrusted,
    encode_frame,
    encode_link_ack,
    parse_frame_untrusted,
    seal,
    split_ack_ids,
)

ID = limits.ACK_ID_LEN
MAC = b"m" * limits.LINK_MAC_LEN
ENV = seal(Identity(b"k" * 32), MsgType.UNICAST, "default", 1, [b"d" * 8, 7, b"x", 0, []])


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
    plain = encode_frame(ENV, Hop(ttl=5, addressed=True))
    ids = b"i" * (3 * ID)
    carrying = encode_frame(ENV, Hop(ttl=5, addressed=True, acks=ids, mac=MAC))
    assert len(carrying) - len(plain) == 1 + 3 * ID + limits.LINK_MAC_LEN
    env, hop = decode_frame_untrusted(carrying, "default")
    assert env.signed_bytes == ENV.signed_bytes and env.signature == ENV.signature
    assert (hop.acks, hop.mac, hop.ttl, hop.addressed) == (ids, MAC, 5, True)
    assert parse_frame_untrusted(plain)[1].acks == b""


PLAIN = encode_frame(ENV, Hop(ttl=5, addressed=True))
PAYLOAD_LEN = len(parse_frame_untrusted(PLAIN)[0].payload_bytes)


def _with_acks(part: bytes) -> bytes:
    """PLAIN with the acks flag set and ``part`` where the acks belong (wire version 2:
    count byte, ids, MAC; adjusted from the msgpack hop list of version 1)."""
    return (bytes([PLAIN[0] | FLAG_ACKS]) + PLAIN[1:-PAYLOAD_LEN] + part
            + PLAIN[-PAYLOAD_LEN:])


def test_acks_part_round_trips() -> None:
    _, hop = parse_frame_untrusted(_with_acks(b"\x02" + b"i" * (2 * ID) + MAC))
    assert (hop.acks, hop.mac) == (b"i" * (2 * ID), MAC)


@pytest.mark.parametrize("part", [
    b"\x00" + MAC,                                    # no ids
    bytes([limits.MAX_ACK_IDS + 1]) + b"i" * (ID * (limits.MAX_ACK_IDS + 1)) + MAC,
    b"\x01" + b"i" * ID + MAC[:-1],                    # short MAC (eats the payload)
    b"\x01" + b"i" * ID + MAC + b"x",                  # one byte too many
    b"\x02" + b"i" * ID + MAC,                         # fewer ids than counted
    b"\x01" + b"i" * ID,                               # no MAC
    b"",                                              # flag without acks
])
def test_bad_acks_in_the_hop_part_are_decode_errors(part: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_frame_untrusted(_with_acks(part))


@given(st.binary(max_size=200))
@settings(max_examples=400)
def test_any_hop_part_gives_value_or_decode_error(part: bytes) -> None:
    try:
        _, hop = parse_frame_untrusted(_with_acks(part))
    except DecodeError:
        return
    assert bool(hop.acks) == bool(hop.mac)
    assert len(hop.acks) % ID == 0 and len(hop.acks) <= ID * limits.MAX_ACK_IDS
