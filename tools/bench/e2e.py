"""Benchmark (root): SIP over real meshcomm nodes in a namespace chain with 15 ms per hop.

    python -m tools.bench.e2e [--samples 20] [--delay-ms 15] [--hops 1,2,4]

Topology: ``chain(5)``, every node a ``meshcomm handset`` with ``--impair delay=15ms`` (the
radio impairment delays every received frame: 15 ms per hop), no loss.

Load generator: a small Python UDP SIP client written for this benchmark (no SIPp), because
it must time single transactions precisely and answer as a UAS beside far nodes. The UAC
sits beside node 0 and talks to node 0's gateway (127.0.0.1:5060 in its namespace); one UAS
per far node (1, 2 and 4 hops away) registers ``sip:bench-hN@incident.local`` at that node's
gateway and answers MESSAGE and INVITE with 200 at once (INVITE with an SDP offer answer,
ACK absorbed, BYE answered). Sockets are opened inside the namespaces (setns) and used from
this process, so all times come from one clock.

Figures:

* MESSAGE latency: MESSAGE sent -> 200 OK received at the UAC (p50/p95 per hop count);
* call setup: INVITE sent -> 200 OK received (p50/p95); ACK and BYE follow each call;
* RTP one-way delay: after a call is set up, the UAC sends RTP packets to the address in the
  200's SDP (the gateway's media port when the gateway rewrites SDP) and the UAS times
  their arrival; per-hop software time = (delay at 4 hops - delay at 1 hop) / 3 - 15 ms;
  ``null`` when no RTP arrives (no media relay);
* signalling software time per hop = ((MESSAGE p50 at 4 hops - at 1 hop) / 3) / 2 - 15 ms
  (a request and its response each cross every hop);
* zero-config start: nodes 0..3 run; node 4 starts on an empty data dir; seconds until
  node 0 (4 hops away) lists its binding.

Targets: call setup p95 <= 300 ms at 4 hops, software time per hop <= 2 ms, zero-config
start to visible 4 hops away <= 3 s. Prints a table, then one JSON object.

Before/after (issue 12, end-to-end encryption): ``--before DIR`` names a checkout of the
code before the change (``git worktree add --detach DIR <commit>``). Two chains then run at
once, one whose nodes run DIR's code (``python -P`` with ``PYTHONPATH=DIR``), one this
tree's; samples alternate between them (which goes first alternates too), so both see
the same machine load. Printed: both tables, and for MESSAGE and call set-up p50 at the
largest hop count and the software time per hop, after/before ratios and whether each is
within 10 % (``--within``). The software time per hop is a difference of medians of a
few milliseconds over 15 ms hops, so its ratio is noisy; its absolute change is printed.
The precise figure comes in process: ``tools/bench/e2e_hop.py`` (a chain of 5 node cores
in virtual time, every call into a core timed) runs ``--hop-rounds`` times on each side,
alternating; printed are the medians of its per-MESSAGE figures (time of one relay hop,
of the origin and destination gateways, end to end) and their ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from meshcomm.sim.metrics import percentile as sim_percentile
from tools.testbed import Testbed, chain
from tools.testbed.nodes import wait_until
from tools.testbed.sipclient import SipUac, SipUas

N_NODES: Final = 5
TARGET_SETUP_P95_S: Final = 0.300
TARGET_SOFTWARE_PER_HOP_S: Final = 0.002
TARGET_ZERO_CONFIG_S: Final = 3.0
CONVERGE_S: Final = 30.0
RTP_PACKETS: Final = 25
RTP_INTERVAL_S: Final = 0.02
#: Default bound of the before/after comparison (issue 12: within 10 %).
WITHIN_FRACTION: Final = 0.10
#: MESSAGEs per round of the in-process worker.
HOP_MESSAGES: Final = 200


@dataclass
class HopResult:
    hops: int
    message_s: list[float] = field(default_factory=list)
    setup_s: list[float] = field(default_factory=list)
    rtp_s: list[float] = field(default_factory=list)
    failures: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (the simulator's), None without values."""
    return sim_percentile(list(values), q / 100) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _udp_in(tb: Testbed, node: int) -> socket.socket:
    with tb.entered(node):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    return sock


