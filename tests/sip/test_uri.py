"""SIP URI parsing and serialization (RFC 3261 §19.1, RFC 5118)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip import SipUri, make_sip_uri, parse_uri_untrusted
from tests.sip.strategies import uris


@given(uris)
def test_roundtrip(uri: SipUri) -> None:
    text = str(uri)
    assert parse_uri_untrusted(text) == uri
    assert str(parse_uri_untrusted(text)) == text


@given(st.text(max_size=80))
def test_any_text_gives_uri_or_decode_error(text: str) -> None:
    try:
        uri = parse_uri_untrusted(text)
    except DecodeError:
        return
    assert parse_uri_untrusted(str(uri)) == uri


@given(st.text("sip:@[]%;=?&:.0123456789abcdefAF-", max_size=40))
def test_sip_shaped_text_gives_uri_or_decode_error(text: str) -> None:
    try:
        uri = parse_uri_untrusted("sip:" + text)
    except DecodeError:
        return
    assert parse_uri_untrusted(str(uri)) == uri


def test_fields_and_canonical_form() -> None:
    text = "SIP:Alice:se%63ret@Example.COM:5070;Transport=UDP;lr?Subject=Hi%20there"
    uri = parse_uri_untrusted(text)
    assert (uri.scheme, uri.user, uri.password) == ("sip", "Alice", "secret")
    assert (uri.host, uri.port) == ("example.com", 5070)
    assert uri.params == (("transport", "UDP"), ("lr", None))
    assert uri.param("TRANSPORT") == "UDP" and uri.has_param("lr") and uri.param("lr") is None
    assert uri.headers == (("Subject", "Hi there"),)
    assert str(uri) == "sip:Alice:secret@example.com:5070;transport=UDP;lr?Subject=Hi%20there"
    assert uri.aor == "sip:Alice@example.com"


def test_with_params_keeps_order_and_appends() -> None:
    uri = parse_uri_untrusted("sip:a@b.example;x=1;lr")
    assert str(uri.with_params(x="2", maddr="10.0.0.1")) == "sip:a@b.example;x=2;lr;maddr=10.0.0.1"


def test_ipv6_references() -> None:
    uri = parse_uri_untrusted("sip:[2001:DB8::10]:5070")
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)
    for bad in ("sip:2001:db8::10", "sip:[2001:db8:::1]", "sip:[fe80::1", "sip:[::1]:99999"):
        with pytest.raises(DecodeError):
            parse_uri_untrusted(bad)


def test_other_schemes_are_opaque() -> None:
    uri = parse_uri_untrusted("tel:+1-201-555-0123;phone-context=example.com")
    assert uri.opaque == "+1-201-555-0123;phone-context=example.com" and not uri.is_sip
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    ["", "sip:", "sip:@host", "sip:user@", "sip:user@host;", "sip:user@host;=x", "sip:u@h;a=",
     "sip:u@h?x", "sip:u@h:port", "sip:u@-bad-", "sip:u@256.1.1.1", "sip:u@h b", "sip:u%zz@h",
     "nocolon", "1sip:x", "x:" + "a" * 5000],
)  # fmt: skip
def test_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_uri_untrusted(text)


def test_make_sip_uri_validates() -> None:
    assert str(make_sip_uri("bob", "FE80::1".join("[]"), 5060)) == "sip:bob@[fe80::1]:5060"
    with pytest.raises(LocalProtocolError):
        make_sip_uri("bob", "not a host")
    with pytest.raises(LocalProtocolError):
        make_sip_uri("", "example.com")
