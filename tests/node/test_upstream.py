"""The upstream registration client (meshcomm.node.upstream, issue 10 item 5) inside a
whole node core: the island's live bindings are registered at a digest-authenticating
registrar (a small one here, checking credentials with meshcomm.sip.digest's server-side
computation; kamailio in tests/interop/test_upstream_kamailio.py), refreshed, removed
when they go; refused credentials, an unreachable registrar, floods of AoRs and garbage
leave the island working and the registrar unflooded."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import UpstreamChanged
from meshcomm.location.binding import make_binding
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.types import Address, GatewayConfig, LocalDatagram
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.upstream import (
    UPSTREAM_BRANCH_PREFIX,
    UpstreamConfig,
    UpstreamCounter,
    UpstreamState,
)
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.build import build_response
from meshcomm.sip.digest import (
    Qop,
    Secret,
    digest_response,
    parse_credentials_untrusted,
)
from meshcomm.sip.message import SipRequest, parse_message_untrusted

DOMAIN = "incident.test"
PROXY: Address = ("192.0.2.10", 5060)
REALM = "pbx.test"
PASSWORD = "s3cret-pw"
WALL = 1.7e9


@dataclass
class Registrar:
    """A registrar like the interop test's kamailio: digest MD5 qop=auth with one
    password for every user, a fresh nonce per challenge (stale after ``nonce_life_s``),
    bindings in memory."""

    rng: random.Random
    password: str = PASSWORD
    max_expires_s: int = 3600
    nonce_life_s: float = 300.0
    nonces: dict[str, float] = field(default_factory=dict)
    bindings: dict[str, tuple[str, float]] = field(default_factory=dict)
    requests: list[SipRequest] = field(default_factory=list)

    def answer(self, data: bytes, now: float) -> bytes:
        request = parse_message_untrusted(data)
        assert isinstance(request, SipRequest) and request.method == "REGISTER"
        self.requests.append(request)
        auth = request.get_header("Authorization")
        if auth is None:
            return self._challenge(request, now, stale=False)
        creds = parse_credentials_untrusted(auth)
        issued = self.nonces.get(creds.nonce)
        if issued is None or now - issued > self.nonce_life_s:
            return self._challenge(request, now, stale=issued is not None)
        expected = digest_response(algorithm=creds.algorithm, username=creds.username,
                                   realm=REALM, password=self.password, method="REGISTER",
                                   uri=creds.uri, nonce=creds.nonce, qop=creds.qop,
                                   nc=creds.nc, cnonce=creds.cnonce)
        if creds.response != expected:
            return self._challenge(request, now, stale=False)
        aor = request.to_addr.uri.aor
        expires = min(int(request.header("Expires")), self.max_expires_s)
        contact = request.contacts[0]
        if expires == 0:
            self.bindings.pop(aor, None)
            return build_response(request, 200, to_tag="r").serialize()
        self.bindings[aor] = (str(contact.uri), now + expires)
        return build_response(request, 200, to_tag="r", extra_headers=[
            ("Contact", f"<{contact.uri}>;expires={expires}")]).serialize()

    def _challenge(self, request: SipRequest, now: float, *, stale: bool) -> bytes:
        nonce = f"{self.rng.getrandbits(64):016x}"
        self.nonces[nonce] = now
        value = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth"'
        if stale:
            value += ", stale=true"
        return build_response(request, 401, to_tag="r",
                              extra_headers=[("WWW-Authenticate", value)]).serialize()

    def live(self, now: float) -> set[str]:
        return {aor for aor, (_, until) in self.bindings.items() if until > now}


@dataclass
class Relay:
    """One relay node core with a gateway and the upstream client; REGISTERs go to
    ``registrar`` unless ``reachable`` is False (they are lost)."""

    core: NodeCore
    registrar: Registrar
    now: float = 0.0
    reachable: bool = True
    sent_upstream: list[bytes] = field(default_factory=list)
    journal: list[JournalRecord] = field(default_factory=list)
    to_clients: list[LocalDatagram] = field(default_factory=list)

    def drain(self) -> None:
        while True:
            event = self.core.next_event()
            if event is None:
                return
            if isinstance(event, LocalDatagram) and event.dest == PROXY:
                self.sent_upstream.append(event.data)
                if self.reachable and event.data.startswith(b"REGISTER "):
                    answer = self.registrar.answer(event.data, self.now)
                    self.core.receive_sip(answer, PROXY, self.now)
            elif isinstance(event, LocalDatagram):
                self.to_clients.append(event)
            elif isinstance(event, JournalRecord):
                self.journal.append(event)

    def run(self, until: float, step_s: float = 1.0) -> None:
        while self.now < until:
            due = self.core.next_timer()
            self.now = min(until, self.now + step_s if due is None else max(
                self.now, min(due, self.now + step_s)))
            self.core.on_timer(self.now)
            self.drain()

    def do(self, command: Callable[[float], object]) -> None:
        command(self.now)
        self.drain()

    def upstream_changes(self) -> list[str]:
        return [r.payload.state for r in self.journal if isinstance(r.payload, UpstreamChanged)]


def _relay(*, password: str = PASSWORD, max_aors: int = 256, seed: int = 1,
           registrar: Registrar | None = None, domain: str | None = DOMAIN,
           contact_host: str = "198.51.100.7", local_host: str = "127.0.0.1") -> Relay:
    ident = Identity(hashlib.sha256(f"upstream-relay-{seed}".encode()).digest())
    node = MeshNode(ident, NodeSettings(role="relay"), verifier=SignatureVerifier(),
                    rng=random.Random(seed), now=0.0, seq_base=1 << 32, wall_offset_s=WALL)
    config = UpstreamConfig(registrar=f"sip:{PROXY[0]}", proxy=PROXY,
                            contact_host=contact_host, contact_port=5060,
                            secret=Secret("meshcomm", password), expires_s=600,
                            domain=domain, max_aors=max_aors)
    core = compose(node, gateway_config=GatewayConfig(local_host=local_host, upstream=PROXY),
                   rng=random.Random(seed + 1), node_aor=f"sip:relay@{DOMAIN}", now=0.0,
                   upstream=config)
    return Relay(core, registrar or Registrar(random.Random(seed + 2)))


def _foreign(relay: Relay, name: str, aor: str, *, lifetime_s: int = 300) -> None:
    """A binding of another island node (its own key) arrives in the relay's table."""
    ident = Identity(hashlib.sha256(name.encode()).digest())
    binding = make_binding(ident, incident="default", seq=1, aor=aor,
                           contacts=(f"sip:{name}@x.mesh",), issued_at=WALL + relay.now,
                           lifetime_s=lifetime_s)
    result = relay.core.node.table.offer(binding, relay.now, WALL + relay.now)
    assert result.changed, result


