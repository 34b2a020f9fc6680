"""An island relay's RESOLVED answer is believed only for what its owner signed (issue 12,
meshcomm.node.tunnel_answer). Whole node cores on two islands (CrossSiteNet, real keys):
a0 asks its island's uplinked relay a2 for a remote AoR; the test hands a0's tunnel the
answer a lying a2 would send (as the overlay delivers a2's signed unicast, before a2's
honest one). Forged entries (another node's binding, another AoR, an expired, replayed,
tampered or unsigned one, a revoked key, a de-registration) teach no route and no key,
are counted and journaled; the honest answer still does."""

from __future__ import annotations

import dataclasses

from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import EnvelopeDropped
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import TrustMode
from meshcomm.node.kinds import AppKind
from meshcomm.node.tunnel import Tunnel, TunnelCounter
from meshcomm.node.tunnel_answer import (
    DROP_JOURNAL_BURST,
    DROP_KIND,
    AnswerReject,
    entry_refusal,
)
from meshcomm.node.tunnel_wire import AnswerEntry, ResolveStatus, encode_resolved
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, make_trust_record
from meshcomm.types import NodeId
from tests.node.cross_site_net import INCIDENT, WALL, CrossSiteNet, Station
from tests.node.test_cross_site_revocation import ROOT, _net


def _tunnel(st: Station) -> Tunnel:
    assert st.core.tunnel is not None
    return st.core.tunnel


def _binding_of(st: Station) -> Binding:
    (stored,) = st.core.node.table.lookup(st.aor)
    return stored.binding


def _signed_by(st: Station, *, aor: str | None = None, seq: int = 1, issued_at: float,
               lifetime_s: int = 600) -> Binding:
    return make_binding(st.core.node.identity, incident=INCIDENT, seq=seq,
                        aor=aor or st.aor, contacts=(f"sip:{st.name}@mesh",),
                        issued_at=issued_at, lifetime_s=lifetime_s, hold_s=60)


def _lie(net: CrossSiteNet, asker: Station, relay: Station, aor: str,
         entries: tuple[AnswerEntry, ...]) -> None:
    """``asker`` asks for ``aor``; ``relay`` answers ``entries`` at once."""
    tunnel = _tunnel(asker)
    before = set(tunnel._asked)

    def ask() -> None:
        tunnel.resolve(7, aor, net.now)
        asker.core.settle(net.now)
    asker.pump.command(net.now, ask)
    (wire_id,) = set(tunnel._asked) - before
    body = encode_resolved(wire_id, ResolveStatus.FOUND, entries)
    answer = UnicastReceived(NodeId(relay.core.node_id), relay.core.node.identity.public_key,
                             AppKind.RESOLVED, body, 2, 0)

    def answer_it() -> None:       # as the core routes a RESOLVED unicast, then settles
        tunnel.on_unicast(answer, False, net.now)
        asker.core.settle(net.now)
    asker.pump.command(net.now, answer_it)


def _dropped(st: Station) -> list[str]:
    return [e.payload.reason for e in st.edge.journal if isinstance(e, JournalRecord)
            and isinstance(e.payload, EnvelopeDropped) and e.payload.kind == DROP_KIND]


