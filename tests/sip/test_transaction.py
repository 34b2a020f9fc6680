"""RFC 3261 §17 transaction machines, driven with hand-stepped time."""

from __future__ import annotations

import random

import pytest

from meshcomm.errors import LocalProtocolError
from meshcomm.sip.build import build_cancel, build_request, build_response, new_branch
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, Via, parse_message_untrusted
from meshcomm.sip.timers import TimerConfig
from meshcomm.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    NoticeKind,
    TransactionLayer,
    TxKind,
    TxState,
)
from meshcomm.sip.uri import parse_uri_untrusted

TIMERS = TimerConfig(t1_s=0.5, t2_s=4.0, t4_s=5.0)
CLIENT = ("10.0.0.1", 5060)
SERVER = ("10.0.0.2", 5060)


def make_request(method: str, branch: str | None = None, rng_seed: int = 1) -> SipRequest:
    rng = random.Random(rng_seed)
    via = Via("UDP", "10.0.0.1", 5060, (("branch", branch or new_branch(rng)),))
    return build_request(
        method, parse_uri_untrusted("sip:bob@10.0.0.2"),
        from_addr=NameAddr(parse_uri_untrusted("sip:alice@10.0.0.1"), None, (("tag", "a1"),)),
        to_addr=NameAddr(parse_uri_untrusted("sip:bob@10.0.0.2")),
        call_id="call-1@10.0.0.1", cseq=1, via=via,
        contact=NameAddr(parse_uri_untrusted("sip:alice@10.0.0.1")))


def wire(data: bytes) -> SipRequest | SipResponse:
    """Every datagram really goes through the parser, as on the network."""
    return parse_message_untrusted(data)


def drain(layer: TransactionLayer) -> list[SipRequest | SipResponse]:
    return [wire(data) for data, _ in layer.take_outgoing()]


def notices(layer: TransactionLayer) -> list[tuple[NoticeKind, int | str | None]]:
    out: list[tuple[NoticeKind, int | str | None]] = []
    while (notice := layer.next_notice()) is not None:
        msg = notice.message
        out.append((notice.kind, msg.status if isinstance(msg, SipResponse)
                     else msg.method if isinstance(msg, SipRequest) else None))
    return out


def step_to(layer: TransactionLayer, until: float) -> float:
    """Fire timers in order up to ``until``; returns the last time stepped to."""
    now = 0.0
    while (deadline := layer.next_timer()) is not None and deadline <= until:
        now = deadline
        layer.on_timer(now)
    return now


def test_tables_only_use_their_own_states() -> None:
    allowed = {
        id(INVITE_CLIENT_TABLE): {TxState.CALLING, TxState.PROCEEDING, TxState.COMPLETED,
                                  TxState.ACCEPTED, TxState.TERMINATED},
        id(NON_INVITE_CLIENT_TABLE): {TxState.TRYING, TxState.PROCEEDING, TxState.COMPLETED,
                                      TxState.TERMINATED},
        id(INVITE_SERVER_TABLE): {TxState.PROCEEDING, TxState.COMPLETED, TxState.CONFIRMED,
                                  TxState.ACCEPTED, TxState.TERMINATED},
        id(NON_INVITE_SERVER_TABLE): {TxState.TRYING, TxState.PROCEEDING, TxState.COMPLETED,
                                      TxState.TERMINATED},
    }
    for table in (INVITE_CLIENT_TABLE, NON_INVITE_CLIENT_TABLE, INVITE_SERVER_TABLE,
                  NON_INVITE_SERVER_TABLE):
        for (state, _), transition in table.items():
            assert {state, transition.next_state} <= allowed[id(table)]


def test_timer_b_timeout_with_doubling_retransmissions() -> None:
    layer = TransactionLayer(TIMERS)
    tx = layer.start_client(make_request("INVITE"), SERVER, 0.0)
    assert len(drain(layer)) == 1
    sent_at = []
    while (deadline := layer.next_timer()) is not None:
        layer.on_timer(deadline)
        sent_at += [deadline] * len(layer.take_outgoing())
    # Timer A: 0.5, 1, 2, 4, 8, 16 -> retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert notices(layer) == [(NoticeKind.TIMEOUT, None)]
    assert tx.state is TxState.TERMINATED and len(layer) == 0


