"""The DHT bridge and the node's trust records (issue 12.4): a revoked device is never
resolved across sites, what the remote view holds of it leaves when the revocation
arrives (watchers hear it), a revoked relay's attachments are dropped, a revoked
credential's binding too, an added mutual-aid agency's handsets resolve, and all of it
holds after a restart (the records come back from trust.sqlite).

The reading relay is a real MeshNode (its TrustSync over a TrustStore on SQLite) with a
bridge wired to it as the node core wires it; the records are real, signed by a root
agency key."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from meshcomm.dht.bridge import DhtBridge, NotFound, RemoteChanged, Resolved
from meshcomm.dht.counters import DhtCounter
from meshcomm.dht.remote import RemoteState
from meshcomm.journal.payloads import DhtValueDropped, RemoteBindingChanged
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.revocation_store import TrustDb, open_trust_store
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, credential_id, make_trust_record
from meshcomm.security.verify import SignatureVerifier

from .helpers import INCIDENT, WALL
from .net import SECRET, Net, Station, identity

ROOT = Identity(b"R" * 32)
AID = Identity(b"M" * 32)          # a mutual-aid agency, not trusted at first
MEDIC = identity("medic")
AOR = "sip:medic@fire.example"
OPEN = TrustPolicy(TrustMode.OPEN, frozenset({ROOT.public_key}))
AGENCY = TrustPolicy(TrustMode.AGENCY, frozenset({ROOT.public_key}))


@dataclass
class Reader:
    """A relay of another site that resolves: its node, trust database and station."""

    node: MeshNode
    db: TrustDb
    station: Station

    def revoke(self, net: Net, kind: TrustKind, subject: bytes,
               signer: Identity = ROOT) -> None:
        record = make_trust_record(signer, incident=INCIDENT, kind=kind, subject=subject,
                                   issued_at=int(WALL + net.now))
        assert self.node.overlay.trust.originate(record, net.now) is None
        net.run(net.now + 0.5)


def _reader(net: Net, path: Path, name: str = "reader",
            policy: TrustPolicy = OPEN) -> Reader:
    ident = identity(name)
    db, store = open_trust_store(path, INCIDENT, policy.agency_keys, SignatureVerifier())
    node = MeshNode(ident, NodeSettings(incident=INCIDENT, trust=policy),
                    verifier=SignatureVerifier(), rng=random.Random(name), now=net.now,
                    wall_offset_s=WALL, trust=store)
    trust = node.overlay.trust
    bridge = DhtBridge(ident, node.table, SECRET, net.config, net.verifier,
                       random.Random(name), now=net.now, wall_offset_s=WALL,
                       revocations=trust)
    store.observers.append(bridge.trust_changed)        # as NodeCore wires it
    if name not in net.stations:
        net.model.add_node(name)
    station = Station(name, ident, node.table, bridge)
    net.stations[name] = station
    return Reader(node, db, station)


def _sites(tmp_path: Path, policy: TrustPolicy = OPEN) -> tuple[Net, Station, Reader]:
    net = Net()
    publisher = net.relay("publisher")
    reader = _reader(net, tmp_path / "trust.sqlite", policy=policy)
    net.run(10.0)
    return net, publisher, reader


def _drops(station: Station, reason: str) -> int:
    return sum(1 for p in station.journal(DhtValueDropped) if p.reason == reason)


def test_a_device_revoked_while_watched_leaves_the_view_and_is_not_resolved(
        tmp_path: Path) -> None:
    net, publisher, reader = _sites(tmp_path)
    net.register(publisher, MEDIC, AOR)
    st = reader.station
    assert isinstance(net.resolve(st, AOR), Resolved)
    assert st.bridge.watch(AOR, net.now)            # a dialog uses it: watched
    reader.revoke(net, TrustKind.REVOKE_DEVICE, MEDIC.public_key)
    news = [e for e in st.events if isinstance(e, RemoteChanged)]
    assert news and news[-1].bindings == ()          # the watchers (the tunnel) hear it
    assert st.journal(RemoteBindingChanged)[-1].state == RemoteState.REVOKED
    assert st.bridge.counters[DhtCounter.REVOKED_FORGOTTEN] == 1
    # The DHT still holds the record (the far relay refreshes it until it hears of the
    # revocation); read again, it is dropped, counted and journaled.
    answer = net.resolve(st, AOR)
    assert isinstance(answer, NotFound)
    assert st.bridge.counters[DhtCounter.DROP_REVOKED] >= 1
    assert _drops(st, "revoked") >= 1
    # ... and a watch's listen gets the record again: dropped the same way.
    net.register(publisher, MEDIC, AOR)               # a refresh with a new sequence
    net.run(net.now + 5.0)
    assert st.bridge.remote.view(AOR) == ()


def test_the_revocation_holds_after_a_restart(tmp_path: Path) -> None:
    net, publisher, reader = _sites(tmp_path)
    net.register(publisher, MEDIC, AOR)
    reader.revoke(net, TrustKind.REVOKE_DEVICE, MEDIC.public_key)
    reader.db.close()
    # The relay restarts: a new node and bridge (empty remote view), the records read
    # back from trust.sqlite.
    again = _reader(net, tmp_path / "trust.sqlite")
    net.run(net.now + 10.0)
    assert len(again.node.overlay.trust.store) == 1
    assert isinstance(net.resolve(again.station, AOR), NotFound)
    assert again.station.bridge.counters[DhtCounter.DROP_REVOKED] >= 1
    # Control: a relay without the record resolves the same AoR.
    control = _reader(net, tmp_path / "other.sqlite", name="control")
    net.run(net.now + 10.0)
    assert isinstance(net.resolve(control.station, AOR), Resolved)
    again.db.close()
    control.db.close()


def test_a_revoked_relays_attachments_are_dropped_and_another_relay_still_reaches(
        tmp_path: Path) -> None:
    net, publisher, reader = _sites(tmp_path)
    second = net.relay("second")
    net.run(net.now + 10.0)
    binding = net.register(publisher, MEDIC, AOR)
    net.learn(second, binding)                        # both relays of the island attach it
    net.run(net.now + 1.0)
    st = reader.station
    answer = net.resolve(st, AOR)
    assert isinstance(answer, Resolved)
    assert {a.relay for a in answer.bindings[0].relays} == {publisher.identity.node_id,
                                                            second.identity.node_id}
    reader.revoke(net, TrustKind.REVOKE_DEVICE, publisher.identity.public_key)
    (found,) = st.bridge.remote.view(AOR)
    assert [a.relay for a in found.relays] == [second.identity.node_id]
    assert st.bridge.watch(AOR, net.now)
    net.run(net.now + 80.0)                 # refreshes of both relays arrive by the watch
    answer = net.resolve(st, AOR)
    assert isinstance(answer, Resolved)
    assert [a.relay for a in answer.bindings[0].relays] == [second.identity.node_id]
    assert st.bridge.counters[DhtCounter.DROP_RELAY_REVOKED] >= 1
    assert _drops(st, "relay_revoked") >= 1


def _credentialed(agency: Identity, who: Identity, aor: str, seq: int = 1) -> Binding:
    cred = issue_credential(agency, aor_pattern="sip:*@fire.example", role="medic",
                            device_key=who.public_key, issued_at=int(WALL) - 60,
                            expires_at=int(WALL) + 86400).to_bytes()
    return make_binding(who, incident=INCIDENT, seq=seq, aor=aor, contacts=("mesh:x",),
                        issued_at=WALL, lifetime_s=3600, credential=cred)


def test_agency_policy_credential_revocation_and_an_added_mutual_aid_agency(
        tmp_path: Path) -> None:
    net, publisher, reader = _sites(tmp_path, AGENCY)
    st = reader.station
    ours = _credentialed(ROOT, MEDIC, AOR)
    crew = _credentialed(AID, identity("crew"), "sip:crew@fire.example")
    net.learn(publisher, ours)
    net.learn(publisher, crew)
    assert isinstance(net.resolve(st, AOR), Resolved)
    assert isinstance(net.resolve(st, crew.aor), NotFound)      # not a trusted agency yet
    assert st.bridge.counters[DhtCounter.DROP_BAD_CREDENTIAL] >= 1
    reader.revoke(net, TrustKind.ADD_AGENCY, AID.public_key)    # a mutual-aid agency joins
    net.run(net.now + 15.0)                                     # the negative answer ends
    assert isinstance(net.resolve(st, crew.aor), Resolved)
    assert ours.credential is not None
    reader.revoke(net, TrustKind.REVOKE_CREDENTIAL, credential_id(ours.credential))
    assert st.bridge.remote.view(AOR) == ()
    assert isinstance(net.resolve(st, AOR), NotFound)
    assert st.bridge.counters[DhtCounter.DROP_CREDENTIAL_REVOKED] >= 1
    assert _drops(st, "credential_revoked") >= 1
    assert isinstance(net.resolve(st, crew.aor), Resolved)      # others unaffected
    reader.db.close()
