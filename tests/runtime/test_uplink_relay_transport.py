"""``meshcomm relay`` with an uplink runs the uplink transport (issue 10), in real nodes
(run_node, real OpenDHT and UplinkRadios on loopback): relay a's transport listens on its
DHT port + 1, relay b (bootstrapping to a's DHT node, its transport impaired with
--uplink-impair's delay) has a's transport as configured peer, a learns b by hearing it,
and each relay's uplink mesh gets a one-hop route to the other's uplink AoR."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshcomm.cli.uplink_opts import uplink_settings
from meshcomm.config import config_with_overrides
from meshcomm.runtime.app import NodeOptions, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.runtime.uplink_transport import uplink_aor
from meshcomm.types import UPLINK_RADIO
from radios import ImpairedRadio, Impairment
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

WAIT_S = 20.0


def _relay(data_dir: Path, spec: str, name: str, bootstrap: tuple[str, ...],
           impairment: str = "") -> NodeOptions:
    base = node_options(data_dir, spec, name, **{"node.role": "relay"})
    cfg = config_with_overrides(base.config, {
        "uplink.enabled": True, "uplink.interface": "lo", "uplink.dht_port": 0,
        "uplink.bootstrap": bootstrap, "uplink.impairment": impairment})
    return NodeOptions(config=cfg, data_dir=data_dir, radio_specs=base.radio_specs,
                       hostname="t", shutdown_grace_s=0.1, seed=5, register_delay_s=0.1,
                       uplink=uplink_settings(cfg))


def _uplink_hops(driver: NodeDriver, other: NodeDriver) -> int | None:
    mesh = driver.core.uplink
    assert mesh is not None
    entries = {e.aor: e for e in mesh.overlay.who(driver.now())}
    entry = entries.get(uplink_aor(other.node.node_id))
    return None if entry is None else entry.hops


def test_relays_run_the_transport_on_the_dht_port_plus_one(tmp_path: Path) -> None:
    up: dict[str, NodeDriver] = {}

    async def scenario() -> None:
        with chain_medium(["a"]) as island_a, chain_medium(["b"]) as island_b:
            async with asyncio.TaskGroup() as tg:
                def started(key: str, driver: NodeDriver, _info: NodeInfo) -> None:
                    up[key] = driver

                task_a = tg.create_task(run_node(
                    _relay(tmp_path / "a", f"mem:{island_a.name}/a", "relay-a", ()),
                    lambda d, i: started("a", d, i)))
                await wait_until(lambda: "a" in up, "relay a up")
                a = up["a"]
                assert a.dht_port is not None and a.uplink_radio is not None
                dht_a = a.dht_port.bound_port()
                assert a.uplink_radio.bound_port == dht_a + 1
                task_b = tg.create_task(run_node(
                    _relay(tmp_path / "b", f"mem:{island_b.name}/b", "relay-b",
                           (f"127.0.0.1:{dht_a}",), impairment="delay=20ms"),
                    lambda d, i: started("b", d, i)))
                await wait_until(lambda: "b" in up, "relay b up")
                b = up["b"]
                assert isinstance(b.radios[UPLINK_RADIO], ImpairedRadio)
                assert b.radios[UPLINK_RADIO].impairment == Impairment(delay_s=0.02)
                assert b.uplink_radio is not None
                assert b.uplink_radio.peers()[0] == f"127.0.0.1:{dht_a + 1}"
                await wait_until(lambda: _uplink_hops(a, b) == 1 and _uplink_hops(b, a) == 1,
                                 "each relay's uplink mesh routes to the other", WAIT_S)
                assert f"127.0.0.1:{b.uplink_radio.bound_port}" in a.uplink_radio.peers()
                # Both carried traffic: the island's on the island radio, the uplink mesh's
                # on the transport (which of a frame goes where: tests/runtime/
                # test_uplink_driver).
                assert a.radios[f"mem:{island_a.name}/a"].counters["tx"] > 0
                assert a.uplink_radio.counters["rx"] > 0 and b.uplink_radio.counters["rx"] > 0
                for key in ("a", "b"):
                    await asyncio.to_thread(ctl, tmp_path / key, "stop")
                assert await task_a == 0 and await task_b == 0

    asyncio.run(scenario())
