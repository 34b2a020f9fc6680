"""The gateway's ``sip.message`` journal records hold what an after-action record needs
(issue 11): the start line and headers that rebuild the message, the body's length (and
the body only where the profile keeps it), and the id of the overlay envelope that carried
it across the mesh -- the same id on the sender's to-mesh and the receiver's from-mesh
record. Every record fits one journal entry, however monstrous the message."""

from __future__ import annotations

import hashlib

from meshcomm.journal.codec import MAX_CONTAINER_ITEMS, MAX_DATA_BYTES, normalize_data
from meshcomm.journal.events import JournalEventType
from meshcomm.node.gateway.parts import PendingSipRecord, journal_safe, sip_record
from meshcomm.node.gateway.types import Direction, GatewayConfig, MeshSip
from meshcomm.sip.message import SipRequest, parse_message_untrusted
from meshcomm.sip.ua_events import IncomingMessage, RequestSucceeded
from meshcomm.sip.uri import parse_uri_untrusted
from tests.node.cross_site_net import CrossSiteNet
from tests.node.gateway_net import DOMAIN, Net, of_kind, registered

RAW = ("127.0.0.1", 6000)


def _raw_message(body: bytes = b"water at sector 4", extra: bytes = b"") -> bytes:
    head = (f"MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm1;rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a1\r\n"
            f"To: <sip:bob@{DOMAIN}>\r\nCall-ID: j1@x\r\nCSeq: 7 MESSAGE\r\n")
    tail = f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + extra + tail.encode() + body


def _rebuild(data: dict[str, object], body: bytes) -> bytes:
    headers = data["headers"]
    assert isinstance(headers, list)
    lines = [str(data["start"]), *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode() + body


def test_start_line_and_headers_rebuild_the_message_body_as_hash_unless_kept() -> None:
    raw = _raw_message()
    message = parse_message_untrusted(raw)
    hashed = sip_record(Direction.FROM_CLIENT, message, RAW).data
    assert hashed["start"] == f"MESSAGE sip:bob@{DOMAIN} SIP/2.0"
    assert hashed["headers"][:2] == [["Via", "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm1;rport"],
                                     ["Max-Forwards", "70"]]
    assert hashed["headers"][-1] == ["Content-Length", "17"]
    assert hashed["body_len"] == 17 and "body" not in hashed
    assert hashed["body_sha256"] == hashlib.sha256(b"water at sector 4").hexdigest()
    assert "env" not in hashed and "headers_truncated" not in hashed
    assert _rebuild(dict(hashed), b"water at sector 4") == raw
    kept = sip_record(Direction.FROM_CLIENT, message, RAW, keep_body=True).data
    assert kept["body"] == b"water at sector 4" and "body_sha256" not in kept
    assert _rebuild(dict(kept), kept["body"]) == raw          # type: ignore[arg-type]
    plain, _ = normalize_data(kept)
    assert plain == kept                                       # stored as it is
    empty = sip_record(Direction.FROM_CLIENT, parse_message_untrusted(_raw_message(b"")), RAW)
    assert "body_len" not in empty.data and "body_sha256" not in empty.data


def _monster(n_headers: int, value_len: int, body: bytes = b"") -> SipRequest:
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKbig"),
               ("From", f"<sip:alice@{DOMAIN}>;tag=a1"), ("To", f"<sip:bob@{DOMAIN}>"),
               ("Call-ID", "big@x"), ("CSeq", "1 MESSAGE")]
    headers += [(f"X-H{i}", "v" * value_len) for i in range(n_headers)]
    return SipRequest("MESSAGE", parse_uri_untrusted(f"sip:bob@{DOMAIN}"), tuple(headers), body)


def _stored_size(data: object) -> int:
    assert isinstance(data, dict)
    return len(normalize_data(data)[1])


