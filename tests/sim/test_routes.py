"""Routes after the mesh formed: following next hops from any node reaches any destination.

Found by the issue 9 incident run (100 nodes, 10% loss, seed 3: one MESSAGE never arrived,
its unicasts and store-and-forward retries circling between two nodes): within one flood,
a later copy via the current next hop raises the route's metric (RouteTable.consider
refreshes it whatever it is), so a third neighbour's offer -- a path through this very
node -- looks better, and the two nodes point at each other until the destination's next
flood. The route table now keeps a route's metric within one flood (a later copy of
the same flood via the current next hop refreshes, never raises it)."""

from __future__ import annotations

import pytest

from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.sim.traffic import TrafficEvent, TrafficKind
from meshcomm.types import LinkAddr, NodeId


def route_loops(sim: Simulator) -> list[tuple[str, str]]:
    """(source, destination) pairs whose next hops run in a circle."""
    names = sim.node_names()
    cores = {n: sim.core(n) for n in names}
    loops = []
    for dst in names:
        target = cores[dst]
        assert target is not None
        for src in names:
            cur, seen = src, set()
            while cur != dst and cur not in seen:
                seen.add(cur)
                core = cores[cur]
                assert core is not None
                route = core.overlay.routes.get(NodeId(target.node_id), sim.now)
                if route is None:
                    break
                cur = route.next_hop
            if cur in seen:
                loops.append((src, dst))
    return loops


@pytest.mark.parametrize("seed", [1, 5])
def test_no_routing_loops_once_the_mesh_formed(seed: int) -> None:
    sim = Simulator(sim_config(ScenarioParams(topology="random", nodes=100, loss=0.1,
                                              duration_s=15, seed=seed)))
    assert sim.run()["coverage"] == 1.0
    assert route_loops(sim) == []


def test_the_loop_finder_finds_a_loop() -> None:
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=3, duration_s=8,
                                              seed=1)))
    sim.run()
    assert route_loops(sim) == []
    n1, n2 = sim.core("n1"), sim.core("n2")
    assert n1 is not None and n2 is not None
    # n1 sends n2's traffic back to n0, which sends it to n1: a loop for n0 and n1.
    route = n1.overlay.routes.get(NodeId(n2.node_id), sim.now)
    assert route is not None
    route.next_hop = LinkAddr("n0")
    assert set(route_loops(sim)) == {("n0", "n2"), ("n1", "n2")}


def test_no_routing_loops_after_the_destinations_refresh_their_bindings() -> None:
    """Found by the bench's whole-node run (200 nodes, 10% loss, seed 7): from the first
    binding refresh (~150 s) on, 7 of 9 held MESSAGEs met a loop of next hops (n113 and
    n185 pointed at each other toward n10 from 299.8 s to 445 s). A node kept the previous
    flood's next hop (its metric looked lower) while it re-sent the new flood's first copy,
    which came another way; a neighbour then routed through it along that copy and it
    routed back. Here: 15 looping pairs at 160 s before the fix (RouteTable.consider:
    a newer envelope via another next hop takes over, an older one never does)."""
    sim = Simulator(sim_config(ScenarioParams(topology="random", nodes=100, loss=0.1,
                                              duration_s=170, seed=1)))
    loops: dict[float, int] = {}

    def count(s: Simulator) -> None:
        loops[s.now] = len(route_loops(s))

    for at in (100.0, 160.0, 169.0):
        sim.call_at(at, count)
    assert sim.run()["coverage"] == 1.0
    assert loops == {100.0: 0, 160.0: 0, 169.0: 0}


def test_a_message_over_a_route_longer_than_the_flood_ttl_arrives() -> None:
    """Found by the whole-node run at seed 1 (200 nodes, 10% loss): n15's route to n32 was
    17 hops (anti-entropy hands records on with their hop counts, beyond the 16-hop flood
    TTL), and n82, one hop from n32, acknowledged then dropped every copy (ttl_expired):
    the MESSAGE was held and each retry died the same way until n32's next flood. A chain
    of 18 nodes: n0's route to n17 is 17 hops; the MESSAGE was held for the whole run
    before unicasts left with the wire's maximum TTL."""
    params = ScenarioParams(topology="chain", nodes=18, loss=0.0, duration_s=60, seed=1)
    message = TrafficEvent(30.0, TrafficKind.MESSAGE, "n0", "n17")
    sim = Simulator(sim_config(params, traffic=([message], [])))
    messages = sim.run()["messages"]
    n0, n17 = sim.core("n0"), sim.core("n17")
    assert n0 is not None and n17 is not None
    route = n0.overlay.routes.get(NodeId(n17.node_id), sim.now)
    assert route is not None and route.hops == 17
    assert isinstance(messages, dict)
    assert (messages["delivered"], messages["held"], messages["pending_at_end"]) == (1, 0, 0)
