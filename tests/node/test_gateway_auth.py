"""Digest authentication of local clients at the gateway (issue 12 item 2): the digest math
against RFC 7616's example, the challenge shape, registration with SHA-256 and MD5, replays,
stale nonces, garbage credentials, floods from many sources, takeover attempts, uniform
answers for known and unknown AoRs, and the credentials kept off the mesh."""

from __future__ import annotations

import random
import statistics
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.node.gateway.auth import (
    FAILURES_PER_HOST_BURST,
    MAX_FAILURE_HOSTS,
    NC_WINDOW,
    NONCE_LIFETIME_S,
    AuthDecision,
    AuthOutcome,
    AuthSettings,
    DigestAuthenticator,
    FailureBudget,
    NonceCounts,
    response_from_ha1,
)
from meshcomm.node.gateway.parts import PendingSipRecord
from meshcomm.node.gateway.users import UserTable, ha1_of, make_user
from meshcomm.sip.digest import (
    Challenge,
    DigestAlgorithm,
    Qop,
    Secret,
    authorization_value,
    best_challenge_untrusted,
    digest_response,
    parse_challenge_untrusted,
)
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from tests.node.gateway_net import DOMAIN, Net
from tests.node.raw_sip import raw_request, received

SECRET = b"k" * 32
ALICE = f"sip:alice@{DOMAIN}"
PASSWORD = "correct horse"
CLIENT = ("10.0.0.5", 5099)
ATTACKER = ("10.0.0.66", 5060)

# RFC 7616 §3.9.1 (the same inputs for both algorithms).
RFC_USER, RFC_REALM, RFC_PASSWORD = "Mufasa", "http-auth@example.org", "Circle of Life"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_RESPONSES = {
    DigestAlgorithm.MD5: "8ca523f5e9506fed4657c9700eebdbec",
    DigestAlgorithm.SHA256: "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"}


def test_rfc7616_example_md5_and_sha256() -> None:
    for algorithm, expected in RFC_RESPONSES.items():
        ha1 = ha1_of(algorithm, RFC_USER, RFC_REALM, RFC_PASSWORD)
        got = response_from_ha1(algorithm, ha1, method="GET", uri="/dir/index.html",
                                nonce=RFC_NONCE, nc=1, cnonce=RFC_CNONCE)
        assert got == expected
        # The client side (sip/digest.py) agrees, from the password.
        assert digest_response(algorithm=algorithm, username=RFC_USER, realm=RFC_REALM,
                               password=RFC_PASSWORD, method="GET", uri="/dir/index.html",
                               nonce=RFC_NONCE, qop=Qop.AUTH, nc=1,
                               cnonce=RFC_CNONCE) == expected


# ---------------------------------------------------------------------------- helpers
def authenticator(now: float = 0.0, algorithms: tuple[DigestAlgorithm, ...] = (
        DigestAlgorithm.SHA256, DigestAlgorithm.MD5)) -> DigestAuthenticator:
    table = UserTable(stored=[make_user(ALICE, PASSWORD, DOMAIN)])
    return DigestAuthenticator(table, AuthSettings(DOMAIN, algorithms), secret=SECRET, now=now)


def request(method: str, user: str = "alice", *, src: tuple[str, int] = CLIENT,
            headers: tuple[str, ...] = (), branch: str = "b1", cseq: int = 1) -> SipRequest:
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else None
    extra = ((f"Contact: <sip:{user}@{src[0]}:{src[1]}>", "Expires: 600")
             if method == "REGISTER" else ())
    data = raw_request(method, user, src, from_user=user, branch=branch, call_id=f"c-{user}",
                       cseq=cseq, uri=uri, headers=(*extra, *headers))
    parsed = parse_message_untrusted(data)
    assert isinstance(parsed, SipRequest)
    return parsed


def answer(challenge_values: list[str], method: str, uri: str, *, password: str = PASSWORD,
           user: str = "alice", nc: int = 1, cnonce: str = "0a4f113b") -> str:
    challenge = best_challenge_untrusted(challenge_values)
    return authorization_value(challenge, Secret(user, password), method=method, uri=uri,
                               cnonce=cnonce, nc=nc)


def header_for(method: str) -> str:
    return "Authorization" if method == "REGISTER" else "Proxy-Authorization"


