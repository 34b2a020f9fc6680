"""Gateway answers for what cannot be served: 480/202, 403, 503 under a flood, 400 and
counted drops; every SIP message journaled."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.node.gateway.types import MAX_SIP_MESSAGE_BYTES, MessageHolder
from meshcomm.sip.message import SipResponse, parse_message_untrusted
from meshcomm.sip.ua_events import IncomingMessage, RequestFailed, RequestSucceeded
from tests.node.gateway_net import DOMAIN, Net, registered

RAW: tuple[str, int] = ("127.0.0.1", 6000)


@dataclass
class RecordingHolder:
    """Records the store-and-forward hand-off (the real holder is another engineer's)."""

    held: list[dict[str, object]] = field(default_factory=list)
    done: list[tuple[bytes, bool]] = field(default_factory=list)

    def hold(self, *, msg_id: bytes, from_aor: str, to_aor: str, sip: bytes,
             now: float) -> bool:
        self.held.append({"msg_id": msg_id, "from": from_aor, "to": to_aor, "sip": sip})
        return True                                  # durable at once

    def local_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None:
        self.done.append((msg_id, ok))

    def is_delivered(self, msg_id: bytes) -> bool:
        return False

    def note_delivered(self, msg_id: bytes, origin: bytes, now: float) -> None:
        return None


def _gone_destination(holders: dict[int, MessageHolder]) -> tuple[Net, int]:
    net = Net(3, holders=holders)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    net.stations[2].up = False                       # bob's node leaves (binding remains)
    handle = alice.message(f"sip:bob@{DOMAIN}", "are you there")
    return net, handle.request_id


def test_known_aor_whose_node_is_gone_is_480() -> None:
    net, _ = _gone_destination({})
    net.run_until(lambda: bool([e for e in net.events(0, 5070)
                                if isinstance(e, RequestFailed)]), timeout_s=20)
    (failed,) = [e for e in net.events(0, 5070) if isinstance(e, RequestFailed)]
    assert failed.status == 480


def test_message_for_a_gone_node_is_held_and_answered_202() -> None:
    holder = RecordingHolder()
    net, request_id = _gone_destination({0: holder})
    net.run_until(lambda: any(isinstance(e, RequestSucceeded) and e.method == "MESSAGE"
                              for e in net.events(0, 5070)), timeout_s=20)
    (ok,) = [e for e in net.events(0, 5070)
             if isinstance(e, RequestSucceeded) and e.method == "MESSAGE"]
    assert ok.status == 202 and ok.request.request_id == request_id
    (held,) = holder.held
    assert held["to"] == f"sip:bob@{DOMAIN}" and held["from"] == f"sip:alice@{DOMAIN}"
    assert b"are you there" in held["sip"]  # type: ignore[operator]


def test_held_message_is_delivered_to_the_local_client_and_reported() -> None:
    holder = RecordingHolder()
    net = Net(1, holders={0: holder})
    registered(net, 0, 5072, "bob")
    other = RecordingHolder()
    net_a, _ = _gone_destination({0: other})
    net_a.run_for(10.0)
    sip = other.held[0]["sip"]
    assert isinstance(sip, bytes)
    net.stations[0].gw.deliver_stored(b"m" * 16, sip, net.now)
    net.run_until(lambda: bool(holder.done))
    assert holder.done == [(b"m" * 16, True)]
    got = [e for e in net.events(0, 5072) if isinstance(e, IncomingMessage)]
    assert [m.body for m in got] == [b"are you there"]


def test_register_of_an_aor_another_key_holds_is_403() -> None:
    net = Net(2)
    net.converge()
    registered(net, 1, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    impostor = net.add_ua(0, "bob", 5070)
    impostor.register(expires_s=600)
    net.run_until(lambda: bool(net.events(0, 5070)))
    (failed,) = net.events(0, 5070)
    assert isinstance(failed, RequestFailed) and failed.status == 403
    assert net.stations[0].gw.counters["register_conflicts"] == 1


def _raw_request(method: str, branch: str, *, extra: str = "", cseq_method: str = "") -> bytes:
    return (f"{method} sip:nobody@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:flood@{DOMAIN}>;tag=f1\r\n"
            f"To: <sip:nobody@{DOMAIN}>\r\nCall-ID: {branch}@flood\r\n"
            f"CSeq: 1 {cseq_method or method}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def _raw_responses(net: Net) -> list[SipResponse]:
    out = []
    for dest, data in net.stations[0].unclaimed:
        if dest == RAW:
            msg = parse_message_untrusted(data)
            assert isinstance(msg, SipResponse)
            out.append(msg)
    return out


def test_a_flood_gets_503_with_retry_after_while_other_clients_are_served() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 1, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    sip = net.stations[0].sip
    for i in range(200):
        sip.receive_sip(_raw_request("OPTIONS", f"flood{i}"), RAW, net.now)
    alice.message(f"sip:bob@{DOMAIN}", "still served")
    net.run_until(lambda: any(isinstance(e, RequestSucceeded) and e.method == "MESSAGE"
                              for e in net.events(0, 5070)))
    statuses = [r.status for r in _raw_responses(net)]
    assert statuses.count(503) >= 100 and statuses.count(404) >= 1
    assert all(r.get_header("Retry-After") == "5" for r in _raw_responses(net)
               if r.status == 503)
    assert [e.body for e in net.events(1, 5072) if isinstance(e, IncomingMessage)] == [
        b"still served"]


def test_malformed_and_oversized_input_is_dropped_and_counted_or_answered_400() -> None:
    net = Net(1)
    sip, gw = net.stations[0].sip, net.stations[0].gw
    sip.receive_sip(b"\x00garbage\r\n\r\n", RAW, net.now)
    sip.receive_sip(b"X" * (MAX_SIP_MESSAGE_BYTES + 1), RAW, net.now)
    sip.receive_sip(_raw_request("MESSAGE", "bad1", cseq_method="INVITE"), RAW, net.now)
    net.run_for(0.1)
    assert gw.counters["dropped_malformed"] == 1 and gw.counters["dropped_oversize"] == 1
    assert [r.status for r in _raw_responses(net)] == [400]
    drops = [r for r in net.stations[0].sip_journal() if r["dir"] == "dropped"]
    assert sorted(str(r["reason"]) for r in drops) == ["malformed", "oversize"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_never_crash_the_gateway(data: bytes) -> None:
    net = Net(1)
    net.stations[0].sip.receive_sip(data, RAW, 0.0)
    net.stations[0].sip.receive(data, "n9", 0.0)  # type: ignore[arg-type]
    net.stations[0].gw.receive_mesh(b"\x01" * 32, data, 1, 0.0)
    net.run_for(0.1)


def test_every_message_of_a_delivery_is_journaled_on_both_ends() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 1, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    alice.message(f"sip:bob@{DOMAIN}", "log me")
    net.run_until(lambda: any(isinstance(e, RequestSucceeded) and e.method == "MESSAGE"
                              for e in net.events(0, 5070)))

    def flow(index: int) -> list[tuple[object, object]]:
        return [(r["dir"], r["status"]) for r in net.stations[index].sip_journal()
                if r.get("method") == "MESSAGE"]

    assert flow(0)[:4] == [("from-client", None), ("to-mesh", None), ("from-mesh", 200),
                           ("to-client", 200)]
    assert flow(1)[:4] == [("from-mesh", None), ("to-client", None), ("from-client", 200),
                           ("to-mesh", 200)]
    record = next(r for r in net.stations[1].sip_journal() if r.get("method") == "MESSAGE")
    assert {"call_id", "cseq", "from", "to", "hops", "body_sha256"} <= set(record)
    assert record["from"] == f"sip:alice@{DOMAIN}" and "body" not in record
