"""The agency reassigns ops-chief@ when the holder's handset is lost (issue 12.3): the
hand-over file ``meshcomm handover --agency-key`` writes, taken by the new holder's whole
node core, moves the role address at every node and calls follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshcomm.cli import role_handover_cmd
from meshcomm.cli.main import main
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import write_key_file
from meshcomm.security.roles import decode_handover_untrusted, sign_handover
from meshcomm.sip.sdp import make_offer
from meshcomm.sip.ua_events import IncomingCall
from tests.node.gateway_net import of_kind
from tests.node.test_gateway_roles import AGENCY, OPS, agency_net, register


def test_agency_handover_file_moves_ops_chief_from_a_lost_handset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = agency_net()
    assert register(net, 3, 5073, "ops-chief") == 200
    net.run_until(lambda: all(st.node.table.lookup(OPS) for st in net.stations))
    old, new = net.stations[3], net.stations[1]     # n3 at the chain's end
    old.up = False                                  # the holder's handset is lost
    assert register(net, 1, 5071, "ops-chief") == 403          # still held by the lost one
    key_file, out = tmp_path / "agency.key", tmp_path / "ops.handover"
    write_key_file(key_file, AGENCY)
    monkeypatch.setattr(role_handover_cmd, "wall_clock",
                        lambda: new.node.overlay.wall_time(net.now))
    start = net.now
    assert main(["handover", "--agency-key", str(key_file), "--role", OPS,
                 "--to", new.node.identity.public_key.hex(), "--out", str(out)]) == 0
    handover = decode_handover_untrusted(out.read_bytes())
    # what the control socket's "accept" does (tests/cli/test_handover_cmd.py drives it)
    new.pump.command(net.now, lambda: new.node.accept_handover(handover, net.now))
    assert register(net, 1, 5071, "ops-chief") == 200
    net.run_until(lambda: all([s.binding.node_id for s in net.stations[i].node.table.lookup(OPS)]
                              == [new.node.node_id] for i in (0, 1, 2)), timeout_s=5.0)
    caller = net.add_ua(0, "dispatch", 5070)
    caller.register(expires_s=600)
    caller.invite(OPS, make_offer(address="127.0.0.1", rtp_port=4000, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(1, 5071), IncomingCall)), timeout_s=5.0)
    print(f"\nagency hand-over to call ringing at the new holder: {net.now - start:.2f} s")
    (entry,) = [e for e in net.stations[0].node.overlay.who(net.now)
                if e.aor.lower() == OPS and e.state == "verified"]
    assert (entry.node_id, entry.handover_from) == (new.node.node_id.hex(), handover.from_time)
    lost = [s.state.value for s in net.stations[2].node.table
            if s.binding.aor.lower() == OPS and s.binding.key == old.node.identity.public_key]
    assert lost == ["conflict"]


def test_handover_signed_by_an_untrusted_key_moves_nothing() -> None:
    """The same record signed by a key that is neither an agency's nor the holder's: the
    new holder's own gateway answers its REGISTER 403 and the address stays put."""
    net = agency_net()
    assert register(net, 1, 5071, "ops-chief") == 200
    net.run_until(lambda: all(st.node.table.lookup(OPS) for st in net.stations))
    new = net.stations[3]
    rogue = sign_handover(Identity(b"R" * 32), aor=OPS, new_key=new.node.identity.public_key,
                          from_time=int(new.node.overlay.wall_time(net.now)))
    new.pump.command(net.now, lambda: new.node.accept_handover(rogue, net.now))
    assert register(net, 3, 5073, "ops-chief") == 403
    net.run_for(5.0)
    assert all([s.binding.node_id for s in st.node.table.lookup(OPS)]
               == [net.stations[1].node.node_id] for st in net.stations)
