"""tools/bench/airtime.py: its quick mode end to end (root), and its report on fixed figures.

The quick run builds both chains, installs Reticulum + LXMF into the benchmark's venv when
it is missing (about 10 s the first time), starts both stacks and runs every phase with 5
messages: about 45 s on the development machine.
"""

from __future__ import annotations

import json

import pytest

from tests.envcheck import require_root
from tools.bench import airtime
from tools.bench.airtime_report import ROWS, TARGETS, ratios, render, targets

STACKS = ("meshcomm", "reticulum")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.root
def test_quick_run_measures_both_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    assert airtime.main(["--quick", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "cold start of reticulum" in captured.err  # progress goes to stderr
    assert report["options"]["messages"] == 5 and report["hops"] == 4
    rep = report["repetitions"][0]
    for name in STACKS:
        stack = report["stacks"][name]
        # Both stacks came up from cold and reached the far end over 4 hops.
        assert 0 < stack["cold_start_s"] < airtime.COLD_START_LIMIT_S
        # Idle control traffic is counted on the links. Reticulum's interface discovery
        # beacons every 1.6 s, so the quick run's 2 s window shows the meter counting;
        # meshcomm's beacons follow Trickle (issue 13) and a 2 s window may hold none.
        idle = stack["idle_bytes_per_s_per_node"]
        assert idle > 0 if name == "reticulum" else idle >= 0
        assert (stack["idle_payload_per_s_per_node"] < idle if idle > 0
                else stack["idle_payload_per_s_per_node"] == 0)
        # Without loss every message arrives exactly once, after a positive latency
        # measured in one clock, and it cost bytes on the links.
        clean = rep[name]["phases"]["0"]
        assert clean["sent"] == clean["delivered"] == clean["exactly_once"] == 5, clean
        assert all(0 < x < 5.0 for x in clean["latencies_s"]), clean
        assert clean["bytes"] > 0 and clean["packets"] > 0
        assert stack["loss_0"]["bytes_per_delivered"] > 0
        for loss in airtime.LOSSES:
            row = stack[f"loss_{loss}"]
            assert row["sent"] == 5
            assert 0.0 <= row["exactly_once_fraction"] <= row["delivered_fraction"] <= 1.0
    # Ratios are meshcomm over Reticulum, from the same run's figures.
    mesh, rns = (report["stacks"][n]["idle_bytes_per_s_per_node"] for n in STACKS)
    assert report["ratio_meshcomm_over_reticulum"]["idle_bytes_per_s_per_node"] == \
        round(mesh / rns, 3)
    assert set(report["targets"]) == {name for name, *_ in TARGETS}


def _stack(scale: float) -> dict[str, object]:
    loss = {"sent": 10, "delivered_fraction": 1.0, "exactly_once_fraction": 0.9,
            "duplicated": 1, "latency_p50_ms": 5.0 * scale, "latency_p95_ms": 9.0 * scale,
            "bytes_per_delivered": 2000.0 * scale, "net_bytes_per_delivered": 1800.0 * scale,
            "net_payload_per_delivered": 1500.0 * scale, "cpu_ms_per_delivered": 4.0 * scale}
    return {"cold_start_s": 3.0 * scale, "idle_bytes_per_s_per_node": 100.0 * scale,
            "idle_payload_per_s_per_node": 60.0 * scale, "idle_cpu_pct_per_node": 0.5 * scale,
            **{f"loss_{n}": dict(loss) for n in airtime.LOSSES}}


def test_report_ratios_and_table() -> None:
    stacks = {"meshcomm": _stack(2.0), "reticulum": _stack(1.0)}
    stacks["reticulum"]["loss_30"] = {**stacks["reticulum"]["loss_30"],  # type: ignore[dict-item]
                                      "latency_p95_ms": None}
    got = ratios(stacks)
    assert got["idle_bytes_per_s_per_node"] == 2.0
    assert got["loss_0.net_bytes_per_delivered"] == 2.0
    assert got["loss_30.exactly_once_fraction"] == 1.0
    assert got["loss_30.latency_p95_ms"] is None  # Reticulum delivered nothing to time
    met = targets(stacks, got)
    # Twice Reticulum's bytes and latency: those bounds fail; 18 ms p95 at 10% passes, and
    # 90% exactly once at 30% is below the 98.5% measured before the issue.
    assert met == {name: name.startswith("latency p95 at 10%") for name, *_ in TARGETS}
    report = {"nodes": 5, "hops": 4, "stacks": stacks, "ratio_meshcomm_over_reticulum": got,
              "targets": met,
              "options": {"reps": 1, "messages": 10, "size": 100, "gap_s": 0.25}}
    lines = render(report).splitlines()
    assert len(lines) == 3 + len(ROWS)
    assert "latency p95 at 10% loss <= 100 ms: met" in lines[-1]
    idle = next(line for line in lines if line.startswith("idle IP bytes/s per node"))
    assert idle.split()[-3:] == ["200.0", "100.0", "2.00"]
    p95 = next(line for line in lines if line.startswith("30% loss: latency p95"))
    assert p95.split()[-3:] == ["18.0", "-", "-"]
