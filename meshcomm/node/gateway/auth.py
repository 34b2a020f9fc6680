"""Server-side digest authentication of the local SIP gateway (issue 12 item 2), sans-IO.

RFC 3261 §22 with the digest of RFC 7616 and the algorithms of RFC 8760: a REGISTER
without valid credentials gets 401 with ``WWW-Authenticate``, any other request (but ACK
and CANCEL, which cannot be challenged, §22.1) 407 with ``Proxy-Authenticate``; one
challenge per configured algorithm, strongest first (SHA-256, then MD5 for older clients),
``qop="auth"`` only. The runtime turns it on whenever the gateway listens beyond loopback
(see docs/sip-auth.md); on loopback it is off unless ``[sip] require_auth`` is set.

Nonces are stateless: hex of (milliseconds since this authenticator started, a counter,
HMAC-SHA256 of both with a secret drawn at start, the realm and the client's host). A
nonce from another host, another boot or older than :data:`NONCE_LIFETIME_S` is stale: if
the response is right for it (the client knows the password), the answer is a new
challenge with ``stale=true`` (RFC 7616 §3.3), so clients retry without asking anyone.
Replays are refused by nonce count: the first successful use of a nonce enters a bounded
table (:class:`NonceCounts`, :data:`MAX_NONCE_STATES`, oldest first out; a nonce issued
before the newest one evicted counts as used), each ``nc`` is accepted once within a
window of :data:`NC_WINDOW`; a replayed count gets ``stale=true`` and takes nothing.

Scanners learn nothing (sipvicious ``svwar``): every unauthenticated request is
challenged *before* anything looks at its names, with the same status and headers for
every AoR; credentials for an unknown AoR are checked against a dummy HA1 at the same
cost as a known one's, and fail the same way. Wrong credentials are bounded per source
host (:class:`FailureBudget`: a token bucket per host, a global one, a bounded table whose
eviction spares the hosts that fail most); a host over its budget gets 503 + Retry-After
before any check. The answers are journaled within :data:`AUTH_JOURNAL_PER_S`; a
password, an HA1 or a ``response`` value is never logged nor journaled (the journal
redacts ``response``, gateway.parts).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.users import UserTable
from meshcomm.sip.digest import (
    Credentials,
    DigestAlgorithm,
    Qop,
    parse_auth_params_untrusted,
    parse_credentials_untrusted,
)
from meshcomm.sip.message import SipRequest
from meshcomm.sip.uri import parse_uri_untrusted

#: A nonce is fresh this long; older ones are stale (a new challenge, stale=true).
NONCE_LIFETIME_S: Final = 300.0
_NONCE_TIME_BYTES: Final = 6
_NONCE_COUNT_BYTES: Final = 4
_NONCE_MAC_BYTES: Final = 16
NONCE_HEX_CHARS: Final = 2 * (_NONCE_TIME_BYTES + _NONCE_COUNT_BYTES + _NONCE_MAC_BYTES)
#: Nonces whose counts are tracked (first successful use in, oldest out).
MAX_NONCE_STATES: Final = 4096
#: Nonce counts accepted out of order below the highest one seen.
NC_WINDOW: Final = 64
#: Authorization / Proxy-Authorization values of one request looked at.
MAX_CREDENTIAL_VALUES: Final = 4
MAX_CNONCE_CHARS: Final = 128
#: Wrong credentials a host may send at once, then one more every 1/rate seconds.
FAILURES_PER_HOST_BURST: Final = 10
FAILURES_PER_HOST_PER_S: Final = 0.2
#: Wrong credentials from all hosts together (beyond, only hosts without failures try).
GLOBAL_FAILURES_BURST: Final = 200
GLOBAL_FAILURES_PER_S: Final = 20.0
#: Hosts whose failures are remembered; on overflow the fullest bucket among the
#: EVICTION_SAMPLE least recently failing hosts goes (a flood of new sources does not
#: free the hosts that fail most).
MAX_FAILURE_HOSTS: Final = 1024
EVICTION_SAMPLE: Final = 8
#: Authentication answers journaled per second (and burst); the rest are counted.
AUTH_JOURNAL_PER_S: Final = 2.0
AUTH_JOURNAL_BURST: Final = 20
#: Statuses (RFC 3261 §21.4.2, §21.4.8, §21.5.4).
UNAUTHORIZED: Final = 401
PROXY_AUTH_REQUIRED: Final = 407
SERVICE_UNAVAILABLE: Final = 503
#: Algorithms offered by default, in order of preference (RFC 8760 §2.4).
DEFAULT_ALGORITHMS: Final = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
#: Methods never challenged (RFC 3261 §22.1).
UNCHALLENGEABLE: Final = frozenset({"ACK", "CANCEL"})
_NONCE_LABEL: Final = b"meshcomm sip digest nonce\x00"


class AuthOutcome(StrEnum):
    OK = "ok"
    CHALLENGE = "challenge"      # no credentials for our realm
    FAILED = "failed"            # wrong, unknown, malformed or unusable credentials
    STALE = "stale"              # right response, nonce stale or from elsewhere
    REPLAYED = "replayed"        # right response, nonce count already used
    LIMITED = "limited"          # the host is over its failure budget: 503


class AuthCounter(StrEnum):
    """Counters of the authenticator (kept in the gateway's counters)."""

    ACCEPTED = "auth_accepted"
    CHALLENGED = "auth_challenged"
    FAILED = "auth_failed"
    STALE = "auth_stale"
    REPLAYED = "auth_replayed"
    LIMITED = "auth_limited"
    JOURNAL_SUPPRESSED = "auth_journal_suppressed"
    FAILURE_HOSTS_EVICTED = "auth_failure_hosts_evicted"
    NONCE_STATES_EVICTED = "auth_nonce_states_evicted"


_OUTCOME_COUNTERS: Final = {
    AuthOutcome.OK: AuthCounter.ACCEPTED, AuthOutcome.CHALLENGE: AuthCounter.CHALLENGED,
    AuthOutcome.FAILED: AuthCounter.FAILED, AuthOutcome.STALE: AuthCounter.STALE,
    AuthOutcome.REPLAYED: AuthCounter.REPLAYED, AuthOutcome.LIMITED: AuthCounter.LIMITED}


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``[sip]`` auth settings as the gateway uses them (the runtime resolves defaults)."""

    realm: str
    algorithms: tuple[DigestAlgorithm, ...] = DEFAULT_ALGORITHMS
    nonce_lifetime_s: float = NONCE_LIFETIME_S
    retry_after_s: int = int(1 / FAILURES_PER_HOST_PER_S)


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """What to do with a request: ``status`` 0 lets ``request`` (its credentials for our
    realm removed) go on as ``aor``; else answer ``status`` with ``headers``."""

    outcome: AuthOutcome
    request: SipRequest
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    aor: str = ""
    #: Why (for the journal's note): never a secret.
    reason: str = ""


# ---------------------------------------------------------------------------- digest math
def _h(algorithm: DigestAlgorithm, text: str) -> str:
    return hashlib.new(algorithm.hash_name, text.encode("utf-8", "surrogateescape")).hexdigest()


def response_from_ha1(algorithm: DigestAlgorithm, ha1: str, *, method: str, uri: str,
                      nonce: str, nc: int, cnonce: str) -> str:
    """RFC 7616 §3.4.1 ``response`` for qop=auth from a stored HA1 (non -sess)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{Qop.AUTH.value}:{ha2}")


# ---------------------------------------------------------------------------- tables
@dataclass(slots=True)
class _NcState:
    issued_ms: int
    highest: int
    seen: int = 1          # bit i: nc == highest - i was used


class NonceCounts:
    """Nonce counts used per nonce (replay protection), bounded (module docstring)."""

    def __init__(self, max_states: int = MAX_NONCE_STATES) -> None:
        self.max_states = max_states
        self._states: OrderedDict[str, _NcState] = OrderedDict()
        #: A nonce issued at or before this (ms) and not in the table may have been used.
        self.watermark_ms = -1
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._states)

    def accept(self, nonce: str, issued_ms: int, nc: int, oldest_ms: int) -> bool:
        """Use count ``nc`` of ``nonce``: True the first time, False for a replay (or a
        nonce that may have been used and forgotten). ``oldest_ms``: nonces issued
        before it are expired; their states may go."""
        state = self._states.get(nonce)
        if state is None:
            if issued_ms <= self.watermark_ms:
                return False
            self._states[nonce] = _NcState(issued_ms, nc)
            self._trim(oldest_ms)
            return True
        if nc > state.highest:
            state.seen = ((state.seen << (nc - state.highest)) | 1) & ((1 << NC_WINDOW) - 1)
            state.highest = nc
            return True
        offset = state.highest - nc
        if offset >= NC_WINDOW or (state.seen >> offset) & 1:
            return False
        state.seen |= 1 << offset
        return True

    def _trim(self, oldest_ms: int) -> None:
        while self._states:
            first = next(iter(self._states.values()))
            if len(self._states) <= self.max_states and first.issued_ms >= oldest_ms:
                return
            _nonce, gone = self._states.popitem(last=False)
            self.watermark_ms = max(self.watermark_ms, gone.issued_ms)
            if gone.issued_ms >= oldest_ms:
                self.evicted += 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float

    def level(self, now: float, rate_per_s: float, burst: int) -> float:
        self.tokens = min(float(burst), self.tokens + max(0.0, now - self.updated_at)
                          * rate_per_s)
        self.updated_at = max(self.updated_at, now)
        return self.tokens


