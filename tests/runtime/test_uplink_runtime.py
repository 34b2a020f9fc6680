"""A relay's uplink in real nodes (issue 10): island A has two relays (a, a2) on one radio
chain, island B one relay (b); each runs its DHT node (real OpenDHT) on the loopback
"uplink", b and a2 joining through a. The uplinks come up (``ctl status`` shows it, and
a lists a2 as its island's other uplinked relay), each relay publishes its island's
registrations through the bridge in its core, and b's bridge resolves a's AoR over the
DHT with island A's relay attachments; the journal records the uplink's transitions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshcomm.cli.uplink_opts import uplink_settings
from meshcomm.config import config_with_overrides
from meshcomm.dht.bridge import NotFound, Resolved
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.store import JournalStore
from meshcomm.runtime.app import JOURNAL_FILE, NodeOptions, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

WAIT_S = 30.0


def _relay(data_dir: Path, spec: str, name: str, bootstrap: tuple[str, ...]) -> NodeOptions:
    base = node_options(data_dir, spec, name, **{"node.role": "relay"})
    cfg = config_with_overrides(base.config, {
        "uplink.enabled": True, "uplink.interface": "lo", "uplink.dht_port": 0,
        "uplink.bootstrap": bootstrap, "uplink.up_stable_s": 1.0,
        "uplink.down_grace_s": 5.0})
    plan = uplink_settings(cfg)
    assert plan is not None and plan.addresses.ipv4 == "127.0.0.1"
    return NodeOptions(config=cfg, data_dir=data_dir, radio_specs=base.radio_specs,
                       hostname="t", shutdown_grace_s=0.1, seed=3, register_delay_s=0.1,
                       uplink=plan)


async def _status(data_dir: Path) -> dict[str, object]:
    status = await asyncio.to_thread(ctl, data_dir, "status")
    assert isinstance(status, dict)
    return status


def test_two_relays_bridge_their_islands_over_a_real_dht(tmp_path: Path) -> None:
    up: dict[str, tuple[NodeDriver, NodeInfo]] = {}
    events: list[object] = []

    async def scenario() -> None:
        with chain_medium(["a", "a2"]) as island_a, chain_medium(["b"]) as island_b:
            async with asyncio.TaskGroup() as tg:
                def started(key: str, driver: NodeDriver, info: NodeInfo) -> None:
                    if key == "b":
                        driver.event_sink = events.append
                    up[key] = (driver, info)

                task_a = tg.create_task(run_node(
                    _relay(tmp_path / "a", f"mem:{island_a.name}/a", "relay-a", ()),
                    lambda d, i: started("a", d, i)))
                await wait_until(lambda: "a" in up, "relay a up")
                port_a = up["a"][0].dht_port
                assert port_a is not None
                task_b = tg.create_task(run_node(
                    _relay(tmp_path / "b", f"mem:{island_b.name}/b", "relay-b",
                           (f"127.0.0.1:{port_a.bound_port()}",)),
                    lambda d, i: started("b", d, i)))
                await wait_until(lambda: "b" in up, "relay b up")
                task_a2 = tg.create_task(run_node(
                    _relay(tmp_path / "a2", f"mem:{island_a.name}/a2", "relay-a2",
                           (f"127.0.0.1:{port_a.bound_port()}",)),
                    lambda d, i: started("a2", d, i)))
                await wait_until(lambda: "a2" in up, "relay a2 up")
                for key in ("a", "b"):
                    bridge = up[key][0].core.dht
                    assert bridge is not None
                    await wait_until(lambda b=bridge: b.uplink_state.value == "up",  # type: ignore[misc]
                                     f"uplink of {key} up", WAIT_S)
                    await wait_until(lambda b=bridge: b.published >= 1,  # type: ignore[misc]
                                     f"{key} published its registration", WAIT_S)
                status = await _status(tmp_path / "b")
                uplink = status["uplink"]
                assert isinstance(uplink, dict)
                assert uplink["state"] == "up" and uplink["dht_peers"] >= 1  # type: ignore[operator]
                assert uplink["private"] is False and uplink["published"] >= 1  # type: ignore[operator]
                # Island A's two uplinked relays list each other; B's island has no other.
                assert uplink["relays"] == []
                a2_id = up["a2"][1].node_id.hex()

                async def relays_of_a() -> object:
                    st_a = await _status(tmp_path / "a")
                    return st_a["uplink"]["relays"]  # type: ignore[index]
                for _ in range(100):
                    if [r["node_id"] for r in await relays_of_a()] == [a2_id]:  # type: ignore[attr-defined]
                        break
                    await asyncio.sleep(0.1)
                assert [r["node_id"] for r in await relays_of_a()] == [a2_id]  # type: ignore[attr-defined]
                driver_b, info_a = up["b"][0], up["a"][1]
                bridge_b = driver_b.core.dht
                assert bridge_b is not None
                answers: list[Resolved | NotFound] = []
                for attempt in range(3):   # a real DHT: a lookup may miss once in a while
                    if attempt:            # a NotFound is remembered for negative_ttl_s
                        await asyncio.sleep(bridge_b.config.negative_ttl_s + 0.5)
                    now = driver_b.now()
                    token = driver_b.pump_.command(
                        now, lambda at=now: bridge_b.resolve(info_a.aor, at))
                    await wait_until(lambda t=token: any(  # type: ignore[misc]
                        isinstance(e, Resolved | NotFound) and e.token == t for e in events),
                        "an answer", WAIT_S)
                    answers = [e for e in events if isinstance(e, Resolved | NotFound)
                               and e.token == token]
                    if isinstance(answers[0], Resolved):
                        break
                port_a_counters = dict(port_a.counters)
                assert len(answers) == 1 and isinstance(answers[0], Resolved), (
                    answers, port_a_counters, dict(bridge_b.counters))
                (found,) = answers[0].bindings
                assert found.binding.aor == info_a.aor
                # Both uplinked relays of island A publish A's binding, each attaching it.
                # The attachment names a's uplink TRANSPORT address (DHT port + 1 if free).
                transport_a = up["a"][0].uplink_radio
                assert transport_a is not None
                island_a_relays = {info_a.node_id: (f"127.0.0.1:{transport_a.bound_port}",),
                                   up["a2"][1].node_id: None}
                assert found.relays and {att.relay for att in found.relays} <= set(
                    island_a_relays)
                for att in found.relays:
                    if att.relay == info_a.node_id:
                        assert att.addrs == island_a_relays[info_a.node_id]
                for key in ("a", "b", "a2"):
                    await asyncio.to_thread(ctl, tmp_path / key, "stop")
                assert await task_a == 0 and await task_b == 0 and await task_a2 == 0

    asyncio.run(scenario())
    for key in ("a", "b"):
        store = JournalStore.open(tmp_path / key / JOURNAL_FILE, up[key][1].node_id)
        try:
            changes = [dict(e.data) for e in store.entries() if e.type == J.UPLINK_CHANGED]
        finally:
            store.close()
        assert [c["state"] for c in changes][-1:] == ["up"], changes
