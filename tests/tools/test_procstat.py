"""The /proc sampler the hostile benchmark and tests read memory and CPU with."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tools.testbed.procstat import ProcSampler, cpu_seconds, rss_bytes


def test_rss_and_cpu_of_a_live_and_a_gone_process() -> None:
    assert (rss_bytes(os.getpid()) or 0) > 1 << 20
    assert cpu_seconds(os.getpid()) is not None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert rss_bytes(gone.pid) is None and cpu_seconds(gone.pid) is None


def test_sampler_sees_a_busy_and_an_idle_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = ProcSampler({"busy": busy.pid, "idle": idle.pid}, period_s=0.1).start()
        start = time.monotonic()
        time.sleep(1.5)
        sampler.stop()
        end = time.monotonic()
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    assert (sampler.cpu_percent("busy", start, end) or 0) > 30
    assert (sampler.cpu_percent("idle", start, end) or 0) < 5
    assert (sampler.peak_rss("busy", start, end) or 0) > 1 << 20
    assert sampler.rss_at("idle", end) == sampler.series("idle")[-1].rss
