"""Held MESSAGEs across sites stay sealed (issue 12.5, store-and-forward; whole node cores
on CrossSiteNet with real SQLite stores): the origin keeps a MESSAGE it cannot seal,
learns the destination by resolution once the uplink is back, seals it and delivers it
through the tunnel; no relay's database, journal or radio frame ever holds its text."""

from __future__ import annotations

import hashlib
from pathlib import Path

from meshcomm.node.e2e_sip import is_sealed
from meshcomm.node.kinds import AppKind
from meshcomm.node.sf_counters import SfCounter
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import HeldMessage, HeldState, PersistOp, SfPersist
from meshcomm.node.storeforward_wire import SfMsgType, encode_message, make_parcel
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.types import NodeId
from tests.node.cross_site_net import INCIDENT, WALL, CrossSiteNet

ISLANDS = {"A": ["a0", "a1", "a2"], "B": ["b2", "b1", "b0"]}
TEXT = "casualty count 7 at grid 4471-alpha"


class CapturingNet(CrossSiteNet):
    """Every frame put on a radio or the uplink is kept (what a listener records)."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.frames: list[bytes] = []
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def _push(self, delay: float, dst: str, data: bytes, src: str) -> None:
        self.frames.append(data)
        super()._push(delay, dst, data, src)


def _stores_holding(tmp_path: Path, text: bytes, *, but: tuple[str, ...]) -> list[str]:
    """The database files (with WAL and shared memory) of nodes other than ``but`` that
    contain ``text``."""
    return [f.name for f in sorted(tmp_path.iterdir())
            if f.name.split(".")[0] not in but and text in f.read_bytes()]


def _journals_holding(net: CrossSiteNet, text: str, *, but: tuple[str, ...]) -> list[str]:
    return [st.name for st in net.stations.values() if st.name not in but
            and any(text in repr(r) for r in st.edge.journal)]


def test_a_message_to_a_never_seen_remote_aor_is_never_in_clear_at_a_relay(
        tmp_path: Path) -> None:
    net = CapturingNet(ISLANDS, {"a2", "b2"}, sf_dir=tmp_path)
    net.run(15.0)
    net.cut_wan(True)
    net.run(net.now + 10.0)                       # the relays' uplinks are down
    net.send("a0", "b0", TEXT)                   # a0 has never seen b0's AoR
    net.run(net.now + 20.0)
    a0 = net.stations["a0"]
    assert a0.core.sf is not None
    [held] = a0.core.sf.outbox()
    assert held.state is HeldState.QUEUED        # kept by its origin only
    assert a0.core.sf.counters[SfCounter.OFFERS_SENT] == 0
    assert a0.core.sf.counters[SfCounter.RESOLVES] >= 5       # kept asking (1-2 s apart)
    for name in ("a1", "a2", "b2", "b1", "b0"):
        sf = net.stations[name].core.sf
        assert sf is not None and not sf.held_for_others()
    assert a0.edge.storage is not None
    [(parcel, _)] = [(h.parcel, h) for h in a0.edge.storage.load()[0]]
    assert not is_sealed(parcel.sip)             # the endpoint holds its own plaintext
    # ... which the grep below finds in a0's files: it would find it in a relay's.
    assert _stores_holding(tmp_path, TEXT.encode(), but=())[0].startswith("a0.sf.db")
    assert _stores_holding(tmp_path, TEXT.encode(), but=("a0",)) == []

    a0 = net.restart("a0")                       # the origin restarts, uplink still down
    net.run(net.now + 5.0)
    assert a0.core.sf is not None and [s.state for s in a0.core.sf.outbox()] == [
        HeldState.QUEUED]
    assert not net.stations["b0"].inbox

    restored_at = net.now
    net.cut_wan(False)
    net.run(net.now + 30.0)
    b0 = net.stations["b0"]
    assert [e.body for e in b0.inbox] == [TEXT.encode()]
    delay = b0.inbox[0].received_at - restored_at
    print(f"held MESSAGE to a never-seen remote AoR delivered {delay:.2f} s after the "
          f"uplink returned (resolves at a0: {a0.core.sf.counters[SfCounter.RESOLVES]})")
    assert delay <= 6.0
    assert [s.state for s in a0.core.sf.outbox()] == [HeldState.DELIVERED]
    assert a0.core.sf.counters[SfCounter.RESEALED] == 1
    assert a0.edge.storage is not None
    assert all(is_sealed(h.parcel.sip) for h in a0.edge.storage.load()[0])
    net.run(net.now + 60.0)                      # every holder's retries are over
    assert [e.body for e in b0.inbox] == [TEXT.encode()]

    secret = TEXT.encode()
    assert _stores_holding(tmp_path, secret, but=("a0",)) == []
    assert _journals_holding(net, TEXT, but=("a0", "b0")) == []
    assert not [f for f in net.frames if secret in f]


def test_a_custody_relay_carries_the_sealed_parcel_across_when_the_origin_is_gone(
        tmp_path: Path) -> None:
    net = CapturingNet(ISLANDS, {"a2", "b2"}, sf_dir=tmp_path)
    net.run(15.0)
    net.send("a0", "b0", "before")               # a0 resolves b0's AoR (node and key)
    net.run(net.now + 5.0)
    net.cut_wan(True)
    net.run(net.now + 10.0)
    net.send("a0", "b0", TEXT)
    net.run(net.now + 20.0)
    a0, a2 = net.stations["a0"], net.stations["a2"]
    assert a2.core.sf is not None
    [custody] = a2.core.sf.held_for_others()
    assert a2.edge.storage is not None
    assert all(is_sealed(h.parcel.sip) for h in a2.edge.storage.load()[0])
    a0.up = False                                # the origin dies with its copy
    net.cut_wan(False)
    net.run(net.now + 30.0)
    b0 = net.stations["b0"]
    assert [e.body for e in b0.inbox] == [b"before", TEXT.encode()]
    assert a2.core.sf.counters[SfCounter.FAR_DELIVERIES] >= 1
    assert a2.core.sf.counters[SfCounter.RECEIPTS_ACCEPTED] == 1
    assert not a2.core.sf.held_for_others()      # the receipt through the tunnel
    secret = TEXT.encode()
    assert _stores_holding(tmp_path, secret, but=("a0",)) == []
    assert not [f for f in net.frames if secret in f]
    assert custody.msg_id


def test_a_relay_refuses_custody_of_a_parcel_in_clear(tmp_path: Path) -> None:
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, sf_dir=tmp_path)
    net.run(15.0)
    a0, a2 = net.stations["a0"], net.stations["a2"]
    parcel = make_parcel(a0.core.node.identity, incident=INCIDENT, msg_id=b"clear-parcel-1",
                         from_aor=a0.aor, to_aor="sip:nobody@elsewhere.example",
                         created_wall_s=WALL + net.now, sip=b"MESSAGE sip:x " + TEXT.encode())
    offer = encode_message(SfMsgType.OFFER, parcel.signed, parcel.signature)
    assert a2.core.sf is not None
    a2.core.sf.on_mesh(UnicastReceived(NodeId(a0.core.node.node_id),
                                       a0.core.node.identity.public_key,
                                       AppKind.STORE_FORWARD, offer, 2, 1), net.now)
    assert a2.core.sf.counters[SfCounter.OFFER_REFUSED_CLEAR] == 1
    assert not a2.core.sf.held_for_others()
    with SfStorage.open(tmp_path / "a2.sf.db") as store:
        assert store.load()[0] == []


def test_custody_in_clear_restored_from_an_older_store_is_dropped(tmp_path: Path) -> None:
    origin = Identity(hashlib.sha256(b"a0").digest())
    parcel = make_parcel(origin, incident=INCIDENT, msg_id=b"old-clear-custody",
                         from_aor="sip:a0@fire.example", to_aor="sip:b0@fire.example",
                         created_wall_s=WALL, sip=b"MESSAGE sip:b0 " + TEXT.encode())
    with SfStorage.open(tmp_path / "a2.sf.db") as store:     # written before sealing
        store.apply(SfPersist(PersistOp.STORE, parcel.msg_id,
                              HeldMessage(parcel, False, HeldState.QUEUED, "a2")))
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, sf_dir=tmp_path)
    a2 = net.stations["a2"]
    assert a2.core.sf is not None and len(a2.core.sf.held_for_others()) == 1
    net.run(5.0)
    assert a2.core.sf.counters[SfCounter.CUSTODY_CLEAR_DROPPED] == 1
    assert not a2.core.sf.held_for_others()
    assert a2.edge.storage is not None and a2.edge.storage.load()[0] == []
    assert not net.stations["b0"].inbox          # not carried, in clear or otherwise