def authenticated(auth: DigestAuthenticator, method: str, *, now: float = 1.0,
                  password: str = PASSWORD, user: str = "alice", nc: int = 1,
                  algorithm: DigestAlgorithm | None = None) -> AuthOutcome:
    first = auth.check(request(method, user), CLIENT[0], now)
    values = [v for _, v in first.headers]
    if algorithm is not None:
        values = [v for v in values if parse_challenge_untrusted(v).algorithm is algorithm]
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    value = answer(values, method, uri, password=password, user=user, nc=nc)
    second = request(method, user, headers=(f"{header_for(method)}: {value}",), branch="b2")
    return auth.check(second, CLIENT[0], now).outcome


# ---------------------------------------------------------------------------- the authenticator
def test_challenges_offer_sha256_then_md5_with_qop_auth() -> None:
    auth = authenticator()
    reg = auth.check(request("REGISTER"), CLIENT[0], 0.0)
    assert reg.status == 401 and [n for n, _ in reg.headers] == ["WWW-Authenticate"] * 2
    offered = [parse_challenge_untrusted(v) for _, v in reg.headers]
    assert [c.algorithm for c in offered] == [DigestAlgorithm.SHA256, DigestAlgorithm.MD5]
    assert all(c.realm == DOMAIN and c.qop == (Qop.AUTH,) and not c.stale for c in offered)
    for method in ("MESSAGE", "INVITE", "OPTIONS", "SUBSCRIBE", "BYE"):
        decision = auth.check(request(method), CLIENT[0], 0.0)
        assert decision.status == 407
        assert {n for n, _ in decision.headers} == {"Proxy-Authenticate"}
    for method in ("ACK", "CANCEL"):        # RFC 3261 §22.1: never challenged
        assert auth.check(request(method), CLIENT[0], 0.0).outcome is AuthOutcome.OK


def test_right_password_passes_with_either_algorithm_wrong_one_fails() -> None:
    for algorithm in (DigestAlgorithm.SHA256, DigestAlgorithm.MD5):
        for method in ("REGISTER", "MESSAGE", "INVITE"):
            auth = authenticator()
            assert authenticated(auth, method, algorithm=algorithm) is AuthOutcome.OK
            assert authenticated(auth, method, algorithm=algorithm,
                                 password="wrong") is AuthOutcome.FAILED
    auth = authenticator(algorithms=(DigestAlgorithm.MD5,))
    assert authenticated(auth, "REGISTER") is AuthOutcome.OK


def test_credentials_bind_the_request_identity() -> None:
    """alice's password does not register bob nor send as bob (From)."""
    auth = authenticator()
    auth.users.replace_stored([*auth.users.stored(), make_user(f"sip:bob@{DOMAIN}", "b", DOMAIN)])
    first = auth.check(request("REGISTER", "bob"), CLIENT[0], 1.0)
    value = answer([v for _, v in first.headers], "REGISTER", f"sip:{DOMAIN}")  # as alice
    forged = request("REGISTER", "bob", headers=(f"Authorization: {value}",), branch="b2")
    assert auth.check(forged, CLIENT[0], 1.0).outcome is AuthOutcome.FAILED


def test_replayed_nonce_count_is_refused_and_counts_move_forward() -> None:
    auth = authenticator()
    first = auth.check(request("MESSAGE"), CLIENT[0], 1.0)
    values = [v for _, v in first.headers]
    uri = f"sip:alice@{DOMAIN}"
    one = request("MESSAGE", headers=(f"Proxy-Authorization: {answer(values, 'MESSAGE', uri)}",))
    assert auth.check(one, CLIENT[0], 1.0).outcome is AuthOutcome.OK
    replay = auth.check(one, CLIENT[0], 2.0)
    assert replay.outcome is AuthOutcome.REPLAYED and replay.status == 407
    assert all("stale=true" in v for _, v in replay.headers)
    for nc in (3, 2, 5):                     # out of order within the window: each once
        value = answer(values, "MESSAGE", uri, nc=nc)
        req = request("MESSAGE", headers=(f"Proxy-Authorization: {value}",), branch=f"n{nc}")
        assert auth.check(req, CLIENT[0], 2.0).outcome is AuthOutcome.OK
        assert auth.check(req, CLIENT[0], 2.0).outcome is AuthOutcome.REPLAYED


