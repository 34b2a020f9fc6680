"""UpstreamRegistrar: an uplinked relay registers its island's AoRs at a conventional SIP
registrar (``[upstream]``, issue 10 item 5), so desk phones and a PBX can call responders.

Sans-IO (ARCHITECTURE.md rule 2): ``receive(response, now)`` (or :meth:`offer` with the
raw datagram), ``to_send(now) -> [LocalDatagram]`` (REGISTERs for the upstream address,
sent from the gateway's SIP socket), ``next_timer() / on_timer(now)``, ``next_event()``
(journal records: ``upstream.changed``).

**What is registered.** Every ``scan_s`` the island's location table is read: each live,
routable binding (not a tombstone, not in conflict or contested, not expired, not an
uplink-mesh AoR ``@uplink.invalid``, and in the configured ``domain`` when one is set)
wants one registration, ``Contact: <sip:<user>@<contact host>:<port>>`` -- the relay's
gateway as the upstream reaches it (its service address maps ``sip:user@<own address>``
back to the AoR). At most ``max_aors`` AoRs, chosen fairly: the signing keys take turns
(each key's first AoR, then each key's second, ...; oldest first within a key), so one
key claiming many AoRs cannot push the others out. A registration is refreshed at
``refresh_fraction`` of what the registrar granted, and removed (``Expires: 0``, one try)
when its binding goes or loses its slot.

**Authentication.** A 401/407 is answered once per nonce with digest credentials
(:mod:`meshcomm.sip.digest`); the challenge is kept and reused (nc incremented) for the
next refreshes; ``stale=true`` retries with the new nonce. A second challenge for the same
nonce, or a 403, is an authentication failure (counted, in ``last_error``, retried with
backoff).

**Failure.** Nothing in the node waits for the registrar. When a REGISTER times out
(Timer F) the registrar is *unreachable*: sending stops, one probe goes out after a
backoff (``retry_min_s`` doubling to ``retry_max_s``, jittered), and any answer makes it
*reachable* again (both transitions journaled). At most ``max_in_flight`` REGISTERs are
outstanding; due ones wait in due-time order.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from meshcomm.errors import ConfigError, DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import UpstreamChanged
from meshcomm.location.table import BindingState, StoredBinding
from meshcomm.node.gateway.types import Address, LocalDatagram
from meshcomm.sip.build import BRANCH_MAGIC_COOKIE, build_request, new_call_id, new_tag
from meshcomm.sip.digest import (
    AUTH_HEADERS,
    Challenge,
    Secret,
    authorization_value,
    best_challenge_untrusted,
)
from meshcomm.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    parse_message_untrusted,
)
from meshcomm.sip.timers import RFC3261_TIMERS, TimerConfig
from meshcomm.sip.transaction import NoticeKind, TransactionLayer
from meshcomm.sip.uri import SipUri, make_sip_uri, parse_uri_untrusted

log = logging.getLogger(__name__)

#: Every branch of ours starts with this: the node core hands responses carrying it here.
UPSTREAM_BRANCH_PREFIX: Final = BRANCH_MAGIC_COOKIE + "mcup"
#: Domain of the uplink mesh's own AoRs (never registered upstream).
UPLINK_AOR_SUFFIX: Final = "@uplink.invalid"
#: Registrations being removed (Expires: 0) at once, beyond ``max_aors``.
MAX_UNREGISTERING: Final = 256
#: Longest error text kept for status and the journal.
MAX_ERROR_CHARS: Final = 120
#: A registration is refreshed at least this long before the registrar's expiry, seconds.
MIN_REFRESH_MARGIN_S: Final = 5.0
#: Shortest refresh interval, seconds (a registrar granting 1 s cannot make us flood).
MIN_REFRESH_INTERVAL_S: Final = 10.0
#: stale=true challenges answered in a row before it counts as a refusal.
MAX_STALE_RETRIES: Final = 3
#: 423 Interval Too Brief answered at most this many times per registration attempt.
MAX_INTERVAL_RETRIES: Final = 2
USER_AGENT: Final = "meshcomm-relay"


class UpstreamState(StrEnum):
    """Whether the upstream registrar answers (``unknown`` until the first answer)."""

    UNKNOWN = "unknown"
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


class RegState(Enum):
    WAITING = "waiting"              # due at ``due`` (new, refresh or retry)
    REGISTERING = "registering"      # a REGISTER is out
    REGISTERED = "registered"        # granted; refresh at ``due``
    UNREGISTERING = "unregistering"  # Expires: 0 is out (or due); forgotten after it


class UpstreamCounter(StrEnum):
    REGISTERS_SENT = "upstream_registers_sent"
    REGISTERED = "upstream_registered"            # 2xx to a registration or refresh
    UNREGISTERED = "upstream_unregistered"        # 2xx to Expires: 0
    CHALLENGES = "upstream_challenges"            # 401/407 answered with credentials
    AUTH_FAILED = "upstream_auth_failed"          # refused credentials, or none configured
    REFUSED = "upstream_refused"                  # another final error
    TIMEOUTS = "upstream_timeouts"                # no answer within Timer F
    OVER_LIMIT = "upstream_over_limit"            # AoRs beyond max_aors (per scan)
    UNREGISTER_DROPPED = "upstream_unregister_dropped"
    BAD_RESPONSES = "upstream_bad_responses"      # undecodable or unmatched responses


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Settings of the upstream registration client (the runtime builds them from
    ``[upstream]``). ``proxy``: where REGISTERs go (an address, already resolved)."""

    registrar: str
    proxy: Address
    contact_host: str
    contact_port: int
    secret: Secret | None = None
    expires_s: int = 600
    domain: str | None = None
    max_aors: int = 256
    max_in_flight: int = 8
    refresh_fraction: float = 0.5
    scan_s: float = 2.0
    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    timers: TimerConfig = RFC3261_TIMERS

    def __post_init__(self) -> None:
        try:
            uri = parse_uri_untrusted(self.registrar)
        except DecodeError as exc:
            raise ConfigError("upstream.registrar", f"not a SIP URI: {exc}") from exc
        if not uri.is_sip or uri.user is not None:
            raise ConfigError("upstream.registrar", "must be sip:host[:port]")
        if not 60 <= self.expires_s <= 86400:
            raise ConfigError("upstream.expires_s", "must be 60..86400")
        if not 1 <= self.max_aors <= 65536 or not 1 <= self.max_in_flight <= 64:
            raise ConfigError("upstream.max_aors", "max_aors 1..65536, max_in_flight 1..64")
        if not 0.1 <= self.refresh_fraction <= 0.9:
            raise ConfigError("upstream.refresh_fraction", "must be 0.1..0.9")
        if not (self.scan_s > 0 and 0 < self.retry_min_s <= self.retry_max_s):
            raise ConfigError("upstream.retry_min_s", "scan_s > 0, 0 < retry_min_s <= max")

    @property
    def registrar_uri(self) -> SipUri:
        return parse_uri_untrusted(self.registrar)


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """For ``ctl status``: the registrar's state, since when, AoRs registered there,
    AoRs wanting a registration, and the last error ("" when none)."""

    state: str
    since: float
    registered: int
    wanted: int
    last_error: str
    registrar: str


