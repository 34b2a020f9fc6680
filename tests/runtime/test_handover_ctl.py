"""``ctl handover`` over a real driver's control socket (issue 12.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshcomm.runtime.control import ControlCommand, ControlError, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import Identity
from meshcomm.security.roles import decode_handover_untrusted, pack_trust_bundle, sign_handover
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
