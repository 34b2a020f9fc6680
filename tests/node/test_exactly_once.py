"""Exactly once, end to end (issue 7 item 4): the destination delivers a MESSAGE to its
client once, whichever path brings it again -- the direct path, a retransmission,
store-and-forward from the sender's node or a relay -- across a restart of the
destination; deliveries are counted at the destination's SIP client."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from meshcomm.node.gateway.parts import message_id
from meshcomm.node.storeforward import HeldState, StoreForwardConfig
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from meshcomm.sip.ua_events import IncomingMessage, RequestFailed, RequestSucceeded
from tests.node.gateway_net import (
    DOMAIN,
    Net,
    attach_store_forward,
    registered,
)

BOB = f"sip:bob@{DOMAIN}"
CONFIG = StoreForwardConfig(poll_interval_s=0.5, retry_initial_s=1.0, retry_max_s=8.0)
RAW_BOB = ("127.0.0.1", 5999)


def _deliveries(net: Net, index: int, port: int) -> Counter[bytes]:
    return Counter(e.body for e in net.events(index, port) if isinstance(e, IncomingMessage))


def _finals(net: Net, index: int, port: int) -> list[int]:
    return [e.status for e in net.events(index, port)
            if isinstance(e, RequestSucceeded | RequestFailed) and e.method == "MESSAGE"]


def _chain(tmp_path: Path, n: int, *, loss: float = 0.0, seed: int = 7) -> Net:
    net = Net(n, loss=loss, seed=seed)
    for i in range(n):
        attach_store_forward(net, i, CONFIG, tmp_path / f"n{i}.sf.sqlite")
    net.converge()
    return net


def test_300_messages_over_4_hops_at_30pct_loss_each_delivered_exactly_once(
        tmp_path: Path) -> None:
    # seed 12 (was 11): with Trickle HELLOs/digests (issue 13) seed 11's run delivered
    # all 300 with no late answer, so it no longer exercised the held-then-answered path
    # the last assertions check; seeds 12-17 all do (and all deliver exactly once)
    net = _chain(tmp_path, 5, loss=0.3, seed=12)
    alice = registered(net, 0, 5070, "alice")
    registered(net, 4, 5074, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)), timeout_s=60)
    bodies = [f"message {i:03d}".encode() for i in range(300)]
    for start in range(0, len(bodies), 10):          # 10 per second: under the rate limit
        for body in bodies[start:start + 10]:
            alice.message(BOB, body)
        net.run_for(1.0)
    net.run_until(lambda: set(_deliveries(net, 4, 5074)) >= set(bodies)
                  and len(_finals(net, 0, 5070)) == len(bodies), timeout_s=400)
    net.run_for(20.0)                                # stragglers: late copies, receipts
    got = _deliveries(net, 4, 5074)
    assert sorted(got) == sorted(bodies)
    assert {b: c for b, c in got.items() if c != 1} == {}
    finals = Counter(_finals(net, 0, 5070))
    assert set(finals) <= {200, 202}, finals
    gw4 = net.stations[4].gw.counters
    # the lossy path really brought copies again: late answers made the sender hold
    # messages that had been delivered, and the destination answered them without a
    # second delivery
    assert finals[202] > 0 and net.stations[0].gw.counters["messages_held"] == finals[202]
    sf4 = net.stations[4].sip.sf
    assert sf4 is not None
    dup = sf4.counters["sf_duplicate_suppressed"] + gw4["duplicates_answered"]
    assert dup + gw4["duplicates_absorbed"] > 0


RAW_ALICE = ("127.0.0.1", 5080)


def _message(branch: str, body: str = "once only") -> bytes:
    """A MESSAGE from a raw client alice at n0 to bob; the same Call-ID, From tag and
    CSeq every time (one message id), a new Via branch per transaction."""
    return (f"MESSAGE {BOB} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a1\r\n"
            f"To: <{BOB}>\r\nCall-ID: exactly-once-1@alice\r\nCSeq: 7 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()


def _register(net: Net, index: int, addr: tuple[str, int], user: str) -> None:
    data = (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {addr[0]}:{addr[1]};branch=z9hG4bKreg{user}{net.now}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r1\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: reg-{user}@x\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{addr[0]}:{addr[1]}>\r\nExpires: 600\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    net.stations[index].sip.receive_sip(data, addr, net.now)
    net.run_for(0.5)
    assert [r.status for r in _responses(net, index, addr)][-1:] == [200]


def _received(net: Net, index: int, addr: tuple[str, int]) -> list[SipRequest | SipResponse]:
    out = []
    for dest, data in net.stations[index].unclaimed:
        if dest == addr:
            out.append(parse_message_untrusted(data))
    return out


def _responses(net: Net, index: int, addr: tuple[str, int]) -> list[SipResponse]:
    return [m for m in _received(net, index, addr) if isinstance(m, SipResponse)]


def _deliveries_to_raw(net: Net) -> list[SipRequest]:
    """MESSAGEs bob's raw client got, one per transaction (retransmissions folded)."""
    seen: dict[str | None, SipRequest] = {}
    for m in _received(net, 2, RAW_BOB):
        if isinstance(m, SipRequest) and m.method == "MESSAGE":
            seen.setdefault(m.top_via.branch, m)
    return list(seen.values())


