"""RFC 4475 and RFC 5118 torture vectors: every file gets the verdict of torture_table.py."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from meshcomm.errors import DecodeError
from meshcomm.sip import SipRequest, SipResponse, parse_message_untrusted
from tests.sip.torture_table import TORTURE_TABLE, Kind

VECTORS = pathlib.Path(__file__).parent / "vectors"
Msg = SipRequest | SipResponse


def _load(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def test_table_and_files_match() -> None:
    files = {f"{p.parent.name}/{p.stem}" for p in VECTORS.glob("rfc*/*.dat")}
    assert files == set(TORTURE_TABLE)
    assert len([n for n in files if n.startswith("rfc4475/")]) == 49


@pytest.mark.parametrize("name", sorted(TORTURE_TABLE))
def test_verdict(name: str) -> None:
    verdict = TORTURE_TABLE[name]
    data = _load(name)
    if verdict.kind is Kind.DECODE_ERROR:
        with pytest.raises(DecodeError) as info:
            parse_message_untrusted(data)
        assert info.value.status_hint == verdict.hint
        return
    msg = parse_message_untrusted(data)
    assert msg.defects == verdict.defects
    assert parse_message_untrusted(msg.serialize()) == msg
    # The typed accessors of mandatory headers never fail on a parsed message.
    assert msg.vias and msg.call_id and msg.cseq and msg.from_addr and msg.to_addr
    if name in CHECKS:
        CHECKS[name](msg)


def _req(m: Msg) -> SipRequest:
    assert isinstance(m, SipRequest)
    return m


def _wsinv(m: Msg) -> None:
    r = _req(m)
    assert r.method == "INVITE"
    assert str(r.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert r.to_addr.uri.user == "vivekg" and r.to_addr.tag == "1918181833n"
    assert r.from_addr.display_name == 'J Rosenberg \\"' and r.from_addr.tag == "98asjd8"
    assert r.max_forwards == 68 and r.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (r.cseq.number, r.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in r.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert r.get_header("Subject") == ""
    assert r.get_header("newfangledheader") == "newfangled value continued newfangled value"
    assert r.get_header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = r.contacts
    assert contact.display_name == 'Quoted string ""' and contact.uri.user == "jdrosen"
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    (route,) = r.routes
    assert route.uri.params == (("lr", None), ("unknownwith", "value"), ("unknown-no-value", None))
    assert r.content_type == "application/sdp" and len(r.body) == 150


def _intmeth(m: Msg) -> None:
    r = _req(m)
    assert r.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert r.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert r.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert r.to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert r.from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert r.from_addr.param("fromparam''~+*_!.-%") == '"работающий"'
    assert r.from_addr.tag == "_token~1'+`*%!-."
    assert r.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert r.cseq.method == r.method and r.max_forwards == 255
    assert r.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert r.get_header("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def _esc01(m: Msg) -> None:
    r = _req(m)
    assert r.uri.user == "sips:user@example.com" and r.uri.host == "example.net"
    assert r.to_addr.uri.user == "user" and r.from_addr.uri.user == "I have spaces"
    (c,) = r.contacts
    assert c.uri.user == "caller" and c.uri.params == (("lr", None), ("name", "value%41"))


def _escnull(m: Msg) -> None:
    r = _req(m)
    assert r.to_addr.uri.user == "null-\x00-null"
    assert [c.uri.user for c in r.contacts] == ["\x00", "\x00\x00"]


def _esc02(m: Msg) -> None:
    r = _req(m)
    assert r.method == "RE%47IST%45R" and r.cseq.method == "RE%47IST%45R"
    assert r.to_addr.display_name == "%Z%45"
    assert [c.uri.user for c in r.contacts] == ["alias1", "alias3"]
    assert r.get_header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _lwsdisp(m: Msg) -> None:
    assert m.from_addr.display_name == "caller" and m.from_addr.tag == "323"


def _longreq(m: Msg) -> None:
    assert len(m.vias) == 34 and m.vias[0].host == "sip33.example.com"
    assert m.vias[-1].received == "192.0.2.5"
    assert m.to_addr.uri.port == 6000 and len(m.to_addr.uri.params) == 3
    assert m.from_addr.tag == "12" + "982" * 50 + "424"
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"


def _dblreq(m: Msg) -> None:
    r = _req(m)
    assert r.method == "REGISTER" and r.body == b"" and r.contacts[0].uri.user == "j.user"


def _semiuri(m: Msg) -> None:
    r = _req(m)
    assert r.uri.user == "user;par=u@example.net" and r.uri.host == "example.com"
    assert r.uri.params == ()
    assert r.header_values("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed",
        "multipart/signed", "message/sip", "message/sipfrag",
    ]  # fmt: skip


def _transports(m: Msg) -> None:
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(m: Msg) -> None:
    assert len(m.body) == 553 and b"\x00" in m.body
    assert m.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert m.top_via.port == 5070 and m.top_via.has_rport and m.top_via.rport is None


def _unreason(m: Msg) -> None:
    assert isinstance(m, SipResponse) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def _noreason(m: Msg) -> None:
    assert isinstance(m, SipResponse) and (m.status, m.reason) == (100, "")


def _unkscm(m: Msg) -> None:
    r = _req(m)
    assert (r.uri.scheme, r.uri.opaque) == ("nobodyknowsthisscheme", "totallyopaquecontent")
    assert not r.uri.is_sip


def _unksm2(m: Msg) -> None:
    assert (m.to_addr.uri.scheme, m.to_addr.uri.opaque) == ("isbn", "2983792873")
    assert m.from_addr.uri.scheme == "http" and m.contacts[0].uri.opaque == "John_Smith"


def _bext01(m: Msg) -> None:
    assert m.header_values("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]


def _cparam01(m: Msg) -> None:
    (c,) = m.contacts
    assert c.params == (("unknownparam", None),) and c.uri.params == ()


def _cparam02(m: Msg) -> None:
    (c,) = m.contacts
    assert c.params == () and c.uri.params == (("unknownparam", None),)


def _regescrt(m: Msg) -> None:
    assert m.contacts[0].uri.headers == (("Route", "<sip:sip.example.com>"),)


def _zeromf(m: Msg) -> None:
    assert m.max_forwards == 0


def _inv2543(m: Msg) -> None:
    r = _req(m)
    assert r.top_via.branch is None and not r.top_via.has_rfc3261_branch
    assert r.max_forwards is None and r.body.startswith(b"v=0") and len(r.body) == 105
    assert r.get_header("Content-Length") == "105"


def _ipv6_good(m: Msg) -> None:
    r = _req(m)
    assert r.uri.host == "[2001:db8::10]" and r.top_via.host == "[2001:db8::9:1]"
    assert r.contacts[0].uri.host == "[2001:db8::1]"


def _port_ambiguous(m: Msg) -> None:
    assert _req(m).uri.host == "[2001:db8::10:5070]" and _req(m).uri.port is None


def _port_unambiguous(m: Msg) -> None:
    assert (_req(m).uri.host, _req(m).uri.port) == ("[2001:db8::10]", 5070)


def _received_delim(m: Msg) -> None:
    assert m.top_via.received == "2001:db8::9:255"


def _mult_ip(m: Msg) -> None:
    assert [v.sent_by for v in m.vias] == ["[2001:db8::9:1]:6050", "192.0.2.1", "[2001:db8::9:255]"]
    assert m.vias[2].received == "192.0.2.200" and m.vias[2].transport == "TCP"


def _mapped(m: Msg) -> None:
    assert m.top_via.host == "[::ffff:192.0.2.10]" and m.top_via.port == 19823
    assert len(m.body) == 236


CHECKS: dict[str, Callable[[Msg], None]] = {
    "rfc4475/wsinv": _wsinv,
    "rfc4475/intmeth": _intmeth,
    "rfc4475/esc01": _esc01,
    "rfc4475/escnull": _escnull,
    "rfc4475/esc02": _esc02,
    "rfc4475/lwsdisp": _lwsdisp,
    "rfc4475/longreq": _longreq,
    "rfc4475/dblreq": _dblreq,
    "rfc4475/semiuri": _semiuri,
    "rfc4475/transports": _transports,
    "rfc4475/mpart01": _mpart01,
    "rfc4475/unreason": _unreason,
    "rfc4475/noreason": _noreason,
    "rfc4475/unkscm": _unkscm,
    "rfc4475/unksm2": _unksm2,
    "rfc4475/bext01": _bext01,
    "rfc4475/cparam01": _cparam01,
    "rfc4475/cparam02": _cparam02,
    "rfc4475/regescrt": _regescrt,
    "rfc4475/zeromf": _zeromf,
    "rfc4475/inv2543": _inv2543,
    "rfc5118/ipv6-good": _ipv6_good,
    "rfc5118/port-ambiguous": _port_ambiguous,
    "rfc5118/port-unambiguous": _port_unambiguous,
    "rfc5118/via-received-param-with-delim": _received_delim,
    "rfc5118/mult-ip-in-header": _mult_ip,
    "rfc5118/ipv4-mapped-ipv6": _mapped,
}


def test_flagged_contacts_accessor_raises() -> None:
    """regbadct: the Contact is flagged at parse time and its accessor raises DecodeError."""
    msg = parse_message_untrusted(_load("rfc4475/regbadct"))
    with pytest.raises(DecodeError):
        _ = msg.contacts


def test_flagged_optional_accessors_raise() -> None:
    # scalar02 with an in-range CSeq: its Max-Forwards and Expires stay flagged defects
    data = _load("rfc4475/scalar02").replace(b"36893488147419103232", b"2147483647")
    msg = parse_message_untrusted(data)
    with pytest.raises(DecodeError):
        _ = msg.max_forwards
    with pytest.raises(DecodeError):
        _ = msg.expires
    assert msg.cseq.number == 2**31 - 1
    assert set(msg.defects) == {"max-forwards-invalid", "expires-invalid"}


@pytest.mark.parametrize("number", [2**31, 2**32, 2**64, 2**65, 10**31])
def test_cseq_of_2_31_or_more_is_refused_where_parsed(number: int) -> None:
    data = _load("rfc4475/scalar02").replace(b"36893488147419103232", str(number).encode())
    with pytest.raises(DecodeError) as caught:
        parse_message_untrusted(data)
    assert caught.value.status_hint == 400
    assert caught.value.reason == "range"
