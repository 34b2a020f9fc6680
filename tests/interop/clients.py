"""Helpers for the real-client tests: SIPp runs in a test-bed namespace, baresip checks.

baresip itself is started by :meth:`tools.testbed.Testbed.start_baresip` (see
:mod:`tools.testbed.baresip`); this module adds what the tests assert on. Each namespace has
its own loopback, so the node's gateway is always 127.0.0.1:5060 and a client's fixed port
(SIPp 5080/5090, baresip 5070) cannot collide with anything outside its namespace.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tools.testbed import Testbed
from tools.testbed.audio import match, read_wav
from tools.testbed.baresip import BaresipClient, TracedSip
from tools.testbed.nodes import wait_until

SCENARIOS: Final = Path(__file__).resolve().parent / "scenarios"
SIPP_TIMEOUT_S: Final = 60.0
DOMAIN: Final = "incident.local"


def wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """``proc``'s exit status, or -1 after killing it when it did not end in time."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -1


@dataclass
class SippRun:
    """One SIPp process in a namespace; ``wait()`` gives its exit status (0: all passed)."""

    scenario: str
    proc: subprocess.Popen[bytes]
    log_dir: Path
    stem: str

    def wait(self, timeout_s: float = SIPP_TIMEOUT_S) -> int:
        return wait_or_kill(self.proc, timeout_s)

    def text(self, suffix: str) -> str:
        path = self.log_dir / f"{self.stem}.{suffix}"
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        return (f"--- sipp {self.scenario} exit {self.proc.poll()}\n"
                f"[errors]\n{self.text('errors')[-3000:]}\n"
                f"[messages]\n{self.text('messages')[-4000:]}\n"
                f"[output]\n{self.text('out')[-1500:]}")


def start_sipp(tb: Testbed, node: int, scenario: str, *, service: str, port: int,
               calls: int = 1, extra: tuple[str, ...] = ()) -> SippRun:
    """Run ``sipp -sf scenarios/SCENARIO.xml`` in ``node`` against its gateway."""
    log_dir = tb.workdir
    stem = f"sipp-{scenario}-{node}-{port}"
    gateway = tb.node(node).sip_addr if node in tb.mesh_nodes else ("127.0.0.1", 5060)
    argv = ["sipp", f"{gateway[0]}:{gateway[1]}", "-sf", str(SCENARIOS / f"{scenario}.xml"),
            "-s", service, "-i", "127.0.0.1", "-p", str(port), "-m", str(calls),
            "-mp", str(port + 2), "-nostdin", "-timeout", f"{int(SIPP_TIMEOUT_S)}s",
            "-trace_err", "-error_file", str(log_dir / f"{stem}.errors"),
            "-trace_msg", "-message_file", str(log_dir / f"{stem}.messages"), *extra]
    with (log_dir / f"{stem}.out").open("wb") as out:
        proc = tb.popen(node, argv, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT)
    return SippRun(scenario, proc, log_dir, stem)


def start_sipp_builtin(tb: Testbed, node: int, scenario: str, *, port: int,
                       service: str = "service", calls: int = 1, rate: float = 1.0,
                       extra: tuple[str, ...] = (),
                       timeout_s: float = SIPP_TIMEOUT_S) -> SippRun:
    """Run SIPp's own ``-sn uac`` / ``-sn uas`` (unmodified, stock scenarios) in ``node``:
    the uac is given only the gateway's address and ``-s service``."""
    log_dir = tb.workdir
    stem = f"sipp-sn-{scenario}-{node}-{port}"
    gateway = tb.node(node).sip_addr if node in tb.mesh_nodes else ("127.0.0.1", 5060)
    argv = ["sipp", "-sn", scenario, "-s", service, "-i", "127.0.0.1", "-p", str(port),
            "-m", str(calls), "-r", f"{rate:g}", "-mp", str(port + 2), "-nostdin",
            "-timeout", f"{int(timeout_s)}s", "-timeout_error",
            "-trace_err", "-error_file", str(log_dir / f"{stem}.errors"),
            "-trace_stat", "-stf", str(log_dir / f"{stem}.csv"),
            "-trace_msg", "-message_file", str(log_dir / f"{stem}.messages"), *extra]
    if scenario == "uac":
        argv.insert(1, f"{gateway[0]}:{gateway[1]}")
    with (log_dir / f"{stem}.out").open("wb") as out:
        proc = tb.popen(node, argv, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT)
    return SippRun(f"-sn {scenario}", proc, log_dir, stem)