def test_stale_and_foreign_nonces_get_stale_true_then_work() -> None:
    auth = authenticator()
    first = auth.check(request("REGISTER"), CLIENT[0], 1.0)
    value = answer([v for _, v in first.headers], "REGISTER", f"sip:{DOMAIN}")
    late = request("REGISTER", headers=(f"Authorization: {value}",), branch="b2")
    stale = auth.check(late, CLIENT[0], 1.0 + NONCE_LIFETIME_S + 1)
    assert stale.outcome is AuthOutcome.STALE and all("stale=true" in v for _, v in stale.headers)
    assert auth.check(late, "10.9.9.9", 2.0).outcome is AuthOutcome.STALE   # another host's
    other_boot = DigestAuthenticator(auth.users, auth.settings, secret=b"x" * 32, now=0.0)
    assert other_boot.check(late, CLIENT[0], 2.0).outcome is AuthOutcome.STALE
    fresh = answer([v for _, v in stale.headers], "REGISTER", f"sip:{DOMAIN}")
    retry = request("REGISTER", headers=(f"Authorization: {fresh}",), branch="b3")
    assert auth.check(retry, CLIENT[0], 1.0 + NONCE_LIFETIME_S + 1).outcome is AuthOutcome.OK
    # A wrong password with a stale nonce is a failure, not stale (RFC 7616 §3.3).
    wrong = answer([v for _, v in first.headers], "REGISTER", f"sip:{DOMAIN}", password="no")
    bad = request("REGISTER", headers=(f"Authorization: {wrong}",), branch="b4")
    assert auth.check(bad, CLIENT[0], 1.0 + NONCE_LIFETIME_S + 1).outcome is AuthOutcome.FAILED


def test_unusable_credentials_fail() -> None:
    auth = authenticator(algorithms=(DigestAlgorithm.SHA256,))
    first = auth.check(request("REGISTER"), CLIENT[0], 1.0)
    nonce = parse_challenge_untrusted(first.headers[0][1]).nonce
    md5 = Challenge(DOMAIN, nonce, DigestAlgorithm.MD5, (Qop.AUTH,))
    no_qop = Challenge(DOMAIN, nonce, DigestAlgorithm.SHA256)
    sess = Challenge(DOMAIN, nonce, DigestAlgorithm.SHA256_SESS, (Qop.AUTH,))
    for challenge, uri in ((md5, f"sip:{DOMAIN}"), (no_qop, f"sip:{DOMAIN}"),
                           (sess, f"sip:{DOMAIN}"), (first_challenge(first), "sip:x@y")):
        value = authorization_value(challenge, Secret("alice", PASSWORD), method="REGISTER",
                                    uri=uri, cnonce="c1")
        req = request("REGISTER", headers=(f"Authorization: {value}",), branch="u")
        assert auth.check(req, CLIENT[0], 1.0).outcome is AuthOutcome.FAILED


def first_challenge(decision: AuthDecision) -> Challenge:
    return parse_challenge_untrusted(decision.headers[0][1])


AUTH_TEXT = st.one_of(
    st.text(max_size=300),
    st.builds(lambda body: "Digest " + body, st.text(max_size=300)),
    st.builds(lambda k, v: f'Digest {k}="{v}", realm="{DOMAIN}"',
              st.sampled_from(["username", "nonce", "uri", "response", "nc", "qop", "cnonce"]),
              st.text(max_size=200)),
    st.just("Digest " + ", ".join(f'p{i}="v"' for i in range(40))),
    st.just(f'Digest realm="{DOMAIN}", username="{"a" * 5000}"'))


@given(values=st.lists(AUTH_TEXT, min_size=1, max_size=5), method=st.sampled_from(
    ["REGISTER", "MESSAGE", "INVITE"]))
@settings(max_examples=300, deadline=None)
def test_garbage_credentials_get_a_clean_challenge(values: list[str], method: str) -> None:
    auth = authenticator()
    lines = tuple(f"{header_for(method)}: {v}" for v in values
                  if "\r" not in v and "\n" not in v and "\x00" not in v)
    try:
        req = request(method, headers=lines)
    except Exception:                         # the SIP parser refused it first: fine
        return
    decision = auth.check(req, CLIENT[0], 1.0)
    assert decision.outcome is not AuthOutcome.OK
    assert decision.status in (401, 407, 503)


