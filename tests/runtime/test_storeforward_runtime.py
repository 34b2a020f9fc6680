"""Store-and-forward in real nodes (run_node on an in-memory radio, one process).

Chain alfa - relay - bravo. Bravo is known to the mesh and then crashes (its run_node task
is cancelled: no de-registration, its binding stays). ``ctl send`` from alfa to bravo is
accepted and held (202); the relay takes custody; the relay is stopped and started again
(its custody comes back from ``storeforward.sqlite``); bravo starts again. Bravo's inbox
gets the message exactly once and alfa's ``ctl outbox`` says delivered.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

from meshcomm.config import NodeConfig, config_with_overrides
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.store import JournalStore
from meshcomm.runtime.app import (
    JOURNAL_FILE,
    STORE_FORWARD_FILE,
    NodeOptions,
    mesh_settings,
    run_node,
    store_forward_config,
)
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

BRAVO = "sip:bravo@incident.local"
TEXT = "hold this for bravo"
#: Long enough for retries of both holders after the first delivery (retry_initial_s 2 s).
DUPLICATE_WATCH_S = 3.0
WAIT_S = 20.0

Ready = Callable[[NodeDriver, NodeInfo], None]


def _options(data_dir: Path, spec: str, name: str, role: str = "handset") -> NodeOptions:
    return node_options(data_dir, spec, name,
                        **{"node.role": role, "sip.message_timeout_s": 1.0})


async def _actl(data_dir: Path, command: str, **args: object) -> object:
    return await asyncio.to_thread(ctl, data_dir, command, **args)


def _journal_types(data_dir: Path, node_id: bytes) -> list[str]:
    store = JournalStore.open(data_dir / JOURNAL_FILE, node_id)
    try:
        return [entry.type for entry in store.entries()]
    finally:
        store.close()


def test_held_message_survives_relay_restart_and_is_delivered_once(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("alfa", "relay", "bravo")}
    up: dict[str, tuple[NodeDriver, NodeInfo]] = {}

    def ready(key: str) -> Ready:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            up[key] = (driver, info)
        return cb

    async def scenario() -> None:
        with chain_medium(["a", "r", "b"]) as medium:
            def start(tg: asyncio.TaskGroup, key: str, station: str,
                      role: str = "handset") -> asyncio.Task[int]:
                up.pop(key, None)
                opts = _options(dirs[key], f"mem:{medium.name}/{station}", key, role)
                return tg.create_task(run_node(opts, ready(key)))

            async with asyncio.TaskGroup() as tg:
                t_alfa = start(tg, "alfa", "a")
                t_relay = start(tg, "relay", "r", "relay")
                t_bravo = start(tg, "bravo", "b")
                await wait_until(lambda: len(up) == 3, "three nodes up")
                alfa = up["alfa"][0]
                await wait_until(lambda: bool(alfa.node.table.lookup(BRAVO)),
                                 "bravo's binding at alfa", WAIT_S)
                relay_binding = [s.binding for s in alfa.node.table
                                 if s.binding.node_id == up["relay"][1].node_id]
                assert relay_binding and "relay" in relay_binding[0].caps

                t_bravo.cancel()                   # a crash: no de-registration
                assert (await asyncio.gather(t_bravo, return_exceptions=True))[0] is not None
                result = await _actl(dirs["alfa"], "send", to=BRAVO, text=TEXT, wait_s=10.0)
                assert isinstance(result, dict)
                assert (result["status"], result["code"]) == ("held", 202), result

                def alfa_state() -> str:
                    sf = alfa.core.sf
                    rows = sf.outbox() if sf is not None else []
                    return rows[0].state.value if len(rows) == 1 else f"{len(rows)} rows"
                await wait_until(lambda: alfa_state() == "held_by", "relay custody", WAIT_S)
                rows = await _actl(dirs["alfa"], "outbox")
                assert isinstance(rows, list) and len(rows) == 1
                assert (rows[0]["to"], rows[0]["state"], rows[0]["holder"]) == (
                    BRAVO, "held_by", "sip:relay@incident.local")

                await _actl(dirs["relay"], "stop")
                assert await t_relay == 0
                mode = stat.S_IMODE((dirs["relay"] / STORE_FORWARD_FILE).stat().st_mode)
                assert mode == 0o600
                t_relay = start(tg, "relay", "r", "relay")
                await wait_until(lambda: "relay" in up, "relay up again")
                status = await _actl(dirs["relay"], "status")
                assert isinstance(status, dict)
                sf_status = status["store_forward"]
                assert sf_status["relay"] is True
                assert sf_status["counters"]["sf_restored"] == 1
                assert sf_status["held_for_others"] == 1

                t_bravo = start(tg, "bravo", "b")
                await wait_until(lambda: "bravo" in up, "bravo up again")

                def inbox_texts() -> list[str]:
                    gw = up["bravo"][0].core.gateway
                    return [e.body.decode() for e in gw.inbox] if gw else []
                await wait_until(lambda: TEXT in inbox_texts(), "delivery to bravo", WAIT_S)
                await wait_until(lambda: alfa_state() == "delivered", "receipt at alfa", WAIT_S)
                relay_sf = up["relay"][0].core.sf
                assert relay_sf is not None
                await wait_until(lambda: not relay_sf.held_for_others(),
                                 "relay drops its copy", WAIT_S)
                await asyncio.sleep(DUPLICATE_WATCH_S)
                inbox = await _actl(dirs["bravo"], "inbox")
                assert isinstance(inbox, list)
                assert [(e["from"], e["text"]) for e in inbox] == [
                    ("sip:alfa@incident.local", TEXT)]
                rows = await _actl(dirs["alfa"], "outbox")
                assert isinstance(rows, list)
                assert [(r["state"], r["holder"]) for r in rows] == [("delivered", BRAVO)]
                bravo_status = await _actl(dirs["bravo"], "status")
                assert isinstance(bravo_status, dict)
                assert bravo_status["store_forward"]["counters"]["sf_delivered_local"] == 1
                for key in ("alfa", "relay", "bravo"):
                    await _actl(dirs[key], "stop")
                assert (await t_alfa, await t_relay, await t_bravo) == (0, 0, 0)

    asyncio.run(scenario())
    ids = {key: info.node_id for key, (_d, info) in up.items()}
    alfa_types = _journal_types(dirs["alfa"], ids["alfa"])
    assert {J.SF_HELD.value, J.SF_CUSTODY.value, J.SF_RECEIPT.value} <= set(alfa_types)
    assert J.SF_CUSTODY.value in _journal_types(dirs["relay"], ids["relay"])
    assert _journal_types(dirs["bravo"], ids["bravo"]).count(J.SF_DELIVERED.value) == 1


def test_relay_settings_carry_the_relay_cap_and_relay_section_bounds() -> None:
    relay = config_with_overrides(NodeConfig(), {
        "node.role": "relay", "relay.store_and_forward_max_messages": 0,
        "relay.store_and_forward_max_age_s": 600})
    assert mesh_settings(relay).caps == ("relay",)
    assert mesh_settings(NodeConfig()).caps == ()
    sf_config = store_forward_config(relay)
    assert (sf_config.max_held_messages, sf_config.max_age_s) == (0, 600.0)
    assert sf_config.validate() == []
