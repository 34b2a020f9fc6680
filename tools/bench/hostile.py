"""Benchmark (root): join time, memory and CPU of a 5-node chain under hostile neighbours.

    python -m tools.bench.hostile [--attacks sybil,garbage,replay,takeover] [--flood-s 60]
                                  [--rate 1000] [--json]

Topology: ``chain(5)`` of ``meshcomm handset`` processes (``n0`` .. ``n3`` stay up the whole
run; position 4 is the joining slot). A sixth namespace is attached beside the middle node
(node 2) only (:meth:`tools.testbed.Testbed.attach`): the hostile device. It runs
:mod:`tools.testbed.inject`; every datagram comes from a new UDP source port.

A run: the chain converges; the no-attack baseline is measured (idle CPU of n0..n3 over a
quiet window, then joins: a NEW handset, fresh data dir and key, starts in slot 4 and the
seconds from its process start until n0, 4 hops away, lists its AoR). Then each attack in
turn, in the same chain:

* the injector floods for ``--flood-s`` seconds (``sybil``: bindings from ``--rate`` fresh
  keys per second; ``garbage``: ``--rate`` hostile datagrams per second; ``replay``:
  ``--rate`` per second of the bindings a capture process beside node 2 heard since the
  run began, including what node 2 re-flooded of earlier attacks, with fresh hop fields;
  ``takeover``: a key that is not n0's claims ``sip:n0@...`` ``--takeover-rate`` times
  per second);
* joins during the flood (after a warm-up) and one right after it ends; in ``takeover``
  each joiner sends a MESSAGE to ``sip:n0`` as soon as it lists a holder of it: the
  MESSAGE must reach n0 and the joiner must then list n0's key as the holder (the first
  holder it listed, how long it listed the attacker's key, and how many unicast envelopes
  nodes routed to the attacker (it listens on its source ports) are reported too);
* memory: the highest RSS of n0..n3 during the phase minus their RSS when it began;
* CPU: mean CPU of n0..n3 during the flood, and how long after the flood's end every one
  of them is back at its idle level over a :data:`CPU_WINDOW_S` window (idle level:
  :func:`idle_limit`), watched for :data:`RECOVERY_LIMIT_S`.

Targets (issue 7): join <= 2x baseline during and after, memory growth <= 20 MB, CPU at
idle within 30 s of the flood's end. Prints a table with ratios against the baseline (and
with ``--json`` one JSON object instead). The integration test
``tests/integration/test_hostile.py`` runs the same phases and asserts the targets.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from meshcomm.runtime.app import JOURNAL_FILE
from meshcomm.runtime.control import ControlError
from tools.testbed import Testbed, chain
from tools.testbed.nodes import MeshProcess, wait_until
from tools.testbed.procstat import ProcSampler

N_NODES: Final = 5
MIDDLE: Final = 2
JOIN_SLOT: Final = N_NODES - 1
OBSERVER: Final = 0
HONEST: Final = tuple(range(N_NODES - 1))
DOMAIN: Final = "incident.local"
HOSTILE_LABEL: Final = "x"
#: The interface of the hostile namespace (its veth to the middle node).
HOSTILE_IFACE: Final = f"to{MIDDLE}"
TAKEOVER_AOR: Final = f"sip:n{OBSERVER}@{DOMAIN}"

CONVERGE_S: Final = 30.0
#: A join not visible within this long is reported as this (and fails any target).
JOIN_TIMEOUT_S: Final = 45.0
JOIN_POLL_S: Final = 0.05
#: ``who`` of a node holding a flooded table is slow: wait this long for the reply.
WHO_TIMEOUT_S: Final = 15.0
#: Quiet time before the idle CPU window, and the window's length.
SETTLE_S: Final = 3.0
IDLE_WINDOW_S: Final = 8.0
#: CPU is "back at idle" when, over a window this long, every honest node uses at most
#: idle_limit(its idle CPU).
CPU_WINDOW_S: Final = 3.0
CPU_IDLE_FACTOR: Final = 2.0
CPU_IDLE_SLACK_PCT: Final = 2.0
RECOVERY_LIMIT_S: Final = 30.0
RECOVERY_POLL_S: Final = 0.5
#: Joins during a flood start after this share of it has passed.
WARMUP_SHARE: Final = 0.25
#: Targets of issue 7.
JOIN_RATIO_LIMIT: Final = 2.0
MEMORY_GROWTH_LIMIT_BYTES: Final = 20 * 1024 * 1024
#: How long a takeover joiner's MESSAGE to the genuine holder may take.
SEND_WAIT_S: Final = 15.0
HOLDER_POLL_S: Final = 0.1
INJECT_EXIT_GRACE_S: Final = 30.0
MIB: Final = 1024 * 1024
ATTACKS: Final = ("sybil", "garbage", "replay", "takeover")


def idle_limit(idle_pct: float) -> float:
    """The CPU (percent of a core) a node may use and still count as idle."""
    return max(idle_pct * CPU_IDLE_FACTOR, idle_pct + CPU_IDLE_SLACK_PCT)


@dataclass
class Join:
    name: str
    visible_s: float | None          # process start -> listed at n0
    after_ready_s: float | None      # control socket answers -> listed at n0
    holder_ok: bool | None = None    # takeover: the joiner lists n0's key as the holder
    first_holder_ok: bool | None = None  # ... already the first time it lists a holder
    attacker_held_s: float | None = None  # ... listed the attacker's key this long first
    send_status: str | None = None   # takeover: the outcome of its MESSAGE (delivered/held)
    delivered: bool | None = None    # takeover: its MESSAGE to sip:n0 reached n0's inbox


@dataclass
class Phase:
    attack: str
    flood_s: float
    injector: dict[str, Any] = field(default_factory=dict)
    capture: dict[str, Any] = field(default_factory=dict)
    joins_during: list[Join] = field(default_factory=list)
    join_after: Join | None = None
    memory_growth_bytes: dict[str, int] = field(default_factory=dict)
    cpu_during_pct: dict[str, float] = field(default_factory=dict)
    recovered_s: float | None = None
    cpu_at_end_pct: dict[str, float] = field(default_factory=dict)
    bindings_at_n0: int | None = None
    journal_growth_bytes: dict[str, int] = field(default_factory=dict)
    #: Frames the middle node's overlay took in during the phase (the injector's and the
    #: honest ones): proves the flood reached it.
    middle_rx_frames: int = 0

    def worst_join_s(self) -> float | None:
        joins = [*self.joins_during, *([self.join_after] if self.join_after else [])]
        if not joins or any(j.visible_s is None for j in joins):
            return None
        return max(j.visible_s for j in joins if j.visible_s is not None)


@dataclass
class Baseline:
    idle_cpu_pct: dict[str, float]
    joins: list[Join]

    @property
    def join_s(self) -> float:
        times = sorted(j.visible_s for j in self.joins if j.visible_s is not None)
        if not times:
            raise RuntimeError("no baseline join became visible: the chain does not work")
        return times[len(times) // 2]


class HostileBench:
    """One chain with a hostile namespace beside its middle node (see the module doc)."""

    def __init__(self, tb: Testbed, workdir: Path, node_args: Sequence[str] = ()) -> None:
        self.tb = tb
        self.workdir = workdir
        self.node_args = tuple(node_args)
        self.hostile_ns = tb.attach(MIDDLE, HOSTILE_LABEL)
        self.capture_file = workdir / "captured.bin"
        self.record_file = workdir / "sybil-sent.bin"
        self._capture: subprocess.Popen[bytes] | None = None
        self._joins = 0
        self.sampler: ProcSampler | None = None

    # -------------------------------------------------------------- set-up
    def start(self) -> None:
        for i in HONEST:
            self.tb.start_node(i, name=f"n{i}", extra_args=self.node_args, wait=False)
        self.tb.start_node(JOIN_SLOT, name="first", extra_args=self.node_args, wait=False)
        nodes = [self.tb.node(i) for i in range(N_NODES)]
        if wait_until(lambda: all(len(n.who_aors() or ()) >= N_NODES for n in nodes),
                      CONVERGE_S) is None:
            raise RuntimeError("the chain did not converge\n" + self.tb.describe())
        pids = {f"n{i}": self._pid(self.tb.node(i)) for i in HONEST}
        self.sampler = ProcSampler(pids).start()
        self._capture = self._inject("capture", "--duration", "3600",
                                     "--out", str(self.capture_file))

    @staticmethod
    def _pid(node: MeshProcess) -> int:
        assert node.proc is not None
        return node.proc.pid

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def _inject(self, mode: str, *args: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "tools.testbed.inject", mode, "--iface", HOSTILE_IFACE,
                *args]
        return self.tb.popen_in(self.hostile_ns, argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])

    def _finish_capture(self) -> dict[str, Any]:
        """Stop the capture process (it writes its file on SIGTERM); its summary."""
        proc, self._capture = self._capture, None
        if proc is None:
            return {}
        proc.send_signal(signal.SIGTERM)
        return _summary_of(proc)

    # -------------------------------------------------------------- measuring
    def idle_cpu(self) -> dict[str, float]:
        assert self.sampler is not None
        time.sleep(SETTLE_S)
        start = time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        end = time.monotonic()
        return {label: self.sampler.cpu_percent(label, start, end) or 0.0
                for label in self.sampler.pids}

    def join(self, check_holder: bool = False) -> Join:
        """Replace the handset in slot 4 by a NEW one; time until n0 lists it."""
        self._joins += 1
        name = f"join{self._joins}"
        self.tb.stop_node(JOIN_SLOT)
        t0 = time.monotonic()
        node = self.tb.start_node(JOIN_SLOT, name=name, extra_args=self.node_args,
                                  data_dir=self.workdir / name, wait=False)
        aor = f"sip:{name}@{DOMAIN}"
        observer = self.tb.node(OBSERVER)
        ready: list[float] = []

        def visible() -> bool:
            if not ready and node.who_aors() is not None:
                ready.append(time.monotonic())
            return lists(observer, aor)

        took = wait_until(visible, JOIN_TIMEOUT_S, JOIN_POLL_S)
        done = time.monotonic()
        after_ready = done - ready[0] if took is not None and ready else None
        result = Join(name, None if took is None else done - t0, after_ready)
        if check_holder:
            self._check_takeover(node, result)
        return result

    def _check_takeover(self, joiner: MeshProcess, result: Join) -> None:
        """The joiner's holder of sip:n0: the first one it lists, how long it lists the
        attacker's key, and the holder after its MESSAGE, sent as soon as it lists one,
        has had its outcome; and whether that MESSAGE reached n0's inbox."""
        observer = self.tb.node(OBSERVER)
        genuine = observer.status()["node_id"]

        def holder() -> str | None:
            for entry in joiner.who() or ():
                # a conflicting claim is not the holder, nor is a contested one: the node
                # does not route to it while its neighbours' reports are on their way
                if (entry.get("aor") == TAKEOVER_AOR
                        and entry.get("state") not in ("conflict", "contested")):
                    return str(entry.get("node_id"))
            return None

        wait_until(lambda: holder() is not None, CONVERGE_S)
        first_at = time.monotonic()
        result.first_holder_ok = holder() == genuine
        text = f"takeover probe {result.name} {time.monotonic_ns()}"
        outcome: list[Any] = []
        sender = threading.Thread(target=lambda: outcome.append(joiner.request(
            "send", to=TAKEOVER_AOR, text=text, wait_s=SEND_WAIT_S,
            timeout_s=SEND_WAIT_S + 5)), daemon=True)
        sender.start()
        settled = wait_until(lambda: holder() == genuine, SEND_WAIT_S, HOLDER_POLL_S)
        result.attacker_held_s = None if settled is None else round(
            time.monotonic() - first_at if not result.first_holder_ok else 0.0, 2)
        sender.join()
        result.send_status = str(outcome[0].get("status")) if outcome else "no answer"
        result.holder_ok = holder() == genuine
        result.delivered = wait_until(
            lambda: any(e.get("text") == text for e in observer.request("inbox") or ()),
            SEND_WAIT_S) is not None

    def baseline(self, joins: int = 2) -> Baseline:
        idle = self.idle_cpu()
        return Baseline(idle, [self.join() for _ in range(joins)])

    # -------------------------------------------------------------- attacks
    def injector_args(self, attack: str, flood_s: float, rate: float, seed: int,
                      takeover_rate: float) -> list[str]:
        common = ["--duration", f"{flood_s:g}", "--seed", str(seed)]
        if attack == "sybil":
            return ["sybil", *common, "--rate", f"{rate:g}", "--record", str(self.record_file)]
        if attack == "garbage":
            return ["garbage", *common, "--rate", f"{rate:g}"]
        if attack == "replay":
            sources = ["--from", str(self.capture_file)] if self.capture_file.exists() else []
            if self.record_file.exists():
                sources += ["--from", str(self.record_file)]
            return ["replay", *common, "--rate", f"{rate:g}", *sources]
        if attack == "takeover":
            return ["takeover", *common, "--rate", f"{takeover_rate:g}", "--aor", TAKEOVER_AOR]
        raise ValueError(f"unknown attack {attack!r}")

    def attack(self, attack: str, flood_s: float, *, rate: float = 1000.0, seed: int = 7,
               takeover_rate: float = 20.0, joins_during: int = 1,
               baseline: Baseline) -> Phase:
        assert self.sampler is not None
        phase = Phase(attack, flood_s)
        if attack == "replay":
            phase.capture = self._finish_capture()
        args = self.injector_args(attack, flood_s, rate, seed, takeover_rate)
        start = time.monotonic()
        rss0 = {label: self.sampler.rss_at(label, start) or 0 for label in self.sampler.pids}
        journal0 = self.journal_sizes()
        rx0 = self.middle_rx_frames()
        proc = self._inject(*args)
        check = attack == "takeover"
        time.sleep(flood_s * WARMUP_SHARE)
        for _ in range(joins_during):
            if proc.poll() is not None:
                break
            phase.joins_during.append(self.join(check_holder=check))
        phase.injector = _summary_of(proc, timeout_s=flood_s + INJECT_EXIT_GRACE_S)
        flood_end = time.monotonic()
        phase.cpu_during_pct = {label: round(self.sampler.cpu_percent(label, start, flood_end)
                                             or 0.0, 1) for label in self.sampler.pids}
        phase.join_after = self.join(check_holder=check)
        phase.recovered_s = self._recovery(flood_end, baseline.idle_cpu_pct, phase)
        end = time.monotonic()
        phase.memory_growth_bytes = {
            label: (self.sampler.peak_rss(label, start, end) or 0) - rss0[label]
            for label in self.sampler.pids}
        phase.middle_rx_frames = self.middle_rx_frames() - rx0
        phase.journal_growth_bytes = {label: size - journal0.get(label, 0)
                                      for label, size in self.journal_sizes().items()}
        status = self.tb.node(OBSERVER).status()
        phase.bindings_at_n0 = int(status.get("bindings", 0))
        return phase

    def middle_rx_frames(self) -> int:
        counters = self.tb.node(MIDDLE).request("status", timeout_s=WHO_TIMEOUT_S)["counters"]
        return int(counters.get("rx_frames", 0))

    def journal_sizes(self) -> dict[str, int]:
        """Bytes of each honest node's journal (the SQLite file and its WAL)."""
        sizes = {}
        for i in HONEST:
            base = self.tb.node(i).data_dir / JOURNAL_FILE
            sizes[f"n{i}"] = sum(p.stat().st_size for p in (base, base.with_name(
                base.name + "-wal")) if p.exists())
        return sizes

    def _recovery(self, flood_end: float, idle: dict[str, float], phase: Phase) -> float | None:
        """Seconds from the flood's end until every honest node's CPU over the last
        CPU_WINDOW_S is at its idle level (None: not within RECOVERY_LIMIT_S)."""
        assert self.sampler is not None
        sampler = self.sampler

        def window(now: float) -> dict[str, float]:
            return {label: sampler.cpu_percent(label, now - CPU_WINDOW_S, now) or 0.0
                    for label in sampler.pids}

        while True:
            now = time.monotonic()
            if now - CPU_WINDOW_S >= flood_end:
                cpu = window(now)
                phase.cpu_at_end_pct = {k: round(v, 1) for k, v in cpu.items()}
                if all(cpu[label] <= idle_limit(idle[label]) for label in cpu):
                    return round(now - flood_end, 2)
            if now - flood_end > RECOVERY_LIMIT_S:
                return None
            time.sleep(RECOVERY_POLL_S)