def test_a_monstrous_header_set_is_cut_to_one_journal_entry_and_counted() -> None:
    message = _monster(300, 400)                           # ~120 KB of headers
    data = sip_record(Direction.FROM_MESH, message, b"\x01" * 32, env=b"\x0e" * 16).data
    assert _stored_size(data) <= MAX_DATA_BYTES
    headers = data["headers"]
    assert isinstance(headers, list)
    cut = data["headers_truncated"]
    assert isinstance(cut, int) and cut > 0
    assert len(headers) + cut == len(message.headers)
    assert headers == [list(pair) for pair in message.headers[:len(headers)]]   # a prefix
    assert data["env"] == "0e" * 16
    assert _stored_size(data) > MAX_DATA_BYTES - 2_000      # cut no more than needed


def test_more_headers_than_a_journal_list_holds_are_cut_too() -> None:
    message = _monster(MAX_CONTAINER_ITEMS + 100, 1)
    data = sip_record(Direction.FROM_CLIENT, message, RAW).data
    headers = data["headers"]
    assert isinstance(headers, list) and len(headers) <= MAX_CONTAINER_ITEMS
    assert len(headers) + data["headers_truncated"] == len(message.headers)  # type: ignore[operator]
    assert _stored_size(data) <= MAX_DATA_BYTES


def test_a_kept_body_that_leaves_no_room_for_the_headers_is_stored_as_its_hash() -> None:
    body = b"b" * 60_000
    data = sip_record(Direction.TO_MESH, _monster(40, 150, body), b"\x01" * 32,
                      keep_body=True).data
    assert "body" not in data and data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert data["body_len"] == len(body) and "headers_truncated" not in data
    small = sip_record(Direction.TO_MESH, _monster(3, 30, b"short"), b"\x01" * 32,
                       keep_body=True).data
    assert small["body"] == b"short"


def test_bytes_that_are_not_utf8_in_any_header_are_stored() -> None:
    message = parse_message_untrusted(_raw_message(extra=b"X-Odd: caf\xe9 \xff\r\n"))
    record = journal_safe(sip_record(Direction.FROM_CLIENT, message, RAW))
    assert ["X-Odd", "caf? ?"] in record.data["headers"]      # type: ignore[operator]
    assert _stored_size(record.data) <= MAX_DATA_BYTES
    big = journal_safe(sip_record(Direction.FROM_CLIENT, _monster(300, 400), RAW))
    assert _stored_size(big.data) <= MAX_DATA_BYTES


def _records(net: Net, index: int, method: str) -> list[dict[str, object]]:
    return [r for r in net.stations[index].sip_journal() if r.get("method") == method]


def test_the_envelope_id_is_the_same_on_the_sending_and_the_receiving_node() -> None:
    net = Net(4)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 3, 5071, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    alice.message(f"sip:bob@{DOMAIN}", "water at sector 4")
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), RequestSucceeded)[1:]))
    assert of_kind(net.events(3, 5071), IncomingMessage)
    sent = [r for r in _records(net, 0, "MESSAGE") if r["dir"] == "to-mesh"]
    got = [r for r in _records(net, 3, "MESSAGE") if r["dir"] == "from-mesh"]
    assert len(sent) == 1 and len(got) == 1
    assert isinstance(sent[0]["env"], str) and len(sent[0]["env"]) == 32
    assert got[0]["env"] == sent[0]["env"]
    assert got[0]["start"] == sent[0]["start"] == f"MESSAGE sip:bob@{DOMAIN} SIP/2.0"
    assert got[0]["headers"] == sent[0]["headers"]          # the mesh changed nothing
    answers_sent = [r for r in _records(net, 3, "MESSAGE") if r["dir"] == "to-mesh"]
    answers_got = [r for r in _records(net, 0, "MESSAGE") if r["dir"] == "from-mesh"]
    assert [r["status"] for r in answers_sent] == [200]
    assert [r["env"] for r in answers_got] == [answers_sent[0]["env"]]
    # every to-mesh record of every node names its envelope, and every from-mesh record
    # names an envelope some node journaled sending: an export pairs them all.
    envs = {str(r["env"]) for st in net.stations for r in st.sip_journal()
            if r["dir"] == "to-mesh"}
    for st in net.stations:
        for r in st.sip_journal():
            if r["dir"] == "from-mesh":
                assert r["env"] in envs
            if r["dir"] in ("to-client", "from-client", "originated"):
                assert "env" not in r


