"""Role addresses under the agency policy with real nodes in namespaces (issue 12 point 3).

Five namespaces in a chain, a ``meshcomm handset`` in each, every node enrolled by one
agency (credentials for ``sip:*@incident.local``): node 0 as a ``medic``, nodes 1 and 3 as
``command``, the others as ``firefighter``; a device namespace beside node 2 puts frames on
its radio.

* The medic's REGISTER of ``incident-commander@`` is answered 403 by node 0's gateway;
  the claim itself, signed with node 0's real key and credential and put on the air beside
  node 2, is refused there (``drop_role_scope``) and listed by no node.
* ``ops-chief@`` registered at node 1; node 3's REGISTER of it gets 403 (held); node 1
  runs ``ctl handover give`` to node 3's key, node 3 ``ctl handover accept``, its client
  registers again (200): node 0 routes the address to node 3 and a call from node 0
  reaches the client at node 3, within 5 s of the hand-over being signed.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from pathlib import Path

import pytest

from meshcomm.location.binding import make_binding
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    load_or_create_identity,
    write_credential_file,
)
from meshcomm.wire.envelope import Hop, encode_frame
from radios.udp import DEFAULT_PORT
from tests.envcheck import require_root
from tests.integration.nodes import QUICK_HANDSET_ARGS
from tools.testbed import Testbed, chain
from tools.testbed.inject import FLOOD_TTL, Sender
from tools.testbed.netns import in_netns
from tools.testbed.nodes import MeshProcess, wait_until
from tools.testbed.sipclient import GATEWAY, SipUac, SipUas, build, parse

N_NODES = 5
ROLES = ["medic", "command", "firefighter", "command", "firefighter"]
DOMAIN = "incident.local"
IC = f"sip:incident-commander@{DOMAIN}"
OPS = f"sip:ops-chief@{DOMAIN}"
CONVERGE_S = 30.0
FOLLOW_S = 5.0
INJECT_NEXT_TO = 2

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _enrolled(data_dir: Path, agency: Identity, role: str) -> tuple[Identity, bytes]:
    device = load_or_create_identity(data_dir)[0]
    now = int(time.time())
    cred = issue_credential(agency, aor_pattern=f"sip:*@{DOMAIN}", role=role,
                            device_key=device.public_key, issued_at=now - 60,
                            expires_at=now + 86400).to_bytes()
    write_credential_file(data_dir / CREDENTIAL_FILE, cred)
    return device, cred


def _register(uas: SipUas) -> int | None:
    """REGISTER ``uas``'s user at its gateway: the final status."""
    call_id, port = secrets.token_hex(6), uas.sock.getsockname()[1]
    headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)}"),
               ("Max-Forwards", "70"), ("From", f"<{uas.aor}>;tag={secrets.token_hex(4)}"),
               ("To", f"<{uas.aor}>"), ("Call-ID", call_id), ("CSeq", "1 REGISTER"),
               ("Contact", f"<sip:{uas.user}@127.0.0.1:{port}>"), ("Expires", "600")]
    uas.sock.sendto(build(f"REGISTER sip:{DOMAIN} SIP/2.0", headers), GATEWAY)
    deadline = time.monotonic() + 10.0
    while (left := deadline - time.monotonic()) > 0:
        uas.sock.settimeout(left)
        try:
            reply = parse(uas.sock.recv(65535))
        except TimeoutError:
            return None
        if reply.get("call-id") == call_id and (reply.status or 0) >= 200:
            return reply.status
    return None


def _ctl(tb: Testbed, node: MeshProcess, *argv: str) -> dict[str, object]:
    out = tb.run(node.index, [sys.executable, "-m", "meshcomm.cli.main", "ctl", "--data-dir",
                              str(node.data_dir), *argv])
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def _holders(node: MeshProcess, aor: str) -> set[str]:
    return {str(e["node_id"]) for e in node.who() or [] if e.get("aor") == aor
            and e.get("state") == "verified"}


def _inject_claim(tb: Testbed, device_ns: str, medic: Identity, cred: bytes,
                  incident: str) -> None:
    """The medic's claim on incident-commander@, signed with its real key and credential
    (as its node would if its checks were removed), on the radio beside node 2."""
    claim = make_binding(medic, incident=incident, seq=1 << 40, aor=IC,
                         contacts=(f"sip:incident-commander@{DOMAIN}",),
                         issued_at=time.time(), lifetime_s=600, credential=cred)
    with in_netns(device_ns):
        sender = Sender(f"to{INJECT_NEXT_TO}", DEFAULT_PORT, 1)
    try:
        for _ in range(3):
            sender.send(encode_frame(claim.envelope, Hop(ttl=FLOOD_TTL)))
            time.sleep(0.3)
    finally:
        sender.close()