@dataclass(eq=False, slots=True)
class _Reg:
    aor: str
    call_id: str
    from_tag: str
    state: RegState = RegState.WAITING
    cseq: int = 0
    due: float | None = None
    granted_until: float | None = None
    branch: str | None = None
    remove: bool = False
    challenge: Challenge | None = None
    challenge_status: int = 401
    nc: int = 0
    #: The REGISTER out carried credentials; stale challenges answered in a row.
    sent_auth: bool = False
    stale_retries: int = 0
    interval_retries: int = 0
    expires_s: int = 0
    failures: int = 0
    #: The REGISTER out (or last answered) was an Expires: 0.
    sent_zero: bool = False


class UpstreamRegistrar:
    """See the module docstring. ``table``: the island's location table (iterable of
    :class:`StoredBinding`)."""

    def __init__(self, table: Iterable[StoredBinding], config: UpstreamConfig, rng: random.Random,
                 now: float) -> None:
        self.table = table
        self.config = config
        self.rng = rng
        self.counters: Counter[str] = Counter()
        self.state = UpstreamState.UNKNOWN
        self.since = now
        self.last_error = ""
        self._regs: dict[str, _Reg] = {}
        self._by_branch: dict[str, _Reg] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._heap_seq = 0
        self._tl = TransactionLayer(config.timers)
        self._events: deque[JournalRecord] = deque()
        self._scan_at = now
        self._gate_until: float | None = None
        self._backoff_s = config.retry_min_s
        self._uri = config.registrar_uri
        #: The contact host as written in a URI or Via (an IPv6 literal in brackets).
        host = config.contact_host
        self._host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._wanted = 0

    # ------------------------------------------------------------ driving API
    def offer(self, data: bytes, src: Address, now: float) -> bool:
        """A datagram the gateway's socket received from ``src``: True when it was a
        response to one of our REGISTERs (consumed here), False for the gateway."""
        if src != self.config.proxy or UPSTREAM_BRANCH_PREFIX.encode() not in data:
            return False
        try:
            message = parse_message_untrusted(data)
        except DecodeError:
            return False
        if not isinstance(message, SipResponse):
            return False
        branch = message.top_via.branch
        if branch is None or not branch.startswith(UPSTREAM_BRANCH_PREFIX):
            return False
        self.receive(message, now)
        return True

    def receive(self, response: SipResponse, now: float) -> None:
        if not self._tl.on_response(response, now):
            self.counters[UpstreamCounter.BAD_RESPONSES] += 1
        self._drain(now)

    def to_send(self, now: float) -> list[LocalDatagram]:
        return [LocalDatagram(data, dest) for data, dest in self._tl.take_outgoing()]

    def next_timer(self) -> float | None:
        times = [self._scan_at, self._tl.next_timer(), self._next_send()]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        self._tl.on_timer(now)
        self._drain(now)
        if now >= self._scan_at:
            self._scan_at = now + self.config.scan_s
            self.scan(now)
        self._send_due(now)

    def next_event(self) -> JournalRecord | None:
        return self._events.popleft() if self._events else None

    def status(self) -> UpstreamStatus:
        registered = sum(1 for r in self._regs.values() if r.granted_until is not None
                         and not r.remove)
        return UpstreamStatus(self.state.value, self.since, registered, self._wanted,
                              self.last_error, self.config.registrar)

    # ------------------------------------------------------------ what to register
    def scan(self, now: float) -> None:
        """Compare the table with the registrations: new AoRs are due now, AoRs gone
        (or over the limit) are removed upstream."""
        wanted = self._wanted_aors(now)
        self._wanted = len(wanted)
        for aor in wanted:
            reg = self._regs.get(aor)
            if reg is None:
                reg = _Reg(aor, new_call_id(self.rng, self._host),
                           new_tag(self.rng))
                self._regs[aor] = reg
                self._schedule(reg, now)
            elif reg.remove:
                reg.remove = False
                if reg.state is not RegState.UNREGISTERING:
                    self._schedule(reg, now)
        for aor, reg in list(self._regs.items()):
            if aor not in wanted and not reg.remove:
                self._unregister(reg, now)

    def _wanted_aors(self, now: float) -> set[str]:
        by_key: dict[bytes, list[StoredBinding]] = {}
        for stored in self.table:
            if self._routable(stored, now):
                by_key.setdefault(stored.binding.key, []).append(stored)
        ranked: list[tuple[int, float, str]] = []
        for entries in by_key.values():
            entries.sort(key=lambda s: (s.admitted_at, str(s.binding.aor)))
            ranked += [(rank, s.admitted_at, str(s.binding.aor).lower())
                       for rank, s in enumerate(entries)]
        ranked.sort()
        out: set[str] = set()
        for _, _, aor in ranked:
            if len(out) >= self.config.max_aors and aor not in out:
                self.counters[UpstreamCounter.OVER_LIMIT] += 1
                continue
            out.add(aor)
        return out

    def _routable(self, stored: StoredBinding, now: float) -> bool:
        binding = stored.binding
        aor = str(binding.aor).lower()
        if (binding.is_tombstone or stored.expires_at <= now or aor.endswith(UPLINK_AOR_SUFFIX)
                or stored.state not in (BindingState.VERIFIED, BindingState.UNVERIFIED)
                or not aor.startswith("sip:")):
            return False
        domain = self.config.domain
        return domain is None or aor.rpartition("@")[2] == domain.lower()

    def _unregister(self, reg: _Reg, now: float) -> None:
        reg.remove = True
        if reg.granted_until is None or reg.granted_until <= now:
            if reg.state is not RegState.REGISTERING:
                self._forget(reg)
            return                                    # the answer decides (see _final)
        unregistering = sum(1 for r in self._regs.values() if r.remove)
        if unregistering > MAX_UNREGISTERING:
            self.counters[UpstreamCounter.UNREGISTER_DROPPED] += 1
            self._forget(reg)                         # it lapses at the registrar
            return
        if reg.state is not RegState.REGISTERING:
            self._schedule(reg, now)

    def _forget(self, reg: _Reg) -> None:
        self._regs.pop(reg.aor, None)
        if reg.branch is not None:
            self._by_branch.pop(reg.branch, None)

    # ------------------------------------------------------------ sending
    def _schedule(self, reg: _Reg, due: float) -> None:
        if reg.state is not RegState.REGISTERED:
            reg.state = RegState.WAITING
        reg.due = due
        self._heap_seq += 1
        heapq.heappush(self._heap, (due, self._heap_seq, reg.aor))
        if len(self._heap) > 4 * len(self._regs) + 64:
            self._heap = [(r.due, i, r.aor) for i, r in enumerate(self._regs.values())
                          if r.due is not None]
            heapq.heapify(self._heap)

    def _top(self) -> _Reg | None:
        heap = self._heap
        while heap:
            due, _, aor = heap[0]
            reg = self._regs.get(aor)
            if reg is not None and reg.due == due and reg.state is not RegState.REGISTERING:
                return reg
            heapq.heappop(heap)
        return None

    def _in_flight(self) -> int:
        return len(self._by_branch)

    def _limit(self) -> int:
        """REGISTERs out at once: one (a probe) until the registrar has answered."""
        return self.config.max_in_flight if self.state is UpstreamState.REACHABLE else 1

    def _next_send(self) -> float | None:
        if self._in_flight() >= self._limit():
            return None
        top = self._top()
        if top is None or top.due is None:
            return None
        if self._gate_until is not None:
            if self._in_flight() > 0:
                return None                            # the probe is out
            return max(top.due, self._gate_until)
        return top.due

    def _send_due(self, now: float) -> None:
        while self._in_flight() < self._limit():
            if self._gate_until is not None and (now < self._gate_until
                                                 or self._in_flight() > 0):
                return
            reg = self._top()
            if reg is None or reg.due is None or reg.due > now:
                return
            heapq.heappop(self._heap)
            self._send(reg, now)

    def _send(self, reg: _Reg, now: float) -> None:
        cfg = self.config
        reg.due = None
        reg.state = RegState.UNREGISTERING if reg.remove else RegState.REGISTERING
        reg.cseq += 1
        reg.branch = UPSTREAM_BRANCH_PREFIX + f"{self.rng.getrandbits(96):024x}"
        expires = 0 if reg.remove else (reg.expires_s or cfg.expires_s)
        reg.sent_zero = expires == 0
        request = self._build(reg, expires)
        reg.sent_auth = reg.challenge is not None and cfg.secret is not None
        if reg.sent_auth:
            reg.nc += 1
            request = self._authorize(reg, request)
        self._by_branch[reg.branch] = reg
        self.counters[UpstreamCounter.REGISTERS_SENT] += 1
        self._tl.start_client(request, cfg.proxy, now)

    def _build(self, reg: _Reg, expires: int) -> SipRequest:
        cfg = self.config
        aor_uri = parse_uri_untrusted(reg.aor)
        contact = NameAddr(make_sip_uri(aor_uri.user, self._host, cfg.contact_port))
        via = Via("UDP", self._host, cfg.contact_port,
                  (("branch", reg.branch), ("rport", None)))
        return build_request(
            "REGISTER", self._uri, from_addr=NameAddr(aor_uri, None, (("tag", reg.from_tag),)),
            to_addr=NameAddr(aor_uri), call_id=reg.call_id, cseq=reg.cseq, via=via,
            contact=contact, extra_headers=[("Expires", str(expires)),
                                            ("User-Agent", USER_AGENT)])

    def _authorize(self, reg: _Reg, request: SipRequest) -> SipRequest:
        assert reg.challenge is not None and self.config.secret is not None
        header = AUTH_HEADERS[reg.challenge_status][1]
        value = authorization_value(reg.challenge, self.config.secret, method="REGISTER",
                                    uri=str(self._uri), nc=reg.nc,
                                    cnonce=f"{self.rng.getrandbits(64):016x}")
        return request.with_header(header, value)

    # ------------------------------------------------------------ answers
    def _drain(self, now: float) -> None:
        while (notice := self._tl.next_notice()) is not None:
            branch = notice.tx.request.top_via.branch or ""
            reg = self._by_branch.get(branch)
            if notice.kind is NoticeKind.RESPONSE and isinstance(notice.message, SipResponse):
                if notice.message.status < 200 or reg is None:
                    continue
                self._by_branch.pop(branch, None)
                self._reachable(now)
                self._final(reg, notice.message, now)
            elif notice.kind in (NoticeKind.TIMEOUT, NoticeKind.TRANSPORT_ERROR):
                self._by_branch.pop(branch, None)
                if reg is not None:
                    self.counters[UpstreamCounter.TIMEOUTS] += 1
                    self._unreachable("no answer from the registrar", now)
                    self._failed(reg, now)
        self._send_due(now)

    def _final(self, reg: _Reg, response: SipResponse, now: float) -> None:
        status = response.status
        if 200 <= status < 300:
            self._granted(reg, response, now)
        elif status in AUTH_HEADERS:
            self._challenged(reg, response, now)
        elif status == 423 and reg.interval_retries < MAX_INTERVAL_RETRIES:
            reg.interval_retries += 1
            minimum = response.get_header("Min-Expires") or ""
            reg.expires_s = int(minimum) if minimum.isdigit() and len(minimum) < 7 else 3600
            self._schedule(reg, now)
        else:
            self.counters[UpstreamCounter.REFUSED] += 1
            self._error(f"{status} {response.reason}", now)
            self._failed(reg, now)

    def _granted(self, reg: _Reg, response: SipResponse, now: float) -> None:
        reg.failures = reg.interval_retries = 0
        if reg.sent_zero:
            self.counters[UpstreamCounter.UNREGISTERED] += 1
            reg.granted_until = None
            if reg.remove:
                self._forget(reg)
            else:                                      # its binding came back meanwhile
                reg.state = RegState.WAITING
                self._schedule(reg, now)
            return
        if reg.remove:                                 # it went while the REGISTER was out
            reg.granted_until = now + self._granted_s(reg, response)
            reg.state = RegState.WAITING
            self._schedule(reg, now)
            return
        self.counters[UpstreamCounter.REGISTERED] += 1
        granted = self._granted_s(reg, response)
        reg.granted_until = now + granted
        reg.state = RegState.REGISTERED
        interval = max(MIN_REFRESH_INTERVAL_S,
                       min(granted * self.config.refresh_fraction,
                           granted - MIN_REFRESH_MARGIN_S))
        self._schedule(reg, now + interval)
        if self.last_error and self.state is UpstreamState.REACHABLE:
            self.last_error = ""

    def _granted_s(self, reg: _Reg, response: SipResponse) -> int:
        """§10.2.4: our Contact's expires parameter, else Expires, else what we asked."""
        asked = reg.expires_s or self.config.expires_s
        try:
            contacts = response.contacts
        except DecodeError:
            contacts = ()
        user = parse_uri_untrusted(reg.aor).user
        for contact in contacts:
            uri = contact.uri
            if uri.user == user and uri.host.lower() == self._host.lower():
                value = contact.param("expires")
                if value is not None and value.isdigit() and len(value) < 7:
                    return max(1, int(value))
        expires = response.get_header("Expires")
        if expires is not None and expires.isdigit() and len(expires) < 7:
            return max(1, int(expires))
        return asked

    def _challenged(self, reg: _Reg, response: SipResponse, now: float) -> None:
        secret = self.config.secret
        header = AUTH_HEADERS[response.status][0]
        try:
            challenge = best_challenge_untrusted(response.header_values(header))
        except DecodeError as exc:
            self.counters[UpstreamCounter.AUTH_FAILED] += 1
            self._error(f"{response.status}: unusable challenge ({exc})", now)
            self._failed(reg, now)
            return
        # RFC 7616 §3.3: credentials answered with a fresh challenge were refused, unless
        # the server says the nonce was only stale.
        stale = challenge.stale and reg.stale_retries < MAX_STALE_RETRIES
        reg.stale_retries = reg.stale_retries + 1 if stale else 0
        if secret is None or (reg.sent_auth and not stale):
            self.counters[UpstreamCounter.AUTH_FAILED] += 1
            reason = "credentials refused" if secret is not None else "no credentials"
            self._error(f"{response.status} {response.reason}: {reason}", now)
            reg.challenge = None
            self._failed(reg, now)
            return
        self.counters[UpstreamCounter.CHALLENGES] += 1
        reg.challenge, reg.challenge_status, reg.nc = challenge, response.status, 0
        self._schedule(reg, now)

    def _failed(self, reg: _Reg, now: float) -> None:
        reg.branch = None
        if reg.remove:
            self._forget(reg)                          # it lapses at the registrar
            return
        if reg.granted_until is not None and reg.granted_until <= now:
            reg.granted_until = None
        reg.failures += 1
        delay = min(self.config.retry_max_s,
                    self.config.retry_min_s * 2 ** min(reg.failures - 1, 16))
        reg.state = RegState.WAITING
        self._schedule(reg, now + delay * self.rng.uniform(0.8, 1.2))

    # ------------------------------------------------------------ reachability
    def _error(self, text: str, now: float) -> None:
        self.last_error = text[:MAX_ERROR_CHARS]
        log.info("upstream registrar %s: %s", self.config.registrar, self.last_error)

    def _reachable(self, now: float) -> None:
        self._gate_until = None
        self._backoff_s = self.config.retry_min_s
        if self.state is UpstreamState.UNREACHABLE:
            # Back after an outage (often a restart that lost its bindings): refresh every
            # registration now, max_in_flight at a time.
            for reg in self._regs.values():
                if reg.state is RegState.REGISTERED and not reg.remove:
                    self._schedule(reg, now)
        self._transition(UpstreamState.REACHABLE, now)

    def _unreachable(self, text: str, now: float) -> None:
        self._error(text, now)
        self._gate_until = now + self._backoff_s * self.rng.uniform(0.8, 1.2)
        self._backoff_s = min(self.config.retry_max_s, self._backoff_s * 2)
        for reg in self._regs.values():
            if reg.granted_until is not None and reg.granted_until <= now:
                reg.granted_until = None
        self._transition(UpstreamState.UNREACHABLE, now)

    def _transition(self, state: UpstreamState, now: float) -> None:
        if state is self.state:
            return
        previous, self.state, self.since = self.state, state, now
        self._events.append(JournalRecord.of(UpstreamChanged(
            state=state.value, previous=previous.value,
            registered=self.status().registered, error=self.last_error)))
