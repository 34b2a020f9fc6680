"""SIP message API: parsing details, typed accessors, builders, serializer."""

from __future__ import annotations

import pytest

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip import (
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    make_sip_uri,
    parse_message_untrusted,
    parse_name_addr_untrusted,
    parse_via_untrusted,
)

BASE = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP [fe80::1]:5060;branch=z9hG4bKabc;rport\r\n"
    b"f: Alice <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: call-1@example.com\r\n"
    b"CSeq: 7 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
)


def _msg(extra: bytes = b"", body: bytes = b"") -> SipRequest:
    data = BASE + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    msg = parse_message_untrusted(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_compact_names_are_canonicalised() -> None:
    msg = _msg(b"m: <sip:alice@[fe80::1]>;expires=60\r\nl: 0\r\n".replace(b"l: 0\r\n", b""))
    assert [n for n, _ in msg.headers][:5] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert msg.get_header("CALL-ID") == msg.get_header("i") == "call-1@example.com"
    assert msg.contacts[0].param("expires") == "60"
    assert msg.top_via == Via("UDP", "[fe80::1]", 5060, (("branch", "z9hG4bKabc"), ("rport", None)))
    assert msg.top_via.has_rport and msg.top_via.rport is None and msg.top_via.has_rfc3261_branch


def test_leading_crlf_is_ignored_and_bare_lf_rejected() -> None:
    data = _msg().serialize()
    assert parse_message_untrusted(b"\r\n\r\n" + data) == _msg()
    with pytest.raises(DecodeError):
        parse_message_untrusted(data.replace(b"\r\nCSeq", b"\nCSeq"))


def test_folding_and_multiple_values() -> None:
    msg = _msg(
        b"Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
        b"Route: <sip:p3.example.com;lr>\r\n"
        b"Subject: one\r\n\t two\r\n"
        b"Allow: INVITE, ACK,BYE\r\nAllow: OPTIONS\r\n"
        b'Contact: "A, B" <sip:a@h1.example>;q=0.5, <sip:b@h2.example>\r\n'
    )
    hosts = ["p1.example.com", "p2.example.com", "p3.example.com"]
    assert [r.uri.host for r in msg.routes] == hosts
    assert msg.get_header("Subject") == "one two"
    assert msg.header_values("allow") == ["INVITE", "ACK", "BYE", "OPTIONS"]
    assert [c.display_name for c in msg.contacts] == ["A, B", None]
    assert msg.header_values("Subject") == ["one two"]  # not a list header: never split


def test_contact_star_and_missing_headers() -> None:
    msg = _msg(b"Contact: *\r\nExpires: 0\r\n")
    assert msg.is_contact_star and msg.contacts == () and msg.expires == 0
    assert _msg().contacts == () and _msg().expires is None and _msg().content_type is None
    with pytest.raises(DecodeError) as info:
        _msg().header("Record-Route")
    assert info.value.status_hint == 400


def test_missing_mandatory_header_is_decode_error() -> None:
    for name in (b"Via:", b"From:", b"To:", b"Call-ID:", b"CSeq:"):
        lines = _msg().serialize().split(b"\r\n")
        data = b"\r\n".join(line for line in lines if not line.startswith(name))
        with pytest.raises(DecodeError, match="missing") as info:
            parse_message_untrusted(data)
        assert info.value.status_hint == 400


def test_malformed_optional_header_raises_in_accessor_only() -> None:
    data = _msg(b"Expires: soon\r\nRecord-Route: <sip:x\r\n").serialize()
    msg = parse_message_untrusted(data.replace(b"Max-Forwards: 70", b"Max-Forwards: many"))
    assert "max-forwards-invalid" in msg.defects and "expires-invalid" in msg.defects
    for accessor in ("max_forwards", "expires", "record_routes"):
        with pytest.raises(DecodeError):
            getattr(msg, accessor)


def test_response_parse_and_reason() -> None:
    data = (
        b"SIP/2.0 180 Ringing \r\nVia: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n"
        b"From: <sip:a@h.example>;tag=1\r\nTo: <sip:b@h.example>;tag=2\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    msg = parse_message_untrusted(data)
    assert isinstance(msg, SipResponse) and (msg.status, msg.reason) == (180, "Ringing")
    assert msg.to_addr.tag == "2" and msg.serialize().startswith(b"SIP/2.0 180 Ringing\r\n")
    assert parse_message_untrusted(msg.serialize()) == msg


@pytest.mark.parametrize(
    "start",
    [b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 2000 Big", b"SIP/2.0 200", b"SIP/3.0 200 OK",
     b"OPTIONS sip:x SIP/2.0 ", b"OPTIONS sip:x", b"OPTIONS  sip:x SIP/2.0", b"OPTIONS sip:x SIP/2",
     b"OPT IONS sip:x SIP/2.0", b"OPTIONS x y SIP/2.0"],
)  # fmt: skip
def test_bad_start_lines(start: bytes) -> None:
    rest = _msg().serialize().split(b"\r\n", 1)[1]
    with pytest.raises(DecodeError):
        parse_message_untrusted(start + b"\r\n" + rest)


def test_version_error_hints_505() -> None:
    rest = _msg().serialize().split(b"\r\n", 1)[1]
    with pytest.raises(DecodeError) as info:
        parse_message_untrusted(b"OPTIONS sip:x@y.example SIP/3.0\r\n" + rest)
    assert info.value.status_hint == 505


def test_builders() -> None:
    msg = _msg(b"Supported: timer\r\n")
    m2 = msg.with_header("x-extra", "  v1 ").with_header("Supported", "replaces")
    assert m2.headers[-1] == ("Supported", "replaces") and m2.get_header("X-Extra") == "v1"
    assert m2.header_values("k") == ["timer", "replaces"]
    m3 = m2.with_headers_replaced("supported", ["100rel", "path"])
    names = [n for n, _ in m3.headers]
    assert m3.header_values("Supported") == ["100rel", "path"]
    assert names.index("Supported") == [n for n, _ in msg.headers].index("Supported")
    assert m3.without_header("Supported").get_header("Supported") is None
    m4 = m3.with_body(b"v=0\r\n", "application/sdp")
    assert m4.content_type == "application/sdp" and m4.get_header("Content-Length") == "5"
    assert m4.with_body(b"").content_type is None
    assert m4.with_body(b"").get_header("Content-Length") == "0"
    for m in (m2, m3, m4):
        assert parse_message_untrusted(m.serialize()) == m
    assert msg.with_header("Content-Length", "99").get_header("Content-Length") == "0"


def test_header_injection_is_refused() -> None:
    msg = _msg()
    with pytest.raises(LocalProtocolError):
        msg.with_header("X-Evil", "a\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(LocalProtocolError):
        msg.with_header("Bad Name", "x")
    with pytest.raises(LocalProtocolError):
        SipResponse(200, "OK\r\nX: y", ())
    with pytest.raises(LocalProtocolError):
        SipRequest("BAD METHOD", make_sip_uri("a", "b.example"), ())
    with pytest.raises(LocalProtocolError):
        str(NameAddr(make_sip_uri("a", "b.example"), display_name="x\ny"))


def test_constructor_normalises() -> None:
    uri = make_sip_uri("bob", "example.com")
    req = SipRequest("MESSAGE", uri, (("t", " <sip:bob@example.com> "), ("l", "5")), b"hello")
    assert req.headers == (("To", "<sip:bob@example.com>"), ("Content-Length", "5"))
    assert req.serialize().endswith(b"Content-Length: 5\r\n\r\nhello")
    assert SipRequest("MESSAGE", uri, ()).headers == (("Content-Length", "0"),)


def test_name_addr_and_via_helpers() -> None:
    text = '"Bob \\"B\\"" <sip:bob@example.com;transport=udp>;tag=x;q=1'
    na = parse_name_addr_untrusted(text)
    assert na.display_name == 'Bob "B"' and na.tag == "x" and na.uri.param("transport") == "udp"
    assert str(na.with_params(tag="y")) == text.replace("tag=x", "tag=y")
    addr_spec = parse_name_addr_untrusted("sip:bob@example.com;tag=7")
    assert addr_spec.uri.params == () and addr_spec.tag == "7"
    via = parse_via_untrusted(
        "SIP / 2.0 / udp Host.Example:5061 ; branch = z9hG4bKx ; received=[::1] (proxy)"
    )
    assert (via.transport, via.host, via.port, via.received) == ("UDP", "host.example", 5061, "::1")
    expected = ";branch=z9hG4bKx;received=[::1];rport=5062"
    assert str(via.with_params(rport="5062")).endswith(expected)
    for bad in (
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h junk",
    ):
        with pytest.raises(DecodeError):
            parse_via_untrusted(bad)


def test_serialize_is_cached_and_stable() -> None:
    msg = _msg(body=b"abc")
    assert msg.serialize() is msg.serialize()
    assert parse_message_untrusted(msg.serialize()).serialize() == msg.serialize()
