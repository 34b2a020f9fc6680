"""Role-scoped credentials and role addresses under the agency policy (issue 12 point 3),
across an in-memory chain of whole nodes: a medic's claim on incident-commander@ is
answered 403 by its own gateway and refused by every node; a signed hand-over moves
ops-chief@ and calls to it follow within 5 s."""

from __future__ import annotations

from meshcomm.cli.ctl_cmd import format_who
from meshcomm.location.binding import make_binding
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.overlay.counters import TxTag
from meshcomm.runtime.handlers import who_entry_json
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.roles import sign_handover
from meshcomm.sip.sdp import make_offer
from meshcomm.sip.ua_events import IncomingCall, RequestFailed, RequestSucceeded
from meshcomm.wire.envelope import Hop
from tests.node.gateway_net import DOMAIN, Net, of_kind

AGENCY = Identity(bytes(range(3, 35)))
ROLES = {0: "medic", 1: "command", 2: "medic", 3: "command"}
IC = f"sip:incident-commander@{DOMAIN}"
OPS = f"sip:ops-chief@{DOMAIN}"
WALL = 1.7e9


def agency_net() -> Net:
    def credential(index: int, ident: Identity) -> bytes:
        return issue_credential(AGENCY, aor_pattern=f"sip:*@{DOMAIN}", role=ROLES[index],
                                device_key=ident.public_key, issued_at=int(WALL) - 3600,
                                expires_at=int(WALL) + 86400).to_bytes()
    net = Net(4, trust=TrustPolicy(TrustMode.AGENCY, frozenset({AGENCY.public_key})),
              credential=credential)
    net.converge()
    return net


def register(net: Net, index: int, port: int, user: str) -> int:
    ua = net.add_ua(index, user, port) if ("127.0.0.1", port) not in net.stations[
        index].uas else net.stations[index].uas[("127.0.0.1", port)]
    before = len(net.events(index, port))
    ua.register(expires_s=600)
    net.run_until(lambda: any(isinstance(e, RequestSucceeded | RequestFailed)
                              and e.method == "REGISTER" for e in net.events(index, port)[before:]))
    (done,) = [e for e in net.events(index, port)[before:]
               if isinstance(e, RequestSucceeded | RequestFailed) and e.method == "REGISTER"]
    return done.status


def test_medic_claim_on_a_command_address_is_403_here_and_refused_everywhere() -> None:
    net = agency_net()
    assert register(net, 0, 5070, "incident-commander") == 403
    assert register(net, 0, 5071, "medic-7") == 200            # its own address is fine
    # the node's own table refuses it too; a node built to flood the claim anyway (the
    # binding signed with its real key and credential, put on the air): every node refuses
    medic = net.stations[0]
    assert medic.node.table.claim_refusal(IC, medic.node.identity.public_key,
                                          medic.node.credential, WALL) == "role_scope"
    claim = make_binding(medic.node.identity, incident=medic.node.settings.incident,
                         seq=medic.node.overlay.next_seq(), aor=IC, contacts=("x@mesh",),
                         issued_at=medic.node.overlay.wall_time(net.now), lifetime_s=600,
                         credential=medic.node.credential)
    medic.pump.command(net.now, lambda: medic.node.overlay.transmit(
        claim.envelope, Hop(ttl=8), None, TxTag.BINDING))
    net.run_for(5.0)
    assert all(st.node.table.lookup(IC) == [] for st in net.stations)
    assert net.stations[1].node.counters["drop_role_scope"] >= 1
    assert net.stations[3].node.table.lookup(f"sip:medic-7@{DOMAIN}")


def test_signed_handover_moves_ops_chief_and_calls_follow_within_5_s() -> None:
    net = agency_net()
    assert register(net, 1, 5071, "ops-chief") == 200
    net.run_until(lambda: all(st.node.table.lookup(OPS) for st in net.stations))
    assert register(net, 3, 5073, "ops-chief") == 403          # held: no hand-over yet
    old, new = net.stations[1], net.stations[3]
    start = net.now
    handover = sign_handover(old.node.identity, aor=OPS, new_key=new.node.identity.public_key,
                             from_time=int(old.node.overlay.wall_time(net.now)))
    new.node.accept_handover(handover, net.now)
    assert register(net, 3, 5073, "ops-chief") == 200
    net.run_until(lambda: [s.binding.node_id for s in net.stations[0].node.table.lookup(OPS)]
                  == [new.node.node_id], timeout_s=5.0)
    caller = net.add_ua(0, "dispatch", 5070)
    caller.register(expires_s=600)
    caller.invite(OPS, make_offer(address="127.0.0.1", rtp_port=4000, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(3, 5073), IncomingCall)), timeout_s=5.0)
    assert net.now - start < 5.0
    assert of_kind(net.events(1, 5071), IncomingCall) == []
    print(f"\nhand-over to call ringing at the new holder: {net.now - start:.2f} s")
    held = [s.state.value for s in net.stations[2].node.table
            if s.binding.aor.lower() == OPS]
    assert sorted(held) == ["conflict", "verified"]
    # ctl who shows the hand-over, the journal the displaced holder
    (entry,) = [e for e in net.stations[2].node.overlay.who(net.now)
                if e.aor.lower() == OPS and e.state == "verified"]
    assert entry.node_id == new.node.node_id.hex()
    assert entry.handover_from == handover.from_time
    assert "handed over" in format_who([who_entry_json(entry)])
    displaced = [r.data for r in net.stations[2].journal
                 if r.type.value == "binding.conflict" and r.data.get("aor", "").lower() == OPS]
    assert displaced and displaced[-1]["node"] == old.node.node_id.hex()
