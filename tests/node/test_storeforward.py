"""Store-and-forward in process: real MeshNodes, StoreForward cores and SQLite storage
(see sf_net), plus forged, garbage and misuse input."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshcomm.errors import ConfigError, LocalProtocolError
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import NeighbourUp, RouteChanged
from meshcomm.node.kinds import AppKind
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import (
    HeldState,
    HoldRefused,
    StoreForward,
    StoreForwardConfig,
)
from meshcomm.node.storeforward_wire import (
    MAX_SF_MESSAGE_BYTES,
    SfMsgType,
    encode_message,
    make_parcel,
    make_receipt,
)
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.types import NodeId

from .sf_net import SF_CONFIG, Host, Net, aor, states

SIP = b"MESSAGE sip:d@incident.test SIP/2.0\r\nContent-Length: 5\r\n\r\nhello"
MSG = b"message-id-0001!"


def hold(net: Net, name: str, to: str = "d", msg_id: bytes = MSG) -> None:
    net.hosts[name].live_sf.hold(msg_id=msg_id, from_aor=aor(name), to_aor=aor(to), sip=SIP,
                                 now=net.now)
    net.command(name)


def unicast(sender: Identity, body: bytes) -> UnicastReceived:
    return UnicastReceived(sender.node_id, sender.public_key, AppKind.STORE_FORWARD, body, 1, 1)


def drops(host: Host) -> list[str]:
    return [str(r.data["reason"]) for r in host.journal
            if r.type is J.ENVELOPE_DROPPED and r.data.get("kind") == "store_forward"]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Net]:
    """o (handset) -- r (relay) -- d (handset): d only hears the relay."""
    net = Net(tmp_path, {"o": "handset", "r": "relay", "d": "handset"},
              links=[("o", "r"), ("r", "d")])
    yield net
    net.close()


def test_done_when_held_sender_killed_relay_restarted_delivered_exactly_once(
        chain: Net) -> None:
    net = chain
    o, r, d = net.hosts["o"], net.hosts["r"], net.hosts["d"]
    net.start("o")
    net.start("r")
    net.run_until(3.0)
    hold(net, "o")                      # d absent: never started
    net.run_for(2.0)
    assert [(s.state, s.holder) for s in o.live_sf.outbox()] == [
        (HeldState.HELD_BY, aor("r"))]
    assert [s.msg_id for s in r.live_sf.held_for_others()] == [MSG]
    net.kill("o")                       # the sender's node dies
    net.restart("r")                    # the relay comes back from its SQLite file
    assert r.live_sf.counters["sf_restored"] == 1
    net.run_for(2.0)
    net.start("d")                      # the destination joins
    net.run_for(6.0)
    assert [(m.msg_id, m.sip, m.to_aor) for m in d.client] == [(MSG, SIP, aor("d"))]
    assert r.live_sf.held_for_others() == []
    assert r.storage is not None and r.storage.load()[0] == []
    net.restart("d")                    # its delivered set survives a restart too
    net.run_for(2.0)
    net.start("o")                      # the sender returns with its own copy
    net.run_for(6.0)
    assert len(d.client) == 1           # exactly once
    assert d.live_sf.counters["sf_duplicate_suppressed"] >= 1
    assert states(o) == ["queued", "held_by", "delivered"]
    assert o.statuses[1] == ("held_by", aor("r"))
    assert [(s.state, s.holder) for s in o.live_sf.outbox()] == [
        (HeldState.DELIVERED, aor("d"))]


def test_several_holders_still_deliver_once(tmp_path: Path) -> None:
    net = Net(tmp_path, {"o": "handset", "r1": "relay", "r2": "relay", "d": "handset"},
              links=[("o", "r1"), ("o", "r2"), ("r1", "d"), ("r2", "d")])
    for name in ("o", "r1", "r2"):
        net.start(name)
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(2.0)
    assert all(len(net.hosts[r].live_sf.held_for_others()) == 1 for r in ("r1", "r2"))
    net.start("d")
    net.run_for(8.0)
    assert len(net.hosts["d"].client) == 1
    assert [s.state for s in net.hosts["o"].live_sf.outbox()] == [HeldState.DELIVERED]
    assert all(net.hosts[r].live_sf.held_for_others() == [] for r in ("r1", "r2"))
    net.close()


def test_refused_local_delivery_is_retried_until_accepted(chain: Net) -> None:
    net = chain
    for name in ("o", "r", "d"):
        net.start(name)
    net.hosts["d"].accept_deliveries = False
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(3.0)
    d = net.hosts["d"]
    assert d.client == [] and d.live_sf.counters["sf_local_delivery_failed"] >= 1
    assert net.hosts["o"].live_sf.outbox()[0].state is not HeldState.DELIVERED
    d.accept_deliveries = True
    net.run_for(6.0)
    assert len(d.client) == 1
    assert net.hosts["o"].live_sf.outbox()[0].state is HeldState.DELIVERED


def test_message_too_old_expires_everywhere(tmp_path: Path) -> None:
    config = StoreForwardConfig(max_age_s=10.0, poll_interval_s=0.5, offer_interval_s=1.0)
    net = Net(tmp_path, {"o": "handset", "r": "relay"}, config=config)
    net.start("o")
    net.start("r")
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(2.0)
    assert len(net.hosts["r"].live_sf.held_for_others()) == 1
    net.run_for(10.0)
    assert [s.state for s in net.hosts["o"].live_sf.outbox()] == [HeldState.EXPIRED]
    assert net.hosts["r"].live_sf.held_for_others() == []
    net.close()


# ---------------------------------------------------------------- forged input
def test_forged_receipt_is_rejected_and_a_genuine_one_accepted(chain: Net) -> None:
    net = chain
    for name in ("o", "r", "d"):
        net.start(name)
    d = net.hosts["d"]
    d.accept_deliveries = False          # the message stays undelivered
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(1.0)
    o = net.hosts["o"]
    mallory = Identity(hashlib.sha256(b"mallory").digest())
    own_receipt = make_receipt(mallory, incident="sf-test", msg_id=MSG, to_aor=aor("d"),
                               delivered_wall_s=net.now)
    genuine = make_receipt(d.identity, incident="sf-test", msg_id=MSG, to_aor=aor("d"),
                           delivered_wall_s=net.now)
    tampered = genuine.signed.replace(MSG, b"message-id-0002!")
    other_aor = make_receipt(d.identity, incident="sf-test", msg_id=MSG, to_aor=aor("r"),
                             delivered_wall_s=net.now)
    for signed, sig in ((own_receipt.signed, own_receipt.signature),
                        (tampered, genuine.signature),
                        (other_aor.signed, other_aor.signature)):
        o.live_sf.on_mesh(unicast(mallory, encode_message(SfMsgType.RECEIPT, signed, sig)),
                          net.now)
        net.command("o")
    assert o.live_sf.counters["sf_drop_forged_receipt"] == 2  # tampered: unknown msg id
    assert "forged_receipt" in drops(o)
    assert o.live_sf.outbox()[0].state is not HeldState.DELIVERED
    o.live_sf.on_mesh(unicast(mallory, encode_message(SfMsgType.RECEIPT, genuine.signed,
                                                      genuine.signature)), net.now)
    net.command("o")
    assert o.live_sf.outbox()[0].state is HeldState.DELIVERED


def test_forged_custody_offers_are_rejected(chain: Net) -> None:
    net = chain
    net.start("o")
    r = net.start("r")
    o = net.hosts["o"]
    mallory = Identity(hashlib.sha256(b"mallory").digest())
    parcel = make_parcel(o.identity, incident="sf-test", msg_id=MSG, from_aor=aor("o"),
                         to_aor=aor("d"), created_wall_s=net.now, sip=SIP)
    wrong_incident = make_parcel(o.identity, incident="other", msg_id=MSG,
                                 from_aor=aor("o"), to_aor=aor("d"),
                                 created_wall_s=net.now, sip=SIP)
    forged = [
        (o.identity, parcel.signed.replace(b"hello", b"HELLO"), parcel.signature),
        (mallory, parcel.signed, parcel.signature),   # not sent by its origin
        (o.identity, wrong_incident.signed, wrong_incident.signature),
    ]
    for sender, signed, sig in forged:
        r.live_sf.on_mesh(unicast(sender, encode_message(SfMsgType.OFFER, signed, sig)),
                          net.now)
        net.command("r")
    counters = r.live_sf.counters
    assert (counters["sf_drop_forged_parcel"], counters["sf_drop_forged_offer"],
            counters["sf_drop_wrong_incident"]) == (1, 1, 1)
    assert r.live_sf.held_for_others() == []
    assert r.storage is not None and r.storage.load()[0] == []
    r.live_sf.on_mesh(unicast(o.identity, encode_message(SfMsgType.OFFER, parcel.signed,
                                                         parcel.signature)), net.now)
    net.command("r")
    assert [s.msg_id for s in r.live_sf.held_for_others()] == [MSG]


def test_a_handset_holds_only_its_own(chain: Net) -> None:
    net = chain
    o = net.start("o")
    d = net.start("d")
    parcel = make_parcel(o.identity, incident="sf-test", msg_id=MSG, from_aor=aor("o"),
                         to_aor=aor("r"), created_wall_s=net.now, sip=SIP)
    d.live_sf.on_mesh(unicast(o.identity, encode_message(SfMsgType.OFFER, parcel.signed,
                                                         parcel.signature)), net.now)
    assert d.live_sf.counters["sf_offer_not_relay"] == 1
    assert d.live_sf.held_for_others() == [] and d.live_sf.next_event() is None


def test_a_full_relay_refuses_custody(tmp_path: Path) -> None:
    config = StoreForwardConfig(max_held_messages=1)
    net = Net(tmp_path, {"o": "handset", "r": "relay"}, config=config)
    o, r = net.start("o"), net.start("r")
    for i in range(2):
        parcel = make_parcel(o.identity, incident="sf-test", msg_id=bytes([i]) * 16,
                             from_aor=aor("o"), to_aor=aor("d"), created_wall_s=net.now,
                             sip=SIP)
        r.live_sf.on_mesh(unicast(o.identity, encode_message(
            SfMsgType.OFFER, parcel.signed, parcel.signature)), net.now)
    assert len(r.live_sf.held_for_others()) == 1
    assert r.live_sf.counters["sf_offer_refused_full"] == 1
    net.close()


# ---------------------------------------------------------------- garbage and misuse
def test_garbage_truncated_and_oversized_messages_are_counted_and_journaled(
        chain: Net) -> None:
    net = chain
    o = net.start("o")
    r = net.start("r")
    parcel = make_parcel(o.identity, incident="sf-test", msg_id=MSG, from_aor=aor("o"),
                         to_aor=aor("d"), created_wall_s=net.now, sip=SIP)
    good = encode_message(SfMsgType.OFFER, parcel.signed, parcel.signature)
    bodies = [os.urandom(64), good[:len(good) // 2], good[:-1], good + b"\x00",
              b"\x91" * (MAX_SF_MESSAGE_BYTES + 10), b"",
              encode_message(SfMsgType.OFFER, parcel.signed[:-3], parcel.signature)]
    for body in bodies:
        r.live_sf.on_mesh(unicast(o.identity, body), net.now)
        net.now += 2.0  # past the journal rate limit
    net.command("r")
    dropped = sum(n for k, n in r.live_sf.counters.items()
                  if k.startswith("sf_drop_") and k != "sf_drop_journal_suppressed")
    assert dropped == len(bodies)
    assert r.live_sf.counters["sf_drop_oversized"] == 1
    assert len(drops(r)) == len(bodies)
    assert r.live_sf.held_for_others() == []


def test_misuse_raises_local_protocol_error(chain: Net) -> None:
    net = chain
    o = net.start("o")
    sf = o.live_sf
    with pytest.raises(LocalProtocolError):
        sf.on_mesh(UnicastReceived(NodeId(b"x" * 32), b"k" * 32, AppKind.SIP, b"", 1, 1),
                   net.now)
    bad_args: list[dict[str, object]] = [
        {"msg_id": b"short"}, {"sip": b"x" * 20000}, {"to_aor": "tel:+123"},
        {"from_aor": "nobody"}]
    for bad in bad_args:
        args: dict[str, object] = {"msg_id": MSG, "from_aor": aor("o"), "to_aor": aor("d"),
                                   "sip": SIP, "now": net.now}
        args.update(bad)
        with pytest.raises(LocalProtocolError):
            sf.hold(**args)  # type: ignore[arg-type]
    assert sf.outbox() == []
    hold(net, "o")
    hold(net, "o")  # idempotent per msg_id
    assert len(sf.outbox()) == 1
    with pytest.raises(ConfigError) as info:
        StoreForward(o.node, StoreForwardConfig(retry_initial_s=0), now=0.0)  # type: ignore[arg-type]
    assert info.value.key_path == "store_forward.retry_initial_s"


def test_own_queue_is_bounded_full_refuses_new_never_drops_held(tmp_path: Path) -> None:
    """Issue 7: a held message was answered 202, so a full queue refuses the next one
    (the gateway answers 503) instead of evicting an undelivered one (it used to drop the
    oldest); a finished message still makes room."""
    net = Net(tmp_path, {"o": "handset", "d": "handset"},
              config=StoreForwardConfig(max_own_messages=2))
    net.start("o")
    for i in range(2):
        hold(net, "o", msg_id=bytes([i]) * 16)
        net.run_for(1.0)
    sf = net.hosts["o"].live_sf
    with pytest.raises(HoldRefused):
        hold(net, "o", msg_id=b"\x02" * 16)
    assert [s.msg_id for s in sf.outbox()] == [b"\x00" * 16, b"\x01" * 16]
    assert sf.counters["sf_refused_full"] == 1
    assert SfStorage.open(tmp_path / "o.sf.db").load()[2] == sf.outbox()
    net.start("d")                                  # both are delivered: room again
    net.run_until(net.now + 10.0)
    assert [s.state for s in sf.outbox()] == [HeldState.DELIVERED] * 2
    hold(net, "o", msg_id=b"\x02" * 16)
    assert [s.msg_id for s in sf.outbox()] == [b"\x01" * 16, b"\x02" * 16]
    net.close()


def test_unanswered_delivery_is_offered_again_after_the_timeout(tmp_path: Path) -> None:
    config = StoreForwardConfig(local_delivery_timeout_s=5.0, poll_interval_s=0.5,
                                retry_initial_s=1.0, retry_max_s=2.0)
    net = Net(tmp_path, {"o": "handset", "d": "handset"}, config=config)
    net.start("o")
    d = net.start("d")
    d.answer_deliveries = False
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(4.0)
    assert len(d.client) == 1                  # handed over once, then waiting
    net.run_for(4.0)
    assert d.live_sf.counters["sf_local_delivery_timeout"] == 1
    assert len(d.client) == 2                  # the gateway never answered: again
    net.close()


def test_old_delivered_ids_are_forgotten(tmp_path: Path) -> None:
    config = StoreForwardConfig(delivered_keep_s=10.0, max_age_s=5.0)
    net = Net(tmp_path, {"o": "handset", "d": "handset"}, config=config)
    net.start("o")
    d = net.start("d")
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(2.0)
    assert d.live_sf.is_delivered(MSG)
    assert d.storage is not None and d.storage.load()[1] == [MSG]
    net.run_for(130.0)
    assert not d.live_sf.is_delivered(MSG)
    assert d.storage.load()[1] == []
    assert net.hosts["o"].live_sf.outbox() == []   # finished and older than max_age_s
    net.close()


def test_harness_config_is_valid() -> None:
    assert SF_CONFIG.validate() == []


def test_state_changes_are_journaled_with_sf_event_types(chain: Net) -> None:
    net = chain
    o, r, d = net.hosts["o"], net.hosts["r"], net.hosts["d"]
    net.start("o")
    net.start("r")
    net.run_until(3.0)
    hold(net, "o")
    net.run_for(2.0)
    net.start("d")
    net.run_for(6.0)
    assert len(d.client) == 1

    def records(host: Host, kind: J) -> list[dict[str, object]]:
        return [dict(rec.data) for rec in host.journal if rec.type is kind]
    held = records(o, J.SF_HELD)
    assert [(h["msg_id"], h["to"], h["state"]) for h in held] == [(MSG.hex(), aor("d"),
                                                                     "queued")]
    assert all(h["origin"] == o.identity.node_id.hex() for h in held)
    assert [c["holder"] for c in records(o, J.SF_CUSTODY)] == [r.identity.node_id.hex()]
    assert [c["taken"] for c in records(r, J.SF_CUSTODY)] == [True]
    delivered = records(d, J.SF_DELIVERED)
    assert [(x["msg_id"], x["from"]) for x in delivered] == [(MSG.hex(), aor("o"))]
    assert [x["dest"] for x in records(o, J.SF_RECEIPT)] == [d.identity.node_id.hex()]
    assert all(b"hello" not in repr(rec.data).encode() for h in (o, r, d) for rec in h.journal)


def test_only_typed_overlay_records_prompt_an_urgent_probe(tmp_path: Path) -> None:
    """A NEIGHBOUR_UP (or ROUTE_CHANGED with a next hop) of a node held messages wait for
    probes it at once; the store-and-forward core reads the typed payload, so a record
    without one (built from a bare mapping) and a lost route prompt nothing."""
    net = Net(tmp_path, {"o": "handset", "d": "handset"})
    net.start("o")
    net.start("d")
    net.run_until(6.0)
    net.cut("o", "d")
    net.run_for(3.0)
    hold(net, "o")
    net.run_for(20.0)
    sf = net.hosts["o"].live_sf
    d_hex = net.hosts["d"].identity.node_id.hex()
    before = sf.counters["sf_probes_urgent"]
    now = net.now + 1.0                                # past the gap since the last probe
    sf.on_overlay_record(JournalRecord(J.NEIGHBOUR_UP, {"neighbour": d_hex}), now)
    sf.on_overlay_record(JournalRecord.of(RouteChanged(dst=d_hex, next_hop=None, hops=None,
                                                       metric=None)), now)
    sf.on_overlay_record(JournalRecord.of(NeighbourUp(neighbour="not hex", addr="a",
                                                      role="relay")), now)
    assert sf.counters["sf_probes_urgent"] == before
    sf.on_overlay_record(JournalRecord.of(NeighbourUp(neighbour=d_hex, addr="a",
                                                      role="handset")), now)
    assert sf.counters["sf_probes_urgent"] == before + 1
    net.close()
