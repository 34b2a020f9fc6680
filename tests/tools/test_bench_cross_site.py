"""tools/bench/cross_site.py end to end, small: real nodes, real OpenDHT, three AoRs."""

from __future__ import annotations

import json

import pytest

from tools.bench import cross_site


def test_cold_then_warm_resolution_of_remote_aors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cross_site.main(["--aors", "3", "--dht-nodes", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cold, warm = report["rows"]
    assert (cold["phase"], warm["phase"]) == ("cold", "warm")
    # Every AoR's MESSAGE made the gateway ask, and the far island's AoR was found.
    assert cold["asked"] == cold["found"] == 3 and cold["answers"] == {"found": 3}
    assert cold["path_delay_ms"] == 4 * 5.0
    # A cold answer crosses four radio hops of 5 ms each; a warm one comes from the cache.
    assert cold["p50_ms"] >= 20.0
    assert warm["found"] == 3 and warm["p95_ms"] < cold["p50_ms"]
    assert cold["target_met"] == (cold["p95_ms"] - 20.0 <= cross_site.TARGET_P95_MS)
