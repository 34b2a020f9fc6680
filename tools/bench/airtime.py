"""Benchmark (root): airtime of meshcomm against Reticulum + LXMF, side by side (issue 13).

    python -m tools.bench.airtime [--reps 3] [--messages 50] [--gap-s 0.25] [--size 100]
                                  [--quick] [--json]

Topology: two ``chain(5)`` test beds built at once (5 namespaces each, veth links, the ends
4 hops apart), one per stack, with the same links and the same nftables loss
(``numgen random mod 100 < N drop`` on every interface's ingress: every receiver loses N%
independently, :meth:`tools.testbed.Testbed.set_loss_everywhere`).

* **meshcomm**: a real ``meshcomm handset`` in every namespace with default settings and
  the UDP radio on every interface (:meth:`tools.testbed.Testbed.start_node`), named n0..n4.
  Node 0 sends MESSAGEs to ``sip:n4@incident.local`` through its control socket (what
  ``meshcomm ctl send`` does, ``wait_s`` 0); node 4's inbox is read incrementally.
* **Reticulum + LXMF** (``rns==1.5.7``, ``lxmf==1.2.1`` from PyPI, installed by this
  benchmark into its own venv, ``~/.cache/meshcomm-bench/rns-venv``; the first install
  takes about 10 s here): ``airtime_rns_node.py`` in every namespace, an rnsd-style
  instance of its own (no shared instance) with one AutoInterface (all interfaces of the
  namespace, Reticulum's defaults, ingress control included), transport enabled on nodes
  1..3, and an LXMF router whose delivery destination is announced when the node comes up
  (again 1 s after its AutoInterface found new peers: the start announce goes nowhere in a
  cold mesh), nothing periodic. Node 0 sends LXMF messages (LXMF's default method,
  DIRECT: over a link; ``--lxmf-method opportunistic`` for single packets) to node 4.

Every node of both stacks is an endpoint (meshcomm: a handset with its AoR; Reticulum: an
LXMF delivery destination), so both idle with five endpoints to keep reachable.

Each repetition starts both stacks afresh (new data dirs, new identities) and runs, with
the order of the stacks alternating between repetitions (A B, then B A) so that a noisy
machine hurts both alike:

1. **cold start**: all five nodes of a stack started at once; seconds until node 0 knows
   a route to node 4 (meshcomm: ``who`` lists ``sip:n4@incident.local`` at 4 hops, polled
   every 20 ms; Reticulum: ``Transport.has_path`` and the identity known, polled every
   20 ms by the node, a path request every 1 s while unknown). One stack, then the other.
2. **idle**: after ``--warmup-s``, both chains at once for ``--idle-s``: UDP bytes sent on
   all links per second per node, and CPU per node (percent of one core).
3. **messages** at 0%, 10% and 30% loss, one stack after the other: ``--messages`` texts of
   ``--size`` bytes (``airtime <run> r<rep> l<loss> <k>`` padded with ``x``; the same texts
   for both stacks), one every ``--gap-s``, then up to ``--deliver-s`` for the last ones to
   arrive, then ``--tail-s`` for acknowledgements still in flight. Counted: sends, texts
   received exactly once / more than once / never at node 4 (by text, the message id);
   latency = receipt time at node 4 (the node's ``time.time()``: meshcomm's inbox
   ``received_at``, Reticulum's delivery callback) - ``time.time()`` in this process just
   before the message was handed to node 0; same machine, same clock. UDP bytes on all
   links in the phase, per message delivered: gross, and net of the idle rate measured in
   the same repetition. CPU of all nodes per delivered message.

Bytes are counted by an nftables ``inet`` output-hook counter per link in every namespace
(UDP only: what the stacks send, not the kernel's neighbour discovery), so a frame is
counted once, when sent, also when the receiver's loss rule drops it. Figures are IP
bytes (IPv6 + UDP headers + payload, what a veth carries without its Ethernet header) and
UDP payload (bytes - 48 per packet: what a stack puts on a radio that has no IP).

A repetition in which either stack never reaches the far end within
``COLD_START_LIMIT_S`` is left out (both stacks stopped; listed under
``failed_repetitions`` with the reason and the logs' directory); the run fails only when no
repetition completed.

Printed: a table per stack with medians over repetitions (latency percentiles pooled over
all repetitions' messages) and meshcomm/Reticulum ratios; ``--json`` prints one JSON object
instead. Progress goes to stderr. Needs root (namespaces, nftables) and PyPI for the first
install; ``--quick`` is a short smoke run (1 repetition, 5 messages, short windows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from meshcomm.sim.metrics import percentile
from tools.bench.airtime_report import ratios, render, targets
from tools.bench.airtime_stacks import (
    BenchError,
    Count,
    MeshStack,
    RnsStack,
    Stack,
    default_cache_dir,
    ensure_rns_venv,
    install_counters,
    read_counters,
)
from tools.testbed import chain
from tools.testbed.nodes import wait_until

N_NODES: Final = 5
LOSSES: Final = (0, 10, 30)
#: How long a stack may take to reach the far end from cold. Reticulum's ingress control
#: (its default) holds announces heard on new interfaces in bursts (IC_BURST_HOLD and
#: IC_BURST_PENALTY 15 s, held announces released one per IC_HELD_RELEASE_INTERVAL 5 s):
#: its cold 4-hop start took 6-23 s here, and twice on a loaded machine more than 60 s.
COLD_START_LIMIT_S: Final = 180.0
#: After setting a new loss level, before counting.
LOSS_SETTLE_S: Final = 0.2
POLL_S: Final = 0.02


@dataclass(frozen=True, slots=True)
class Options:
    reps: int
    messages: int
    gap_s: float
    size: int
    warmup_s: float
    idle_s: float
    deliver_s: float
    tail_s: float
    lxmf_method: str
    rns_announce_s: float
    cache_dir: Path


QUICK: Final = {"reps": 1, "messages": 5, "gap_s": 0.05, "warmup_s": 0.5, "idle_s": 2.0,
                "deliver_s": 2.0, "tail_s": 0.3}


def progress(text: str) -> None:
    print(f"[airtime {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def texts_for(run: str, rep: int, loss: int, opts: Options) -> list[str]:
    texts = []
    for k in range(opts.messages):
        head = f"airtime {run} r{rep} l{loss} {k} "
        texts.append(head + "x" * max(0, opts.size - len(head)))
    return texts


def cold_start(stack: Stack, rep: int) -> float | None:
    t0 = stack.start(rep)
    took = wait_until(stack.reachable, COLD_START_LIMIT_S, poll_s=POLL_S)
    if took is None:
        return None
    if isinstance(stack, RnsStack) and stack.reachable_at is not None:
        return stack.reachable_at - t0
    return time.monotonic() - t0


def idle(stacks: Sequence[Stack], opts: Options) -> dict[str, dict[str, Any]]:
    """Both chains at once for ``idle_s``: bytes per second per node, CPU per node."""
    before = {s.name: (read_counters(s.tb), s.cpu()) for s in stacks}
    t0 = time.monotonic()
    time.sleep(opts.idle_s)
    out = {}
    for s in stacks:
        counts, cpu = read_counters(s.tb), s.cpu()
        elapsed = time.monotonic() - t0
        sent = [c - b for c, b in zip(counts, before[s.name][0], strict=True)]
        total = sum(sent, Count())
        out[s.name] = {
            "bytes_per_s_per_node": total.bytes / elapsed / N_NODES,
            "payload_per_s_per_node": total.payload / elapsed / N_NODES,
            "packets_per_s_per_node": total.packets / elapsed / N_NODES,
            "bytes_per_s_by_node": [round(c.bytes / elapsed, 1) for c in sent],
            "cpu_pct_per_node": 100 * (sum(cpu) - sum(before[s.name][1])) / elapsed / N_NODES,
        }
    return out


def message_phase(stack: Stack, texts: list[str], loss: int, idle_row: dict[str, Any],
                  opts: Options) -> dict[str, Any]:
    """Send ``texts`` at ``loss``%; what arrived, when, and what it cost on the links."""
    stack.tb.set_loss_everywhere(loss)
    time.sleep(LOSS_SETTLE_S)
    counts0, cpu0, t0 = read_counters(stack.tb), sum(stack.cpu()), time.monotonic()
    for k, text in enumerate(texts):
        delay = t0 + k * opts.gap_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stack.send(text)
    wait_until(lambda: all(stack.copies(t) for t in texts), opts.deliver_s, poll_s=0.05)
    time.sleep(opts.tail_s)
    elapsed = time.monotonic() - t0
    total = sum((c - b for c, b in zip(read_counters(stack.tb), counts0, strict=True)),
                Count())
    cpu_s = sum(stack.cpu()) - cpu0
    stack.tb.set_loss_everywhere(0)
    copies = [stack.copies(t) for t in texts]
    latencies = [stack.received[t][0] - stack.sent[t] for t in texts if stack.copies(t)]
    once = copies.count(1)
    delivered = sum(1 for c in copies if c)
    idle_bytes = idle_row["bytes_per_s_per_node"] * N_NODES * elapsed
    idle_payload = idle_row["payload_per_s_per_node"] * N_NODES * elapsed
    return {
        "loss": loss, "sent": len(texts), "delivered": delivered, "exactly_once": once,
        "duplicated": sum(1 for c in copies if c > 1), "missing": copies.count(0),
        "latencies_s": latencies, "seconds": round(elapsed, 3),
        "bytes": total.bytes, "payload": total.payload, "packets": total.packets,
        "bytes_per_delivered": total.bytes / delivered if delivered else None,
        "net_bytes_per_delivered": (total.bytes - idle_bytes) / delivered if delivered
        else None,
        "net_payload_per_delivered": (total.payload - idle_payload) / delivered if delivered
        else None,
        "cpu_ms_per_delivered": 1000 * cpu_s / delivered if delivered else None,
    }


class RepetitionFailed(BenchError):
    """A stack never came up in one repetition: that repetition is left out (reported),
    the others still count."""


def repetition(stacks: list[Stack], rep: int, run: str, opts: Options) -> dict[str, Any]:
    order = stacks if rep % 2 == 0 else stacks[::-1]
    result: dict[str, Any] = {s.name: {"phases": {}} for s in stacks}
    started: list[Stack] = []
    for s in order:
        s.tb.set_loss_everywhere(0)
        progress(f"rep {rep + 1}: cold start of {s.name}")
        started.append(s)
        cold = cold_start(s, rep)
        result[s.name]["cold_start_s"] = cold
        progress(f"rep {rep + 1}: {s.name} far end reachable after "
                 f"{'-' if cold is None else round(cold, 2)} s")
        if cold is None:
            for up in started:
                up.stop()
            raise RepetitionFailed(f"{s.name}: node 0 never reached node 4 within "
                                   f"{COLD_START_LIMIT_S:.0f} s (logs in {s.tb.workdir})")
        s.ready_to_measure()
    time.sleep(opts.warmup_s)
    progress(f"rep {rep + 1}: idle for {opts.idle_s:g} s (both chains)")
    for name, row in idle(stacks, opts).items():
        result[name]["idle"] = row
    for loss in LOSSES:
        texts = texts_for(run, rep, loss, opts)
        for s in order:
            progress(f"rep {rep + 1}: {s.name}: {len(texts)} messages at {loss}% loss")
            row = message_phase(s, texts, loss, result[s.name]["idle"], opts)
            result[s.name]["phases"][str(loss)] = row
            progress(f"rep {rep + 1}: {s.name} at {loss}%: {row['delivered']}/{row['sent']} "
                     f"delivered, {row['exactly_once']} exactly once")
    for s in order:
        s.stop()
    return result


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(reps: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per stack: medians over repetitions, latency percentiles over all messages."""
    out: dict[str, Any] = {}
    for name in names:
        rows = [r[name] for r in reps]
        stack: dict[str, Any] = {
            "cold_start_s": _median([r["cold_start_s"] for r in rows]),
            "idle_bytes_per_s_per_node": _median([r["idle"]["bytes_per_s_per_node"]
                                                  for r in rows]),
            "idle_payload_per_s_per_node": _median([r["idle"]["payload_per_s_per_node"]
                                                    for r in rows]),
            "idle_cpu_pct_per_node": _median([r["idle"]["cpu_pct_per_node"] for r in rows]),
        }
        for loss in LOSSES:
            phases = [r["phases"][str(loss)] for r in rows]
            lat = sorted(x for p in phases for x in p["latencies_s"])
            sent = sum(p["sent"] for p in phases)
            stack[f"loss_{loss}"] = {
                "sent": sent,
                "delivered_fraction": sum(p["delivered"] for p in phases) / sent,
                "exactly_once_fraction": sum(p["exactly_once"] for p in phases) / sent,
                "duplicated": sum(p["duplicated"] for p in phases),
                "latency_p50_ms": None if not lat else 1000 * percentile(lat, 0.50),
                "latency_p95_ms": None if not lat else 1000 * percentile(lat, 0.95),
                **{key: _median([p[key] for p in phases])
                   for key in ("bytes_per_delivered", "net_bytes_per_delivered",
                               "net_payload_per_delivered", "cpu_ms_per_delivered")},
            }
        out[name] = stack
    return out


