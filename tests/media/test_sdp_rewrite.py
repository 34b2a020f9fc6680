"""SDP rewriting details: several streams, ICE and a=rtcp, non-RTP streams, host names."""

from __future__ import annotations

from meshcomm.media.sdp_rewrite import client_endpoints, for_client, for_mesh
from meshcomm.media.session import ClientEndpoint, LocalPorts
from meshcomm.sip.sdp import parse_sdp_untrusted

FAR = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
       b"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n"
       b"m=audio 7000 RTP/AVP 0\r\na=rtcp:7005\r\na=candidate:1 1 UDP 1 10.0.0.9 7000 typ host\r\n"
       b"a=sendrecv\r\n"
       b"m=video 7010/2 RTP/AVP 96\r\nc=IN IP4 10.0.0.10\r\na=rtpmap:96 H264/90000\r\n"
       b"m=application 7020 UDP/BFCP *\r\n"
       b"m=audio 0 RTP/AVP 8\r\n")


def test_each_rtp_stream_gets_its_own_ports_and_the_rest_is_disabled() -> None:
    ports = {0: LocalPorts("127.0.0.1", 20000, 20001), 1: LocalPorts("127.0.0.1", 20002, 20009)}
    sdp = for_client(parse_sdp_untrusted(FAR), ports)
    audio, video, app, rejected = sdp.media
    assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
    assert (audio.port, audio.connection.address) == (20000, "127.0.0.1")  # type: ignore[union-attr]
    assert not audio.has_attribute("candidate") and audio.attribute("rtcp") is None
    assert (video.port, video.port_count, video.attribute("rtcp")) == (20002, None, "20009")
    assert video.connection is not None and video.connection.address == "127.0.0.1"
    assert app.port == 0                        # not RTP: we cannot carry it
    assert rejected.port == 0 and rejected.formats == ("8",)
    assert not {k for k, _ in sdp.attributes} & {"ice-ufrag", "ice-pwd"}


def test_client_endpoints_follow_rtcp_attribute_and_media_connection() -> None:
    found = client_endpoints(parse_sdp_untrusted(FAR))
    assert found == {0: ClientEndpoint(("10.0.0.9", 7000), ("10.0.0.9", 7005), False),
                     1: ClientEndpoint(("10.0.0.10", 7010), ("10.0.0.10", 7011), False)}


def test_host_names_and_null_addresses_give_no_endpoint() -> None:
    for host in (b"pc33.example.com", b"0.0.0.0"):
        body = (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 " + host +
                b"\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n")
        assert client_endpoints(parse_sdp_untrusted(body)) == {
            0: ClientEndpoint(None, None, False)}


def test_for_mesh_replaces_attributes_a_client_smuggled_in() -> None:
    body = (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
            b"a=x-meshcomm-nonce:" + b"00" * 16 + b"\r\nm=audio 7000 RTP/AVP 0\r\n"
            b"a=x-meshcomm-key:" + b"11" * 32 + b"\r\na=x-meshcomm-eph:" + b"55" * 32 + b"\r\n")
    sdp = for_mesh(parse_sdp_untrusted(body), b"\x22" * 32, b"\x33" * 16, b"\x44" * 32)
    assert [(k, v) for k, v in sdp.attributes if k.startswith("x-meshcomm")] == [
        ("x-meshcomm-key", "22" * 32), ("x-meshcomm-nonce", "33" * 16),
        ("x-meshcomm-eph", "44" * 32)]
    assert sdp.media[0].attributes == ()