def test_medic_refused_and_ops_chief_handed_over(tmp_path: Path) -> None:
    require_root()
    agency = Identity(secrets.token_bytes(32))
    with chain(N_NODES) as tb:
        tb.use_workdir(tmp_path)
        device_ns = tb.attach(INJECT_NEXT_TO, "dev")
        key = agency.public_key.hex()
        enrolled = [_enrolled(tmp_path / f"data{i}", agency, ROLES[i]) for i in range(N_NODES)]
        nodes = [tb.start_node(i, name=f"unit{i}", data_dir=tmp_path / f"data{i}", wait=False,
                               extra_args=(*QUICK_HANDSET_ARGS, "--set", "trust.policy=agency",
                                           "--set", f'trust.agency_keys=["{key}"]'))
                 for i in range(N_NODES)]
        everyone = {f"sip:unit{i}@{DOMAIN}" for i in range(N_NODES)}
        assert wait_until(lambda: all(everyone <= (n.who_aors() or set()) for n in nodes),
                          CONVERGE_S) is not None, tb.describe()
        # the medic: 403 at its own gateway, refused by every node it reaches
        medic_client = SipUas(tb.loopback_udp(0), "incident-commander", tb.loopback_udp(0))
        assert _register(medic_client) == 403
        incident = str(nodes[0].status()["incident"])
        _inject_claim(tb, device_ns, enrolled[0][0], enrolled[0][1], incident)
        time.sleep(3.0)
        assert all(IC not in (n.who_aors() or set()) for n in nodes)
        refused = nodes[INJECT_NEXT_TO].status()["counters"].get("drop_role_scope", 0)
        print(f"\nmedic's claim on {IC}: 403 at node 0; injected beside node "
              f"{INJECT_NEXT_TO}: drop_role_scope={refused}, listed by no node")
        assert refused >= 1
        # ops-chief@: held by node 1, handed over to node 3
        chief1 = SipUas(tb.loopback_udp(1), "ops-chief", tb.loopback_udp(1))
        assert _register(chief1) == 200
        old_id, new_id = nodes[1].status()["node_id"], nodes[3].status()["node_id"]
        assert wait_until(lambda: all(_holders(n, OPS) == {old_id} for n in nodes),
                          CONVERGE_S) is not None, tb.describe()
        chief3 = SipUas(tb.loopback_udp(3), "ops-chief", tb.loopback_udp(3))
        assert _register(chief3) == 403
        serving = threading.Thread(target=chief3.serve, daemon=True)
        caller_sock, caller_rtp = tb.loopback_udp(0), tb.loopback_udp(0)
        assert _register(SipUas(caller_sock, "dispatch", caller_rtp)) == 200
        given = _ctl(tb, nodes[1], "handover", "give", OPS,
                     "--to", str(nodes[3].status()["public_key"]))
        signed = time.monotonic()            # the hand-over exists from here
        took = _ctl(tb, nodes[3], "handover", "accept", str(given["handover"]))
        accepted = time.monotonic()
        assert took["accepted"] == OPS
        assert _register(chief3) == 200
        serving.start()
        try:
            moved = wait_until(lambda: _holders(nodes[0], OPS) == {new_id}, FOLLOW_S)
            assert moved is not None, tb.describe()
            routed = time.monotonic()
            call = SipUac(caller_sock, caller_rtp, user="dispatch").invite(OPS)
            follow_s = time.monotonic() - signed
        finally:
            chief3.stop()
            serving.join(timeout=2.0)
        print(f"ops-chief@ handed over node 1 -> node 3: accepted (ctl process) "
              f"{accepted - signed:.2f} s after it was signed, node 0 routes to node 3 "
              f"{routed - signed:.2f} s after, the call answered at node 3 {follow_s:.2f} s "
              f"after (call set-up {0.0 if call is None else call.setup_s:.2f} s)")
        assert call is not None and chief3.handled.get("INVITE", 0) >= 1
        assert follow_s < FOLLOW_S
        who = [e for e in nodes[0].who() or [] if e.get("aor") == OPS
               and e.get("node_id") == new_id]
        assert who and who[0].get("handover_from") is not None
