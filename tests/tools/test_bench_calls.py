"""tools/bench/calls.py: the timing wrappers in a plain process, and a short run of the
bench on the namespace chain (root, about 15 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.envcheck import require_root
from tools.bench import calls


def test_the_wrappers_time_a_function_and_write_at_exit(tmp_path: Path) -> None:
    """A process started with the site directory and the two variables gets its named
    functions timed, including calls that raise; a name that does not exist is reported
    and the rest still timed."""
    script = ("import json, time\n"
              "time.sleep(0.8)\n"                     # the wrapping thread's first pass
              "for i in range(7): json.dumps([i])\n"
              "try:\n    json.loads('not json')\nexcept ValueError:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{calls.SITE_DIR}{os.pathsep}{Path.cwd()}",
           "MESHCOMM_CALLS": "json:dumps,json:loads,json:no_such_function",
           "MESHCOMM_CALLS_OUT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=30, check=True)
    assert "json:no_such_function not found" in done.stderr
    (dump,) = tmp_path.glob("*.json")
    timed = json.loads(dump.read_text())["calls"]
    assert timed["dumps"][0] == 7 and timed["dumps"][1] > 0
    assert timed["loads"][0] == 1                        # the call that raised counts


def test_without_the_variables_nothing_is_wrapped(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCOMM_CALLS")}
    env["PYTHONPATH"] = str(calls.SITE_DIR)
    done = subprocess.run([sys.executable, "-c", "import json, threading, time;"
                           "time.sleep(0.7); print(json.dumps.__module__,"
                           " [t.name for t in threading.enumerate()])"],
                          env=env, capture_output=True, text=True, timeout=30, check=True)
    assert "calls-timer" not in done.stdout and done.stdout.startswith("json")


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.root
def test_a_short_run_times_the_origin_and_the_relays(
        capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    assert calls.main(["--messages", "5", "--gap-s", "0.2", "--warmup-s", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["delivered"] == 5
    nodes = result["nodes"]
    assert set(nodes) == {"n0", "n1", "n2", "n3", "n4"}
    # the origin handled the 5 sends (and the bench's other requests) and sealed 5 MESSAGEs
    assert nodes["n0"]["ControlServer.handle_line"][0] >= 5
    assert nodes["n0"]["SipSealing.seal"][0] >= 5
    # every relay checked and forwarded each MESSAGE (and the 200 OK coming back)
    for relay in ("n1", "n2", "n3"):
        assert nodes[relay]["Forwarder._forward"][0] >= 10
        count, p50_us, _mean = nodes[relay]["Envelope.verify"]
        assert count >= 10 and 1 < p50_us < 100_000


def test_without_root_it_says_so(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(calls.os, "geteuid", lambda: 1000)
    assert calls.main(["--messages", "1"]) == 2
    assert "needs root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        calls.main(["--functions", "no-colon"])
