"""Digest authentication (meshcomm.sip.digest): RFC 7616 §3.9.1 vectors, round trips,
garbage and oversize input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip.digest import (
    MAX_HEADER_CHARS,
    MAX_PARAMS,
    Challenge,
    DigestAlgorithm,
    Qop,
    Secret,
    answer_challenge,
    authorization_value,
    best_challenge_untrusted,
    digest_response,
    format_credentials,
    parse_challenge_untrusted,
    parse_credentials_untrusted,
)

# RFC 7616 §3.9.1 (the GET of /dir/index.html by Mufasa).
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_SECRET = Secret("Mufasa", "Circle of Life")
RFC_CHALLENGES = [
    f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm=SHA-256, '
    f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"',
    f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"',
]
RFC_RESPONSES = {
    DigestAlgorithm.MD5: "8ca523f5e9506fed4657c9700eebdbec",
    DigestAlgorithm.SHA256: "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


@pytest.mark.parametrize("algorithm", [DigestAlgorithm.MD5, DigestAlgorithm.SHA256])
def test_rfc7616_vectors(algorithm: DigestAlgorithm) -> None:
    got = digest_response(algorithm=algorithm, username="Mufasa", realm=RFC_REALM,
                          password="Circle of Life", method="GET", uri="/dir/index.html",
                          nonce=RFC_NONCE, qop=Qop.AUTH, nc=1, cnonce=RFC_CNONCE)
    assert got == RFC_RESPONSES[algorithm]


@pytest.mark.parametrize("index", [0, 1])
def test_rfc7616_challenge_answered_like_the_rfc(index: int) -> None:
    challenge = parse_challenge_untrusted(RFC_CHALLENGES[index])
    assert challenge.qop == (Qop.AUTH, Qop.AUTH_INT)
    assert challenge.opaque == RFC_OPAQUE and not challenge.stale
    value = authorization_value(challenge, RFC_SECRET, method="GET", uri="/dir/index.html",
                                cnonce=RFC_CNONCE)
    creds = parse_credentials_untrusted(value)
    assert creds.response == RFC_RESPONSES[challenge.algorithm]
    assert (creds.qop, creds.nc, creds.cnonce, creds.opaque) == (
        Qop.AUTH, 1, RFC_CNONCE, RFC_OPAQUE)
    assert "nc=00000001" in value and "qop=auth" in value


def test_strongest_challenge_is_chosen_whatever_the_order() -> None:
    assert best_challenge_untrusted(RFC_CHALLENGES).algorithm is DigestAlgorithm.SHA256
    assert best_challenge_untrusted(RFC_CHALLENGES[::-1]).algorithm is DigestAlgorithm.SHA256
    unknown = 'Digest realm="r", nonce="n", algorithm=SHA-512-256'
    assert best_challenge_untrusted([unknown, RFC_CHALLENGES[1]]).algorithm \
        is DigestAlgorithm.MD5
    with pytest.raises(DecodeError):
        best_challenge_untrusted([unknown, 'Basic realm="x"'])


def test_kamailio_style_challenge_and_stale() -> None:
    value = ('Digest realm="meshcomm.test", nonce="Zfa1Y2X2lE8+2ZWJqjT9n0Rk1lO4", '
             'qop="auth", stale=true')
    challenge = parse_challenge_untrusted(value)
    assert challenge == Challenge(realm="meshcomm.test", nonce="Zfa1Y2X2lE8+2ZWJqjT9n0Rk1lO4",
                                  algorithm=DigestAlgorithm.MD5, qop=(Qop.AUTH,),
                                  stale=True)


def test_server_side_check_reuses_the_computation() -> None:
    challenge = Challenge(realm="r", nonce="abc", algorithm=DigestAlgorithm.SHA256_SESS,
                          qop=(Qop.AUTH_INT,))
    creds = answer_challenge(challenge, Secret("alice", 'p"a\\ss'), method="REGISTER",
                             uri="sip:example.org", cnonce="c1", nc=7, body=b"x")
    parsed = parse_credentials_untrusted(format_credentials(creds))
    assert parsed == creds
    expected = digest_response(algorithm=parsed.algorithm, username=parsed.username,
                               realm=parsed.realm, password='p"a\\ss', method="REGISTER",
                               uri=parsed.uri, nonce=parsed.nonce, qop=parsed.qop,
                               nc=parsed.nc, cnonce=parsed.cnonce, body=b"x")
    assert expected == parsed.response
    wrong = digest_response(algorithm=parsed.algorithm, username="alice", realm="r",
                            password="other", method="REGISTER", uri=parsed.uri,
                            nonce="abc", qop=parsed.qop, nc=7, cnonce="c1", body=b"x")
    assert wrong != parsed.response


def test_rfc2069_form_without_qop() -> None:
    challenge = parse_challenge_untrusted('Digest realm="r", nonce="n"')
    creds = answer_challenge(challenge, Secret("u", "p"), method="REGISTER",
                             uri="sip:r", cnonce="ignored")
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "qop" not in format_credentials(creds)


def test_secret_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(Secret("bob", "hunter2"))


@pytest.mark.parametrize("value", [
    "", "Digest", "Digest ", "Basic realm=\"x\"", 'Digest realm="x"', 'Digest nonce="x"',
    'Digest realm="x", realm="y", nonce="n"', 'Digest realm="unterminated, nonce="n"',
    'Digest realm="x", nonce="n", algorithm=SHA-1', 'Digest realm="x", nonce="n", qop="x"',
    'Digest realm="x",, nonce="n"', 'Digest realm="x" nonce="n"', 'Digest realm="a\r\nb"',
    "Digest " + ", ".join(f"p{i}=1" for i in range(MAX_PARAMS + 1)) + ', realm="r", nonce="n"',
    'Digest realm="' + "r" * 2000 + '", nonce="n"',
    "Digest realm=" + "x" * MAX_HEADER_CHARS,
])
def test_bad_challenges_are_decode_errors(value: str) -> None:
    with pytest.raises(DecodeError):
        parse_challenge_untrusted(value)


@pytest.mark.parametrize("value", [
    'Digest username="u", realm="r", nonce="n", uri="u"',
    'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth',
    'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, '
    'nc=zz, cnonce="c"',
    'Basic dXNlcjpwYXNz',
])
def test_bad_credentials_are_decode_errors(value: str) -> None:
    with pytest.raises(DecodeError):
        parse_credentials_untrusted(value)


@given(st.text(max_size=300))
def test_any_text_is_a_challenge_or_decode_error(text: str) -> None:
    for parse in (parse_challenge_untrusted, parse_credentials_untrusted):
        with contextlib.suppress(DecodeError):
            parse(text)


@given(st.text(alphabet='Digest realmnoce="\\, =aq-uth', max_size=120))
def test_near_miss_text_is_a_challenge_or_decode_error(text: str) -> None:
    try:
        challenge = parse_challenge_untrusted(text)
    except DecodeError:
        return
    assert isinstance(challenge, Challenge)   # the property: no other exception


_PRINTABLE = st.text(min_size=1, max_size=40).filter(
    lambda s: all(0x1f < ord(c) != 0x7f for c in s))


@given(_PRINTABLE, _PRINTABLE)
def test_credentials_round_trip_any_quoted_text(realm: str, nonce: str) -> None:
    challenge = Challenge(realm=realm, nonce=nonce, qop=(Qop.AUTH,))
    creds = answer_challenge(challenge, Secret("u", "p"), method="MESSAGE", uri="sip:x",
                             cnonce="c")
    assert parse_credentials_untrusted(format_credentials(creds)) == creds