def _branch(data: bytes) -> str | None:
    return parse_message_untrusted(data).top_via.branch


def test_island_aors_are_registered_with_digest_and_refreshed() -> None:
    relay = _relay()
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    _foreign(relay, "bob-key", f"sip:bob@{DOMAIN}")
    _foreign(relay, "other-domain", "sip:carol@elsewhere.test")
    _foreign(relay, "uplink-aor", "sip:0011223344556677@uplink.invalid")
    relay.run(10.0)
    assert relay.registrar.live(relay.now) == {f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"}
    # Each AoR: one unauthenticated try, one answer with credentials (qop=auth, nc=1).
    first = [r for r in relay.registrar.requests if r.to_addr.uri.user == "alice"]
    assert [r.get_header("Authorization") is None for r in first] == [True, False]
    creds = parse_credentials_untrusted(first[1].header("Authorization"))
    assert (creds.qop, creds.nc, creds.username) == (Qop.AUTH, 1, "meshcomm")
    assert relay.registrar.bindings[f"sip:alice@{DOMAIN}"][0] == "sip:alice@198.51.100.7:5060"
    assert first[1].top_via.branch is not None
    assert first[1].top_via.branch.startswith(UPSTREAM_BRANCH_PREFIX)
    upstream = relay.core.upstream
    assert upstream is not None
    status = upstream.status()
    assert (status.state, status.registered, status.last_error) == ("reachable", 2, "")
    assert relay.upstream_changes() == ["reachable"]
    # Refreshed before the 600 s grant ends, with the kept challenge (nc=2), so the
    # registrations never lapse; the bindings themselves are refreshed by the node.
    before = len(relay.registrar.requests)
    relay.run(1900.0, step_s=5.0)
    assert relay.registrar.live(relay.now) >= {f"sip:alice@{DOMAIN}"}
    refreshes = relay.registrar.requests[before:]
    assert refreshes
    later = [parse_credentials_untrusted(r.header("Authorization")).nc
             for r in refreshes if r.get_header("Authorization") is not None]
    assert 2 in later
    # A 300 s nonce went stale: answered at once with the new one, nothing failed.
    assert upstream.counters[UpstreamCounter.AUTH_FAILED] == 0
    assert len(refreshes) < 30            # ~every 300 s per AoR plus stale nonces


def test_a_binding_that_goes_is_removed_upstream() -> None:
    relay = _relay()
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    relay.do(lambda now: relay.core.register(f"sip:dave@{DOMAIN}", ("sip:d@x",), now))
    relay.run(5.0)
    assert relay.registrar.live(relay.now) == {f"sip:alice@{DOMAIN}", f"sip:dave@{DOMAIN}"}
    relay.do(lambda now: relay.core.deregister(f"sip:dave@{DOMAIN}", now))
    relay.run(10.0)
    assert relay.registrar.live(relay.now) == {f"sip:alice@{DOMAIN}"}
    last = relay.registrar.requests[-1]
    assert last.to_addr.uri.user == "dave" and last.header("Expires") == "0"
    upstream = relay.core.upstream
    assert upstream is not None
    assert upstream.counters[UpstreamCounter.UNREGISTERED] == 1
    assert upstream.status().registered == 1


def test_refused_credentials_back_off_and_say_why() -> None:
    relay = _relay(password="wrong")
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    relay.run(600.0, step_s=5.0)
    upstream = relay.core.upstream
    assert upstream is not None
    assert not relay.registrar.bindings
    assert upstream.counters[UpstreamCounter.AUTH_FAILED] >= 3
    assert "credentials refused" in upstream.status().last_error
    assert PASSWORD not in upstream.status().last_error and "wrong" not in repr(
        upstream.config)
    # Backoff doubling to retry_max_s (300 s): a handful of tries, not one per second.
    assert len(relay.registrar.requests) <= 20


def test_unreachable_registrar_is_probed_with_backoff_and_recovered() -> None:
    relay = _relay()
    relay.reachable = False
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    for i in range(5):
        _foreign(relay, f"k{i}", f"sip:user{i}@{DOMAIN}", lifetime_s=3600)
    relay.run(40.0)
    upstream = relay.core.upstream
    assert upstream is not None
    assert upstream.state is UpstreamState.UNREACHABLE
    assert relay.upstream_changes() == ["unreachable"]
    assert upstream.status().last_error == "no answer from the registrar"
    relay.run(900.0, step_s=5.0)
    # One probe at a time (retransmitted per Timer E), the gate doubling from 2 s:
    # a probe at ~34, 70, 110, 158, 222, 318, 478 and 766 s -- not 6 AoRs each on
    # its own schedule.
    branches = {_branch(d) for d in relay.sent_upstream}
    assert 5 <= len(branches) <= 10, len(branches)
    assert len(relay.sent_upstream) <= 11 * len(branches)
    relay.reachable = True
    relay.run(relay.now + 400.0, step_s=5.0)
    assert upstream.status().state == UpstreamState.REACHABLE
    assert relay.upstream_changes() == ["unreachable", "reachable"]
    assert len(relay.registrar.live(relay.now)) == 6
    assert upstream.status().registered == 6


def test_fair_share_when_one_key_floods_aors() -> None:
    relay = _relay(max_aors=4)
    for i in range(30):
        _foreign(relay, "flooder", f"sip:flood{i:02d}@{DOMAIN}")
    _foreign(relay, "honest-1", f"sip:medic@{DOMAIN}")
    _foreign(relay, "honest-2", f"sip:chief@{DOMAIN}")
    relay.run(10.0)
    live = relay.registrar.live(relay.now)
    assert len(live) == 4
    assert {f"sip:medic@{DOMAIN}", f"sip:chief@{DOMAIN}"} <= live
    upstream = relay.core.upstream
    assert upstream is not None
    assert upstream.counters[UpstreamCounter.OVER_LIMIT] > 0
    assert upstream.status().wanted == 4


def test_other_sip_from_the_upstream_reaches_the_gateway_and_garbage_is_harmless() -> None:
    relay = _relay()
    relay.run(5.0)
    gateway = relay.core.gateway
    assert gateway is not None
    # A MESSAGE from the upstream proxy for an AoR nobody has: the gateway answers it
    # (404: never back to the upstream), the registration client does not take it.
    message = (b"MESSAGE sip:nobody@" + DOMAIN.encode() + b" SIP/2.0\r\n"
               b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKpbx1\r\n"
               b"Max-Forwards: 70\r\nFrom: <sip:desk@pbx.test>;tag=1\r\n"
               b"To: <sip:nobody@" + DOMAIN.encode() + b">\r\nCall-ID: m1@pbx\r\n"
               b"CSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi")
    relay.do(lambda now: relay.core.receive_sip(message, PROXY, now))
    answers = [parse_message_untrusted(d) for d in relay.sent_upstream]
    assert any(getattr(a, "status", None) == 404 for a in answers)
    upstream = relay.core.upstream
    assert upstream is not None
    # Garbage and unmatched responses carrying our branch prefix: counted, no crash.
    rng = random.Random(5)
    for _ in range(200):
        junk = UPSTREAM_BRANCH_PREFIX.encode() + rng.randbytes(rng.randrange(0, 300))
        relay.core.receive_sip(junk, PROXY, relay.now)
        relay.drain()
    stray = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch="
             + UPSTREAM_BRANCH_PREFIX.encode() + b"ffff\r\nFrom: <sip:a@b>;tag=1\r\n"
             b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    relay.do(lambda now: relay.core.receive_sip(stray, PROXY, now))
    assert upstream.counters[UpstreamCounter.BAD_RESPONSES] == 1
    assert gateway.counters[GatewayCounter.TO_UPSTREAM] == 0


def test_a_registrar_back_from_an_outage_gets_every_registration_again() -> None:
    relay = _relay()
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    relay.run(200.0, step_s=5.0)
    _foreign(relay, "bob-key", f"sip:bob@{DOMAIN}", lifetime_s=3600)
    relay.run(210.0)
    assert len(relay.registrar.live(relay.now)) == 2
    bob = f"sip:bob@{DOMAIN}"
    # The registrar restarts (its in-memory bindings are gone) and is silent meanwhile:
    # alice's refresh (~305 s) times out; bob's is not due before ~510 s.
    relay.registrar.bindings.clear()
    relay.reachable = False
    relay.run(400.0, step_s=2.0)
    upstream = relay.core.upstream
    assert upstream is not None
    assert upstream.state is UpstreamState.UNREACHABLE
    relay.reachable = True
    relay.run(460.0, step_s=1.0)
    assert upstream.status().state == UpstreamState.REACHABLE
    # Bob is registered again right after the registrar's first answer, not at ~510 s.
    assert relay.registrar.live(relay.now) == {f"sip:alice@{DOMAIN}", bob}
    granted_at = relay.registrar.bindings[bob][1] - 600.0
    assert granted_at < 460.0


def test_ipv6_contact_is_bracketed() -> None:
    relay = _relay(contact_host="2001:db8::7")
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    relay.run(5.0)
    contact, _ = relay.registrar.bindings[f"sip:alice@{DOMAIN}"]
    assert contact == "sip:alice@[2001:db8::7]:5060"
    assert relay.registrar.requests[-1].top_via.host == "[2001:db8::7]"
    upstream = relay.core.upstream
    assert upstream is not None and upstream.status().registered == 1


def test_a_wildcard_gateway_takes_requests_for_the_registered_contact() -> None:
    relay = _relay(local_host="0.0.0.0", contact_host="198.51.100.7")
    gateway = relay.core.gateway
    assert gateway is not None
    # The runtime's resolver (the kernel's source address toward a peer), and the address
    # toward the upstream learnt at start-up (meshcomm.runtime.app._compose_core).
    gateway.hosts.resolve = lambda _peer: "198.51.100.7"
    gateway.hosts.toward(PROXY)
    _foreign(relay, "medic-key", f"sip:medic@{DOMAIN}")
    relay.run(5.0)
    message = (b"MESSAGE sip:medic@198.51.100.7:5060 SIP/2.0\r\n"
               b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKpbx2\r\n"
               b"Max-Forwards: 70\r\nFrom: <sip:desk@pbx.test>;tag=1\r\n"
               b"To: <sip:medic@" + DOMAIN.encode() + b">\r\nCall-ID: m2@pbx\r\n"
               b"CSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi")
    before = gateway.counters[GatewayCounter.SIP_TO_MESH]
    relay.do(lambda now: relay.core.receive_sip(message, PROXY, now))
    answers = [parse_message_untrusted(d) for d in relay.sent_upstream
               if not d.startswith(b"REGISTER ")]
    assert not any(getattr(a, "status", 0) == 404 for a in answers), answers
    assert gateway.counters[GatewayCounter.SIP_TO_MESH] == before + 1   # on to medic's node


def test_a_registrar_granting_seconds_cannot_make_the_relay_flood_it() -> None:
    relay = _relay(registrar=Registrar(random.Random(9), max_expires_s=1))
    relay.do(lambda now: relay.core.register(f"sip:alice@{DOMAIN}", ("sip:a@x",), now))
    relay.run(101.0)
    # Refreshes at MIN_REFRESH_INTERVAL_S (10 s), not every second: ~11 authenticated
    # REGISTERs (plus the first unauthenticated one) in 100 s.
    assert 10 <= len(relay.registrar.requests) <= 14, len(relay.registrar.requests)