def zero_config_start(tb: Testbed, impair: str) -> float | None:
    for i in range(N_NODES - 1):
        tb.start_node(i, name=f"n{i}", impair=impair)
    t0 = time.monotonic()
    tb.start_node(N_NODES - 1, name="fresh", impair=impair, wait=False)
    took = wait_until(lambda: "sip:fresh@incident.local" in (tb.node(0).who_aors() or ()),
                      CONVERGE_S, poll_s=0.01)
    return None if took is None else time.monotonic() - t0


def measure_hops(tb: Testbed, uac: SipUac, hops: int, samples: int) -> HopResult:
    result = HopResult(hops)
    uas = SipUas(_udp_in(tb, hops), f"bench-h{hops}", _udp_in(tb, hops))
    if not uas.register():
        raise RuntimeError(f"UAS at node {hops}: REGISTER failed")
    thread = threading.Thread(target=uas.serve, daemon=True)
    thread.start()
    try:
        aor = uas.aor
        if wait_until(lambda: aor in (tb.node(0).who_aors() or ()), CONVERGE_S) is None:
            raise RuntimeError(f"node 0 never listed {aor}")
        for _ in range(samples):
            took = uac.message(aor)
            if took is None:
                result.failures += 1
            else:
                result.message_s.append(took)
            call = uac.invite(aor)
            if call is None:
                result.failures += 1
                continue
            result.setup_s.append(call.setup_s)
            result.rtp_s += uac.rtp_probe(call, uas, RTP_PACKETS, RTP_INTERVAL_S)
            uac.bye(call)
    finally:
        uas.stop()
        thread.join(timeout=2)
    return result


