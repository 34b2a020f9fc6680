"""HTTP digest authentication for SIP (RFC 3261 §22.4, RFC 7616, RFC 8760).

Client side: read a ``WWW-Authenticate`` / ``Proxy-Authenticate`` challenge from a 401/407
(:func:`parse_challenge_untrusted`, :func:`best_challenge_untrusted`) and build the
``Authorization`` / ``Proxy-Authorization`` value that answers it
(:func:`authorization_value`). The pieces a server needs later (issue 12) are public and
independent of the client: :func:`parse_credentials_untrusted` reads an Authorization
value, :func:`digest_response` computes the expected ``response`` from the same inputs.

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess (RFC 8760 §2 registers the SHA-2 ones for
SIP; SHA-512-256 needs a hash OpenSSL does not always ship, so it is not offered). qop:
``auth`` and ``auth-int`` (RFC 7616 §3.4.3), or none (the RFC 2069 form, RFC 3261 §22.4
keeps it for backward compatibility). ``userhash`` (RFC 7616 §3.4.4) is not supported: a
challenge asking for it is still answered, with the plain username.

Every value read from the network is bounded (:data:`MAX_HEADER_CHARS`,
:data:`MAX_PARAMS`, :data:`MAX_PARAM_CHARS`) and the ``*_untrusted`` functions raise only
:class:`~meshcomm.errors.DecodeError`. Passwords never appear in a repr or a log line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError

#: Longest challenge or credentials header value read.
MAX_HEADER_CHARS: Final = 4096
#: Most auth-params in one challenge or credentials value.
MAX_PARAMS: Final = 32
#: Longest single auth-param value (nonce, opaque, realm, ...).
MAX_PARAM_CHARS: Final = 1024
#: Most challenges considered in one response (RFC 7616 §3.7: one per algorithm).
MAX_CHALLENGES: Final = 8
#: nc is 8 hex digits (RFC 7616 §3.4).
MAX_NONCE_COUNT: Final = 0xFFFFFFFF

_SCHEME_RE: Final = re.compile(r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+")
_PARAM_RE: Final = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"]+))\s*(,|$)",
    re.DOTALL)
_QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.DOTALL)
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]{8}")
_BAD_CHARS_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class DigestAlgorithm(StrEnum):
    """RFC 7616 §6.1 / RFC 8760 §2 algorithm names."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def hash_name(self) -> str:
        return "md5" if self in (DigestAlgorithm.MD5, DigestAlgorithm.MD5_SESS) else "sha256"

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def strength(self) -> int:
        """Preference when a server offers several (RFC 7616 §3.7: the strongest)."""
        return 1 if self.hash_name == "md5" else 2


class Qop(StrEnum):
    AUTH = "auth"
    AUTH_INT = "auth-int"


_ALGORITHMS: Final = {a.value.lower(): a for a in DigestAlgorithm}