class FailureBudget:
    """Wrong credentials per source host and in all (module docstring)."""

    def __init__(self, now: float, max_hosts: int = MAX_FAILURE_HOSTS) -> None:
        self.max_hosts = max_hosts
        self._hosts: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(float(GLOBAL_FAILURES_BURST), now)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._hosts)

    def may_try(self, host: str, now: float) -> bool:
        """May ``host`` have its credentials checked now?"""
        bucket = self._hosts.get(host)
        if bucket is None:
            return True
        if bucket.level(now, FAILURES_PER_HOST_PER_S, FAILURES_PER_HOST_BURST) < 1.0:
            return False
        return self._global.level(now, GLOBAL_FAILURES_PER_S, GLOBAL_FAILURES_BURST) >= 1.0

    def failed(self, host: str, now: float) -> None:
        bucket = self._hosts.get(host)
        if bucket is None:
            bucket = _Bucket(float(FAILURES_PER_HOST_BURST), now)
            self._hosts[host] = bucket
            if len(self._hosts) > self.max_hosts:
                self._evict(now)
        self._hosts.move_to_end(host)
        bucket.level(now, FAILURES_PER_HOST_PER_S, FAILURES_PER_HOST_BURST)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        self._global.level(now, GLOBAL_FAILURES_PER_S, GLOBAL_FAILURES_BURST)
        self._global.tokens = max(0.0, self._global.tokens - 1.0)

    def _evict(self, now: float) -> None:
        sample = list(itertools.islice(self._hosts.items(), EVICTION_SAMPLE))
        host, _ = max(sample, key=lambda hb: hb[1].level(now, FAILURES_PER_HOST_PER_S,
                                                          FAILURES_PER_HOST_BURST))
        del self._hosts[host]
        self.evicted += 1