def lists(node: MeshProcess, aor: str) -> bool:
    """Whether ``node`` lists ``aor`` (``who``; a slow reply under attack is waited for)."""
    try:
        entries = node.request("who", timeout_s=WHO_TIMEOUT_S)
    except ControlError:
        return False
    return isinstance(entries, list) and any(e.get("aor") == aor for e in entries)


def _summary_of(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> dict[str, Any]:
    """The injector's one-line JSON summary (waits for it to exit)."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        summary = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": err.decode(errors="replace").strip()[-500:], "exit": proc.returncode}
    return summary if isinstance(summary, dict) else {"error": repr(summary)}


# ------------------------------------------------------------------ report


def _ratio(value: float | None, base: float) -> float | None:
    return None if value is None or base <= 0 else round(value / base, 2)


def phase_report(phase: Phase, base: Baseline) -> dict[str, Any]:
    worst = phase.worst_join_s()
    growth = max(phase.memory_growth_bytes.values(), default=0)
    idle = base.idle_cpu_pct
    return {
        "attack": phase.attack, "flood_s": phase.flood_s, "injector": phase.injector,
        **({"capture": phase.capture} if phase.capture else {}),
        "join_during_s": [None if j.visible_s is None else round(j.visible_s, 2)
                          for j in phase.joins_during],
        "join_after_s": None if phase.join_after is None or phase.join_after.visible_s is None
        else round(phase.join_after.visible_s, 2),
        "join_worst_s": None if worst is None else round(worst, 2),
        "join_ratio": _ratio(worst, base.join_s),
        "memory_growth_mib": round(growth / MIB, 1),
        "memory_growth_mib_by_node": {k: round(v / MIB, 1)
                                      for k, v in phase.memory_growth_bytes.items()},
        "cpu_during_pct": phase.cpu_during_pct,
        "cpu_during_ratio": {k: _ratio(v, max(idle[k], 0.1))
                             for k, v in phase.cpu_during_pct.items()},
        "cpu_recovered_s": phase.recovered_s,
        "cpu_last_window_pct": phase.cpu_at_end_pct,
        "bindings_at_n0": phase.bindings_at_n0,
        "middle_rx_frames": phase.middle_rx_frames,
        "journal_growth_kib": {k: round(v / 1024, 1) for k, v in
                               phase.journal_growth_bytes.items()},
        "takeover_holder_ok": [j.holder_ok for j in _all_joins(phase) if j.holder_ok is not None],
        "takeover_delivered": [j.delivered for j in _all_joins(phase)
                               if j.delivered is not None],
        "takeover_first_holder_ok": [j.first_holder_ok for j in _all_joins(phase)
                                     if j.first_holder_ok is not None],
        "takeover_attacker_held_s": [j.attacker_held_s for j in _all_joins(phase)
                                     if j.holder_ok is not None],
        "takeover_send_status": [j.send_status for j in _all_joins(phase)
                                 if j.send_status is not None],
        "takeover_unicasts_to_attacker": phase.injector.get("unicast_envelopes_to_us"),
        "takeover_unicast_origins": phase.injector.get("unicast_origins"),
        "targets": {
            "join_le_2x_baseline": worst is not None and worst <= JOIN_RATIO_LIMIT * base.join_s,
            "memory_growth_le_20mb": growth <= MEMORY_GROWTH_LIMIT_BYTES,
            "cpu_idle_within_30s": phase.recovered_s is not None
            and phase.recovered_s <= RECOVERY_LIMIT_S,
        },
    }


def _all_joins(phase: Phase) -> list[Join]:
    return [*phase.joins_during, *([phase.join_after] if phase.join_after else [])]


def report(base: Baseline, phases: list[Phase]) -> dict[str, Any]:
    return {
        "bench": "hostile",
        "baseline": {"join_s": round(base.join_s, 2),
                     "joins": [asdict(j) for j in base.joins],
                     "idle_cpu_pct": {k: round(v, 2) for k, v in base.idle_cpu_pct.items()},
                     "idle_limit_pct": {k: round(idle_limit(v), 2)
                                        for k, v in base.idle_cpu_pct.items()}},
        "attacks": [phase_report(p, base) for p in phases],
    }


def print_table(summary: dict[str, Any]) -> None:
    base = summary["baseline"]
    cols = ("join_worst_s", "join_ratio", "memory_growth_mib", "cpu_max_during_pct",
            "cpu_recovered_s", "bindings_at_n0", "inject_rate")
    print(f"{'attack':>9} " + " ".join(f"{c:>18}" for c in cols))
    idle_max = max(base["idle_cpu_pct"].values(), default=0.0)
    print(f"{'baseline':>9} " + " ".join(f"{v!s:>18}" for v in (
        base["join_s"], 1.0, 0.0, idle_max, "-", "-", "-")))
    for row in summary["attacks"]:
        values = (row["join_worst_s"], row["join_ratio"], row["memory_growth_mib"],
                  max(row["cpu_during_pct"].values(), default=None), row["cpu_recovered_s"],
                  row["bindings_at_n0"], row["injector"].get("rate"))
        print(f"{row['attack']:>9} " + " ".join(f"{v!s:>18}" for v in values))
    for row in summary["attacks"]:
        print(f"{row['attack']}: targets {row['targets']}"
              + (f", holder ok {row['takeover_holder_ok']} (first listed "
                 f"{row['takeover_first_holder_ok']}, attacker listed "
                 f"{row['takeover_attacker_held_s']} s), send "
                 f"{row['takeover_send_status']}, delivered "
                 f"{row['takeover_delivered']}, unicasts routed to the attacker "
                 f"{row['takeover_unicasts_to_attacker']}" if row["attack"] == "takeover" else ""))


def run(attacks: Sequence[str], flood_s: float, rate: float, takeover_rate: float,
        workdir: Path) -> dict[str, Any]:
    with chain(N_NODES) as tb:
        tb.use_workdir(workdir)
        bench = HostileBench(tb, workdir)
        try:
            bench.start()
            base = bench.baseline()
            phases = [bench.attack(a, flood_s, rate=rate, takeover_rate=takeover_rate,
                                   joins_during=2 if flood_s >= 40 else 1, baseline=base)
                      for a in attacks]
        finally:
            bench.close()
    return report(base, phases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--flood-s", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="sybil keys / garbage / replayed datagrams per second")
    parser.add_argument("--takeover-rate", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}; choose from {ATTACKS}")
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        summary = run(attacks, args.flood_s, args.rate, args.takeover_rate, Path(tmp))
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