def _use_code(tb: Testbed, root: Path) -> None:
    """Make the bed's meshcomm processes run the code of checkout ``root`` (``-P``: the
    working directory is not put first on the path; ``PYTHONPATH`` names ``root``)."""
    original = tb.popen
    prefix = [sys.executable, "-m", "meshcomm.cli.main"]

    def popen(node: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if list(argv[:3]) == prefix:
            argv = [sys.executable, "-P", *argv[1:]]
            kwargs["env"] = dict(os.environ, PYTHONPATH=str(root))
        return original(node, argv, **kwargs)

    tb.popen = popen  # type: ignore[method-assign]


@dataclass
class Variant:
    """One chain of the before/after comparison."""

    name: str
    tb: Testbed
    results: dict[int, HopResult] = field(default_factory=dict)
    zero_s: float | None = None
    uac: SipUac | None = None


def _one_sample(v: Variant, hops: int, aor: str, uas: SipUas) -> None:
    assert v.uac is not None
    result = v.results.setdefault(hops, HopResult(hops))
    took = v.uac.message(aor)
    if took is None:
        result.failures += 1
    else:
        result.message_s.append(took)
    call = v.uac.invite(aor)
    if call is None:
        result.failures += 1
        return
    result.setup_s.append(call.setup_s)
    result.rtp_s += v.uac.rtp_probe(call, uas, RTP_PACKETS, RTP_INTERVAL_S)
    v.uac.bye(call)


@contextmanager
def _serving(v: Variant, hops: int) -> Iterator[tuple[str, SipUas]]:
    uas = SipUas(_udp_in(v.tb, hops), f"bench-h{hops}", _udp_in(v.tb, hops))
    if not uas.register():
        raise RuntimeError(f"{v.name}: UAS at node {hops}: REGISTER failed")
    thread = threading.Thread(target=uas.serve, daemon=True)
    thread.start()
    try:
        aor = uas.aor
        if wait_until(lambda: aor in (v.tb.node(0).who_aors() or ()), CONVERGE_S) is None:
            raise RuntimeError(f"{v.name}: node 0 never listed {aor}")
        yield aor, uas
    finally:
        uas.stop()
        thread.join(timeout=2)


def _converged(tb: Testbed) -> bool:
    return all(len(tb.node(i).who_aors() or ()) >= N_NODES for i in range(N_NODES))


def compare(before: Path, hop_counts: list[int], samples: int, impair: str) -> list[Variant]:
    """Both chains at once; samples interleaved (see the module docstring)."""
    with ExitStack() as stack:
        variants = [Variant("before", stack.enter_context(chain(N_NODES))),
                    Variant("after", stack.enter_context(chain(N_NODES)))]
        _use_code(variants[0].tb, before)
        for v in variants:
            v.zero_s = zero_config_start(v.tb, impair)
        for v in variants:
            if wait_until(functools.partial(_converged, v.tb), CONVERGE_S) is None:
                print(f"warning: the {v.name} chain did not converge", file=sys.stderr)
            v.uac = SipUac(_udp_in(v.tb, 0), _udp_in(v.tb, 0))
        for hops in hop_counts:
            with _serving(variants[0], hops) as one, _serving(variants[1], hops) as two:
                served = [one, two]
                for i in range(samples):
                    order = [0, 1] if i % 2 == 0 else [1, 0]
                    for k in order:
                        _one_sample(variants[k], hops, *served[k])
    return variants


def ratios(before: dict[str, Any], after: dict[str, Any], within: float) -> dict[str, Any]:
    """after/before of the figures the issue bounds, and whether each is within bounds."""
    hi = str(max(int(h) for h in before["hops"]))
    pairs = {f"message_p50_{hi}_hops": (before["hops"][hi]["message_p50_ms"],
                                        after["hops"][hi]["message_p50_ms"]),
             f"setup_p50_{hi}_hops": (before["hops"][hi]["setup_p50_ms"],
                                      after["hops"][hi]["setup_p50_ms"]),
             "signalling_software_per_hop": (before["signalling_software_per_hop_ms"],
                                             after["signalling_software_per_hop_ms"]),
             "rtp_software_per_hop": (before["rtp_software_per_hop_ms"],
                                      after["rtp_software_per_hop_ms"])}
    out: dict[str, Any] = {}
    for name, (b, a) in pairs.items():
        if b is None or a is None or b <= 0:
            out[name] = {"before_ms": b, "after_ms": a, "ratio": None, "within": False}
            continue
        out[name] = {"before_ms": b, "after_ms": a, "ratio": round(a / b, 3),
                     "delta_ms": round(a - b, 2), "within": a <= b * (1 + within)}
    return out


def summarize(results: list[HopResult], zero_s: float | None, delay_s: float) -> dict[str, Any]:
    by_hops = {r.hops: r for r in results}
    out: dict[str, Any] = {"bench": "e2e", "delay_per_hop_ms": delay_s * 1000, "hops": {}}
    for r in results:
        out["hops"][str(r.hops)] = {
            "message_p50_ms": _ms(percentile(r.message_s, 50)),
            "message_p95_ms": _ms(percentile(r.message_s, 95)),
            "setup_p50_ms": _ms(percentile(r.setup_s, 50)),
            "setup_p95_ms": _ms(percentile(r.setup_s, 95)),
            "rtp_one_way_p50_ms": _ms(percentile(r.rtp_s, 50)),
            "samples": len(r.setup_s), "rtp_packets": len(r.rtp_s), "failures": r.failures}
    lo, hi = min(by_hops), max(by_hops)
    span = hi - lo
    sig = rtp = None
    if span and by_hops[lo].message_s and by_hops[hi].message_s:
        diff = statistics.median(by_hops[hi].message_s) - statistics.median(by_hops[lo].message_s)
        sig = diff / span / 2 - delay_s
    if span and by_hops[lo].rtp_s and by_hops[hi].rtp_s:
        rtp = (statistics.median(by_hops[hi].rtp_s) - statistics.median(by_hops[lo].rtp_s)) \
            / span - delay_s
    setup95 = percentile(by_hops[hi].setup_s, 95)
    out.update({
        "signalling_software_per_hop_ms": _ms(sig), "rtp_software_per_hop_ms": _ms(rtp),
        "zero_config_visible_4_hops_s": None if zero_s is None else round(zero_s, 3),
        "targets": {
            f"setup_p95_at_{hi}_hops_le_300ms": setup95 is not None
            and setup95 <= TARGET_SETUP_P95_S,
            "software_per_hop_le_2ms": rtp is not None and rtp <= TARGET_SOFTWARE_PER_HOP_S,
            "zero_config_le_3s": zero_s is not None and zero_s <= TARGET_ZERO_CONFIG_S}})
    return out


def print_table(summary: dict[str, Any]) -> None:
    cols = ("message_p50_ms", "message_p95_ms", "setup_p50_ms", "setup_p95_ms",
            "rtp_one_way_p50_ms", "samples", "failures")
    print(f"{'hops':>4} " + " ".join(f"{c:>19}" for c in cols))
    for hops, row in summary["hops"].items():
        print(f"{hops:>4} " + " ".join(f"{row[c]!s:>19}" for c in cols))
    for key in ("signalling_software_per_hop_ms", "rtp_software_per_hop_ms",
                "zero_config_visible_4_hops_s"):
        print(f"{key}: {summary[key]}")
    print(f"targets met: {summary['targets']}")


HOP_WORKER = Path(__file__).with_name("e2e_hop.py")
HOP_FIGURES = ("relay_per_hop_us", "origin_us", "destination_us", "e2e_us")


def in_process(before: Path, rounds: int, messages: int) -> dict[str, dict[str, float]]:
    """Medians of the in-process worker's figures on both sides, rounds alternating."""
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    roots = {"before": before, "after": Path(__file__).resolve().parents[2]}
    for i in range(rounds):
        for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
            done = subprocess.run(
                [sys.executable, "-P", str(HOP_WORKER), "--messages", str(messages)],
                capture_output=True, text=True, check=True, timeout=600,
                env=dict(os.environ, PYTHONPATH=str(roots[name])))
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {name: {f: round(statistics.median(r[f] for r in rs), 1) for f in HOP_FIGURES}
            for name, rs in runs.items()}


def _main_compare(before: Path, hop_counts: list[int], samples: int, delay_s: float,
                  impair: str, within: float, hop_rounds: int) -> int:
    hop = in_process(before, hop_rounds, HOP_MESSAGES) if hop_rounds else None
    variants = compare(before, hop_counts, samples, impair)
    summaries = {v.name: summarize([v.results[h] for h in hop_counts], v.zero_s, delay_s)
                 for v in variants}
    for name, summary in summaries.items():
        print(f"== {name} ({before if name == 'before' else 'this tree'})")
        print_table(summary)
    compared = ratios(summaries["before"], summaries["after"], within)
    print(f"== after/before (within {within:.0%}):")
    for name, row in compared.items():
        print(f"{name}: before {row['before_ms']} ms, after {row['after_ms']} ms, "
              f"ratio {row['ratio']}, within: {row['within']}")
    if hop is not None:
        print(f"== in process, medians of {hop_rounds} rounds each (us per MESSAGE):")
        for fig in HOP_FIGURES:
            b, a = hop["before"][fig], hop["after"][fig]
            compared[f"inproc_{fig}"] = {"before_us": b, "after_us": a,
                                         "ratio": round(a / b, 3),
                                         "within": a <= b * (1 + within)}
            print(f"{fig}: before {b}, after {a}, ratio {a / b:.3f}")
    print(json.dumps({"bench": "e2e-compare", "before_code": str(before), **summaries,
                      "in_process_us": hop, "after_over_before": compared}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=15.0)
    parser.add_argument("--hops", default="1,2,4")
    parser.add_argument("--before", type=Path, default=None,
                        help="checkout of the code before the change: compare side by side")
    parser.add_argument("--within", type=float, default=WITHIN_FRACTION)
    parser.add_argument("--hop-rounds", type=int, default=6,
                        help="rounds of the in-process per-hop worker per side (0: none)")
    args = parser.parse_args(argv)
    hop_counts = [int(h) for h in args.hops.split(",")]
    delay_s = args.delay_ms / 1000
    impair = f"delay={args.delay_ms:g}ms"
    if args.before is not None:
        return _main_compare(args.before.resolve(), hop_counts, args.samples, delay_s,
                             impair, args.within, args.hop_rounds)
    with chain(N_NODES) as tb:
        zero_s = zero_config_start(tb, impair)
        if wait_until(lambda: all(len(tb.node(i).who_aors() or ()) >= N_NODES
                                  for i in range(N_NODES)), CONVERGE_S) is None:
            print("warning: the chain did not converge", file=sys.stderr)
        uac = SipUac(_udp_in(tb, 0), _udp_in(tb, 0))
        results = [measure_hops(tb, uac, hops, args.samples) for hops in hop_counts]
    summary = summarize(results, zero_s, delay_s)
    print_table(summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
