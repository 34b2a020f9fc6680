"""Compact SIP and short sealing headers through whole node cores (issue 13): a MESSAGE
with a 100-byte text crosses 4 hops and its 200 OK comes back; the relay in the middle
measures what each costs sealed on the radio, and the client gets the text unchanged."""

from __future__ import annotations

from meshcomm.node.e2e_sip import E2eCounter
from meshcomm.sip.ua_events import IncomingMessage
from tests.node.gateway_net import DOMAIN, Net, registered
from tests.node.test_e2e_node import _heard, _sip_bodies

BOB = f"sip:bob@{DOMAIN}"
TEXTS = [f"airtime meshcomm r0 l0 {k} ".ljust(100, "x") for k in range(4)]


def _messages_at_bob(net: Net) -> list[bytes]:
    return [e.body for e in net.events(4, 5074) if isinstance(e, IncomingMessage)]


def test_a_100_byte_message_and_its_200_ok_are_small_on_the_radio() -> None:
    net = Net(5)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 4, 5074, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)), timeout_s=60)
    heard = _heard(net, 2)
    sizes: list[tuple[list[int], list[int]]] = []
    for text in TEXTS:
        before = len(heard)
        alice.message(BOB, text)
        net.run_until(lambda: len(_messages_at_bob(net)) == len(sizes) + 1)
        net.run_for(1.0)
        new = heard[before:]
        sizes.append((sorted({len(b) for b in _sip_bodies(new, net.stations[4].core.node_id)}),
                      sorted({len(b) for b in _sip_bodies(new, net.stations[0].core.node_id)})))
    assert _messages_at_bob(net) == [t.encode() for t in TEXTS]
    (first_msg, first_ok), *later = sizes
    # the first exchange carries the FULL sealing header; once each side said it holds
    # the other's session, SHORT (28 bytes less)
    for msg, ok in later[1:]:
        assert len(msg) == len(ok) == 1, sizes
        assert msg[0] <= 170 + 23 and ok[0] <= 40 + 23, sizes
        assert msg[0] <= first_msg[0] - 28 and ok[0] <= first_ok[0] - 28, sizes
    for station in (net.stations[0], net.stations[4]):
        e2e = station.core.e2e
        assert e2e is not None and e2e.counters[E2eCounter.NACK_SENT] == 0
    assert net.stations[4].core.e2e is not None
    assert net.stations[4].core.e2e.counters[E2eCounter.REFERENCED] == len(TEXTS)
