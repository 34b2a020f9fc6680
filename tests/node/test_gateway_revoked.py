"""A revoked node's gateway stops serving its local clients (issue 12.4, gateway.revoked):
whole node cores in a chain, real signed trust records. Before the revocation the
client's REGISTER gets 200; after it, REGISTER and out-of-dialog requests get
``403 Device Revoked`` (``Credential Revoked`` for a revoked credential under the agency
policy), counted, journaled within a budget, retransmissions answered the same; requests
within a dialog and the other nodes' clients are not affected; ``ctl status`` says so."""

from __future__ import annotations

from meshcomm.cli.ctl_cmd import format_status
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.gateway.revoked import JOURNAL_BURST, RevokedCounter
from meshcomm.node.gateway.types import Address
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, credential_id, make_trust_record
from meshcomm.sip.message import SipResponse
from meshcomm.sip.ua_events import RequestFailed, RequestSucceeded
from tests.node.gateway_net import DOMAIN, Net, of_kind, registered
from tests.node.raw_sip import raw_request, received, statuses

ROOT = Identity(b"R" * 32)
WALL = 1.7e9
CLIENT: Address = ("127.0.0.1", 40100)


def _revoke(net: Net, kind: TrustKind, subject: bytes, at: int = 0) -> None:
    record = make_trust_record(ROOT, incident="default", kind=kind, subject=subject,
                               issued_at=int(WALL + net.now))
    st = net.stations[at]
    assert st.pump.command(net.now, lambda: st.node.overlay.trust.originate(
        record, net.now)) is None
    net.run_until(lambda: all(len(s.node.overlay.trust.store) == 1 for s in net.stations))


def _open_net() -> Net:
    net = Net(3, trust=TrustPolicy(TrustMode.OPEN, frozenset({ROOT.public_key})))
    net.converge()
    return net


def _drops(net: Net, index: int, reason: str) -> int:
    return sum(1 for r in net.stations[index].sip_journal()
               if r.get("dir") == "dropped" and r.get("reason") == reason)


def test_a_revoked_node_answers_its_clients_403_device_revoked() -> None:
    net = _open_net()
    alice = registered(net, 2, 5062, "alice")             # 200 before the revocation
    _revoke(net, TrustKind.REVOKE_DEVICE, net.stations[2].node.identity.public_key)
    gw = net.stations[2].gw
    trust = net.stations[2].node.overlay.trust.status()
    assert trust["this_node_revoked"] == "revoked"
    assert "THIS NODE IS REVOKED (revoked)" in format_status({"trust": trust})   # ctl status
    alice.register(expires_s=600)
    alice.message(f"sip:node0@{DOMAIN}", "are you there?")
    net.run_for(2.0)
    failed = of_kind(net.events(2, 5062), RequestFailed)
    assert [(f.method, f.status, f.reason) for f in failed] == [
        ("REGISTER", 403, "Device Revoked"), ("MESSAGE", 403, "Device Revoked")]
    assert gw.counters[RevokedCounter.REFUSED] == 2
    assert _drops(net, 2, "revoked") == 2
    assert not net.stations[0].gw.inbox                    # nothing went out
    # The built-in UA (ctl send) is refused the same way.
    send_id = net.stations[2].pump.command(net.now, lambda: net.stations[2].core.send_message(
        f"sip:node0@{DOMAIN}", "ctl send", net.now))
    net.run_for(1.0)
    assert (gw.outbox[send_id].code, gw.outbox[send_id].reason) == (403, "Device Revoked")
    # The other nodes' clients are served as before; their status says they are fine.
    bob = registered(net, 1, 5061, "bob")
    assert of_kind(net.events(1, 5061), RequestSucceeded)
    assert bob is not None
    fine = net.stations[1].node.overlay.trust.status()
    assert fine["this_node_revoked"] == ""
    assert "REVOKED" not in format_status({"trust": fine})
    assert net.stations[1].gw.counters[RevokedCounter.REFUSED] == 0


