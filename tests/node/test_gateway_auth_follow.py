"""The registration follows a client that authenticates from another source (issue 12
item 2, gateway.identity ``client_authenticated``), in whole gateways of the in-memory test
net: a TCP client on a new connection gets its requests served and its calls there; a UDP
client from another host is verified but its contact stays where it registered; a
connection already holding its quota of AoRs cannot collect one more this way; a client
without the AoR's credentials moves nothing."""

from __future__ import annotations

from meshcomm.node.gateway.identity import IdentityCounter
from meshcomm.node.gateway.regquota import MAX_AORS_PER_CLIENT
from meshcomm.node.gateway.types import Address
from meshcomm.node.gateway.users import make_user
from meshcomm.sip.message import SipRequest, SipResponse
from meshcomm.sip.uri import parse_uri_untrusted
from tests.node.gateway_net import DOMAIN, Net
from tests.node.raw_sip import raw_request, received
from tests.node.test_gateway_auth import ALICE, PASSWORD, answer, gateway_net, send

TCP_OLD: Address = ("tcp#1", 40001)
TCP_NEW: Address = ("tcp#2", 40002)
UDP_HOME: Address = ("10.0.0.5", 5070)
UDP_AWAY: Address = ("10.0.0.9", 5070)
OTHERS = [f"u{i}" for i in range(MAX_AORS_PER_CLIENT)]


def _net() -> Net:
    net = gateway_net(2)
    for station in net.stations:
        auth = station.gw.auth
        assert auth is not None
        auth.users.replace_stored([*auth.users.stored(), *(
            make_user(f"sip:{u}@{DOMAIN}", PASSWORD, DOMAIN) for u in OTHERS)])
    return net


def _request(method: str, to_user: str, src: Address, *, from_user: str, branch: str,
             call_id: str, cseq: int = 1, uri: str | None = None, register: bool = False,
             headers: tuple[str, ...] = (), body: str = "") -> bytes:
    """raw_request from ``src``; a TCP connection's Via and Contact name 127.0.0.1."""
    is_tcp = src[0].startswith("tcp#")
    host = "127.0.0.1" if is_tcp else src[0]
    contact = ((f"Contact: <sip:{from_user}@{host}:{src[1]}>", "Expires: 600")
               if register else ())
    data = raw_request(method, to_user, src, from_user=from_user, branch=branch,
                       call_id=call_id, cseq=cseq, uri=uri, headers=(*contact, *headers),
                       body=body)
    if is_tcp:
        data = data.replace(f"SIP/2.0/UDP {src[0]}:".encode(), b"SIP/2.0/TCP 127.0.0.1:")
    return data


def _authed(net: Net, method: str, src: Address, user: str, branch: str, *,
            password: str = PASSWORD, as_user: str | None = None) -> int:
    """``method`` from ``src`` with From ``user``: challenged, then answered with the
    credentials of ``as_user`` (default ``user``); the final status."""
    register = method == "REGISTER"
    uri = f"sip:{DOMAIN}" if register else f"sip:node1@{DOMAIN}"
    to_user = user if register else "node1"
    body = "" if register else "hi"
    first = send(net, _request(method, to_user, src, from_user=user, branch=branch,
                               call_id=f"{branch}-{src[1]}", uri=uri, register=register,
                               body=body), src)
    assert first.status == (401 if register else 407)
    name = "WWW-Authenticate" if register else "Proxy-Authenticate"
    value = answer(first.header_values(name), method, uri, password=password,
                   user=as_user or user)
    cred = "Authorization" if register else "Proxy-Authorization"
    again = send(net, _request(method, to_user, src, from_user=user, branch=branch + "x",
                               call_id=f"{branch}-{src[1]}", cseq=2, uri=uri, body=body,
                               register=register, headers=(f"{cred}: {value}",)), src)
    return again.status


def _delivered_to(net: Net, addr: Address, text: str) -> bool:
    """node1's built-in UA sends ``text`` to alice: does it reach ``addr``?"""
    net.stations[1].gw.send_message(ALICE, text, net.now)
    net.run_for(1.0)
    return any(isinstance(m, SipRequest) and m.body == text.encode()
               for m in received(net, 0, addr))


def test_tcp_client_on_a_new_connection_is_served_and_reached_there() -> None:
    net = _net()
    gw = net.stations[0].gw
    assert _authed(net, "REGISTER", TCP_OLD, "alice", "r") == 200
    assert _authed(net, "MESSAGE", TCP_NEW, "alice", "m") == 200
    assert gw.counters[IdentityCounter.FOLLOWED] == 1
    assert gw.registrar.source_of(ALICE) == TCP_NEW
    # An in-dialog request to the contact she registered goes to the new connection too.
    contact = parse_uri_untrusted(f"sip:alice@127.0.0.1:{TCP_OLD[1]}")
    assert gw.registrar.contact_peer(contact) == TCP_NEW
    assert _delivered_to(net, TCP_NEW, "to the new connection")
    # Back on the first connection (it was alive after all): it follows again.
    assert _authed(net, "MESSAGE", TCP_OLD, "alice", "m2") == 200
    assert gw.registrar.source_of(ALICE) == TCP_OLD
    assert gw.counters[IdentityCounter.FOLLOWED] == 2


def test_udp_client_from_another_host_is_verified_its_contact_stays() -> None:
    net = _net()
    gw = net.stations[0].gw
    assert _authed(net, "REGISTER", UDP_HOME, "alice", "r") == 200
    assert _authed(net, "MESSAGE", UDP_AWAY, "alice", "m") == 200
    assert gw.registrar.source_of(ALICE) == UDP_AWAY
    assert _delivered_to(net, UDP_HOME, "to the registered contact")
    assert not any(isinstance(m, SipRequest) for m in received(net, 0, UDP_AWAY))


def test_a_connection_at_its_quota_collects_no_more_aors() -> None:
    net = _net()
    gw = net.stations[0].gw
    assert _authed(net, "REGISTER", TCP_OLD, "alice", "r") == 200
    for user in OTHERS:
        assert _authed(net, "REGISTER", TCP_NEW, user, f"r{user}") == 200
    # TCP_NEW holds its MAX_AORS_PER_CLIENT AoRs: alice's registration does not move
    # there, so her From is not vouched for on that connection.
    assert _authed(net, "MESSAGE", TCP_NEW, "alice", "m") == 403
    assert gw.registrar.source_of(ALICE) == TCP_OLD
    assert gw.counters[IdentityCounter.FOLLOWED] == 0
    assert gw.counters[IdentityCounter.REFUSED_LOCAL] == 1


def test_without_the_aors_credentials_nothing_moves() -> None:
    net = _net()
    gw = net.stations[0].gw
    assert _authed(net, "REGISTER", TCP_OLD, "alice", "r") == 200
    assert _authed(net, "MESSAGE", TCP_NEW, "alice", "m", password="wrong") == 407
    assert _authed(net, "MESSAGE", TCP_NEW, "alice", "m2", as_user="u0") == 407
    unauthenticated = send(net, _request("MESSAGE", "node1", TCP_NEW, from_user="alice",
                                         branch="m3", call_id="m3", body="x"), TCP_NEW)
    assert isinstance(unauthenticated, SipResponse) and unauthenticated.status == 407
    assert gw.registrar.source_of(ALICE) == TCP_OLD
    assert gw.counters[IdentityCounter.FOLLOWED] == 0
    assert _delivered_to(net, TCP_OLD, "still to the old connection")