def run_bench(opts: Options) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        raise BenchError("needs root, iproute2 and nftables (network namespaces, loss rules)")
    progress(f"Reticulum venv under {opts.cache_dir} (pip install on first use)")
    t_venv = time.monotonic()
    python = ensure_rns_venv(opts.cache_dir)
    progress(f"venv ready after {time.monotonic() - t_venv:.1f} s")
    run = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    reps = []
    failed: list[dict[str, Any]] = []
    with ExitStack() as beds:
        mesh_bed, rns_bed = (beds.enter_context(chain(N_NODES)) for _ in range(2))
        for tb in (mesh_bed, rns_bed):
            install_counters(tb)
        stacks: list[Stack] = [MeshStack(mesh_bed),
                               RnsStack(rns_bed, python, opts.lxmf_method,
                                        opts.rns_announce_s)]
        for rep in range(opts.reps):
            try:
                reps.append(repetition(stacks, rep, run, opts))
            except RepetitionFailed as exc:
                progress(f"rep {rep + 1} left out: {exc}")
                failed.append({"rep": rep + 1, "reason": str(exc)})
    if not reps:
        raise BenchError("no repetition completed: " + "; ".join(f["reason"] for f in failed))
    summary = summarize(reps, [s.name for s in stacks])
    ratio = ratios(summary)
    return {"bench": "airtime", "nodes": N_NODES, "hops": N_NODES - 1,
            "options": _options_json(opts), "stacks": summary,
            "ratio_meshcomm_over_reticulum": ratio, "targets": targets(summary, ratio),
            "repetitions": reps, "failed_repetitions": failed}


def _options_json(opts: Options) -> dict[str, Any]:
    return {name: (str(getattr(opts, name)) if name == "cache_dir" else getattr(opts, name))
            for name in Options.__slots__}


def parse(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.airtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--gap-s", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=100, help="bytes of text per message")
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--deliver-s", type=float, default=60.0)
    parser.add_argument("--tail-s", type=float, default=2.0)
    parser.add_argument("--lxmf-method", choices=("direct", "opportunistic"), default="direct")
    parser.add_argument("--rns-announce-s", type=float, default=0.0,
                        help="Reticulum nodes re-announce this often (0: only when up)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in Options.__slots__}
    if args.quick:
        values.update(QUICK)
    if values["messages"] < 1 or values["reps"] < 1:
        parser.error("--messages and --reps must be at least 1")
    return Options(**values), args.json


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json = parse(argv)
    try:
        report = run_bench(opts)
    except BenchError as exc:
        print(f"airtime: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if as_json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
