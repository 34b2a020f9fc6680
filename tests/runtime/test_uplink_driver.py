"""The driver's uplink edge rules (issue 10), with a real mem radio, a real UplinkRadio on
loopback and a real MeshNode: dst None never goes on the uplink (except for a node that IS
an uplink-mesh node, the dht-node's), "uplink|" is every uplink peer, "uplink|HOST:PORT"
one, and an UplinkPeers event adds peers to the uplink radio (also under impairment)."""

from __future__ import annotations

import asyncio
import random

from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.tunnel import UplinkPeers
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import UPLINK_BROADCAST, UPLINK_PREFIX, Datagram, LinkAddr
from radios import ImpairedRadio, Impairment, Radio, open_radio
from radios.uplink import UplinkRadio
from tests.radios.conftest import Inbox
from tests.runtime.helpers import chain_medium, identity

V4 = "127.0.0.1"


def _node(loop: asyncio.AbstractEventLoop) -> MeshNode:
    return MeshNode(identity("up"), NodeSettings(), verifier=SignatureVerifier(),
                    rng=random.Random(1), now=loop.time(), seq_base=1 << 32,
                    wall_offset_s=1.7e9)


async def _listening(*radios: Radio) -> list[Inbox]:
    boxes = []
    for radio in radios:
        await radio.open()
        boxes.append(Inbox())
        radio.set_receiver(boxes[-1])
    return boxes


def _addr(radio: UplinkRadio) -> str:
    return f"{V4}:{radio.bound_port}"


async def _settle() -> None:
    await asyncio.sleep(0.05)


def test_broadcast_stays_off_the_uplink_and_uplink_addresses_pick_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with chain_medium(["me", "island"]) as medium:
            far1, far2 = UplinkRadio([V4], 0), UplinkRadio([V4], 0)
            island = open_radio(f"mem:{medium.name}/island")
            box_island, box1, box2 = await _listening(island, far1, far2)
            mem = open_radio(f"mem:{medium.name}/me")
            uplink = UplinkRadio([V4], 0, peers=[_addr(far1)])
            await mem.open()
            await uplink.open()
            driver = NodeDriver(_node(loop), [mem, uplink], None, loop, wall_offset_s=0.0)
            try:
                assert driver.uplink_radio is uplink
                driver.transmit(Datagram(b"gossip", None))
                await box_island.wait_for(1)
                driver.transmit(Datagram(b"to every peer", UPLINK_BROADCAST))
                assert await box1.wait_for(1) == [(b"to every peer", _addr(uplink))]
                driver.transmit(Datagram(b"one", LinkAddr(UPLINK_PREFIX + _addr(far2))))
                assert await box2.wait_for(1) == [(b"one", _addr(uplink))]
                await _settle()
                assert box_island.payloads == [b"gossip"]
                assert box1.payloads == [b"to every peer"]
                assert uplink.counters["tx"] == 2
            finally:
                driver.close()
                for radio in (island, far1, far2):
                    radio.close()

    asyncio.run(scenario())


def test_uplink_peers_events_reach_the_impaired_uplink_radio() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        far = UplinkRadio([V4], 0)
        (box,) = await _listening(far)
        uplink = UplinkRadio([V4], 0)
        wrapped = ImpairedRadio(uplink, Impairment(delay_s=0.001), random.Random(1))
        await wrapped.open()
        driver = NodeDriver(_node(loop), [wrapped], None, loop, wall_offset_s=0.0)
        try:
            assert driver.uplink_radio is uplink
            driver.other(UplinkPeers((_addr(far), "not an address")))
            assert uplink.peers() == [_addr(far)]
            assert uplink.counters["peers_add_skipped"] == 1
            driver.transmit(Datagram(b"hello far relay", UPLINK_BROADCAST))
            assert await box.wait_for(1) == [(b"hello far relay", _addr(uplink))]
            driver.transmit(Datagram(b"island only", None))   # no island radio here
            await _settle()
            assert box.payloads == [b"hello far relay"]
        finally:
            driver.close()
            far.close()

    asyncio.run(scenario())


def test_a_node_on_the_uplink_broadcasts_to_its_uplink_peers() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        far = UplinkRadio([V4], 0)
        (box,) = await _listening(far)
        uplink = UplinkRadio([V4], 0, peers=[_addr(far)])
        await uplink.open()
        driver = NodeDriver(_node(loop), [uplink], None, loop, wall_offset_s=0.0,
                            node_on_uplink=True)
        try:
            driver.transmit(Datagram(b"hello", None))
            assert await box.wait_for(1) == [(b"hello", _addr(uplink))]
        finally:
            driver.close()
            far.close()

    asyncio.run(scenario())
