"""A hostile neighbour beside the middle of a 5-node chain of real handsets (issue 7).

``test_floods_and_takeover_in_one_chain`` runs :class:`tools.bench.hostile.HostileBench`
(the benchmark's phases, in one chain to keep CI short): the no-attack baseline (idle CPU
of n0..n3; new handsets joining at the far end, seconds until n0, 4 hops away, lists them;
one of them must also reach n0 with a MESSAGE, which proves the takeover check can pass),
then from the namespace attached beside node 2:

* ``sybil``: validly signed bindings from 1,000 fresh keys per second, every datagram from
  a new UDP source port, for 60 s;
* ``garbage``: 1,000 hostile datagrams per second for 15 s;
* ``replay``: 1,000 per second of the bindings captured beside node 2 since the start
  (honest ones, and what node 2 re-flooded of the sybil flood), fresh hop fields, 15 s;
* ``takeover``: another key claims ``sip:n0@...`` 20 times per second for 15 s.

For each: joins during and right after the flood within 2x the baseline join time; RSS of
n0..n3 grows by at most 20 MB; CPU of n0..n3 back at idle within 30 s of the flood's end;
in ``takeover`` the MESSAGE each joiner sends to ``sip:n0`` as soon as it lists a holder
reaches n0, the joiner then lists n0's key as the holder, and no unicast envelope is
routed to the attacker (the injector listens on its source ports and counts what nodes
forward to its key; a first listing of the attacker's key, and for how long, is printed).
All figures are printed and every failed target is reported together.

``test_departed_binding_replayed_to_restarted_relay_is_refused``: chain(3), handset A -
relay R - handset B, a capture process beside R records A's binding; A departs (SIGTERM);
R restarts; A's captured binding is replayed to R from rotating source ports (fresh hop
fields): neither R nor B may list A, right after the restart and again once A's tombstone
hold has run out.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.envcheck import require_root
from tools.bench.hostile import (
    JOIN_RATIO_LIMIT,
    MEMORY_GROWTH_LIMIT_BYTES,
    RECOVERY_LIMIT_S,
    HostileBench,
    print_table,
    report,
)
from tools.testbed import Testbed, chain
from tools.testbed.inject import keep_for_replay, read_records
from tools.testbed.nodes import REPO, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

SYBIL_FLOOD_S = 60.0
SHORT_FLOOD_S = 15.0
RATE = 1000.0
TAKEOVER_RATE = 20.0
#: The injector must really have sent at this share of the asked rate, and node 2 taken
#: in at least this share of what it sent, else the test would not test what it says.
MIN_RATE_SHARE = 0.9


def _failures(summary: dict[str, Any]) -> list[str]:
    problems = []
    for row in summary["attacks"]:
        name = row["attack"]
        for target, met in row["targets"].items():
            if not met:
                problems.append(f"{name}: {target} not met")
        if row["injector"].get("rate", 0) < MIN_RATE_SHARE * row["injector_asked_rate"]:
            problems.append(f"{name}: injector reached only {row['injector']}")
        if row["middle_rx_frames"] < MIN_RATE_SHARE * row["injector"].get("sent", 0):
            problems.append(f"{name}: node 2 took in only {row['middle_rx_frames']} frames")
        if name == "takeover":
            joins = row["takeover_holder_ok"]
            if not joins or not all(joins):
                problems.append(f"takeover: joiners' holder of sip:n0 genuine: {joins}")
            if not all(row["takeover_delivered"]):
                problems.append(f"takeover: MESSAGE to n0 delivered: "
                                f"{row['takeover_delivered']}")
            if row["takeover_unicasts_to_attacker"] != 0:
                problems.append(f"takeover: {row['takeover_unicasts_to_attacker']} unicast "
                                f"envelopes routed to the attacker (first holders listed "
                                f"{row['takeover_first_holder_ok']}, attacker listed "
                                f"{row['takeover_attacker_held_s']} s; sent by "
                                f"{row['takeover_unicast_origins']})")
    return problems


#: 60 s + 3 x 15 s of floods, joins and recovery windows: about 4 min on fixed code, and
#: up to ~10 min when every join and recovery runs into its limit.
@pytest.mark.timeout(900)
def test_floods_and_takeover_in_one_chain(tmp_path: Path) -> None:
    require_root()
    plan = [("sybil", SYBIL_FLOOD_S, RATE, 2), ("garbage", SHORT_FLOOD_S, RATE, 1),
            ("replay", SHORT_FLOOD_S, RATE, 1), ("takeover", SHORT_FLOOD_S, TAKEOVER_RATE, 1)]
    t0 = time.monotonic()
    with chain(5) as tb:
        tb.use_workdir(tmp_path)
        bench = HostileBench(tb, tmp_path)
        try:
            bench.start()
            base = bench.baseline()
            control = bench.join(check_holder=True)
            phases = [bench.attack(attack, flood_s, rate=rate, takeover_rate=rate,
                                   joins_during=joins, baseline=base)
                      for attack, flood_s, rate, joins in plan]
        finally:
            bench.close()
            describe = tb.describe()
    summary = report(base, phases)
    for row, (_attack, _flood, rate, _joins) in zip(summary["attacks"], plan, strict=True):
        row["injector_asked_rate"] = rate
    print(f"\nhostile chain ({time.monotonic() - t0:.0f} s):")
    print_table(summary)
    print(f"hostile chain JSON: {json.dumps(summary)}")
    print(f"control join (no attack): {control}")
    assert base.join_s > 0
    assert control.holder_ok and control.delivered, f"the takeover check cannot pass: {control}"
    problems = _failures(summary)
    assert not problems, (
        f"{problems}\nlimits: join <= {JOIN_RATIO_LIMIT}x {base.join_s:.2f} s, memory <= "
        f"{MEMORY_GROWTH_LIMIT_BYTES >> 20} MiB, CPU idle within {RECOVERY_LIMIT_S} s\n"
        f"{describe}")


# ------------------------------------------------------------------ departed, replayed

ALICE, RELAY, BOB = 0, 1, 2
DOMAIN = "incident.local"
ALICE_AOR = f"sip:alice@{DOMAIN}"
#: Alice's registration lifetime, so her tombstone's hold runs out within the test.
ALICE_LIFETIME_S = 12
CONVERGE_S = 20.0
REPLAY_S = 4.0
REPLAY_RATE = 20.0
#: After a replay, R and B are watched this long for Alice's binding.
WATCH_S = 6.0
WATCH_POLL_S = 0.1


def _inject(tb: Testbed, ns: str, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tools.testbed.inject", *args, "--iface", f"to{RELAY}"]
    return tb.popen_in(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _summary(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err.decode(errors="replace")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def _listed_during(tb: Testbed, seconds: float) -> list[str]:
    """Which of R and B listed Alice at any poll within ``seconds``."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for index, label in ((RELAY, "relay"), (BOB, "bob")):
            if ALICE_AOR in (tb.node(index).who_aors() or ()):
                seen.add(label)
        time.sleep(WATCH_POLL_S)
    return sorted(seen)


