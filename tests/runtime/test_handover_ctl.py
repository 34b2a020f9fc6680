"""``ctl handover`` over a real driver's control socket (issue 12.3)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.runtime.control import ControlCommand, ControlError, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handover_ctl import HANDOVERS_FILE, load_handovers, save_handovers
from meshcomm.security.identity import Identity
from meshcomm.security.roles import decode_handover_untrusted, pack_trust_bundle, sign_handover
from meshcomm.security.verify import SignatureVerifier
from tests.runtime.test_control import run_with_server

OPS = "sip:ops-chief@fire.example"
NEXT = Identity(bytes(range(9, 41)))
HOLDER = Identity(bytes(range(7, 39)))


def test_give_and_accept(tmp_path: Path) -> None:
    async def scenario(driver: NodeDriver, path: Path, _stop: asyncio.Event) -> None:
        def ask(**args: object) -> object:
            return control_request(path, ControlCommand.HANDOVER, **args)

        given = await asyncio.to_thread(ask, action="give", aor="ops-chief@fire.example",
                                        to=NEXT.public_key.hex())
        assert isinstance(given, dict)
        record = decode_handover_untrusted(bytes.fromhex(given["handover"]))
        assert (record.aor, record.new_key, record.signer_key) == (
            OPS, NEXT.public_key, driver.node.identity.public_key)
        mine = sign_handover(HOLDER, aor=OPS, new_key=driver.node.identity.public_key,
                             from_time=123)
        took = await asyncio.to_thread(ask, action="accept", handover=mine.to_bytes().hex())
        assert took == {"accepted": OPS, "from_time": 123, "signer": HOLDER.public_key.hex()}
        assert driver.node.handovers[OPS] == mine
        assert (path.parent / HANDOVERS_FILE).is_file()          # kept across a restart
        driver.node.credential = b"\x92\xc4\x01x\xc4\x01y"     # any credential bytes
        assert driver.node.trust_field(OPS) == pack_trust_bundle(driver.node.credential, mine)
        for bad in ({"action": "accept", "handover": given["handover"]},   # names NEXT
                    {"action": "accept", "handover": "zz"},
                    {"action": "give", "aor": OPS, "to": "00" * 31},
                    {"action": "give", "aor": "nobody", "to": NEXT.public_key.hex()},
                    {"action": "take"}):
            with pytest.raises(ControlError):
                await asyncio.to_thread(ask, **bad)

    run_with_server(tmp_path, scenario)


def _node(ident: Identity) -> MeshNode:
    return MeshNode(ident, NodeSettings(), verifier=SignatureVerifier(),
                    rng=random.Random(1), now=0.0)


def test_accepted_handovers_survive_a_restart_and_damage_is_skipped(tmp_path: Path) -> None:
    me = Identity(bytes(range(11, 43)))
    node = _node(me)
    records = [sign_handover(HOLDER, aor=f"sip:r{i}@fire.example", new_key=me.public_key,
                             from_time=i) for i in range(3)]
    for record in records:
        node.accept_handover(record, 0.0)
    save_handovers(tmp_path, node)
    restarted = _node(me)
    assert load_handovers(tmp_path, restarted, 0.0) == 3
    assert list(restarted.handovers.values()) == records
    assert load_handovers(tmp_path, _node(NEXT), 0.0) == 0      # names another key
    path = tmp_path / HANDOVERS_FILE
    good = path.read_bytes()
    for damaged in (good[:-3], b"\xff" * 10, b"", good + b"\x00",
                    b"\x91" + b"\xc5" + (60000).to_bytes(2, "big") + b"x" * 60000):
        path.write_bytes(damaged)
        assert load_handovers(tmp_path, _node(me), 0.0) == 0
    path.unlink()
    assert load_handovers(tmp_path, _node(me), 0.0) == 0
