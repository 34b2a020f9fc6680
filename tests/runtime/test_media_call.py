"""A call through real nodes (run_node, three on an in-process mem chain: two radio hops),
each gateway with its media relay (a part of the node core, on UdpMediaPorts): two stock
UAs on real UDP sockets on loopback register, call, stream RTP both ways through their
gateways' call ports and the mesh, and hang up; the call ports are closed after the BYE.
Also: the [media] config section."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.config import load_profile, parse_config
from meshcomm.errors import ConfigError
from meshcomm.runtime.app import run_node
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, node_options, wait_until
from tests.runtime.ua_media import PACKET_INTERVAL_S, Phone, answer, call

CALL_S = 2.0
NAMES = ("alfa", "bravo", "charlie")


def _gateway(driver: NodeDriver) -> tuple[str, int]:
    sockets = driver.sip_sockets
    assert sockets is not None
    return sockets.host, sockets.udp_port


def _open_ports(driver: NodeDriver) -> int:
    assert driver.media_ports is not None
    return driver.media_ports.open_sockets


def test_call_across_two_hops_carries_rtp_both_ways_and_bye_closes_the_ports(
        tmp_path: Path) -> None:
    drivers: dict[str, NodeDriver] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, _info: NodeInfo) -> None:
            drivers[key] = driver
        return cb

    async def scenario() -> tuple[dict[str, object], dict[str, object], dict[str, int]]:
        with chain_medium(list(NAMES)) as medium:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(run_node(
                    node_options(tmp_path / n, f"mem:{medium.name}/{n}", n), ready(n)))
                    for n in NAMES]
                await wait_until(lambda: len(drivers) == 3, "nodes up")
                first, last = drivers["alfa"], drivers["charlie"]
                alice = Phone("alice", _gateway(first), 0xA11CE)
                bob = Phone("bob", _gateway(last), 0xB0B)
                await alice.register()
                await bob.register()
                await wait_until(lambda: bool(first.node.table.lookup("sip:bob@incident.local")),
                                 "bob's binding at alfa")
                callee = asyncio.create_task(answer(bob))
                caller = asyncio.create_task(call(alice, "sip:bob@incident.local", CALL_S))
                await wait_until(lambda: _open_ports(first) == 2 and _open_ports(last) == 2,
                                 "call ports open at both ends")
                assert _open_ports(drivers["bravo"]) == 0      # a relay hop has no ports
                a_report, b_report = await caller, await callee
                await wait_until(lambda: _open_ports(first) == 0 and _open_ports(last) == 0,
                                 "call ports closed after BYE")
                status = await asyncio.to_thread(
                    control_request, tmp_path / "alfa" / CONTROL_SOCKET_FILE, "status",
                    timeout_s=10.0)
                alice.close()
                bob.close()
                assert isinstance(status, dict)
                media = status["media"]
                assert isinstance(media, dict)
                counters = media["counters"]
                assert media["calls"] == 0 and media["open_ports"] == 0
                for n in NAMES:
                    await asyncio.to_thread(control_request,
                                            tmp_path / n / CONTROL_SOCKET_FILE, "stop")
                assert [await t for t in tasks] == [0, 0, 0]
        return vars(a_report), vars(b_report), counters

    a, b, counters = asyncio.run(scenario())
    assert a["established"] and b["established"]
    assert a["end_reason"] == "LOCAL_BYE" and b["end_reason"] == "REMOTE_BYE"
    expected = CALL_S / PACKET_INTERVAL_S
    for sender, receiver in ((a, b), (b, a)):
        assert isinstance(sender["sent"], int) and sender["sent"] >= 0.8 * expected
        # Loopback and a lossless medium: everything the far side sent after the answer
        # arrived, in order (the first few may race the 200 OK and be dropped as unknown).
        seqs = receiver["received_seqs"]
        assert isinstance(seqs, list) and seqs == sorted(seqs)
        assert len(seqs) >= 0.9 * expected, (len(seqs), sender["sent"])
    assert counters["rtp_to_mesh"] >= 0.9 * expected
    assert counters["rtp_to_client"] >= 0.9 * expected
    assert counters["calls_ended_hangup"] == 1
    assert not any(k.startswith("drop_bad_tag") or k == "drop_replay" for k in counters)


def test_media_section_is_validated_with_key_paths() -> None:
    handset = load_profile("handset")
    assert handset.media.port_range is None and handset.media.max_calls >= 1
    cfg = parse_config({"media": {"port_first": 20000, "port_last": 20099,
                                  "idle_timeout_s": 60.0, "max_calls": 8}})
    assert cfg.media.port_range == (20000, 20099)
    bad = [({"port_first": 80, "port_last": 100}, "media.port_first"),
           ({"port_first": 20000, "port_last": 20000}, "media.port_last"),
           ({"port_first": 20001, "port_last": 20002}, "media.port_last"),
           ({"idle_timeout_s": 0.0}, "media.idle_timeout_s"),
           ({"max_calls": 0}, "media.max_calls"),
           ({"max_call": 3}, "media.max_call")]
    for section, key_path in bad:
        with pytest.raises(ConfigError) as info:
            parse_config({"media": section})
        assert info.value.key_path == key_path, (section, str(info.value))


def test_run_node_uses_the_media_port_range(tmp_path: Path) -> None:
    drivers: dict[str, NodeDriver] = {}

    async def scenario() -> tuple[int, tuple[int, int] | None, int]:
        with chain_medium(["solo"]) as medium:
            opts = node_options(tmp_path / "solo", f"mem:{medium.name}/solo", "solo",
                                **{"media.port_first": 40000, "media.port_last": 40009,
                                   "media.max_calls": 1})
            task = asyncio.create_task(run_node(opts, lambda d, _i: drivers.update(solo=d)))
            await wait_until(lambda: "solo" in drivers, "node up")
            relay, ports = drivers["solo"].core.relay, drivers["solo"].media_ports
            assert relay is not None and ports is not None
            # Nothing is bound before a call.
            result = (relay.config.max_calls, ports.port_range, ports.open_sockets)
            await asyncio.to_thread(control_request, tmp_path / "solo" / CONTROL_SOCKET_FILE,
                                    "stop")
            assert await task == 0
            assert ports.closed
            return result

    assert asyncio.run(scenario()) == (1, (40000, 40009), 0)
