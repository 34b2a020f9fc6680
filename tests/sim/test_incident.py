"""Issue 9 done-when, on a smaller mesh than the benchmark's (which is run by hand and by
``tools/bench/gossip.py``): whole nodes with simulated SIP clients deliver every MESSAGE
exactly once and set up every call with media both ways, deterministically for a seed;
traffic entries of a scenario are validated with errors naming the key."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from meshcomm.cli.main import main
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.sim.clients import Direction, parse_frame_untrusted, rtp_frame
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, parse_scenario, sim_config
from meshcomm.sim.traffic import TrafficKind, TrafficPlan, TrafficRate


def incident(seed: int, **kw: Any) -> dict[str, Any]:
    params = ScenarioParams(topology="random", nodes=30, loss=0.1, duration_s=60, seed=seed,
                            messages=60, calls=4, call_duration_s=5.0, **kw)
    return Simulator(sim_config(params)).run()


def test_every_message_once_every_call_with_media_both_ways() -> None:
    result = incident(3)
    m, c = result["messages"], result["calls"]
    assert m["sent"] == 60 and m["skipped"] == 0
    assert m["delivered"] == m["sent"] and m["duplicates"] == 0 and m["failed"] == 0
    assert 0 < m["latency_s"]["p50"] <= m["latency_s"]["p95"] <= m["latency_s"]["max"] < 10
    assert c["attempted"] == 4 and c["established"] == 4 and c["media_both_ways"] == 4
    # 5 s each way at 50 frames/s, lossy radio: most frames arrive, each at most once
    assert c["media_frames_sent"] >= 4 * 2 * 240
    assert c["media_frames_received"] >= 0.9 * c["media_frames_sent"]
    assert c["media_frames_duplicated"] == 0
    assert c["media_frames_lost"] == c["media_frames_sent"] - c["media_frames_received"]
    assert 0 < c["setup_s"]["p50"] <= c["setup_s"]["p95"] < 5
    assert result["coverage"] == 1.0


def test_same_seed_same_digest_other_seed_other_digest() -> None:
    first = incident(5)
    again = incident(5)
    assert again["digest"] == first["digest"]
    assert again["messages"] == first["messages"] and again["calls"] == first["calls"]
    assert incident(6)["digest"] != first["digest"]


def test_whole_nodes_without_traffic_differ_from_gossip_only() -> None:
    params = ScenarioParams(topology="chain", nodes=4, loss=0.0, duration_s=10, seed=1)
    bare = Simulator(sim_config(params)).run()
    params.gateways = True
    whole: dict[str, Any] = Simulator(sim_config(params)).run()
    assert bare["coverage"] == whole["coverage"] == 1.0
    assert "messages" not in bare
    assert whole["messages"]["sent"] == 0 and whole["calls"]["attempted"] == 0


def test_a_rate_entry_sends_evenly_between_the_named_nodes() -> None:
    config = parse_scenario({
        "scenario": {"topology": "chain", "nodes": 4, "duration_s": 40, "seed": 2},
        "traffic": [{"kind": "message", "rate_per_s": 2, "start_s": 10, "end_s": 15,
                     "from": "n0", "to": "n3"},
                    {"kind": "call", "from": "n3", "to": "n1", "at_s": 12,
                     "duration_s": 2}],
    })
    sim = Simulator(config)
    result: dict[str, Any] = sim.run()
    assert result["messages"]["sent"] == 10 and result["messages"]["delivered"] == 10
    assert result["calls"]["established"] == 1 and result["calls"]["media_both_ways"] == 1
    assert sim.incident is not None
    sent = sorted(r.sent_at for r in sim.incident.stats.messages.values())
    assert sent == pytest.approx([10 + i / 2 for i in range(10)])
    assert {(r.src, r.dst) for r in sim.incident.stats.messages.values()} == {("n0", "n3")}


@pytest.mark.parametrize(("entry", "path"), [
    ({"kind": "fax", "from": "n0", "to": "n1", "at_s": 1}, r"traffic\[0\]\.kind"),
    ({"kind": "message", "from": "n9", "to": "n1", "at_s": 1}, r"traffic\[0\]\.from"),
    ({"kind": "message", "from": "n0", "to": "n0", "at_s": 1}, r"traffic\[0\]\.to"),
    ({"kind": "message", "from": "n0", "to": "n1"}, r"traffic\[0\]"),
    ({"kind": "message", "from": "n0", "to": "n1", "at_s": 1, "rate_per_s": 1},
     r"traffic\[0\]"),
    ({"kind": "message", "from": "n0", "at_s": 1}, r"traffic\[0\]\.to"),
    ({"kind": "message", "from": "n0", "to": "n1", "at_s": 99}, r"traffic\[0\]\.at_s"),
    ({"kind": "message", "from": "n0", "to": "n1", "at_s": 1, "duration_s": 3},
     r"traffic\[0\]\.duration_s"),
    ({"kind": "call", "rate_per_s": 0}, r"traffic\[0\]\.rate_per_s"),
    ({"kind": "call", "rate_per_s": 1, "start_s": 9, "end_s": 5}, r"traffic\[0\]\.end_s"),
    ({"kind": "call", "at_s": 1, "from": "n0", "to": "n1", "end_s": 5},
     r"traffic\[0\]\.end_s"),
    ({"kind": "message", "rate_per_s": 1, "speed": 3}, r"traffic\[0\]\.speed"),
])
def test_traffic_entries_are_validated_naming_the_key(entry: dict[str, Any],
                                                      path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        parse_scenario({"scenario": {"topology": "chain", "nodes": 3, "duration_s": 60},
                        "traffic": [entry]})


def test_scenario_traffic_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"scenario\.messages"):
        parse_scenario({"scenario": {"nodes": 3, "messages": -1}})
    with pytest.raises(ConfigError, match=r"scenario\.gateways"):
        parse_scenario({"scenario": {"nodes": 3, "gateways": "yes"}})
    with pytest.raises(ConfigError, match="traffic"):
        parse_scenario({"scenario": {"nodes": 3}, "traffic": {"kind": "message"}})


def test_random_traffic_needs_room_in_the_run() -> None:
    params = ScenarioParams(topology="chain", nodes=3, duration_s=20, seed=1, messages=5)
    with pytest.raises(ConfigError, match="--duration"):
        Simulator(sim_config(params)).run()


def test_rate_plan_is_bounded() -> None:
    plan = TrafficPlan(rates=(TrafficRate(TrafficKind.MESSAGE, 1e6, 0.0, 1e6),))
    with pytest.raises(ConfigError, match="traffic"):
        plan.expand(["a", "b"], random.Random(1), 2e6, 0.0)


def test_media_frames_name_their_call_and_reject_garbage() -> None:
    frame = rtp_frame(7, Direction.BACKWARD, 300)
    assert parse_frame_untrusted(frame) == (7, Direction.BACKWARD, 300)
    for bad in (b"", frame[:5], b"\x00" + frame[1:]):
        with pytest.raises(DecodeError):
            parse_frame_untrusted(bad)


def test_cli_reports_messages_and_calls(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sim", "--topology", "chain", "--nodes", "4", "--duration", "45",
            "--messages", "5", "--calls", "1", "--call-duration", "2", "--seed", "2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["messages"]["sent"] == out["messages"]["delivered"] == 5
    assert set(out["messages"]["latency_s"]) == {"p50", "p95", "max"}
    assert out["calls"]["attempted"] == out["calls"]["established"] == 1
    assert set(out["calls"]["setup_s"]) == {"p50", "p95"}
    assert "media_frames_lost" in out["calls"]
    assert main([a for a in argv if a != "--json"]) == 0
    text = capsys.readouterr().out
    assert "5/5 delivered" in text and "1/1 established" in text


def test_cli_refuses_bad_traffic_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--messages", "-1"]) == 2
    assert "--messages" in capsys.readouterr().err
    assert main(["sim", "--nodes", "3", "--duration", "10", "--messages", "3"]) == 2
    assert "--duration" in capsys.readouterr().err


def test_scenario_file_with_traffic(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[scenario]\ntopology = "chain"\nnodes = 3\nduration_s = 60\nseed = 4\n'
                    '[[traffic]]\nkind = "message"\nfrom = "n0"\nto = "n2"\nat_s = 12\n',
                    encoding="utf-8")
    assert main(["sim", "--scenario", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["messages"]["sent"], out["messages"]["delivered"]) == (1, 1)
    # --messages adds random ones to the scenario's own
    assert main(["sim", "--scenario", str(path), "--messages", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["messages"]["sent"], out["messages"]["delivered"]) == (3, 3)
