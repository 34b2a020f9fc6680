"""Benchmark (root): SIPp call load through a node's gateway to a callee 4 hops away.

    python -m tools.bench.gateway [--rates 1,10,20,40] [--duration 60] [--delay-ms 15]
                                  [--modes one,many] [--call-ms 1000] [--json]

Topology: ``chain(5)``, every node a ``meshcomm handset`` with ``--impair delay=15ms`` (15 ms
per hop), no loss. The callee is SIPp's own ``-sn uas`` beside node 4, registered as
``sip:service@incident.local`` (one REGISTER sent from its port before SIPp takes it); the
caller is SIPp's own ``-sn uac`` beside node 0, given only the gateway's address and ``-s
service`` (stock scenarios, unmodified). Each call lasts ``--call-ms`` (SIPp ``-d``).

For each mode (``one``: all calls from one UDP socket, ``-t u1``; ``many``: a socket per
call, ``-t un``) and each rate, the uac places ``rate * duration`` calls at that rate.
Figures per run:

* calls created, successful and failed (SIPp's ``-trace_stat``);
* INVITE -> 200 p50/p99 (SIPp's response time 1, every call: ``-trace_rtt``);
* 503s the uac got, and how many carried Retry-After (from SIPp's unexpected-message log);
* what node 0 (the edge) and node 4 refused (their gateway counters: rate limits, overload,
  media exhaustion), as deltas over the run;
* leftovers: dialogs, pending transactions and media sessions at nodes 0 and 4, 5 s after
  the uac finished (its last call ended): every one should be 0.

Targets (issue 8): zero failed calls up to 20 calls/s from one socket, INVITE -> 200 p99
<= 300 ms there; at 40 calls/s overload is refused with 503 + Retry-After at the edge; no
dialog or media session outlives its call by more than 5 s. Prints a table, then (or with
``--json`` only) one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from meshcomm.sim.metrics import percentile as sim_percentile
from tools.testbed import Testbed, chain
from tools.testbed.nodes import wait_until

N_NODES: Final = 5
FAR: Final = N_NODES - 1
DOMAIN: Final = "incident.local"
SERVICE: Final = "service"
UAS_PORT: Final = 5090
UAC_BASE_PORT: Final = 6000
#: Sockets SIPp may open in ``-t un`` mode (it refuses to start above the open-files limit).
MAX_SOCKETS: Final = 4096
CONVERGE_S: Final = 30.0
LINGER_CHECK_S: Final = 5.0
#: Time to settle between runs (leftovers of one run must not count against the next).
SETTLE_S: Final = 10.0
TARGET_P99_S: Final = 0.300
TARGET_CLEAN_RATE: Final = 20.0
OVERLOAD_RATE: Final = 40.0
#: Gateway counters that mean "refused" (the edge sheds load with these).
REFUSAL_COUNTER_RE: Final = re.compile(
    r"rate_limited|overload|shed|refused|exhausted|quota|503", re.IGNORECASE)
_UNEXPECTED_RE: Final = re.compile(r"received '(SIP/2\.0 (\d{3})[^']*)'", re.DOTALL)


@dataclass
class RunResult:
    mode: str
    rate: float
    calls: int
    created: int = 0
    successful: int = 0
    failed: int = 0
    setup_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    with_retry_after_503: int = 0
    refused_edge: dict[str, int] = field(default_factory=dict)
    refused_far: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, int] = field(default_factory=dict)
    sipp_exit: int | None = None


def percentile(values: Sequence[float], q: float) -> float | None:
    return sim_percentile(list(values), q / 100) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# ------------------------------------------------------------------ set-up
def register_uas(tb: Testbed, node: int, port: int, user: str) -> bool:
    """REGISTER ``user`` from 127.0.0.1:``port`` in ``node`` (then SIPp takes the port)."""
    with tb.entered(node):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(1.0)
        gw = tb.node(node).sip_addr
        for attempt in range(5):
            msg = (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bench-{attempt};rport\r\n"
                   f"From: <sip:{user}@{DOMAIN}>;tag=bench\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
                   f"Call-ID: bench-reg-{user}\r\nCSeq: {attempt + 1} REGISTER\r\n"
                   f"Contact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: 3600\r\n"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(msg.encode(), gw)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    break
                if data.startswith(b"SIP/2.0 200"):
                    return True
        return False
    finally:
        sock.close()


def start_uas(tb: Testbed, out_dir: Path) -> subprocess.Popen[bytes]:
    argv = ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(UAS_PORT), "-nostdin",
            "-mp", str(UAS_PORT + 2), "-trace_err", "-error_file",
            str(out_dir / "uas.errors")]
    with (out_dir / "uas.out").open("wb") as out:
        return tb.popen(FAR, argv, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT, cwd=str(out_dir))


# ------------------------------------------------------------------ one run
def _counters(tb: Testbed, node: int) -> dict[str, int]:
    status = tb.node(node).status()
    counters: dict[str, int] = {}
    for part in ("sip", "media"):
        section = status.get(part) or {}
        for key, value in (section.get("counters") or {}).items():
            if isinstance(value, int) and REFUSAL_COUNTER_RE.search(key):
                counters[f"{part}.{key}"] = value
        for key, value in (section.get("sockets") or {}).items():
            if isinstance(value, int) and REFUSAL_COUNTER_RE.search(key):
                counters[f"{part}.sockets.{key}"] = value
    return counters


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _leftovers(tb: Testbed) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in (0, FAR):
        status = tb.node(node).status()
        sip = status.get("sip") or {}
        media = status.get("media") or {}
        out[f"n{node}.dialogs"] = int(sip.get("dialogs") or 0)
        out[f"n{node}.pending_transactions"] = int(sip.get("pending_transactions") or 0)
        out[f"n{node}.media_calls"] = int(media.get("calls") or 0)
    return out


def _read_stats(path: Path, result: RunResult) -> None:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] \
        if path.exists() else []
    if len(lines) < 2:
        return
    values = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))

    def num(key: str) -> int:
        text = values.get(key, "").strip()
        return int(text) if text.isdigit() else 0

    result.created = num("TotalCallCreated")
    result.successful = num("SuccessfulCall(C)")
    result.failed = num("FailedCall(C)")


def _read_rtt(out_dir: Path, result: RunResult) -> None:
    for path in out_dir.glob("uac_*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    result.setup_s.append(float(parts[1]) / 1000)
                except ValueError:
                    continue


def _read_errors(path: Path, result: RunResult) -> None:
    text = path.read_text(errors="replace") if path.exists() else ""
    for m in _UNEXPECTED_RE.finditer(text):
        status = m.group(2)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == "503" and re.search(r"^Retry-After:\s*\d+", m.group(1),
                                         re.MULTILINE | re.IGNORECASE):
            result.with_retry_after_503 += 1


def run_load(tb: Testbed, mode: str, rate: float, duration_s: float, call_ms: int,
             port: int, out_dir: Path) -> RunResult:
    calls = max(1, round(rate * duration_s))
    result = RunResult(mode, rate, calls)
    out_dir.mkdir(parents=True, exist_ok=True)
    gw = tb.node(0).sip_addr
    budget = duration_s + call_ms / 1000 + 60
    argv = ["sipp", f"{gw[0]}:{gw[1]}", "-sn", "uac", "-s", SERVICE, "-i", "127.0.0.1",
            "-p", str(port), *(("-t", "u1") if mode == "one" else
                               ("-t", "un", "-max_socket", str(MAX_SOCKETS))),
            "-r", f"{rate:g}",
            "-m", str(calls), "-d", str(call_ms), "-mp", str(port + 2), "-nostdin",
            "-timeout", f"{int(budget)}s", "-trace_stat", "-stf", str(out_dir / "uac.csv"),
            "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file",
            str(out_dir / "uac.errors")]
    edge_before, far_before = _counters(tb, 0), _counters(tb, FAR)
    with (out_dir / "uac.out").open("wb") as out:
        proc = tb.popen(0, argv, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT, cwd=str(out_dir))
    try:
        result.sipp_exit = proc.wait(timeout=budget + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(LINGER_CHECK_S)
    result.leftovers = _leftovers(tb)
    result.refused_edge = _delta(_counters(tb, 0), edge_before)
    result.refused_far = _delta(_counters(tb, FAR), far_before)
    _read_stats(out_dir / "uac.csv", result)
    _read_rtt(out_dir, result)
    _read_errors(out_dir / "uac.errors", result)
    return result


# ------------------------------------------------------------------ report
def row(r: RunResult) -> dict[str, Any]:
    return {"mode": r.mode, "rate_cps": r.rate, "calls": r.calls, "created": r.created,
            "successful": r.successful, "failed": r.failed,
            "setup_p50_ms": _ms(percentile(r.setup_s, 50)),
            "setup_p99_ms": _ms(percentile(r.setup_s, 99)),
            "unexpected_statuses": r.statuses, "503_with_retry_after": r.with_retry_after_503,
            "refused_at_edge": r.refused_edge, "refused_far": r.refused_far,
            "leftovers_after_5s": r.leftovers, "sipp_exit": r.sipp_exit}


def targets(results: list[RunResult]) -> dict[str, bool]:
    clean = [r for r in results if r.mode == "one" and r.rate <= TARGET_CLEAN_RATE]
    over = [r for r in results if r.rate >= OVERLOAD_RATE]
    p99 = [percentile(r.setup_s, 99) for r in clean]
    refused_ok = all(
        r.failed == 0 or (r.statuses.get("503", 0) > 0
                          and r.with_retry_after_503 == r.statuses.get("503", 0)
                          and bool(r.refused_edge))
        for r in over)
    return {
        "zero_failed_up_to_20cps_one_socket": bool(clean) and all(
            r.failed == 0 and r.successful == r.calls for r in clean),
        "setup_p99_le_300ms_up_to_20cps_one_socket": bool(clean) and all(
            p is not None and p <= TARGET_P99_S for p in p99),
        "overload_refused_503_retry_after_at_edge": bool(over) and refused_ok,
        "nothing_outlives_its_call_by_5s": all(
            not any(r.leftovers.values()) for r in results),
    }


def print_table(rows: list[dict[str, Any]], met: dict[str, bool]) -> None:
    cols = ("mode", "rate_cps", "calls", "successful", "failed", "setup_p50_ms",
            "setup_p99_ms", "503_with_retry_after")
    print(" ".join(f"{c:>20}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]!s:>20}" for c in cols))
        print(f"{'':>20} unexpected {r['unexpected_statuses']} edge {r['refused_at_edge']} "
              f"far {r['refused_far']} leftovers {r['leftovers_after_5s']}")
    print(f"targets met: {met}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1,10,20,40")
    parser.add_argument("--modes", default="one,many")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--delay-ms", type=float, default=15.0)
    parser.add_argument("--call-ms", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    modes = [m for m in args.modes.split(",") if m in ("one", "many")]
    impair = f"delay={args.delay_ms:g}ms"
    results: list[RunResult] = []
    with chain(N_NODES) as tb:
        for i in range(N_NODES):
            tb.start_node(i, name=f"n{i}", impair=impair)
        if not register_uas(tb, FAR, UAS_PORT, SERVICE):
            raise SystemExit("the uas could not register at node 4")
        aor = f"sip:{SERVICE}@{DOMAIN}"
        if wait_until(lambda: aor in (tb.node(0).who_aors() or ()), CONVERGE_S) is None:
            raise SystemExit("node 0 never listed the uas")
        out_root = tb.workdir / "bench-gateway"
        out_root.mkdir(parents=True, exist_ok=True)
        uas = start_uas(tb, out_root)
        time.sleep(0.5)
        port = UAC_BASE_PORT
        for mode in modes:
            for rate in rates:
                results.append(run_load(tb, mode, rate, args.duration, args.call_ms, port,
                                        out_root / f"{mode}-{rate:g}"))
                port += 10
                time.sleep(SETTLE_S)
        uas.terminate()
    rows = [row(r) for r in results]
    met = targets(results)
    summary = {"bench": "gateway", "hops": FAR, "delay_per_hop_ms": args.delay_ms,
               "duration_s": args.duration, "call_ms": args.call_ms, "runs": rows,
               "targets": met}
    if not args.json:
        print_table(rows, met)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
