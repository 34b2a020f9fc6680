"""SDP (RFC 4566) codec and RFC 3264 offer/answer."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip.sdp import (
    MAX_SDP_SIZE_BYTES,
    AudioCodec,
    AudioPolicy,
    Direction,
    NegotiatedAudio,
    NotAcceptable,
    answer_offer,
    make_offer,
    negotiate_answer,
    parse_sdp_untrusted,
    serialize_sdp,
    with_direction,
)

LINPHONE_STYLE_OFFER = (
    b"v=0\r\n"
    b"o=alice 1234 678 IN IP4 192.0.2.10\r\n"
    b"s=Talk\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    b"m=audio 7078 RTP/AVP 96 97 0 8 101\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1; usedtx=1\r\n"
    b"a=rtpmap:97 speex/16000\r\n"
    b"a=rtpmap:101 telephone-event/48000\r\n"
    b"a=ptime:40\r\n"
    b"m=video 9078 RTP/AVP 99\r\n"
    b"a=rtpmap:99 VP8/90000\r\n"
)


def test_parse_fields() -> None:
    sdp = parse_sdp_untrusted(LINPHONE_STYLE_OFFER)
    assert sdp.origin.username == "alice" and sdp.origin.session_version == 678
    assert sdp.connection is not None and sdp.connection.address == "192.0.2.10"
    audio, video = sdp.media
    assert audio.port == 7078 and audio.formats == ("96", "97", "0", "8", "101")
    maps = audio.rtpmaps()
    assert maps[96].encoding == "opus" and maps[96].channels == 2
    assert maps[0].encoding == "PCMU"          # static payload type without rtpmap
    assert audio.fmtp(96) == {"useinbandfec": "1", "usedtx": "1"}
    assert audio.int_attribute("ptime") == 40
    assert video.media == "video"


def test_serialize_round_trip() -> None:
    sdp = parse_sdp_untrusted(LINPHONE_STYLE_OFFER)
    assert parse_sdp_untrusted(serialize_sdp(sdp)) == sdp
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=7)
    assert parse_sdp_untrusted(offer.serialize()) == offer


def test_answer_picks_opus_keeps_offer_payload_types_and_rejects_video() -> None:
    offer = parse_sdp_untrusted(LINPHONE_STYLE_OFFER)
    result = answer_offer(offer, address="10.0.0.2", rtp_port=5000, session_id=9)
    assert not isinstance(result, NotAcceptable)
    answer, neg = result
    assert neg.codec is AudioCodec.OPUS and neg.payload_type == 96
    assert neg.remote_address == "192.0.2.10" and neg.remote_port == 7078
    assert neg.ptime_ms == 40 and neg.telephone_event_pt == 101
    assert dict(neg.remote_fmtp)["useinbandfec"] == "1"
    assert neg.direction is Direction.SENDRECV
    audio, video = answer.media
    assert audio.formats[0] == "96" and "97" not in audio.formats
    assert audio.fmtp(96)["useinbandfec"] == "1"
    assert audio.attribute("maxptime") == "60"
    assert video.port == 0                       # RFC 3264 §6: rejected stream
    # The offerer's view of that answer agrees.
    back = negotiate_answer(offer, parse_sdp_untrusted(answer.serialize()))
    assert isinstance(back, NegotiatedAudio)
    assert back.codec is AudioCodec.OPUS and back.remote_port == 5000


def test_pcmu_only_offer() -> None:
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1,
                       policy=AudioPolicy(codecs=(AudioCodec.PCMU,)))
    result = answer_offer(offer, address="10.0.0.2", rtp_port=5000, session_id=2)
    assert not isinstance(result, NotAcceptable)
    assert result[1].codec is AudioCodec.PCMU and result[1].payload_type == 0
    assert result[1].telephone_event_pt == 100


def test_nothing_acceptable() -> None:
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1,
                       policy=AudioPolicy(codecs=(AudioCodec.PCMA,)))
    result = answer_offer(offer, address="10.0.0.2", rtp_port=5000, session_id=2,
                          policy=AudioPolicy(codecs=(AudioCodec.OPUS,)))
    assert isinstance(result, NotAcceptable)
    video_only = parse_sdp_untrusted(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n"
                                     b"c=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 5 RTP/AVP 31\r\n")
    assert isinstance(answer_offer(video_only, address="a", rtp_port=1, session_id=1),
                      NotAcceptable)
    mono_opus = parse_sdp_untrusted(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n"
                                    b"c=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5 RTP/AVP 96\r\n"
                                    b"a=rtpmap:96 opus/48000\r\n")
    assert isinstance(answer_offer(mono_opus, address="a", rtp_port=1, session_id=1),
                      NotAcceptable)


@pytest.mark.parametrize("offered,wanted,expected", [
    (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
    (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
    (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
    (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
    (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
    (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
])
def test_direction_rules(offered: Direction, wanted: Direction, expected: Direction) -> None:
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1, direction=offered)
    result = answer_offer(offer, address="10.0.0.2", rtp_port=5000, session_id=2,
                          direction=wanted)
    assert not isinstance(result, NotAcceptable)
    assert result[1].direction is expected
    assert result[0].media[0].direction is expected


def test_hold_and_resume_bump_version() -> None:
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1)
    held = with_direction(offer, Direction.SENDONLY)
    assert held.media[0].direction is Direction.SENDONLY
    assert held.origin.session_version == offer.origin.session_version + 1
    resumed = with_direction(held, Direction.SENDRECV)
    assert resumed.media[0].direction is Direction.SENDRECV
    assert resumed.origin.session_version == offer.origin.session_version + 2


def test_old_style_hold_connection_zero() -> None:
    offer = make_offer(address="0.0.0.0", rtp_port=4000, session_id=1)
    result = answer_offer(offer, address="10.0.0.2", rtp_port=5000, session_id=2)
    assert not isinstance(result, NotAcceptable)
    assert result[1].direction is Direction.RECVONLY   # we must not send to 0.0.0.0


@pytest.mark.parametrize("data", [
    b"",
    b"v=1\r\n",
    b"o=- 1 1 IN IP4 1.2.3.4\r\n",
    b"v=0\r\ns=-\r\n",                                     # no o=
    b"v=0\r\no=- 1 x IN IP4 1.2.3.4\r\ns=-\r\n",         # bad version
    b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 99999 RTP/AVP 0\r\n",
    b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5 RTP/AVP\r\n",
    b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nx=unknown\r\n",
    b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5 RTP/AVP 0\r\ns=late\r\n",
    b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4\r\n",
    b"v=0\r\nnonsense\r\n",
    b"v=0\r\n\xff\r\n",
    b"v=0\r\n" + b"a=x\r\n" * (MAX_SDP_SIZE_BYTES // 5),
])
def test_rejects_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_sdp_untrusted(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_sdp_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_sdp_untrusted(b"v=0\r\n" + data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 2**32), st.sampled_from(list(Direction)),
       st.lists(st.sampled_from(list(AudioCodec)), min_size=1, max_size=3, unique=True))
def test_offer_round_trip_property(port: int, version: int, direction: Direction,
                                   codecs: list[AudioCodec]) -> None:
    offer = make_offer(address="2001:db8::1", rtp_port=port, session_id=5,
                       session_version=version, direction=direction,
                       policy=AudioPolicy(codecs=tuple(codecs)))
    parsed = parse_sdp_untrusted(offer.serialize())
    assert parsed == offer
    assert replace(parsed, media=()) == replace(offer, media=())