# ---------------------------------------------------------------------------- bounds
def test_failure_budget_per_host_then_503_and_legit_hosts_unaffected() -> None:
    auth = authenticator()
    outcomes = [authenticated(auth, "REGISTER", password=f"guess{i}", now=1.0)
                for i in range(FAILURES_PER_HOST_BURST + 5)]
    assert outcomes[:FAILURES_PER_HOST_BURST] == [AuthOutcome.FAILED] * FAILURES_PER_HOST_BURST
    assert set(outcomes[FAILURES_PER_HOST_BURST:]) == {AuthOutcome.LIMITED}
    # Even the right password waits (the guesser cannot tell), then works again.
    assert authenticated(auth, "REGISTER", now=1.0) is AuthOutcome.LIMITED
    assert authenticated(auth, "REGISTER", now=20.0) is AuthOutcome.OK


def test_flood_from_many_sources_is_bounded_and_keeps_the_worst_offender() -> None:
    budget = FailureBudget(0.0)
    for _ in range(FAILURES_PER_HOST_BURST):
        budget.failed("10.6.6.6", 0.0)
    assert not budget.may_try("10.6.6.6", 0.0)
    for i in range(20 * MAX_FAILURE_HOSTS):          # a scanner spoofing many sources
        budget.failed(f"fd00::{i:x}", 0.001 * i)
    assert len(budget) <= MAX_FAILURE_HOSTS
    assert not budget.may_try("10.6.6.6", 0.001 * 20 * MAX_FAILURE_HOSTS)   # still held
    assert budget.evicted >= 19 * MAX_FAILURE_HOSTS


def test_nonce_counts_are_bounded_and_forgotten_nonces_count_as_used() -> None:
    counts = NonceCounts(max_states=8)
    for i in range(100):
        assert counts.accept(f"n{i}", issued_ms=i, nc=1, oldest_ms=0)
    assert len(counts) == 8 and counts.evicted == 92
    assert not counts.accept("n5", issued_ms=5, nc=2, oldest_ms=0)     # evicted: refused
    assert counts.accept("n99", issued_ms=99, nc=2, oldest_ms=0)
    assert not counts.accept("n99", issued_ms=99, nc=2, oldest_ms=0)
    assert counts.accept("n98", issued_ms=98, nc=100, oldest_ms=0)
    assert not counts.accept("n98", issued_ms=98, nc=100 - NC_WINDOW, oldest_ms=0)  # too old
    assert counts.accept("n98", issued_ms=98, nc=100 - NC_WINDOW + 1, oldest_ms=0)
    assert not counts.accept("n98", issued_ms=98, nc=100 - NC_WINDOW + 1, oldest_ms=0)
    assert counts.accept("n98", issued_ms=98, nc=200, oldest_ms=0)
    # Expired nonces leave the table at the next insertion.
    assert counts.accept("late", issued_ms=1000, nc=1, oldest_ms=999)
    assert len(counts) == 1


def test_known_and_unknown_aors_cost_the_same() -> None:
    """Wrong credentials for a registered AoR and for a name nobody has: interleaved
    medians of the check's time within 30% (a dummy HA1 stands in for the unknown)."""
    auth = authenticator()
    reqs = {}
    for user in ("alice", "nobody"):
        first = auth.check(request("REGISTER", user), CLIENT[0], 1.0)
        value = answer([v for _, v in first.headers], "REGISTER", f"sip:{DOMAIN}",
                       password="wrong", user=user)
        reqs[user] = request("REGISTER", user, headers=(f"Authorization: {value}",))
    times: dict[str, list[float]] = {"alice": [], "nobody": []}
    order = ["alice", "nobody"]
    rng = random.Random(1)
    for _ in range(3000):
        rng.shuffle(order)
        for user in order:
            auth.failures = FailureBudget(0.0)            # measure the check, not the limiter
            start = time.perf_counter()
            decision = auth.check(reqs[user], CLIENT[0], 1.0)
            times[user].append(time.perf_counter() - start)
            assert decision.outcome is AuthOutcome.FAILED
    ratio = statistics.median(times["alice"]) / statistics.median(times["nobody"])
    assert 0.7 < ratio < 1.3, ratio


