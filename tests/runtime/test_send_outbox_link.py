"""``ctl send`` and ``ctl outbox`` name each other (run_node on an in-memory radio).

Alfa sends to bravo once while bravo is up (delivered: no outbox id), then bravo crashes
and alfa sends again: the reply is ``held`` with the store-and-forward ``msg_id``, and
``ctl outbox`` lists that message with the send's id; the human outputs show the link.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.cli.ctl_cmd import OUTBOX_ID_CHARS, run_outbox, run_send
from meshcomm.runtime.app import NodeOptions, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

BRAVO = "sip:bravo@incident.local"
WAIT_S = 20.0


def _options(data_dir: Path, spec: str, name: str) -> NodeOptions:
    return node_options(data_dir, spec, name, **{"sip.message_timeout_s": 1.0})


async def _actl(data_dir: Path, command: str, **args: object) -> object:
    return await asyncio.to_thread(ctl, data_dir, command, **args)


def _cli(data_dir: Path, **args: object) -> argparse.Namespace:
    return argparse.Namespace(data_dir=data_dir, timeout_s=15.0, json=False, **args)


def test_held_send_reports_its_outbox_id_and_outbox_names_the_send(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = {name: tmp_path / name for name in ("alfa", "bravo")}
    up: dict[str, tuple[NodeDriver, NodeInfo]] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            up[key] = (driver, info)
        return cb

    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                t_alfa = tg.create_task(run_node(
                    _options(dirs["alfa"], f"mem:{medium.name}/a", "alfa"), ready("alfa")))
                t_bravo = tg.create_task(run_node(
                    _options(dirs["bravo"], f"mem:{medium.name}/b", "bravo"), ready("bravo")))
                await wait_until(lambda: len(up) == 2, "both nodes up")
                alfa = up["alfa"][0]
                await wait_until(lambda: bool(alfa.node.table.lookup(BRAVO)),
                                 "bravo's binding at alfa", WAIT_S)
                first = await _actl(dirs["alfa"], "send", to=BRAVO, text="one", wait_s=10.0)
                assert isinstance(first, dict)
                assert (first["status"], first["msg_id"]) == ("delivered", None), first

                t_bravo.cancel()                   # a crash: no de-registration
                await asyncio.gather(t_bravo, return_exceptions=True)
                held = await _actl(dirs["alfa"], "send", to=BRAVO, text="two", wait_s=10.0)
                assert isinstance(held, dict)
                assert (held["status"], held["code"]) == ("held", 202), held
                assert held["id"] == first["id"] + 1
                msg_id = held["msg_id"]
                assert isinstance(msg_id, str) and len(bytes.fromhex(msg_id)) == 16

                rows = await _actl(dirs["alfa"], "outbox")
                assert isinstance(rows, list) and len(rows) == 1
                assert (rows[0]["msg_id"], rows[0]["send_id"]) == (msg_id, held["id"])

                # The human outputs: ctl send names the outbox id, ctl outbox the send id.
                capsys.readouterr()
                code = await asyncio.to_thread(run_send, _cli(dirs["alfa"], to=BRAVO,
                                                              text="three"))
                sent = capsys.readouterr().out
                assert code == 0
                assert "accepted, held (202); ctl outbox lists it as " in sent, sent
                third_id = sent.split("ctl outbox lists it as ")[1].split()[0]
                assert len(third_id) == OUTBOX_ID_CHARS
                send_no = sent.split()[1]             # "message 3 to ..."
                assert await asyncio.to_thread(run_outbox, _cli(dirs["alfa"], all=False)) == 0
                table = capsys.readouterr().out.splitlines()
                assert table[0].split()[:3] == ["MESSAGE", "SEND", "TO"]
                by_id = {line.split()[0]: line.split()[1] for line in table[1:-1]}
                assert by_id == {msg_id[:OUTBOX_ID_CHARS]: str(held["id"]),
                                 third_id: send_no}
                assert send_no == str(held["id"] + 1)

                await _actl(dirs["alfa"], "stop")
                assert await t_alfa == 0

    asyncio.run(scenario())
