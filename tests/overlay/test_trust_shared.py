"""One trust store, two overlays (a relay's island mesh and its uplink mesh), and a store
restored from disk: what each overlay enforces and sends."""

from __future__ import annotations

import random

from meshcomm.location.binding import make_binding
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, TrustStore, make_trust_record
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, MsgType, encode_frame, parse_frame_untrusted, seal

ROOT = Identity(b"R" * 32)
AID = Identity(b"A" * 32)
FAR = Identity(b"F" * 32)
POLICY = TrustPolicy(TrustMode.OPEN, frozenset({ROOT.public_key}))


def _node(seed: int, store: TrustStore | None, policy: TrustPolicy = POLICY) -> MeshNode:
    return MeshNode(Identity(bytes([seed]) * 32), NodeSettings(incident="inc", trust=policy),
                    verifier=SignatureVerifier(), rng=random.Random(seed), now=0.0,
                    trust=store)


def test_a_record_learned_on_one_overlay_is_enforced_and_flooded_on_the_other() -> None:
    store = TrustStore("inc", POLICY.agency_keys, SignatureVerifier())
    island, uplink = _node(1, store), _node(2, store)
    far = make_binding(FAR, incident="inc", seq=1, aor="sip:far@other.site",
                       contacts=("sip:far@x",), issued_at=0.0, lifetime_s=600)
    uplink.receive(encode_frame(far.envelope, Hop(ttl=4)), LinkAddr("uplink|10.0.0.9:1"), 0.0)
    assert uplink.table.lookup("sip:far@other.site")
    uplink.to_send(0.0)
    record = make_trust_record(ROOT, incident="inc", kind=TrustKind.REVOKE_DEVICE,
                               subject=FAR.public_key, issued_at=0)
    island.receive(encode_frame(record.envelope, Hop(ttl=4)), LinkAddr("wlan0|[fe80::1]:1"),
                   1.0)
    assert not uplink.table.lookup("sip:far@other.site")      # enforced on the uplink too
    sent = [parse_frame_untrusted(d.data)[0] for d in uplink.to_send(1.0)]
    assert any(env.msg_type is MsgType.TRUST for env in sent)   # and flooded there
    assert uplink.overlay.trust.active and uplink.overlay.trust.digest_field() != []


def test_an_agency_added_before_a_restart_is_trusted_at_start() -> None:
    store = TrustStore("inc", POLICY.agency_keys, SignatureVerifier())
    store.restore([make_trust_record(ROOT, incident="inc", kind=TrustKind.ADD_AGENCY,
                                     subject=AID.public_key, issued_at=0)])
    node = _node(3, store)
    assert node.table.policy.agency_keys == {ROOT.public_key, AID.public_key}


def test_without_records_the_policy_is_left_alone() -> None:
    node = _node(4, None)
    assert node.table.policy is node.settings.trust


def test_pull_answers_are_rate_limited_per_host() -> None:
    """A neighbour asking again and again for the whole store gets a burst, then a trickle:
    a small PULL does not make the node rebroadcast everything each time."""
    store = TrustStore("inc", POLICY.agency_keys, SignatureVerifier())
    for n in range(200):
        assert store.offer(make_trust_record(ROOT, incident="inc", kind=TrustKind.REVOKE_DEVICE,
                                             subject=n.to_bytes(32, "big"), issued_at=0),
                           1e6) is None
    holder = _node(5, store)
    asker = Identity(b"Q" * 32)
    ids = store.ids()
    sent = 0
    for round_no in range(20):
        now = 1.0 + round_no          # past the per-record repeat gap each time
        for i in range(0, len(ids), 64):
            pull = seal(asker, MsgType.TRUST_PULL, "inc", round_no * 10 + i, ids[i:i + 64])
            holder.receive(encode_frame(pull), LinkAddr(f"wlan0|[fe80::9]:{i + 1}"), now)
        sent += sum(1 for d in holder.to_send(now)
                    if parse_frame_untrusted(d.data)[0].msg_type is MsgType.TRUST)
    assert 200 <= sent <= 256 + 20 * 64     # the first full answer, then 64 a second
    assert holder.counters["trust_pull_answers_limited"] > 0
