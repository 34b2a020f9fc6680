"""Route headers naming the gateway itself (RFC 3261 §16.4)."""

from __future__ import annotations

from meshcomm.sip.message import SipResponse, parse_message_untrusted
from meshcomm.sip.ua_events import IncomingMessage
from tests.node.gateway_net import DOMAIN, Net, registered

CLIENT: tuple[str, int] = ("127.0.0.1", 6100)


def _message_with_route(route: str) -> bytes:
    body = b"via outbound proxy"
    return (f"MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6100;branch=z9hG4bKroute1;rport\r\n"
            f"Max-Forwards: 70\r\nRoute: {route}\r\n"
            f"From: <sip:carol@{DOMAIN}>;tag=c1\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: route1@carol\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _responses(net: Net) -> list[int]:
    out = []
    for dest, data in net.stations[0].unclaimed:
        if dest == CLIENT:
            msg = parse_message_untrusted(data)
            assert isinstance(msg, SipResponse)
            out.append(msg.status)
    return out


def test_outbound_proxy_route_to_our_own_address_is_popped() -> None:
    """A stock client (baresip `outbound=`) puts the gateway's own address in a Route
    with no mesh= tag; the gateway must treat it as itself, not refuse it."""
    net = Net(3)
    net.converge()
    registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    net.stations[0].sip.receive_sip(
        _message_with_route("<sip:127.0.0.1:5060;transport=udp;lr>"), CLIENT, net.now)
    net.run_until(lambda: 200 in _responses(net))
    assert [e.body for e in net.events(2, 5072) if isinstance(e, IncomingMessage)] == [
        b"via outbound proxy"]


def test_route_to_a_foreign_address_is_still_refused() -> None:
    net = Net(2)
    net.converge()
    registered(net, 1, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    net.stations[0].sip.receive_sip(
        _message_with_route("<sip:192.0.2.9:5060;lr>"), CLIENT, net.now)
    net.run_until(lambda: bool(_responses(net)))
    assert _responses(net) == [403]