def test_a_fragmented_message_is_named_by_its_first_envelope() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 1, 5071, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    alice.message(f"sip:bob@{DOMAIN}", "x" * 3_000)         # over one datagram
    net.run_until(lambda: bool(of_kind(net.events(1, 5071), IncomingMessage)))
    (sent,) = [r for r in _records(net, 0, "MESSAGE") if r["dir"] == "to-mesh"]
    (got,) = [r for r in _records(net, 1, "MESSAGE") if r["dir"] == "from-mesh"]
    assert got["env"] == sent["env"] and got["body_len"] == 3_000


def test_an_answer_sent_again_over_the_mesh_is_journaled_with_its_own_envelope() -> None:
    """A request retransmitted from the mesh gets the final answer again: a new envelope,
    so a new to-mesh record (noted) that the far node's from-mesh record can pair with."""
    net = Net(1, config=GatewayConfig())
    gw = net.stations[0].gw
    origin = b"\x07" * 32
    request = _raw_message().replace(b"sip:bob@", b"sip:nobody@")
    gw.receive_mesh(origin, request, 2, net.now, b"\xaa" * 16)
    gw.receive_mesh(origin, request, 2, net.now, b"\xbb" * 16)
    out = [item for item in gw.to_send(net.now) if isinstance(item, MeshSip)]
    assert len(out) == 2 and all(item.sent is not None for item in out)
    for n, item in enumerate(out):
        assert item.sent is not None
        item.sent.env = bytes([n + 1]) * 16              # what send_unicast returned
    records = []
    while (event := gw.next_event()) is not None:
        if isinstance(event, PendingSipRecord):     # built when the pump delivers it
            event = event.record()
        data = getattr(event, "data", None)
        if isinstance(data, dict) and data.get("method") == "MESSAGE":
            records.append(data)
    assert [(r["dir"], r.get("env"), r.get("note")) for r in records] == [
        ("from-mesh", "aa" * 16, None), ("originated", None, None),
        ("to-mesh", "01" * 16, None), ("from-mesh", "bb" * 16, None),
        ("to-mesh", "02" * 16, "retransmission")]
    assert records[2]["status"] == records[4]["status"] == 404


def test_a_message_tunnelled_to_another_island_is_named_by_its_item_id() -> None:
    """Across islands the MESSAGE travels as a tunnel item signed by its origin: the
    origin's to-mesh and the destination's from-mesh records name it by the item's id."""
    net = CrossSiteNet({"A": ["a0", "a1", "a2"], "B": ["b2", "b1", "b0"]}, {"a2", "b2"})
    net.run(15.0)
    net.send("a0", "b0", "hello from A")
    net.run(net.now + 10.0)
    assert [e.body for e in net.stations["b0"].inbox][:1] == [b"hello from A"]

    def sip(name: str, direction: str) -> list[dict[str, object]]:
        return [dict(r.data) for r in net.stations[name].edge.journal
                if r.type is JournalEventType.SIP_MESSAGE and r.data["dir"] == direction
                and r.data.get("method") == "MESSAGE"]
    (sent,) = [r for r in sip("a0", "to-mesh") if r["status"] is None]
    (got,) = [r for r in sip("b0", "from-mesh") if r["status"] is None]
    assert isinstance(sent["env"], str) and len(sent["env"]) == 32
    assert got["env"] == sent["env"]
    (answer,) = sip("b0", "to-mesh")
    assert [r["env"] for r in sip("a0", "from-mesh")] == [answer["env"]]


def test_over_a_lossy_chain_every_receipt_pairs_with_a_send() -> None:
    """Five nodes, 10% loss: per-hop retransmissions and scoped floods repeat the same
    envelope, so every from-mesh record names an envelope its sender journaled."""
    net = Net(5, loss=0.1, seed=11)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 4, 5071, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    for n in range(10):
        alice.message(f"sip:bob@{DOMAIN}", f"report {n}")
    net.run_for(60.0)
    assert len(of_kind(net.events(4, 5071), IncomingMessage)) == 10
    sent = {str(r["env"]): i for i, st in enumerate(net.stations)
            for r in st.sip_journal() if r["dir"] == "to-mesh"}
    received = [(i, r) for i, st in enumerate(net.stations) for r in st.sip_journal()
                if r["dir"] == "from-mesh"]
    assert len(received) >= 20                      # 10 MESSAGEs and their answers
    for i, r in received:
        assert r["env"] in sent and sent[str(r["env"])] != i