@dataclass(frozen=True, slots=True)
class Challenge:
    """One digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[Qop, ...] = ()
    opaque: str | None = None
    #: The nonce was stale: the same credentials are good, retry with the new nonce.
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of an Authorization / Proxy-Authorization value (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: Qop | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None


@dataclass(frozen=True, slots=True)
class Secret:
    """A username and password; the password never appears in repr()."""

    username: str
    password: str = field(repr=False)


# ---------------------------------------------------------------------------- parsing
def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise DecodeError(f"{what}: not text")
    if len(value) > MAX_HEADER_CHARS:
        raise DecodeError(f"{what} longer than {MAX_HEADER_CHARS} characters",
                          reason="oversize")
    if _BAD_CHARS_RE.search(value):
        raise DecodeError(f"{what}: control characters")


def parse_auth_params_untrusted(value: str) -> tuple[str, dict[str, str]]:
    """``scheme k=v, k="v", ...`` -> (scheme, {lowercased name: unquoted value}).

    A duplicate parameter, an empty list, a parameter over :data:`MAX_PARAM_CHARS` or
    more than :data:`MAX_PARAMS` of them is a DecodeError."""
    _check_text(value, "auth header")
    scheme_m = _SCHEME_RE.match(value)
    if scheme_m is None:
        raise DecodeError("auth header: no scheme")
    params: dict[str, str] = {}
    pos = scheme_m.end()
    while pos < len(value):
        m = _PARAM_RE.match(value, pos)
        if m is None:
            raise DecodeError(f"auth header: bad parameter at {pos}")
        name = m.group(1).lower()
        raw = m.group(2)
        text = _QUOTED_PAIR_RE.sub(r"\1", raw) if raw is not None else m.group(3)
        if name in params:
            raise DecodeError(f"auth header: duplicate {name!r}")
        if len(text) > MAX_PARAM_CHARS:
            raise DecodeError(f"auth header: {name} too long", reason="oversize")
        params[name] = text
        if len(params) > MAX_PARAMS:
            raise DecodeError("auth header: too many parameters", reason="oversize")
        pos = m.end()
    if not params:
        raise DecodeError("auth header: no parameters")
    return scheme_m.group(1), params


def _algorithm_untrusted(text: str | None) -> DigestAlgorithm:
    if text is None:
        return DigestAlgorithm.MD5                     # RFC 7616 §3.3: absent means MD5
    algorithm = _ALGORITHMS.get(text.lower())
    if algorithm is None:
        raise DecodeError(f"unsupported digest algorithm {text[:40]!r}", reason="unsupported")
    return algorithm


def _qop_options_untrusted(text: str | None) -> tuple[Qop, ...]:
    if text is None:
        return ()
    found: list[Qop] = []
    for option in text.split(","):
        option = option.strip().lower()
        if option in (Qop.AUTH, Qop.AUTH_INT) and Qop(option) not in found:
            found.append(Qop(option))
    if not found:
        raise DecodeError(f"no supported qop in {text[:40]!r}", reason="unsupported")
    return tuple(found)


def parse_challenge_untrusted(value: str) -> Challenge:
    """One WWW-Authenticate / Proxy-Authenticate value (a Digest challenge)."""
    scheme, params = parse_auth_params_untrusted(value)
    if scheme.lower() != "digest":
        raise DecodeError(f"not a digest challenge: {scheme[:20]!r}", reason="unsupported")
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or nonce is None:
        raise DecodeError("digest challenge without realm or nonce")
    stale = params.get("stale", "false").lower() == "true"
    return Challenge(realm=realm, nonce=nonce,
                     algorithm=_algorithm_untrusted(params.get("algorithm")),
                     qop=_qop_options_untrusted(params.get("qop")),
                     opaque=params.get("opaque"), stale=stale)


def best_challenge_untrusted(values: Iterable[str]) -> Challenge:
    """The strongest supported digest challenge among a response's header values
    (RFC 7616 §3.7); DecodeError when none is usable."""
    best: Challenge | None = None
    for count, value in enumerate(values):
        if count >= MAX_CHALLENGES:
            break
        try:
            challenge = parse_challenge_untrusted(value)
        except DecodeError:
            continue
        if best is None or challenge.algorithm.strength > best.algorithm.strength:
            best = challenge
    if best is None:
        raise DecodeError("no usable digest challenge", reason="unsupported")
    return best


def parse_credentials_untrusted(value: str) -> Credentials:
    """One Authorization / Proxy-Authorization value (for a server, issue 12)."""
    scheme, params = parse_auth_params_untrusted(value)
    if scheme.lower() != "digest":
        raise DecodeError(f"not digest credentials: {scheme[:20]!r}", reason="unsupported")
    required = ("username", "realm", "nonce", "uri", "response")
    if any(name not in params for name in required):
        raise DecodeError("digest credentials without username/realm/nonce/uri/response")
    qop_text = params.get("qop")
    qop = None
    nc = None
    if qop_text is not None:
        qops = _qop_options_untrusted(qop_text)
        if len(qops) != 1 or "nc" not in params or "cnonce" not in params:
            raise DecodeError("digest credentials: qop needs one value, nc and cnonce")
        qop = qops[0]
        if not _HEX_RE.fullmatch(params["nc"]):
            raise DecodeError("digest credentials: nc is not 8 hex digits")
        nc = int(params["nc"], 16)
    return Credentials(username=params["username"], realm=params["realm"],
                       nonce=params["nonce"], uri=params["uri"], response=params["response"],
                       algorithm=_algorithm_untrusted(params.get("algorithm")), qop=qop,
                       nc=nc, cnonce=params.get("cnonce"), opaque=params.get("opaque"))


# ---------------------------------------------------------------------------- computing
def _h(algorithm: DigestAlgorithm, data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.new(algorithm.hash_name, raw).hexdigest()


def digest_response(*, algorithm: DigestAlgorithm, username: str, realm: str, password: str,
                    method: str, uri: str, nonce: str, qop: Qop | None = None,
                    nc: int | None = None, cnonce: str | None = None,
                    body: bytes = b"") -> str:
    """The ``response`` value (RFC 7616 §3.4.1-3.4.3; RFC 2069 form when ``qop`` is None).

    The same function checks credentials on a server: compute and compare."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.is_session:
        if cnonce is None:
            raise LocalProtocolError("a -sess algorithm needs a cnonce")
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop is Qop.AUTH_INT:
        a2 += ":" + _h(algorithm, body)
    ha2 = _h(algorithm, a2)
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None or not 0 < nc <= MAX_NONCE_COUNT:
        raise LocalProtocolError("qop needs nc (1..2^32-1) and a cnonce")
    return _h(algorithm, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop.value}:{ha2}")