def _replay(tb: Testbed, ns: str, capture: Path) -> dict[str, Any]:
    proc = _inject(tb, ns, "replay", "--from", str(capture), "--aor", ALICE_AOR,
                   "--rate", f"{REPLAY_RATE:g}", "--duration", f"{REPLAY_S:g}")
    listed = _listed_during(tb, WATCH_S)
    summary = _summary(proc, REPLAY_S + 20)
    summary["listed_by"] = listed
    return summary


def test_departed_binding_replayed_to_restarted_relay_is_refused(tmp_path: Path) -> None:
    require_root()
    with chain(3) as tb:
        tb.use_workdir(tmp_path)
        ns = tb.attach(RELAY, "x")
        capture = tmp_path / "alice.bin"
        recorder = _inject(tb, ns, "capture", "--duration", "600", "--out", str(capture))
        tb.start_node(RELAY, role="relay", name="relay")
        tb.start_node(BOB, name="bob")
        tb.start_node(ALICE, name="alice",
                      extra_args=("--set", f"node.registration_lifetime_s={ALICE_LIFETIME_S}"))
        known = wait_until(lambda: ALICE_AOR in (tb.node(BOB).who_aors() or ()), CONVERGE_S)
        assert known is not None, tb.describe()
        time.sleep(2.0)  # anti-entropy rounds: the capture hears RECORDS too
        recorder.send_signal(signal.SIGTERM)
        captured = _summary(recorder, 20)
        alice_records = keep_for_replay(read_records(capture), ALICE_AOR, tombstones=False)
        assert alice_records, f"capture beside the relay heard no binding of alice: {captured}"

        assert tb.stop_node(ALICE) == 0
        departed_at = time.monotonic()
        gone = wait_until(lambda: all(ALICE_AOR not in (tb.node(i).who_aors() or {ALICE_AOR})
                                      for i in (RELAY, BOB)), CONVERGE_S)
        assert gone is not None, tb.describe()

        tb.restart_node(RELAY)
        first = _replay(tb, ns, capture)
        time.sleep(max(0.0, departed_at + ALICE_LIFETIME_S + 2 - time.monotonic()))
        second = _replay(tb, ns, capture)
        print(f"\ncaptured {captured}; {len(alice_records)} of alice's bindings\n"
              f"replay right after the relay restarted: {first}\n"
              f"replay after alice's tombstone hold ran out: {second}")
        assert first["sent"] > 0 and second["sent"] > 0
        assert first["listed_by"] == [], f"resurrected after the restart\n{tb.describe()}"
        assert second["listed_by"] == [], f"resurrected after the hold\n{tb.describe()}"