def sipp_counts(run: SippRun) -> dict[str, int]:
    """SuccessfulCall(C) and FailedCall(C) from the last line of SIPp's ``-trace_stat``."""
    lines = [ln for ln in run.text("csv").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    head, last = lines[0].split(";"), lines[-1].split(";")
    values = dict(zip(head, last, strict=False))
    out: dict[str, int] = {}
    for key in ("SuccessfulCall(C)", "FailedCall(C)", "TotalCallCreated"):
        if values.get(key, "").strip().isdigit():
            out[key] = int(values[key])
    return out


def run_sipp(tb: Testbed, node: int, scenario: str, **kwargs: object) -> SippRun:
    run = start_sipp(tb, node, scenario, **kwargs)  # type: ignore[arg-type]
    run.wait()
    return run


def wait_binding(tb: Testbed, node: int, aor: str, timeout_s: float) -> float | None:
    """Seconds until node ``node`` lists ``aor`` (None on timeout)."""
    return wait_until(lambda: aor in (tb.node(node).who_aors() or ()), timeout_s)


# -- baresip trace checks -----------------------------------------------------------------


def requests_with(client: BaresipClient, method: str, *, sent: bool,
                  body_has: str | None = None) -> list[TracedSip]:
    return [m for m in client.trace()
            if m.sent is sent and m.status is None and m.method == method
            and (body_has is None or body_has in m.body)]


def responses_to(client: BaresipClient, call_id: str, method: str, *,
                 sent: bool) -> list[TracedSip]:
    return [m for m in client.trace()
            if m.sent is sent and m.status is not None and m.method == method
            and m.headers.get("call-id") == call_id]


def final_statuses(client: BaresipClient, call_id: str, method: str, *, sent: bool) -> list[int]:
    return [m.status for m in responses_to(client, call_id, method, sent=sent)
            if m.status is not None and m.status >= 200]


# -- a baresip call with audio both ways ----------------------------------------------------


@dataclass(frozen=True)
class CallAudio:
    """What :func:`call_with_audio` measured: set-up time, and how each side's recording
    matches what the other side sent (:meth:`tools.testbed.audio.Match.as_dict`)."""

    setup_s: float
    at_callee: dict[str, float | int]
    at_caller: dict[str, float | int]

    def check(self, min_recorded_s: float, min_correlation: float) -> None:
        for who, got in (("callee", self.at_callee), ("caller", self.at_caller)):
            assert got["received_s"] >= min_recorded_s, f"{who} recorded only {got}"
            assert got["correlation"] >= min_correlation, f"{who}: {got}"


def recorded_match(receiver: BaresipClient, sent_signal: list[int]) -> dict[str, float | int]:
    """How ``receiver``'s recording of its last call matches ``sent_signal``."""
    _enc, dec = receiver.recordings()
    samples, rate = read_wav(dec)
    return match(sent_signal, samples, rate).as_dict()


def call_with_audio(tb: Testbed, caller: BaresipClient, callee: BaresipClient,
                    caller_signal: list[int], callee_signal: list[int], *, setup_s: float,
                    call_s: float, hangup_s: float) -> CallAudio:
    """``caller`` dials ``callee``; both see the call established within ``setup_s``; RTP
    flows ``call_s``; the caller hangs up: its BYE reaches the callee, is answered 200 and
    both report the call closed within ``hangup_s`` (asserted). Returns the figures."""
    a_mark, b_mark = len(caller.events), len(callee.events)
    t0 = time.monotonic()
    caller.dial(callee.aor)
    caller.wait_event("CALL_ESTABLISHED", setup_s, after=a_mark)
    took = time.monotonic() - t0
    callee.wait_event("CALL_ESTABLISHED", setup_s, after=b_mark)
    invite = requests_with(caller, "INVITE", sent=True)[-1]
    call_id = invite.headers["call-id"]
    time.sleep(call_s)  # the call itself: RTP flows for its duration
    caller.hangup()
    caller.wait_event("CALL_CLOSED", hangup_s, after=a_mark)
    callee.wait_event("CALL_CLOSED", hangup_s, after=b_mark)
    assert [m for m in requests_with(caller, "BYE", sent=True)
            if m.headers.get("call-id") == call_id], "the caller sent no BYE"
    bye_at_callee = requests_with(callee, "BYE", sent=False)
    assert bye_at_callee, "the BYE never reached the callee\n" + tb.describe()
    assert 200 in final_statuses(callee, bye_at_callee[-1].headers["call-id"], "BYE",
                                 sent=True)
    assert wait_until(lambda: 200 in final_statuses(caller, call_id, "BYE", sent=False),
                      hangup_s) is not None, "no 200 for the BYE\n" + caller.log_tail()
    return CallAudio(took, recorded_match(callee, caller_signal),
                     recorded_match(caller, callee_signal))