def test_timer_f_timeout_with_retransmissions_capped_at_t2() -> None:
    layer = TransactionLayer(TIMERS)
    layer.start_client(make_request("MESSAGE"), SERVER, 0.0)
    layer.take_outgoing()
    sent_at = []
    while (deadline := layer.next_timer()) is not None:
        layer.on_timer(deadline)
        sent_at += [deadline] * len(layer.take_outgoing())
    gaps = [b - a for a, b in zip([0.0, *sent_at], sent_at, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0] and set(gaps[4:]) == {4.0}
    assert sent_at[-1] < 32.0
    assert notices(layer) == [(NoticeKind.TIMEOUT, None)]


def test_lost_100_trying_is_repaired_by_invite_retransmission() -> None:
    client, server = TransactionLayer(TIMERS), TransactionLayer(TIMERS)
    invite = make_request("INVITE")
    client.start_client(invite, SERVER, 0.0)
    (received,) = drain(client)
    assert isinstance(received, SipRequest) and not server.on_request(received, 0.01)
    stx = server.start_server(received, CLIENT, 0.01)
    server.respond(stx, build_response(received, 100), 0.01)
    drain(server)                                   # the 100 Trying is lost
    client.on_timer(0.5)                            # Timer A: INVITE retransmitted
    (again,) = drain(client)
    assert isinstance(again, SipRequest) and server.on_request(again, 0.51)   # absorbed
    (trying,) = drain(server)                       # §17.2.1: provisional re-sent
    assert isinstance(trying, SipResponse) and trying.status == 100
    assert client.on_response(trying, 0.52)
    assert notices(client) == [(NoticeKind.RESPONSE, 100)]
    assert client.next_timer() is None              # Proceeding: no more Timer A/B
    ok = build_response(received, 200, to_tag="b1")
    server.respond(stx, ok, 1.0)
    (got,) = drain(server)
    assert isinstance(got, SipResponse) and client.on_response(got, 1.01)
    assert notices(client) == [(NoticeKind.RESPONSE, 200)]
    # RFC 6026: a retransmitted 2xx is still passed up (the TU re-sends its ACK).
    assert client.on_response(got, 1.5)
    assert notices(client) == [(NoticeKind.RESPONSE, 200)]
    step_to(client, 1000.0)
    assert len(client) == 0


def test_lost_final_response_non_invite() -> None:
    client, server = TransactionLayer(TIMERS), TransactionLayer(TIMERS)
    client.start_client(make_request("MESSAGE"), SERVER, 0.0)
    (req,) = drain(client)
    assert isinstance(req, SipRequest)
    stx = server.start_server(req, CLIENT, 0.0)
    server.respond(stx, build_response(req, 200, to_tag="b1"), 0.1)
    drain(server)                                   # 200 lost
    client.on_timer(0.5)
    (again,) = drain(client)
    assert isinstance(again, SipRequest) and server.on_request(again, 0.5)
    (resent,) = drain(server)
    assert isinstance(resent, SipResponse) and resent.status == 200
    assert client.on_response(resent, 0.6)
    assert notices(client) == [(NoticeKind.RESPONSE, 200)]
    assert client.on_response(resent, 0.7)          # Completed absorbs duplicates
    assert notices(client) == []
    step_to(client, 100.0)
    step_to(server, 100.0)
    assert len(client) == 0 and len(server) == 0    # Timers K and J


def test_lost_ack_and_timer_h() -> None:
    client, server = TransactionLayer(TIMERS), TransactionLayer(TIMERS)
    client.start_client(make_request("INVITE"), SERVER, 0.0)
    (invite,) = drain(client)
    assert isinstance(invite, SipRequest)
    stx = server.start_server(invite, CLIENT, 0.0)
    server.respond(stx, build_response(invite, 486, to_tag="b1"), 0.1)
    (busy,) = drain(server)
    assert isinstance(busy, SipResponse)
    assert client.on_response(busy, 0.2)
    (ack,) = drain(client)                          # §17.1.1.3: the transaction ACKs
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.top_via.branch == invite.top_via.branch and ack.to_addr.tag == "b1"
    assert notices(client) == [(NoticeKind.RESPONSE, 486)]
    # ACK lost: Timer G retransmits 486, the client ACKs again without telling its TU.
    server.on_timer(0.6)
    (busy_again,) = drain(server)
    assert isinstance(busy_again, SipResponse) and client.on_response(busy_again, 0.7)
    (ack2,) = drain(client)
    assert notices(client) == []
    assert isinstance(ack2, SipRequest) and server.on_request(ack2, 0.8)
    assert stx.state is TxState.CONFIRMED
    assert server.on_request(ack2, 0.9)             # duplicate ACK absorbed
    step_to(server, 100.0)
    assert stx.state is TxState.TERMINATED          # Timer I
    # Every ACK lost: Timer H reports a timeout.
    server2 = TransactionLayer(TIMERS)
    stx2 = server2.start_server(invite, CLIENT, 0.0)
    server2.respond(stx2, build_response(invite, 486, to_tag="b1"), 0.0)
    step_to(server2, 1000.0)
    assert len(server2.take_outgoing()) > 5
    assert notices(server2) == [(NoticeKind.TIMEOUT, None)]


def test_retransmitted_invite_absorbed_after_2xx() -> None:
    server = TransactionLayer(TIMERS)
    invite = make_request("INVITE")
    stx = server.start_server(invite, CLIENT, 0.0)
    server.respond(stx, build_response(invite, 180, to_tag="b1"), 0.0)
    server.respond(stx, build_response(invite, 200, to_tag="b1"), 0.1)
    drain(server)
    assert stx.state is TxState.ACCEPTED
    assert server.on_request(invite, 0.2)           # RFC 6026 §7.1: absorbed silently
    assert server.take_outgoing() == []
    server.respond(stx, build_response(invite, 200, to_tag="b1"), 0.6)  # TU retransmit
    assert len(server.take_outgoing()) == 1
    with pytest.raises(LocalProtocolError):
        server.respond(stx, build_response(invite, 486, to_tag="b1"), 0.7)
    step_to(server, 100.0)
    assert len(server) == 0                          # Timer L


def test_cancel_racing_200_ok() -> None:
    """CANCEL and 200 cross: both client transactions complete independently (§9.1)."""
    client, server = TransactionLayer(TIMERS), TransactionLayer(TIMERS)
    invite = make_request("INVITE")
    client.start_client(invite, SERVER, 0.0)
    (inv,) = drain(client)
    assert isinstance(inv, SipRequest)
    stx = server.start_server(inv, CLIENT, 0.0)
    server.respond(stx, build_response(inv, 180, to_tag="b1"), 0.0)
    (ringing,) = drain(server)
    assert isinstance(ringing, SipResponse) and client.on_response(ringing, 0.1)
    cancel = build_cancel(invite)
    client.start_client(cancel, SERVER, 0.2)          # CANCEL in flight ...
    (cancel_wire,) = drain(client)
    server.respond(stx, build_response(inv, 200, to_tag="b1"), 0.2)   # ... 200 in flight
    (ok,) = drain(server)
    assert isinstance(cancel_wire, SipRequest)
    assert server.find(("server", cancel_wire.top_via.branch or "", "10.0.0.1:5060",
                        "INVITE")) is stx            # §9.2: CANCEL finds its INVITE
    ctx = server.start_server(cancel_wire, CLIENT, 0.3)
    assert ctx.kind is TxKind.NON_INVITE_SERVER and ctx is not stx
    server.respond(ctx, build_response(cancel_wire, 200, to_tag="b1"), 0.3)
    (cancel_ok,) = drain(server)
    assert isinstance(ok, SipResponse) and isinstance(cancel_ok, SipResponse)
    assert client.on_response(ok, 0.4) and client.on_response(cancel_ok, 0.4)
    assert sorted(notices(client), key=str) == sorted(
        [(NoticeKind.RESPONSE, 180), (NoticeKind.RESPONSE, 200), (NoticeKind.RESPONSE, 200)],
        key=str)
    assert stx.state is TxState.ACCEPTED             # the INVITE was not cancelled


def test_rfc2543_matching_without_magic_cookie() -> None:
    server = TransactionLayer(TIMERS)
    invite = make_request("INVITE", branch="oldstyle-1")
    assert server.match_request(invite) is None
    stx = server.start_server(invite, CLIENT, 0.0)
    assert server.match_request(invite) is stx       # retransmission
    server.respond(stx, build_response(invite, 404, to_tag="b9"), 0.0)
    server.take_outgoing()
    ack_headers = tuple((n, v) if n != "To" else ("To", v + ";tag=b9")
                        for n, v in invite.headers)
    ack = SipRequest("ACK", invite.uri, tuple(
        (n, v.replace("1 INVITE", "1 ACK")) for n, v in ack_headers))
    assert server.match_request(ack) is stx
    wrong = SipRequest("ACK", invite.uri, tuple(
        (n, v.replace("tag=b9", "tag=zz")) for n, v in ack.headers))
    assert server.match_request(wrong) is None
    other_ruri = SipRequest("INVITE", parse_uri_untrusted("sip:carol@10.0.0.2"),
                            invite.headers)
    assert server.match_request(other_ruri) is None
    assert server.on_request(ack, 0.1) and stx.state is TxState.CONFIRMED


def test_misuse_raises() -> None:
    layer = TransactionLayer(TIMERS)
    with pytest.raises(LocalProtocolError):
        layer.start_client(make_request("INVITE", branch="nocookie"), SERVER, 0.0)
    invite = make_request("INVITE")
    layer.start_client(invite, SERVER, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.start_client(invite, SERVER, 0.0)
    ctx = layer.find(("client", invite.top_via.branch or "", "INVITE"))
    assert ctx is not None
    with pytest.raises(LocalProtocolError):
        layer.respond(ctx, build_response(invite, 200), 0.0)


def _client_messages(layer: TransactionLayer, n: int, rng: random.Random,
                     ) -> list[tuple[float, SipRequest]]:
    starts = sorted(rng.uniform(0.0, 10.0) for _ in range(n))
    return [(t, make_request("MESSAGE", branch=new_branch(rng))) for t in starts]


def test_timers_fire_in_deadline_order_across_many_transactions() -> None:
    """300 MESSAGE client transactions started over 10 s, half answered at random times
    (Timers E/F stopped, K started): at every step the layer's next timer is the earliest
    deadline of any live transaction (checked by walking them all), and timers fire in
    that order until every transaction is gone."""
    rng = random.Random(7)
    layer = TransactionLayer(TIMERS)
    requests = _client_messages(layer, 300, rng)
    answers = sorted((t + rng.uniform(0.01, 3.0), req) for t, req in requests[::2])
    events = sorted([(t, 0, req) for t, req in requests] + [(t, 1, req) for t, req in answers],
                    key=lambda e: (e[0], e[1]))
    live: list = []
    fired_at: list[float] = []

    def earliest() -> float | None:
        return min((d for tx in live if tx.state is not TxState.TERMINATED
                    for d in tx.deadlines_s.values()), default=None)

    def fire_until(until: float) -> None:
        while (deadline := layer.next_timer()) is not None and deadline <= until:
            assert deadline == earliest()
            layer.on_timer(deadline)
            fired_at.append(deadline)
            layer.take_outgoing()

    for t, kind, req in events:
        fire_until(t)
        assert layer.next_timer() == earliest()
        if kind == 0:
            live.append(layer.start_client(req, SERVER, t))
        else:
            layer.on_response(wire(build_response(req, 200, "OK").serialize()), t)
        layer.take_outgoing()
    fire_until(1e9)
    assert fired_at == sorted(fired_at) and fired_at
    assert len(layer) == 0 and layer.next_timer() is None


def test_stale_timer_entries_stay_bounded_under_churn() -> None:
    """Transactions created and ended by the thousand, 4,000 every 6 s (20,000), each answered at
    once (its Timer F, 32 s away, stopped: a stale entry; Timer K started and fired): the
    stale entries are compacted away when the heap reaches its bound (4 x
    MAX_TRANSACTIONS), and timers still fire right."""
    rng = random.Random(8)
    layer = TransactionLayer(TIMERS)
    now, most = 0.0, 0
    for _ in range(5):
        for _ in range(4000):
            req = make_request("MESSAGE", branch=new_branch(rng))
            layer.start_client(req, SERVER, now)
            layer.on_response(wire(build_response(req, 200, "OK").serialize()), now)
            most = max(most, len(layer._heap))
        layer.take_outgoing()
        assert len(layer) == 4000
        now += 6.0                               # past Timer K (T4 = 5 s)
        layer.on_timer(now)
        assert len(layer) == 0
    assert 4 * 4096 - 8 <= most <= 4 * 4096      # reached the bound, and compacted there
    assert layer.next_timer() is None and not layer._heap
