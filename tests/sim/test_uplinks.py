"""Islands bridged by uplinks in the simulator (issue 10 item 7): whole nodes in separate
radio islands, the uplinked relays on a WAN with the in-memory DHT model, cross-island
MESSAGEs through the real gateways, tunnels, bridges and uplink meshes."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from meshcomm.cli.main import main
from meshcomm.dht.api import UPLINK_CAP
from meshcomm.errors import ConfigError
from meshcomm.sim.edge import SimStalled
from meshcomm.sim.engine import Action, ActionKind, SimConfig, Simulator
from meshcomm.sim.scenario import parse_scenario
from meshcomm.sim.topology import LinkSpec, hub, island_names, islands
from meshcomm.sim.traffic import TrafficEvent, TrafficKind, TrafficPlan, TrafficRate
from meshcomm.sim.uplinks import UplinkSpec, WanCounter


def two_islands(seed: int = 3, down: tuple[tuple[float, float], ...] = (),
                duration_s: float = 90.0, messages_at: float = 30.0) -> SimConfig:
    """2 islands x 5 nodes, the hub of each uplinked; 10 MESSAGEs each way across."""
    topo = islands(2, 5, LinkSpec(0.0, 0.002), random.Random(1))
    hubs = [hub(topo, names) for names in island_names(2, 5)]
    events = [TrafficEvent(messages_at + i, TrafficKind.MESSAGE, f"a{i % 5}", f"b{(i + 1) % 5}")
              for i in range(10)]
    events += [TrafficEvent(messages_at + 0.5 + i, TrafficKind.MESSAGE, f"b{i % 5}",
                            f"a{(i + 2) % 5}") for i in range(10)]
    return SimConfig(topology=topo, duration_s=duration_s, seed=seed,
                     traffic=TrafficPlan(events=tuple(events)),
                     roles=dict.fromkeys(hubs, "relay"),
                     uplinks=(UplinkSpec(tuple(hubs), delay_s=0.05, down=down),))


def cross(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = result["uplinks"]["cross_site_messages"]
    return out


def test_two_islands_deliver_cross_island_messages_exactly_once() -> None:
    sim = Simulator(two_islands())
    result = sim.run()
    c = cross(result)
    assert c["sent"] == 20
    assert c["delivered_once"] == 20 and c["duplicates"] == 0, c
    assert c["failed"] == 0 and c["pending_at_end"] == 0
    assert 0.1 < c["latency_s"]["p95"] < 2.0          # 2 x 50 ms WAN legs + radio hops
    uplinks = result["uplinks"]
    assert uplinks["uplinked"] == ["a0", "b0"]
    res = uplinks["resolution"]
    assert res["answered"] == {"found": 20} and res["unanswered"] == 0
    assert 0.05 < res["latency_s"]["p50"] < 2.0
    assert uplinks["transitions"] == {"joining->up": 2}
    assert uplinks["counters"]["tunnel_items_delivered"] >= 40   # each MESSAGE and its 200
    assert uplinks["wan"].get(WanCounter.LINK_DOWN, 0) == 0
    # Remote bindings are not flooded: the islands stay apart on the radio (no radio
    # broadcast went over the WAN) and know each other only through the DHT.
    for name in sim.node_names():
        core = sim.core(name)
        assert core is not None
        held = {stored.binding.aor for stored in core.table}
        assert all(aor.startswith(f"sip:{name[0]}") for aor in held), (name, held)
    relay = sim.core("a0")
    assert relay is not None and UPLINK_CAP in relay.settings.caps
    handset = sim.core("a1")
    assert handset is not None and UPLINK_CAP not in handset.settings.caps


def test_same_seed_same_digest_and_report() -> None:
    first, second = Simulator(two_islands()).run(), Simulator(two_islands()).run()
    assert first["digest"] == second["digest"]
    assert first["uplinks"] == second["uplinks"]
    other = Simulator(two_islands(seed=4)).run()
    assert other["digest"] != first["digest"]


def test_messages_sent_while_an_uplink_is_down_are_held_then_delivered_once() -> None:
    """b0's link is down from 25 s to 70 s; the MESSAGEs (30..40 s) find no way across
    (480, held by store-and-forward) and leave when the uplink is back."""
    result = Simulator(two_islands(down=((25.0, 70.0),), duration_s=150.0)).run()
    c = cross(result)
    assert c["sent"] == 20
    assert c["held"] > 0
    assert c["delivered_once"] == 20 and c["duplicates"] == 0, c
    assert c["latency_s"]["max"] > 70.0 - 40.0        # the held ones waited for the link
    uplinks = result["uplinks"]
    assert uplinks["wan"].get(WanCounter.LINK_DOWN, 0) > 0
    transitions = uplinks["transitions"]
    assert transitions["up->grace"] >= 1 and transitions["grace->down"] >= 1
    assert transitions["joining->up"] >= 3             # both at start, then again


def test_cross_site_fraction_picks_pairs_across_islands() -> None:
    topo = islands(3, 4, LinkSpec(0.0, 0.002), random.Random(2))
    plan = TrafficPlan(rates=(TrafficRate(TrafficKind.MESSAGE, 10.0, 0.0, 10.0),),
                       cross_site=1.0)
    home = topo.components()
    events = plan.expand(topo.names, random.Random(5), 60.0, 0.0, home)
    assert len(events) == 100 and all(home[e.src] != home[e.dst] for e in events)
    half = TrafficPlan(random_messages=400, cross_site=0.5)
    mixed = half.expand(topo.names, random.Random(5), 100.0, 0.0, home)
    across = sum(1 for e in mixed if home[e.src] != home[e.dst])
    assert 200 < across < 400          # half forced across, plus chance pairs
    with pytest.raises(ConfigError, match="two islands"):
        plan.expand(["a0", "a1"], random.Random(5), 60.0, 0.0, {"a0": 0, "a1": 0})


def test_islands_are_separate_components_with_hubs() -> None:
    topo = islands(3, 20, LinkSpec(0.1, 0.002), random.Random(9))
    home = topo.components()
    assert sorted(set(home.values())) == [0, 1, 2]
    for k, names in enumerate(island_names(3, 20)):
        assert {home[n] for n in names} == {k}
        assert hub(topo, names) in names


def test_flap_windows() -> None:
    spec = UplinkSpec(("a", "b"), flap_period_s=120.0, flap_down_s=60.0, flap_stagger_s=20.0,
                      down=((10.0, 20.0), (50.0, 70.0)))
    assert spec.windows(0, 300.0) == [(10.0, 20.0), (50.0, 120.0), (180.0, 240.0)]
    assert spec.windows(1, 300.0) == [(10.0, 20.0), (50.0, 70.0), (80.0, 140.0),
                                      (200.0, 260.0)]
    assert UplinkSpec(("a", "b")).windows(0, 1e6) == []


SCENARIO = {
    "scenario": {"topology": "islands", "islands": 3, "nodes": 6, "duration_s": 100,
                 "messages": 10, "cross_site": 1.0},
    "uplink": [{"delay_ms": 100, "loss": 0.02, "flap_period_s": 120, "flap_down_s": 60,
                "flap_stagger_s": 20, "grace_s": 5, "stable_s": 2}],
}


def test_scenario_islands_and_uplinks() -> None:
    config = parse_scenario(SCENARIO)
    (spec,) = config.uplinks
    home = config.topology.components()
    assert len(spec.nodes) == 3 and sorted(home[n] for n in spec.nodes) == [0, 1, 2]
    assert all(config.roles[n] == "relay" for n in spec.nodes)
    assert spec.delay_s == pytest.approx(0.1) and spec.loss == 0.02
    assert spec.flap_period_s == 120 and spec.flap_stagger_s == 20
    assert spec.record_ttl_s == 600                 # the runtime's default
    assert config.traffic.cross_site == 1.0 and config.whole_nodes
    explicit = parse_scenario({**SCENARIO, "uplink": [{"nodes": ["a1", "b2"],
                                                       "down": [[10, 20]],
                                                       "record_ttl_s": 120}]})
    assert explicit.uplinks[0].record_ttl_s == 120
    assert explicit.uplinks[0].nodes == ("a1", "b2")
    assert explicit.uplinks[0].down == ((10.0, 20.0),)


@pytest.mark.parametrize(("uplink", "message"), [
    ({"nodes": ["a0", "zz"]}, "unknown node 'zz'"),
    ({"nodes": ["a0"]}, "at least two"),
    ({"nodes": ["a0", "a0"]}, "on two uplinks"),
    ({"flap_period_s": 60, "flap_down_s": 60}, "less than flap_period_s"),
    ({"flap_period_s": 60}, "both flap_period_s and flap_down_s"),
    ({"down": [[30, 10]]}, r"uplink\[0\].down\[0\]"),
    ({"down": [[1, "x"]]}, r"uplink\[0\].down\[0\]"),
    ({"loss": 1.0}, r"uplink\[0\].loss"),
    ({"delay_ms": -1}, r"uplink\[0\].delay_ms"),
    ({"grace_s": 0}, r"uplink\[0\].grace_s"),
    ({"record_ttl_s": 5}, r"uplink\[0\].record_ttl_s"),
    ({"colour": "red"}, "unknown key"),
])
def test_bad_uplinks_are_refused_with_their_path(uplink: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario({**SCENARIO, "uplink": [uplink]})


def test_bad_island_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"scenario\.cross_site"):
        parse_scenario({"scenario": {**SCENARIO["scenario"], "cross_site": 1.5}})
    with pytest.raises(ConfigError, match=r"scenario\.islands"):
        parse_scenario({"scenario": {"topology": "random", "islands": 2}})
    with pytest.raises(ConfigError, match=r"scenario\.islands"):
        parse_scenario({"scenario": {**SCENARIO["scenario"], "islands": 27}})
    with pytest.raises(ConfigError, match=r"uplink\[1\].nodes"):
        parse_scenario({**SCENARIO, "uplink": [{"nodes": ["a0", "b0"]},
                                               {"nodes": ["b0", "c0"]}]})
    with pytest.raises(ConfigError, match="needed unless"):
        parse_scenario({"scenario": {"topology": "chain", "nodes": 4}, "uplink": [{}]})
    with pytest.raises(ConfigError, match="baseline runs no uplinks"):
        parse_scenario(SCENARIO, baseline="flood")


def test_cli_islands_with_flapping_uplinks(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sim", "--topology", "islands", "--islands", "2", "--nodes", "4", "--messages",
            "12", "--cross-site", "1", "--duration", "90", "--uplink-flap", "20",
            "--uplink-delay-ms", "80", "--seed", "2", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    c = result["uplinks"]["cross_site_messages"]
    assert c["sent"] == 12 and c["delivered_once"] + c["pending_at_end"] == 12, c
    assert result["uplinks"]["transitions"].get("up->grace", 0) >= 1
    assert result["coverage"] == 1.0          # per island: remote bindings are not flooded
    assert main([a for a in argv if a != "--json"]) == 0
    assert "cross-site" in capsys.readouterr().out
    for bad, flag in ((["--uplink-loss", "1"], "--uplink-loss"),
                      (["--cross-site", "2"], "--cross-site"),
                      (["--islands", "1"], "--islands")):
        assert main([*argv[:-1], *bad]) == 2
        assert flag in capsys.readouterr().err


def test_a_node_whose_timer_never_clears_stops_the_run_instead_of_hanging() -> None:
    """A part that stays due at one instant (its on_timer never clears it) would spin the
    simulator at one virtual time forever: the edge's guard names the node and its parts."""
    sim = Simulator(two_islands())
    for name in sim.node_names():
        sim.edge(name).max_same_instant_arms = 500

    def break_tunnel(s: Simulator) -> None:
        core = s.node_core("a1")
        assert core is not None and core.tunnel is not None
        stuck = s.now + 1.0
        core.tunnel.next_timer = lambda: stuck      # type: ignore[method-assign]

    sim.call_at(20.0, break_tunnel)
    with pytest.raises(SimStalled, match=r"node a1: timer due at 21\.0 .*MeasuredTunnel=21\.0"):
        sim.run()