def test_in_dialog_requests_pass_retransmissions_get_the_same_answer_and_the_journal_is_bounded(
        ) -> None:
    net = _open_net()
    _revoke(net, TrustKind.REVOKE_DEVICE, net.stations[2].node.identity.public_key)
    st = net.stations[2]
    register = raw_request("REGISTER", "carol", CLIENT, from_user="carol", branch="r1",
                           call_id="reg-carol@x", uri=f"sip:{DOMAIN}",
                           headers=(f"Contact: <sip:carol@{CLIENT[0]}:{CLIENT[1]}>",))
    for _ in range(3):                                     # the client retransmits
        st.sip.receive_sip(register, CLIENT, net.now)
    net.run_for(0.5)
    answers = [m for m in received(net, 2, CLIENT) if isinstance(m, SipResponse)]
    assert [(m.status, m.reason) for m in answers] == [(403, "Device Revoked")] * 3
    assert st.gw.counters[RevokedCounter.REFUSED] == 1     # one transaction
    # A request within a dialog (To tag) is not refused here (it goes on: 404, no dialog).
    bye = raw_request("BYE", "node0", CLIENT, from_user="carol", branch="b1",
                      call_id="call-1@x", headers=())
    bye = bye.replace(b"To: <sip:node0@incident.local>",
                      b"To: <sip:node0@incident.local>;tag=far")
    st.sip.receive_sip(bye, CLIENT, net.now)
    net.run_for(0.5)
    assert statuses(net, 2, CLIENT)[-1] != 403
    # A client looping on REGISTER (10 a second for 10 s, within the shedding rate):
    # every one answered 403, the journal within its budget.
    before = len(statuses(net, 2, CLIENT))
    for n in range(100):
        st.sip.receive_sip(raw_request(
            "REGISTER", "carol", CLIENT, from_user="carol", branch=f"loop{n}",
            call_id=f"loop-{n}@x", uri=f"sip:{DOMAIN}",
            headers=(f"Contact: <sip:carol@{CLIENT[0]}:{CLIENT[1]}>",)), CLIENT, net.now)
        net.run_for(0.1)
    assert statuses(net, 2, CLIENT)[before:] == [403] * 100
    refused = st.gw.counters[RevokedCounter.REFUSED]
    assert refused == 101
    journaled = _drops(net, 2, "revoked")
    assert journaled <= JOURNAL_BURST + 12          # the burst, then 1 a second
    assert journaled + st.gw.counters[RevokedCounter.JOURNAL_SUPPRESSED] == refused


def test_agency_policy_a_revoked_credential_is_credential_revoked() -> None:
    agency = ROOT

    def credential(index: int, ident: Identity) -> bytes:
        return issue_credential(agency, aor_pattern=f"sip:*@{DOMAIN}", role="medic",
                                device_key=ident.public_key, issued_at=int(WALL) - 3600,
                                expires_at=int(WALL) + 86400).to_bytes()
    net = Net(3, trust=TrustPolicy(TrustMode.AGENCY, frozenset({agency.public_key})),
              credential=credential)
    net.converge()
    registered(net, 2, 5062, "dave")
    cred = net.stations[2].node.credential
    assert cred is not None
    _revoke(net, TrustKind.REVOKE_CREDENTIAL, credential_id(cred))
    assert net.stations[2].node.overlay.trust.status()["this_node_revoked"] == (
        "credential_revoked")
    raw = net.add_ua(2, "erin", 5063)
    raw.register(expires_s=600)
    net.run_for(1.0)
    failed = of_kind(net.events(2, 5063), RequestFailed)
    assert [(f.status, f.reason) for f in failed] == [(403, "Credential Revoked")]
    assert _drops(net, 2, "credential_revoked") == 1
    # The node's own bindings are gone everywhere else (issue 12.4's enforcement).
    assert not net.stations[0].node.table.lookup(f"sip:node2@{DOMAIN}")
