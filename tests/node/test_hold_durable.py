"""A MESSAGE is answered 202 only once its hold is on disk (issue 7 item 5), and one
accepted before the node stops is held durably (item 6): full and read-only stores answer
500 with Retry-After (the client sends again), a full holder 503, and nothing answered 202
is lost across a restart. The full disk is a real one (a small tmpfs filled to ENOSPC)."""

from __future__ import annotations

from pathlib import Path

from meshcomm.journal.events import JournalEventType as J
from meshcomm.node.e2e_sip import is_sealed
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import HeldState, StoreForward, StoreForwardConfig
from meshcomm.sip.message import SipResponse, parse_message_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import IncomingMessage, RequestFailed, RequestSucceeded
from tests.node.gateway_net import DOMAIN, Net, attach_store_forward, registered
from tests.node.small_disk import read_only_connection, small_disk

BOB = f"sip:bob@{DOMAIN}"
CONFIG = StoreForwardConfig(poll_interval_s=0.5, retry_initial_s=1.0, retry_max_s=2.0)
RAW = ("127.0.0.1", 5081)


def _gone_bob(db0: Path, tmp_path: Path,
              config: StoreForwardConfig = CONFIG) -> tuple[Net, UserAgent]:
    net = Net(3)
    attach_store_forward(net, 0, config, db0)
    attach_store_forward(net, 2, config, tmp_path / "n2.sf.sqlite")
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    net.stations[2].up = False                     # bob's node leaves (binding remains)
    return net, alice


def _finals(net: Net) -> list[int]:
    return [e.status for e in net.events(0, 5070)
            if isinstance(e, RequestSucceeded | RequestFailed) and e.method == "MESSAGE"]


def _send_and_wait(net: Net, alice: UserAgent, text: str) -> int:
    before = len(_finals(net))
    alice.message(BOB, text)
    net.run_until(lambda: len(_finals(net)) > before, timeout_s=30)
    return _finals(net)[-1]


def _sf0(net: Net) -> StoreForward:
    sf = net.stations[0].sip.sf
    assert sf is not None
    return sf


def _held_on_disk(db: Path) -> list[bytes]:
    with SfStorage.open(db) as storage:
        return [h.parcel.sip for h in storage.load()[0]]


def _held_read_by_bob(db: Path, net: Net) -> list[bytes]:
    """The held MESSAGEs as bob's node (station 2) reads them: on disk they are sealed
    to it (issue 12), never in clear."""
    e2e = net.stations[2].sip.e2e
    assert e2e is not None
    with SfStorage.open(db) as storage:
        parcels = [h.parcel for h in storage.load()[0]]
    assert all(is_sealed(p.sip) and b"MESSAGE" not in p.sip for p in parcels)
    return [e2e.open_parcel(p.sip, p.origin_key) or b"" for p in parcels]


def test_full_disk_answers_500_not_202_and_nothing_answered_202_is_lost(
        tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        db = disk.path / "n0.sf.sqlite"
        net, alice = _gone_bob(db, tmp_path)
        disk.fill()
        assert _send_and_wait(net, alice, "written on a full disk") == 500
        gw, sf = net.stations[0].gw, _sf0(net)
        assert gw.counters["messages_hold_failed"] == 1 and "messages_held" not in gw.counters
        assert sf.counters["sf_hold_not_durable"] == 1 and sf.outbox() == []
        assert [r.data["state"] for r in net.stations[0].journal
                if r.type is J.SF_HELD] == ["queued", "not_held"]
        disk.free()
        assert _held_on_disk(db) == []             # nothing was promised, nothing kept
        assert _send_and_wait(net, alice, "written once there is room") == 202
        # the node's software restarts: what was answered 202 comes back from disk
        attach_store_forward(net, 0, CONFIG, db)
        assert [s.state for s in _sf0(net).outbox()] == [HeldState.QUEUED]
        assert [b"written once there is room" in sip
                for sip in _held_read_by_bob(db, net)] == [True]
        net.stations[2].up = True
        net.run_until(lambda: [s.state for s in _sf0(net).outbox()] == [HeldState.DELIVERED],
                      timeout_s=60)
        got = [e.body for e in net.events(2, 5072) if isinstance(e, IncomingMessage)]
        assert got == [b"written once there is room"]
        net.stations[0].storage.close()            # type: ignore[union-attr]


def test_read_only_store_answers_500(tmp_path: Path) -> None:
    db = tmp_path / "n0.sf.sqlite"
    net, alice = _gone_bob(db, tmp_path)
    st = net.stations[0]
    assert st.storage is not None
    st.storage.close()
    st.storage = SfStorage(read_only_connection(db), db)
    assert _send_and_wait(net, alice, "read-only") == 500
    assert _sf0(net).counters["sf_hold_not_durable"] == 1 and _sf0(net).outbox() == []
    st.storage.close()
    st.storage = SfStorage.open(db)                # writable again: held as usual
    assert _send_and_wait(net, alice, "writable") == 202
    assert len(_held_on_disk(db)) == 1


def _raw_message(call_id: str) -> bytes:
    return (f"MESSAGE {BOB} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {RAW[0]}:{RAW[1]};branch=z9hG4bK{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:carol@{DOMAIN}>;tag=c1\r\n"
            f"To: <{BOB}>\r\nCall-ID: {call_id}@carol\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Length: 2\r\n\r\nhi").encode()


def _raw_responses(net: Net) -> list[SipResponse]:
    out = []
    for dest, data in net.stations[0].unclaimed:
        msg = parse_message_untrusted(data)
        if dest == RAW and isinstance(msg, SipResponse):
            out.append(msg)
    return out


def test_full_holder_answers_503_with_retry_after(tmp_path: Path) -> None:
    net, _alice = _gone_bob(tmp_path / "n0.sf.sqlite", tmp_path,
                            StoreForwardConfig(max_own_messages=1))
    for count, call_id in enumerate(("first", "second"), 1):
        net.stations[0].sip.receive_sip(_raw_message(call_id), RAW, net.now)
        net.run_until(lambda n=count: sum(r.status >= 200 for r in _raw_responses(net)) == n,
                      timeout_s=30)
    finals = [(r.call_id, r.status, r.get_header("Retry-After")) for r in _raw_responses(net)
              if r.status >= 200]
    assert finals == [("first@carol", 202, None), ("second@carol", 503, "5")]
    assert len(_sf0(net).outbox()) == 1


def test_message_pending_when_the_node_stops_is_held_durably(tmp_path: Path) -> None:
    db = tmp_path / "n0.sf.sqlite"
    net, alice = _gone_bob(db, tmp_path)
    alice.message(BOB, "sent just before SIGTERM")
    net.run_for(1.0)                                # forwarded, no answer yet
    assert _finals(net) == [] and _held_on_disk(db) == []
    assert net.stations[0].sip.hold_pending(net.now) == 1
    net.run_for(0.1)
    assert _finals(net) == [202]
    assert [b"sent just before SIGTERM" in s for s in _held_read_by_bob(db, net)] == [True]
    # while stopping, a MESSAGE for another node is held at once, not forwarded
    alice.message(BOB, "sent while stopping")
    net.run_for(0.2)
    assert _finals(net) == [202, 202]
    assert len(_held_on_disk(db)) == 2
