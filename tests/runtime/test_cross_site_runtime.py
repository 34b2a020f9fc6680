"""Cross-site messaging between real nodes (issue 10): two islands, each a handset and
an uplinked relay on an in-memory radio, the relays' uplinks on loopback (real OpenDHT,
real UDP uplink transport). ``ctl send`` on island A's handset to island B's handset is
resolved through A's relay over the DHT, carried across the uplink mesh and delivered
exactly once; the answer comes back (``delivered``), and B answers the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshcomm.runtime.app import run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until
from tests.runtime.test_uplink_runtime import _relay

WAIT_S = 40.0


async def _send_until_accepted(data_dir: Path, to: str, text: str) -> dict[str, object]:
    """``ctl send`` (waiting for the outcome); a real DHT may miss a fresh record once,
    and a miss is answered 404 and remembered for the bridge's negative TTL: send again.
    ``held`` (202) is accepted: store-and-forward delivers it (never send it twice)."""
    reply: object = None
    for _ in range(4):
        reply = await asyncio.to_thread(ctl, data_dir, "send", to=to, text=text, wait_s=20.0)
        assert isinstance(reply, dict)
        if reply["status"] in ("delivered", "held"):
            return reply
        assert reply["status"] == "failed" and reply["code"] == 404, reply
        await asyncio.sleep(11.0)
    raise AssertionError(f"not accepted: {reply}")


async def _inbox_texts(data_dir: Path, want: int) -> list[str]:
    texts: list[str] = []
    for _ in range(int(WAIT_S / 0.2)):
        inbox = await asyncio.to_thread(ctl, data_dir, "inbox")
        assert isinstance(inbox, list)
        texts = [m["text"] for m in inbox]
        if len(texts) >= want:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)                  # no second copy arrives later
    inbox = await asyncio.to_thread(ctl, data_dir, "inbox")
    assert isinstance(inbox, list)
    return [m["text"] for m in inbox]


def test_ctl_send_crosses_between_islands_exactly_once(tmp_path: Path) -> None:
    up: dict[str, tuple[NodeDriver, NodeInfo]] = {}

    async def scenario() -> None:
        with chain_medium(["ha", "ra"]) as island_a, chain_medium(["rb", "hb"]) as island_b:
            async with asyncio.TaskGroup() as tg:
                def start(key: str, options: object) -> asyncio.Task[int]:
                    return tg.create_task(run_node(
                        options,  # type: ignore[arg-type]
                        lambda d, i: up.__setitem__(key, (d, i))))

                tasks = {"ra": start("ra", _relay(tmp_path / "ra",
                                                  f"mem:{island_a.name}/ra", "relay-a", ()))}
                await wait_until(lambda: "ra" in up, "relay a up")
                dht_a = up["ra"][0].dht_port
                assert dht_a is not None
                tasks["rb"] = start("rb", _relay(
                    tmp_path / "rb", f"mem:{island_b.name}/rb", "relay-b",
                    (f"127.0.0.1:{dht_a.bound_port()}",)))
                tasks["ha"] = start("ha", node_options(tmp_path / "ha",
                                                       f"mem:{island_a.name}/ha", "alice"))
                tasks["hb"] = start("hb", node_options(tmp_path / "hb",
                                                       f"mem:{island_b.name}/hb", "bob"))
                await wait_until(lambda: len(up) == 4, "all nodes up", WAIT_S)
                for key in ("ra", "rb"):
                    bridge = up[key][0].core.dht
                    assert bridge is not None
                    await wait_until(lambda b=bridge: b.published >= 2,  # type: ignore[misc]
                                     f"{key} published its island", WAIT_S)
                alice, bob = up["ha"][1].aor, up["hb"][1].aor
                await _send_until_accepted(tmp_path / "ha", bob, "across sites")
                assert await _inbox_texts(tmp_path / "hb", 1) == ["across sites"]
                inbox_b = await asyncio.to_thread(ctl, tmp_path / "hb", "inbox")
                assert isinstance(inbox_b, list) and inbox_b[0]["from"] == alice
                await _send_until_accepted(tmp_path / "hb", alice, "and back")
                assert await _inbox_texts(tmp_path / "ha", 1) == ["and back"]
                status = await asyncio.to_thread(ctl, tmp_path / "ha", "status")
                assert isinstance(status, dict)
                cross = status["cross_site"]
                assert cross["island_relays"] == [up["ra"][1].node_id.hex()]
                assert cross["remote_routes"] >= 1 and cross["uplink_mesh"] is None
                assert cross["counters"]["tunnel_items_sent"] >= 1
                relay_status = await asyncio.to_thread(ctl, tmp_path / "ra", "status")
                assert isinstance(relay_status, dict)
                mesh = relay_status["cross_site"]["uplink_mesh"]
                assert mesh["members"] >= 1
                far_relay = up["rb"][1].node_id.hex()
                assert far_relay in [link["node_id"] for link in mesh["links"]], mesh
                assert far_relay in [route["dst"] for route in mesh["routes"]], mesh
                # Island A never learned B's bindings by gossip (resolution is on demand).
                assert not up["ha"][0].core.node.table.lookup(bob)
                for key in ("ha", "hb", "ra", "rb"):
                    await asyncio.to_thread(ctl, tmp_path / key, "stop")
                for task in tasks.values():
                    assert await task == 0

    asyncio.run(scenario())