# ---------------------------------------------------------------------------- in the gateway
def gateway_net(n: int = 1) -> Net:
    net = Net(n)
    net.converge()
    for st_ in net.stations:
        gw = st_.gw
        gw.auth = DigestAuthenticator(UserTable(stored=[make_user(ALICE, PASSWORD, DOMAIN)]),
                                      AuthSettings(DOMAIN), secret=SECRET, now=net.now,
                                      counters=gw.counters)
    return net


def send(net: Net, data: bytes, src: tuple[str, int], index: int = 0) -> SipResponse:
    before = len([m for m in received(net, index, src) if isinstance(m, SipResponse)])
    net.stations[index].sip.receive_sip(data, src, net.now)
    net.run_for(0.3)
    answers = [m for m in received(net, index, src) if isinstance(m, SipResponse)]
    assert len(answers) > before, "no answer"
    return answers[-1]


def register(net: Net, src: tuple[str, int], user: str, branch: str, *, cseq: int = 1,
             auth_value: str | None = None) -> SipResponse:
    headers = (f"Contact: <sip:{user}@{src[0]}:{src[1]}>", "Expires: 600")
    if auth_value is not None:
        headers += (f"Authorization: {auth_value}",)
    return send(net, raw_request("REGISTER", user, src, from_user=user, branch=branch,
                                 call_id=f"reg-{user}-{src[1]}", cseq=cseq, uri=f"sip:{DOMAIN}",
                                 headers=headers), src)


def shape(response: SipResponse) -> tuple[object, ...]:
    """What a scanner can compare: status, reason, header names in order, challenge
    parameters but the nonce."""
    auth = [parse_challenge_untrusted(v) for v in response.header_values("WWW-Authenticate")
            + response.header_values("Proxy-Authenticate")]
    return (response.status, response.reason, tuple(n for n, _ in response.headers),
            tuple((c.realm, c.algorithm, c.qop, c.stale, c.opaque) for c in auth))


def test_unauthenticated_answers_are_identical_for_known_and_unknown_aors() -> None:
    net = gateway_net()
    first = register(net, CLIENT, "alice", "r1")
    value = answer(first.header_values("WWW-Authenticate"), "REGISTER", f"sip:{DOMAIN}")
    assert register(net, CLIENT, "alice", "r2", cseq=2, auth_value=value).status == 200
    assert f"sip:alice@{DOMAIN}" in set(net.stations[0].gw.registrar)
    for method in ("REGISTER", "OPTIONS", "INVITE", "MESSAGE"):
        shapes = set()
        for i, user in enumerate(("alice", "node0", "nobody", "bob")):
            extra = (f"Contact: <sip:{user}@1.2.3.4>",) if method == "REGISTER" else ()
            data = raw_request(method, user, ATTACKER, from_user=user, branch=f"{method}{i}",
                               call_id=f"scan-{method}-{i}", headers=extra)
            shapes.add(shape(send(net, data, ATTACKER)))
        assert len(shapes) == 1, shapes
        status = next(iter(shapes))[0]
        assert status == (401 if method == "REGISTER" else 407)


def test_unauthenticated_register_takes_nothing_over() -> None:
    net = gateway_net()
    gw = net.stations[0].gw
    first = register(net, CLIENT, "alice", "r1")
    value = answer(first.header_values("WWW-Authenticate"), "REGISTER", f"sip:{DOMAIN}")
    assert register(net, CLIENT, "alice", "r2", cseq=2, auth_value=value).status == 200
    before = gw.registrar._regs[ALICE].peer
    bindings = [b.binding.contacts for b in net.stations[0].node.table.lookup(ALICE)]
    assert register(net, ATTACKER, "alice", "x1").status == 401
    # The captured Authorization replayed from the attacker: stale, still nothing.
    replayed = register(net, ATTACKER, "alice", "x2", cseq=3, auth_value=value)
    assert replayed.status == 401
    assert gw.registrar._regs[ALICE].peer == before == CLIENT
    assert [b.binding.contacts for b in net.stations[0].node.table.lookup(ALICE)] == bindings
    assert gw.counters["auth_challenged"] >= 2