def _send(net: Net, data: bytes) -> None:
    net.stations[0].sip.receive_sip(data, RAW_ALICE, net.now)


def test_restarted_destination_answers_a_resent_copy_without_a_second_delivery(
        tmp_path: Path) -> None:
    net = _chain(tmp_path, 3)
    bob = registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    first = _message("first")
    _send(net, first)
    net.run_until(lambda: [r.status for r in _responses(net, 0, RAW_ALICE)] == [200])
    assert _deliveries(net, 2, 5072) == {b"once only": 1}
    # the destination's software restarts: new gateway and store-and-forward core, the
    # delivered record comes back from SQLite; bob registers again
    attach_store_forward(net, 2, CONFIG, tmp_path / "n2.sf.sqlite")
    bob.register(expires_s=600)
    net.run_for(2.0)
    # 1. the same request again on the direct path (a new branch: a new transaction)
    _send(net, _message("again"))
    net.run_until(lambda: len(_responses(net, 0, RAW_ALICE)) == 2)
    assert [r.status for r in _responses(net, 0, RAW_ALICE)] == [200, 200]
    assert net.stations[2].gw.counters["duplicates_answered"] == 1
    # 2. the same request through store-and-forward, held by the sender's node
    sf0 = net.stations[0].sip.sf
    assert sf0 is not None
    request = parse_message_untrusted(first)
    assert isinstance(request, SipRequest)
    sf0.hold(msg_id=message_id(request), from_aor=f"sip:alice@{DOMAIN}", to_aor=BOB,
             sip=first, now=net.now)
    net.stations[0].sip.settle(net.now)
    net.run_until(lambda: [s.state for s in sf0.outbox()] == [HeldState.DELIVERED])
    net.run_for(3.0)
    assert _deliveries(net, 2, 5072) == {b"once only": 1}
    sf2 = net.stations[2].sip.sf
    assert sf2 is not None and sf2.counters["sf_duplicate_suppressed"] == 1


@pytest.mark.parametrize("first", ["direct", "stored"])
def test_copy_arriving_while_the_first_is_with_the_client_is_absorbed(
        tmp_path: Path, first: str) -> None:
    net = _chain(tmp_path, 3)
    _register(net, 2, RAW_BOB, "bob")                  # a client that answers when told to
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    data = _message("one", "while pending")
    request = parse_message_untrusted(data)
    assert isinstance(request, SipRequest)
    gw2 = net.stations[2].gw
    if first == "direct":
        _send(net, data)
        net.run_until(lambda: bool(_deliveries_to_raw(net)))
        gw2.deliver_stored(message_id(request), data, net.now)
    else:
        gw2.deliver_stored(message_id(request), data, net.now)
        net.stations[2].sip.settle(net.now)
        net.run_until(lambda: bool(_deliveries_to_raw(net)))
        _send(net, data)
    net.stations[2].sip.settle(net.now)
    net.run_for(1.0)
    (delivered,) = _deliveries_to_raw(net)             # one delivery, the copy waits
    assert gw2.counters["duplicates_absorbed"] == 1
    answer = build_response(delivered, 200, to_tag="b1")
    net.stations[2].sip.receive_sip(answer.serialize(), RAW_BOB, net.now)
    net.run_until(lambda: [r.status for r in _responses(net, 0, RAW_ALICE)] == [200])
    net.run_for(2.0)
    assert len(_deliveries_to_raw(net)) == 1
    sf2 = net.stations[2].sip.sf
    assert sf2 is not None and sf2.is_delivered(message_id(request))