def test_three_islands_with_flapping_uplinks_deliver_every_message_exactly_once() -> None:
    """The done-when's shape at a CI size (the full 3 x 50 nodes / 1,000 MESSAGEs run is
    ``tools/bench/uplinks.py``): three islands of 12 nodes with 10% radio loss, each
    uplink up 60 s then down 60 s, 20 s apart (at times all three are cut), 140 MESSAGEs
    across islands. Those that find no way across are held and leave when an uplink
    returns: every one arrives exactly once."""
    config = parse_scenario({
        "scenario": {"topology": "islands", "islands": 3, "nodes": 12, "loss": 0.1,
                     "duration_s": 400, "seed": 5, "cross_site": 1.0},
        "traffic": [{"kind": "message", "rate_per_s": 0.5, "start_s": 20, "end_s": 300}],
        "uplink": [{"delay_ms": 100, "loss": 0.02, "flap_period_s": 120, "flap_down_s": 60,
                    "flap_stagger_s": 20}]})
    result = Simulator(config).run()
    c = cross(result)
    assert c["sent"] == 140
    assert c["delivered_once"] == 140 and c["duplicates"] == 0, c
    assert c["held"] > 30                        # many found every uplink of the pair cut
    assert c["latency_s"]["max"] > 60.0
    uplinks = result["uplinks"]
    assert uplinks["transitions"]["grace->down"] >= 6
    assert uplinks["resolution"]["answered"]["found"] >= 140
    assert uplinks["wan"][WanCounter.LINK_DOWN] > 0 and uplinks["wan"][WanCounter.LOST] > 0


def test_an_uplinked_relay_killed_and_restarted_bridges_again() -> None:
    """b0 is killed at 40 s (its DHT node dies with it in the model) and restarted at
    50 s: a new bridge and uplink mesh come up and the MESSAGEs at 60..70 s cross."""
    config = two_islands(messages_at=60.0, duration_s=130.0)
    config.traffic = TrafficPlan(events=tuple(
        e if e.src != "b0" else TrafficEvent(e.at_s, e.kind, "b1", e.dst)
        for e in config.traffic.events))
    config.actions = [Action(40.0, ActionKind.KILL, ("b0",)),
                      Action(50.0, ActionKind.RESTART, ("b0",))]
    sim = Simulator(config)
    result = sim.run()
    c = cross(result)
    assert c["delivered_once"] == 20 and c["duplicates"] == 0, c
    assert sim.boots("b0") == 2
    assert result["uplinks"]["transitions"]["joining->up"] >= 3   # b0 up again
    with pytest.raises(ConfigError, match="on two uplinks"):
        Simulator(dataclasses.replace(config, uplinks=(UplinkSpec(("a0", "b0")),
                                                       UplinkSpec(("b0", "a1")))))
