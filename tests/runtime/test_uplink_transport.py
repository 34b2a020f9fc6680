"""The uplink transport end to end (issue 10), real sockets on loopback, real NodeCores and
MeshNodes, no mocks: relay A (island node + uplink mesh, composed like ``meshcomm relay``)
and node B each know only C (which plays ``meshcomm dht-node``: its node IS an uplink-mesh
node); after the HELLOs and B's registration flood, A's uplink mesh routes to B through C
and a unicast from A reaches B. Configured with each other, A and B talk directly."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from meshcomm.location.table import TrustPolicy
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.uplink_transport import (
    UplinkContacts,
    make_uplink_mesh,
    own_addrs,
    uplink_aor,
)
from meshcomm.security.verify import SignatureVerifier
from radios.uplink import UplinkRadio
from tests.runtime.helpers import FAST_OVERLAY, identity, wait_until

V4 = "127.0.0.1"
INCIDENT = "uplink-transport-test"
WAIT_S = 10.0
#: Wall-clock time = loop time + this (the real one: a dht-node in another process checks
#: the bindings' issue times against its own clock).
WALL_OFFSET_S = time.time() - time.monotonic()


@dataclass
class Member:
    """One member of the uplink mesh on its own UplinkRadio."""

    driver: NodeDriver
    mesh: MeshNode
    radio: UplinkRadio
    events: list[object] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"{V4}:{self.radio.bound_port}"

    def route_to(self, other: Member) -> tuple[int | None, str | None]:
        entries = {e.aor: e for e in self.mesh.overlay.who(self.driver.now())}
        entry = entries.get(uplink_aor(other.mesh.node_id))
        return (None, None) if entry is None else (entry.hops, entry.next_hop)


def _mesh(name: str, loop: asyncio.AbstractEventLoop, seed: int,
          overlay: OverlayConfig, epoch: int) -> MeshNode:
    return make_uplink_mesh(identity(name), incident=INCIDENT, trust=TrustPolicy(),
                            overlay=overlay, registration_lifetime_s=300,
                            rng=random.Random(seed), now=loop.time(), seq_base=epoch << 32,
                            wall_offset_s=WALL_OFFSET_S, credential=None)


async def member(name: str, peers: list[str], seed: int, *, relay: bool,
                 overlay: OverlayConfig = FAST_OVERLAY, epoch: int = 1,
                 reachable: bool = True) -> Member:
    """A relay (island node + uplink mesh in one NodeCore) or a bare uplink-mesh node (the
    dht-node's shape: dst None goes to the uplink peers); ``epoch``: its boot epoch;
    ``reachable``: its uplink binding names its transport address (else none, as for a
    member behind a NAT that nobody can reach directly)."""
    loop = asyncio.get_running_loop()
    radio = UplinkRadio([V4], 0, peers=peers)
    await radio.open()
    mesh = _mesh(name, loop, seed, overlay, epoch)
    core: NodeCore | MeshNode = mesh
    if relay:
        island = MeshNode(identity(name), NodeSettings(incident=INCIDENT, role="relay",
                                                       overlay=overlay),
                          verifier=SignatureVerifier(), rng=random.Random(seed + 100),
                          now=loop.time(), seq_base=1 << 32, wall_offset_s=WALL_OFFSET_S)
        core = compose(island, now=loop.time(), uplink=mesh)
    member = Member(NodeDriver(core, [radio], None, loop, wall_offset_s=WALL_OFFSET_S,
                               node_on_uplink=not relay), mesh, radio)
    member.driver.event_sink = member.events.append
    member.driver.start()
    UplinkContacts(member.driver, mesh, own_addrs(radio) if reachable else (),
                   None).announce_after(0.3, loop)
    return member


@contextmanager
def closing(members: list[Member]) -> Iterator[list[Member]]:
    try:
        yield members
    finally:
        for member in members:
            member.driver.close()


async def unicast(src: Member, dst: Member, body: bytes) -> UnicastReceived:
    now = src.driver.now()
    src.driver.pump_.command(now, lambda: src.mesh.send_unicast(
        dst.mesh.node_id, AppKind.TUNNEL_WAN, body, now))

    def arrived() -> list[UnicastReceived]:
        return [e for e in dst.events if isinstance(e, UnicastReceived) and e.body == body]

    await wait_until(lambda: bool(arrived()), "the unicast at its destination", WAIT_S)
    return arrived()[0]


def test_two_members_that_know_only_the_dht_node_reach_each_other_through_it() -> None:
    async def scenario() -> None:
        c = await member("c", [], 3, relay=False)
        with closing([c]) as members:
            a = await member("a", [c.addr], 1, relay=True)
            members.append(a)
            b = await member("b", [c.addr], 2, relay=False, reachable=False)
            members.append(b)
            await wait_until(lambda: a.route_to(b) == (2, c.mesh.node_id.hex()),
                                    "a route from A to B through C", WAIT_S)
            assert a.radio.peers() == [c.addr]          # A never learned B's address
            got = await unicast(a, b, b"across the WAN")
            assert got.origin == a.mesh.node_id and got.hops == 2
            # C learned A and B from hearing them; its frames reached both.
            assert set(c.radio.peers()) == {a.addr, b.addr}
            assert a.radio.counters["rx"] > 0 and b.radio.counters["rx"] > 0

    asyncio.run(scenario())


def test_members_configured_with_each_other_talk_directly() -> None:
    async def scenario() -> None:
        b = await member("b", [], 2, relay=False)
        with closing([b]) as members:
            a = await member("a", [b.addr], 1, relay=True)
            members.append(a)
            await wait_until(lambda: a.route_to(b)[0] == 1, "a direct route from A to B",
                             WAIT_S)
            assert a.route_to(b)[1] == b.mesh.node_id.hex()
            got = await unicast(a, b, b"direct")
            assert got.origin == a.mesh.node_id and got.hops == 1
            assert b.radio.peers() == [a.addr]          # learned by hearing A

    asyncio.run(scenario())


def test_a_member_restarted_on_another_port_is_reached_again_through_the_dht_node() -> None:
    async def scenario() -> None:
        c = await member("c", [], 3, relay=False)
        with closing([c]) as members:
            a = await member("a", [c.addr], 1, relay=True)
            b = await member("b", [c.addr], 2, relay=False, reachable=False)
            members += [a, b]
            via_c = (2, c.mesh.node_id.hex())
            await wait_until(lambda: a.route_to(b) == via_c, "a route A->B", WAIT_S)
            await unicast(a, b, b"before")
            old_addr = b.addr
            b.driver.close()                        # B's process dies...
            b = await member("b", [c.addr], 2, relay=False, epoch=2,  # ...and restarts
                             reachable=False)
            members.append(b)
            assert b.addr != old_addr
            await wait_until(lambda: a.route_to(b) == via_c and c.route_to(b)[0] == 1,
                             "the routes to the restarted B", WAIT_S)
            got = await unicast(a, b, b"after the restart")
            assert got.origin == a.mesh.node_id and got.hops == 2
            assert b.addr in c.radio.peers()        # C learned the new address by hearing

    asyncio.run(scenario())


def test_a_relay_learns_a_members_address_from_its_uplink_binding_and_goes_direct() -> None:
    async def scenario() -> None:
        c = await member("c", [], 3, relay=False)
        with closing([c]) as members:
            a = await member("a", [c.addr], 1, relay=True)
            b = await member("b", [c.addr], 2, relay=False)     # names its address
            members += [a, b]
            # A's tunnel hands B's binding contacts to the edge (UplinkPeers): A adds B as a
            # peer, B hears A, and the uplink mesh finds the direct link.
            await wait_until(lambda: b.addr in a.radio.peers(), "A learns B's address",
                             WAIT_S)
            await wait_until(lambda: a.route_to(b) == (1, b.mesh.node_id.hex()),
                             "a direct route from A to B", WAIT_S)
            got = await unicast(a, b, b"direct after learning")
            assert got.hops == 1
            assert a.radio.counters["peers_learned"] >= 1

    asyncio.run(scenario())