def test_authenticated_message_goes_on_without_our_credentials() -> None:
    net = gateway_net(2)
    first = send(net, raw_request("MESSAGE", "node1", CLIENT, from_user="alice", branch="m1",
                                  call_id="m", body="hi"), CLIENT)
    assert first.status == 407
    value = answer(first.header_values("Proxy-Authenticate"), "MESSAGE",
                   f"sip:node1@{DOMAIN}")
    ok = send(net, raw_request("MESSAGE", "node1", CLIENT, from_user="alice", branch="m2",
                               call_id="m", cseq=2, body="hi",
                               headers=(f"Proxy-Authorization: {value}",)), CLIENT)
    assert ok.status == 200
    inbox = net.stations[1].gw.inbox
    assert [e.body for e in inbox] == [b"hi"]
    far = [r for r in net.stations[1].sip_journal() if r.get("dir") == "from-mesh"]
    assert far and not any(name.lower() == "proxy-authorization"
                           for r in far for name, _ in r.get("headers") or ())
    # Our own journal keeps the header, its response redacted.
    ours = [v for r in net.stations[0].sip_journal() for n, v in r.get("headers") or ()
            if n == "Proxy-Authorization"]
    assert ours and all('response="redacted"' in v for v in ours)


def test_a_scan_floods_neither_the_journal_nor_any_table() -> None:
    """300 names from 300 sources, unauthenticated and with wrong credentials: every
    answer a challenge, the journal keeps at most the burst of authentication answers,
    the failure table stays bounded, and no secret reaches the journal."""
    net = gateway_net()
    gw = net.stations[0].gw
    auth = gw.auth
    assert auth is not None
    statuses = set()
    for i in range(300):
        src = (f"10.1.{i // 200}.{i % 200 + 1}", 5060)
        data = raw_request("REGISTER", f"u{i}", src, from_user=f"u{i}", branch=f"s{i}",
                           call_id=f"scan{i}", uri=f"sip:{DOMAIN}",
                           headers=(f"Contact: <sip:u{i}@{src[0]}>",))
        gw.receive_local(data, src, net.now)
        first = [o for o in gw.to_send(net.now)]
        reply = parse_message_untrusted(first[-1].data)  # type: ignore[union-attr]
        assert isinstance(reply, SipResponse)
        value = answer(reply.header_values("WWW-Authenticate"), "REGISTER", f"sip:{DOMAIN}",
                       password="guess", user=f"u{i}")
        gw.receive_local(raw_request("REGISTER", f"u{i}", src, from_user=f"u{i}",
                                     branch=f"t{i}", call_id=f"scan{i}", cseq=2,
                                     uri=f"sip:{DOMAIN}",
                                     headers=(f"Authorization: {value}",)), src, net.now)
        statuses |= {parse_message_untrusted(o.data).status  # type: ignore[union-attr]
                     for o in gw.to_send(net.now)}
    assert statuses == {401}
    records = []
    while (event := gw.next_event()) is not None:
        records.append(event.record() if isinstance(event, PendingSipRecord) else event)
    answers = [r for r in records
               if getattr(r, "data", {}).get("dir") in ("originated", "to-client")]
    assert len(answers) <= 20 + 1
    assert gw.counters["auth_journal_suppressed"] >= 600 - 21
    assert gw.counters["auth_failed"] == 300 and len(auth.failures) == 300
    assert not gw.registrar._regs
    text = repr([getattr(r, "data", None) for r in records])
    user = auth.users.get(ALICE)
    assert user is not None and PASSWORD not in text
    assert all(ha1 not in text for _, ha1 in user.ha1s) and "guess" not in text


def test_a_challenge_ends_no_call() -> None:
    """A challenged INVITE (its retry with credentials goes on with the same Call-ID) and
    an unauthenticated BYE naming a live call end nothing (media, dialogs)."""
    net = gateway_net()
    gw = net.stations[0].gw
    ended: list[str] = []
    gw.end_call = lambda call_id: ended.append(call_id)
    for method in ("INVITE", "BYE"):
        data = raw_request(method, "node0", ATTACKER, from_user="alice", branch=method,
                           call_id="call-1")
        assert send(net, data, ATTACKER).status == 407
    assert ended == [] and not gw.contacts.call_ended("call-1")