def test_digest_responses_are_not_journaled_the_rest_of_the_credential_is() -> None:
    """A digest response lets whoever holds the journal try passwords offline: its value
    is replaced; who authenticated, for which realm and nonce, stays on the record."""
    auth = ('Digest username="alice", realm="fire.example", nonce="n0nce", '
            'uri="sip:fire.example", response="6629fae49393a05397450978507c4ef1", qop=auth, '
            'nc=00000001, cnonce="c1"')
    extra = (f"Authorization: {auth}\r\nProxy-Authorization: Digest username=\"bob\", "
             f"RESPONSE=abcdef0123, realm=x\r\n").encode()
    message = parse_message_untrusted(_raw_message(extra=extra))
    headers = dict((n, v) for n, v in sip_record(Direction.FROM_CLIENT, message, RAW)
                   .data["headers"])                  # type: ignore[union-attr]
    assert headers["Authorization"] == auth.replace("6629fae49393a05397450978507c4ef1",
                                                    "redacted")
    assert headers["Proxy-Authorization"] == 'Digest username="bob", RESPONSE="redacted", realm=x'
    assert "6629fae4" not in str(sip_record(Direction.TO_MESH, message, b"\x01" * 32).data)
    info = parse_message_untrusted(_raw_message(
        extra=b'Authentication-Info: qop=auth, rspauth="d3f4", cnonce="c1"\r\n'))
    (value,) = [v for n, v in sip_record(Direction.FROM_CLIENT, info, RAW).data["headers"]
                if n == "Authentication-Info"]         # type: ignore[union-attr]
    assert value == 'qop=auth, rspauth="redacted", cnonce="c1"'


def test_a_message_leaves_before_its_records_are_built_and_they_still_name_its_envelope(
) -> None:
    """The pump transmits, then hands the journal its records: the built-in UA's MESSAGE
    frame is on the air before any of its SIP records is built (building them is most of
    the journal's cost on the send path), and the to-mesh record still carries the id of
    the envelope that took it."""
    net = Net(2)
    net.converge()
    st = net.stations[0]
    to = f"sip:node1@{DOMAIN}"
    net.run_until(lambda: bool(st.node.table.lookup(to)))
    order: list[str] = []
    transmit, record = st.edge.transmit, st.edge.record

    def watched_transmit(dgram: object) -> None:
        order.append("transmit")
        transmit(dgram)  # type: ignore[arg-type]

    def watched_record(rec: object) -> None:
        data = getattr(rec, "data", {})
        if data.get("method") == "MESSAGE":
            order.append(f"record {data['dir']}")
        record(rec)  # type: ignore[arg-type]

    st.edge.transmit = watched_transmit  # type: ignore[method-assign]
    st.edge.record = watched_record  # type: ignore[method-assign]
    built: list[PendingSipRecord] = []
    original = PendingSipRecord.record

    def watched_build(self: PendingSipRecord) -> object:
        built.append(self)
        order.append("built")
        return original(self)

    PendingSipRecord.record = watched_build  # type: ignore[method-assign]
    try:
        st.pump.command(net.now, lambda: st.core.send_message(to, "first out", net.now))
    finally:
        PendingSipRecord.record = original  # type: ignore[method-assign]
    assert order and order[0] == "transmit", order
    assert "record to-mesh" in order and order.index("built") > order.index("transmit")
    (to_mesh,) = [r.data for r in st.journal if r.data.get("dir") == "to-mesh"
                  and r.data.get("method") == "MESSAGE"]
    assert isinstance(to_mesh.get("env"), str) and len(str(to_mesh["env"])) == 32