def _quoted(text: str) -> str:
    if '"' in text or "\\" in text or "\r" in text or "\n" in text:
        text = re.sub(r'(["\\])', r"\\\1", text)
        if "\r" in text or "\n" in text:
            raise LocalProtocolError("an auth parameter cannot carry CR or LF")
    return f'"{text}"'


def answer_challenge(challenge: Challenge, secret: Secret, *, method: str, uri: str,
                     cnonce: str, nc: int = 1, body: bytes = b"") -> Credentials:
    """The credentials answering ``challenge`` (qop ``auth`` preferred when offered)."""
    qop = None
    if challenge.qop:
        qop = Qop.AUTH if Qop.AUTH in challenge.qop else challenge.qop[0]
    needs_cnonce = qop is not None or challenge.algorithm.is_session
    response = digest_response(
        algorithm=challenge.algorithm, username=secret.username, realm=challenge.realm,
        password=secret.password, method=method, uri=uri, nonce=challenge.nonce, qop=qop,
        nc=nc if qop is not None else None, cnonce=cnonce if needs_cnonce else None,
        body=body)
    return Credentials(username=secret.username, realm=challenge.realm,
                       nonce=challenge.nonce, uri=uri, response=response,
                       algorithm=challenge.algorithm, qop=qop,
                       nc=nc if qop is not None else None,
                       cnonce=cnonce if needs_cnonce else None, opaque=challenge.opaque)


def format_credentials(credentials: Credentials) -> str:
    """The Authorization / Proxy-Authorization header value (RFC 7616 §3.4)."""
    c = credentials
    parts = [f"username={_quoted(c.username)}", f"realm={_quoted(c.realm)}",
             f"nonce={_quoted(c.nonce)}", f"uri={_quoted(c.uri)}",
             f"response={_quoted(c.response)}", f"algorithm={c.algorithm.value}"]
    if c.cnonce is not None:
        parts.append(f"cnonce={_quoted(c.cnonce)}")
    if c.opaque is not None:
        parts.append(f"opaque={_quoted(c.opaque)}")
    if c.qop is not None and c.nc is not None:
        parts += [f"qop={c.qop.value}", f"nc={c.nc:08x}"]
    return "Digest " + ", ".join(parts)


def authorization_value(challenge: Challenge, secret: Secret, *, method: str, uri: str,
                        cnonce: str, nc: int = 1, body: bytes = b"") -> str:
    """Shorthand: :func:`answer_challenge` then :func:`format_credentials`."""
    return format_credentials(answer_challenge(challenge, secret, method=method, uri=uri,
                                               cnonce=cnonce, nc=nc, body=body))


#: The request header answering each challenge status (RFC 3261 §22.2, §22.3).
AUTH_HEADERS: Final = {401: ("WWW-Authenticate", "Authorization"),
                       407: ("Proxy-Authenticate", "Proxy-Authorization")}