# ---------------------------------------------------------------------------- authenticator
@dataclass(slots=True)
class _Nonce:
    issued_ms: int
    mac_ok: bool


@dataclass(slots=True)
class _JournalBudget:
    bucket: _Bucket
    suppressed: int = field(default=0)


class DigestAuthenticator:
    """Checks a local client's request; see the module docstring."""

    def __init__(self, users: UserTable, settings: AuthSettings, *, secret: bytes,
                 now: float, counters: Counter[str] | None = None) -> None:
        if len(secret) < 16 or not settings.algorithms:
            raise ValueError("the nonce secret needs 16 bytes or more, and an algorithm")
        self.users = users
        self.settings = settings
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._secret = secret
        self._epoch = now
        self._serial = itertools.count(1)
        self.nonces = NonceCounts()
        self.failures = FailureBudget(now)
        self._journal = _JournalBudget(_Bucket(float(AUTH_JOURNAL_BURST), now))
        self._dummy = {alg: hmac.new(secret, b"dummy ha1 " + alg.value.encode(),
                                     alg.hash_name).hexdigest() for alg in DigestAlgorithm}

    # ------------------------------------------------------------ checking
    def check(self, request: SipRequest, src_host: str, now: float) -> AuthDecision:
        """The decision for ``request`` from a local client at host ``src_host``."""
        decision = self._decide(request, src_host, now)
        self.counters[_OUTCOME_COUNTERS[decision.outcome]] += 1
        for counter, value in ((AuthCounter.FAILURE_HOSTS_EVICTED, self.failures.evicted),
                               (AuthCounter.NONCE_STATES_EVICTED, self.nonces.evicted)):
            if value:
                self.counters[counter] = value
        return decision

    def _decide(self, request: SipRequest, src_host: str, now: float) -> AuthDecision:
        if request.method in UNCHALLENGEABLE:
            return AuthDecision(AuthOutcome.OK, request)
        found = self._credentials(request)
        if found is None:
            return self._challenge(request, src_host, now, AuthOutcome.CHALLENGE)
        if not self.failures.may_try(src_host, now):
            return AuthDecision(AuthOutcome.LIMITED, request, SERVICE_UNAVAILABLE,
                                (("Retry-After", str(self.settings.retry_after_s)),),
                                reason="auth: too many failures from this host")
        if isinstance(found, str):
            return self._failed(request, src_host, now, found)
        aor = self._identity(request)
        problem = self._unusable(found, request)
        if problem or not self._response_ok(found, request.method, aor):
            return self._failed(request, src_host, now, problem or "wrong credentials")
        nonce = self._read_nonce(found.nonce, src_host)
        oldest_ms = self._ms(now - self.settings.nonce_lifetime_s)
        if nonce is None or not nonce.mac_ok or nonce.issued_ms < oldest_ms:
            return self._challenge(request, src_host, now, AuthOutcome.STALE,
                                   "auth: stale nonce")
        assert found.nc is not None
        if not self.nonces.accept(found.nonce, nonce.issued_ms, found.nc, oldest_ms):
            return self._challenge(request, src_host, now, AuthOutcome.REPLAYED,
                                   "auth: nonce count used before")
        return AuthDecision(AuthOutcome.OK, self._consumed(request), aor=aor)

    def _credentials(self, request: SipRequest) -> Credentials | str | None:
        """The credentials for our realm; a string: why they cannot be read; None: none."""
        name = "Authorization" if request.method == "REGISTER" else "Proxy-Authorization"
        problem: str | None = None
        for value in request.header_values(name)[:MAX_CREDENTIAL_VALUES]:
            try:
                credentials = parse_credentials_untrusted(value)
            except DecodeError as exc:
                problem = f"auth: malformed credentials ({exc.reason or 'syntax'})"
                continue
            if credentials.realm == self.settings.realm:
                return credentials
        return problem

    @staticmethod
    def _identity(request: SipRequest) -> str:
        """The AoR the request speaks for: To of a REGISTER (§10.3), else From."""
        addr = request.to_addr if request.method == "REGISTER" else request.from_addr
        return addr.uri.aor.lower()

    def _unusable(self, found: Credentials, request: SipRequest) -> str:
        if found.algorithm not in self.settings.algorithms:
            return "auth: algorithm not offered"
        if (found.qop is not Qop.AUTH or found.nc is None or not found.cnonce
                or len(found.cnonce) > MAX_CNONCE_CHARS):
            return "auth: qop=auth with nc and cnonce required"
        if found.uri != str(request.uri):
            try:
                same = parse_uri_untrusted(found.uri) == request.uri
            except DecodeError:
                same = False
            if not same:
                return "auth: digest uri is not the Request-URI"
        return ""

    def _response_ok(self, found: Credentials, method: str, aor: str) -> bool:
        """Compare the response with the expected one, at the same cost for an unknown
        AoR, a wrong username and a known user (a dummy HA1 stands in)."""
        user = self.users.get(aor)
        ha1 = None
        if user is not None and user.username == found.username and user.realm == found.realm:
            ha1 = user.ha1(found.algorithm)
        assert found.nc is not None and found.cnonce is not None
        expected = response_from_ha1(found.algorithm, ha1 or self._dummy[found.algorithm],
                                     method=method, uri=found.uri, nonce=found.nonce,
                                     nc=found.nc, cnonce=found.cnonce)
        same = hmac.compare_digest(expected.encode(),
                                   found.response.lower().encode("utf-8", "surrogateescape"))
        return same and ha1 is not None

    def _failed(self, request: SipRequest, src_host: str, now: float,
                reason: str) -> AuthDecision:
        self.failures.failed(src_host, now)
        return self._challenge(request, src_host, now, AuthOutcome.FAILED, reason)

    def _consumed(self, request: SipRequest) -> SipRequest:
        """``request`` without its Proxy-Authorization values for our realm (RFC 3261
        §22.3: credentials a proxy consumed are not passed on, here not into the mesh)."""
        if request.method == "REGISTER":
            return request
        values = request.header_values("Proxy-Authorization")
        kept = [v for v in values if not self._is_ours(v)]
        if len(kept) == len(values):
            return request
        if not kept:
            return request.without_header("Proxy-Authorization")
        return request.with_headers_replaced("Proxy-Authorization", kept)

    def _is_ours(self, value: str) -> bool:
        try:
            _scheme, params = parse_auth_params_untrusted(value)
        except DecodeError:
            return False
        return params.get("realm") == self.settings.realm

    # ------------------------------------------------------------ challenges and nonces
    def _challenge(self, request: SipRequest, src_host: str, now: float,
                   outcome: AuthOutcome, reason: str = "auth: challenge") -> AuthDecision:
        register = request.method == "REGISTER"
        header = "WWW-Authenticate" if register else "Proxy-Authenticate"
        nonce = self.nonce(src_host, now)
        stale = ", stale=true" if outcome in (AuthOutcome.STALE, AuthOutcome.REPLAYED) else ""
        headers = tuple(
            (header, f'Digest realm="{self.settings.realm}", nonce="{nonce}", '
                     f'algorithm={alg.value}, qop="auth"{stale}')
            for alg in self.settings.algorithms)
        return AuthDecision(outcome, request, UNAUTHORIZED if register else PROXY_AUTH_REQUIRED,
                            headers, reason=reason)

    def _ms(self, t: float) -> int:
        return int((t - self._epoch) * 1000)

    def _mac(self, payload: bytes, src_host: str) -> bytes:
        data = b"".join((_NONCE_LABEL, self.settings.realm.encode(), b"\x00",
                         src_host.encode("utf-8", "surrogateescape"), b"\x00", payload))
        return hmac.new(self._secret, data, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def nonce(self, src_host: str, now: float) -> str:
        """A fresh nonce for a client at ``src_host``."""
        issued = max(0, self._ms(now)).to_bytes(_NONCE_TIME_BYTES, "big")
        serial = (next(self._serial) % (1 << 32)).to_bytes(_NONCE_COUNT_BYTES, "big")
        payload = issued + serial
        return (payload + self._mac(payload, src_host)).hex()

    def _read_nonce(self, text: str, src_host: str) -> _Nonce | None:
        """The issue time of one of our nonces and whether it is ours for this host."""
        if len(text) != NONCE_HEX_CHARS:
            return None
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return None
        payload, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        issued_ms = int.from_bytes(payload[:_NONCE_TIME_BYTES], "big")
        return _Nonce(issued_ms, hmac.compare_digest(mac, self._mac(payload, src_host)))

    # ------------------------------------------------------------ journal budget
    def may_journal(self, now: float) -> bool:
        """Whether an authentication answer may be journaled now (else counted)."""
        budget = self._journal
        if budget.bucket.level(now, AUTH_JOURNAL_PER_S, AUTH_JOURNAL_BURST) >= 1.0:
            budget.bucket.tokens -= 1.0
            return True
        budget.suppressed += 1
        self.counters[AuthCounter.JOURNAL_SUPPRESSED] += 1
        return False

    def status(self) -> dict[str, object]:
        """For ``ctl status``: realm, algorithms, users, table sizes (no secrets)."""
        return {"realm": self.settings.realm,
                "algorithms": [a.value for a in self.settings.algorithms],
                "users": len(self.users), "nonce_states": len(self.nonces),
                "failure_hosts": len(self.failures)}


def parse_algorithms(names: Sequence[str]) -> tuple[DigestAlgorithm, ...]:
    """``["SHA-256", "MD5"]`` -> algorithms (config values are validated already)."""
    by_name = {a.value.lower(): a for a in DEFAULT_ALGORITHMS}
    return tuple(by_name[name.lower()] for name in names)