def test_a_relay_that_forges_its_answer_is_not_believed() -> None:
    net = _net()
    a0, a1, a2 = net.stations["a0"], net.stations["a1"], net.stations["a2"]
    b0, b1, b2 = net.stations["b0"], net.stations["b1"], net.stations["b2"]
    wall = WALL + net.now
    b0_binding, b1_binding = _binding_of(b0), _binding_of(b1)
    a1_binding = _binding_of(a1)
    tampered = dataclasses.replace(
        b0_binding, envelope=dataclasses.replace(
            b0_binding.envelope, signature=bytes(64)))
    far = (NodeId(b2.core.node_id),)
    lies: list[tuple[str, AnswerEntry, AnswerReject]] = [
        # b1 named for b0's AoR with b0's binding, or with its own (of b1's AoR)
        (b0.aor, AnswerEntry(b1.core.node_id, far, 60, b0_binding), AnswerReject.WRONG_NODE),
        (b0.aor, AnswerEntry(b1.core.node_id, far, 60, b1_binding), AnswerReject.WRONG_AOR),
        # a binding b1 signed for another AoR; one of another incident
        (b0.aor, AnswerEntry(b1.core.node_id, far, 60,
                             _signed_by(b1, aor="sip:other@fire.example", issued_at=wall)),
         AnswerReject.WRONG_AOR),
        (b0.aor, AnswerEntry(b0.core.node_id, far, 60, make_binding(
            b0.core.node.identity, incident="another-incident", seq=1, aor=b0.aor,
            contacts=(), issued_at=wall, lifetime_s=600)), AnswerReject.WRONG_INCIDENT),
        # stale: b0's binding whose signed end is two days past; a1's replayed older one
        (b0.aor, AnswerEntry(b0.core.node_id, far, 60,
                             _signed_by(b0, issued_at=wall - 2 * 86400 - 700)),
         AnswerReject.EXPIRED),
        (a1.aor, AnswerEntry(a1.core.node_id, far, 60,
                             _signed_by(a1, seq=a1_binding.seq - 1, issued_at=wall)),
         AnswerReject.STALE),
        (b0.aor, AnswerEntry(b0.core.node_id, far, 60,
                             _signed_by(b0, seq=b0_binding.seq + 1, issued_at=wall,
                                        lifetime_s=0)), AnswerReject.DEREGISTERED),
        (b0.aor, AnswerEntry(b0.core.node_id, far, 60, tampered), AnswerReject.BAD_SIGNATURE),
        (b0.aor, AnswerEntry(b0.core.node_id, far, 60), AnswerReject.NO_BINDING),
        (b0.aor, AnswerEntry(a2.core.node_id, far, 60), AnswerReject.NO_BINDING),
    ]
    tunnel = _tunnel(a0)
    for n, (aor, entry, reason) in enumerate(lies, 1):
        _lie(net, a0, a2, aor, (entry,))
        assert tunnel.counters[TunnelCounter.DROP_BAD_ANSWER] == n, reason
        assert _dropped(a0)[-1] == reason.value
        assert tunnel.route(entry.node, net.now) is None, reason
    e2e = a0.core.e2e
    assert e2e is not None
    assert e2e.key_of(b0.core.node_id) is None and e2e.key_of(b1.core.node_id) is None
    # The revoked key: b1 revoked (a2 may not have heard yet, or lies): its genuine binding.
    record = make_trust_record(ROOT, incident=INCIDENT, kind=TrustKind.REVOKE_DEVICE,
                               subject=b1.core.node.identity.public_key,
                               issued_at=int(wall), note="handset lost")
    a0.pump.command(net.now, lambda: a0.core.node.overlay.trust.originate(record, net.now))
    _lie(net, a0, a2, b1.aor, (AnswerEntry(b1.core.node_id, far, 60, b1_binding),))
    assert _dropped(a0)[-1] == AnswerReject.REVOKED.value
    assert tunnel.route(b1.core.node_id, net.now) is None
    assert e2e.key_of(b1.core.node_id) is None
    # A lie beside the truth: the forged entry goes, the genuine one is learned.
    drops = tunnel.counters[TunnelCounter.DROP_BAD_ANSWER]
    _lie(net, a0, a2, b0.aor, (AnswerEntry(b1.core.node_id, far, 60, b0_binding),
                               AnswerEntry(b0.core.node_id, far, 60, b0_binding)))
    assert tunnel.counters[TunnelCounter.DROP_BAD_ANSWER] == drops + 1
    assert tunnel.route(b0.core.node_id, net.now) is not None
    assert e2e.key_of(b0.core.node_id) == b0.core.node.identity.public_key
    assert tunnel.route(b1.core.node_id, net.now) is None


def test_the_honest_relay_is_believed_and_a_message_crosses() -> None:
    net = _net()
    a0, b0 = net.stations["a0"], net.stations["b0"]
    sent = net.send("a0", "b0", "hello across")
    net.run(net.now + 10.0)
    assert [e.body for e in b0.inbox] == [b"hello across"], sent
    assert _tunnel(a0).counters[TunnelCounter.DROP_BAD_ANSWER] == 0
    assert _tunnel(a0).counters[TunnelCounter.RESOLVES_ANSWERED] >= 1
    assert a0.core.e2e is not None
    assert a0.core.e2e.key_of(b0.core.node_id) == b0.core.node.identity.public_key


def test_a_flood_of_forged_answers_is_counted_and_its_journal_bounded() -> None:
    net = _net()
    a0, a2, b0, b1 = (net.stations[n] for n in ("a0", "a2", "b0", "b1"))
    forged = AnswerEntry(b1.core.node_id, (NodeId(a2.core.node_id),), 60, _binding_of(b0))
    journal_before = len(_dropped(a0))
    for _ in range(200):
        _lie(net, a0, a2, b0.aor, (forged,) * 8)
    tunnel = _tunnel(a0)
    assert tunnel.counters[TunnelCounter.DROP_BAD_ANSWER] == 1600
    # One reason, one relay, no time passing: journaled once (at most the burst).
    assert 1 <= len(_dropped(a0)) - journal_before <= DROP_JOURNAL_BURST
    assert tunnel.route(b1.core.node_id, net.now) is None


def test_under_the_agency_policy_an_uncredentialed_binding_is_not_believed() -> None:
    """A key that signs a binding of someone else's AoR is refused as gossip refuses it
    (the policy's credential check); a credential for the AoR makes it believable."""
    net = _net()
    a0, b0, b2 = net.stations["a0"], net.stations["b0"], net.stations["b2"]
    tunnel = _tunnel(a0)
    table = a0.core.node.table
    table.policy = dataclasses.replace(table.policy, mode=TrustMode.AGENCY)
    wall = WALL + net.now
    thief = Identity(b"T" * 32)
    claim = make_binding(thief, incident=INCIDENT, seq=1, aor=b0.aor, contacts=(),
                         issued_at=wall, lifetime_s=600)
    entry = AnswerEntry(thief.node_id, (NodeId(b2.core.node_id),), 60, claim)
    checks = tunnel._checks
    assert entry_refusal(entry, b0.aor, b"", checks, wall) is AnswerReject.UNTRUSTED
    cred = issue_credential(ROOT, aor_pattern="sip:*@fire.example", role="medic",
                            device_key=b0.core.node.identity.public_key,
                            issued_at=int(wall) - 60, expires_at=int(wall) + 86400)
    owned = make_binding(b0.core.node.identity, incident=INCIDENT, seq=1, aor=b0.aor,
                         contacts=(), issued_at=wall, lifetime_s=600,
                         credential=cred.to_bytes())
    good = AnswerEntry(b0.core.node_id, (NodeId(b2.core.node_id),), 60, owned)
    assert entry_refusal(good, b0.aor, b"", checks, wall) is None
