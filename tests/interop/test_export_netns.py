"""After-action export end to end on the namespace test bed (issue 11's done-when).

Five namespaces in a chain (4 hops), every link dropping 10% of the frames it receives, a
``meshcomm handset`` in each with its wall clock set hours away from the others
(``--wall-clock-skew``). baresip "alice" beside node 0 and "bob" beside node 4 exchange
MESSAGEs and a call; then node 4 crashes, ``ctl send`` from node 0 is held by the relays
and delivered once node 4 is back (store-and-forward). Then, on node 0 (the command post):

* ``meshcomm ctl collect --out DIR`` gathers every node's journal over the mesh;
* ``meshcomm export DIR --out OUT --json`` verifies them all and writes timeline.jsonl,
  timeline.csv, sip.pcapng and report.html;
* the merged timeline has no causality violation (no receipt before its send, by envelope
  id and by witnessed HELLO) and each device's estimated offset is its true skew within
  50 ms;
* ``tshark -r sip.pcapng -Y sip`` shows as many SIP messages as the journals recorded
  (the rule of docs/export-outputs.md), and the call's INVITE, 200, ACK, BYE and 200 on
  every hop (``-z voip,calls`` lists it where tshark has that tap: Wireshark 4.2 and later;
  Debian 12 ships 4.0);
* report.html loads in headless Chromium with no console error, and its screenshot shows
  the call's ladder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.envcheck import require_program, require_root
from tests.interop.clients import (
    DOMAIN,
    call_with_audio,
    final_statuses,
    requests_with,
    wait_binding,
)
from tools.testbed import Testbed, chain
from tools.testbed.audio import write_test_signal
from tools.testbed.baresip import BaresipClient
from tools.testbed.nodes import ctl_argv, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_NODES = 5
LOSS_PERCENT = 10
#: Each node's wall clock, hours apart (seconds from the true time).
SKEWS_S = (0.0, 3 * 3600.0, -2 * 3600.0, 5 * 3600.0, -4 * 3600.0)
#: The estimated offsets must be within this of the true skews.
OFFSET_TOLERANCE_S = 0.050
CONVERGE_S = 30.0
REGISTER_S = 10.0
ANSWER_S = 30.0
MESSAGES = 3
CALL_SETUP_S = 20.0
CALL_S = 4.0
HANGUP_S = 15.0
SIGNAL_S = CALL_S + 8.0
SEND_TIMEOUT_S = 20.0
DELIVERY_S = 60.0
COLLECT_TIMEOUT_S = 120.0
EXPORT_TIMEOUT_S = 120.0
CTL_TIMEOUT_S = 5.0
#: SIP hops of a message between the clients: client -> gateway -> gateway -> client.
SIP_HOPS = 3


@dataclass
class Incident:
    tb: Testbed
    alice: BaresipClient
    bob: BaresipClient
    call_id: str
    message_call_ids: list[str]
    held_text: str
    node_ids: list[str]


def _ctl(tb: Testbed, node: int, *action: str,
         timeout_s: float = CTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ctl_argv(tb.node(node), *action, timeout_s=timeout_s),
                          capture_output=True, text=True, timeout=timeout_s + 30, check=False)


def _node_id(tb: Testbed, node: int) -> str:
    status = tb.node(node).status()
    value = status.get("node_id")
    assert isinstance(value, str), status
    return value


def _inbox_texts(tb: Testbed, node: int) -> list[str]:
    done = _ctl(tb, node, "inbox", "--json")
    rows = json.loads(done.stdout) if done.returncode == 0 else []
    return [str(row.get("text")) for row in rows] if isinstance(rows, list) else []


def _message(alice: BaresipClient, bob: BaresipClient, text: str) -> str:
    """alice sends ``text`` to bob; its Call-ID once answered 200."""
    alice.message(bob.aor, text)
    sent = wait_until(lambda: bool(requests_with(alice, "MESSAGE", sent=True, body_has=text)),
                      5.0)
    assert sent is not None, alice.log_tail()
    call_id = requests_with(alice, "MESSAGE", sent=True, body_has=text)[0].headers["call-id"]
    answered = wait_until(lambda: 200 in final_statuses(alice, call_id, "MESSAGE", sent=False),
                          ANSWER_S)
    assert answered is not None, f"MESSAGE not answered 200\n{alice.log_tail()}"
    return call_id


def _store_and_forward(tb: Testbed) -> str:
    """Node 4 crashes; ``ctl send`` from node 0 is held; node 4 returns and gets it."""
    target = f"sip:n{N_NODES - 1}@{DOMAIN}"
    known = wait_until(lambda: target in (tb.node(0).who_aors() or ()), CONVERGE_S)
    assert known is not None, tb.describe()
    tb.stop_node(N_NODES - 1, signal.SIGKILL)
    text = f"held-for-n4-{time.monotonic_ns()}"
    sent = _ctl(tb, 0, "send", target, text, timeout_s=SEND_TIMEOUT_S)
    assert sent.returncode == 0 and "accepted, held" in sent.stdout, \
        f"{sent.stdout}{sent.stderr}\n{tb.describe()}"
    tb.restart_node(N_NODES - 1)
    delivered = wait_until(lambda: text in _inbox_texts(tb, N_NODES - 1), DELIVERY_S,
                           poll_s=0.5)
    assert delivered is not None, f"never delivered\n{tb.describe()}"
    return text


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    require_root()
    require_program("baresip", "baresip-core")
    work = tmp_path_factory.mktemp("export-netns")
    with chain(N_NODES) as tb:
        tb.use_workdir(work)
        tb.set_loss_everywhere(LOSS_PERCENT)
        tb.start_node(0, name="n0", extra_args=["--wall-clock-skew", str(SKEWS_S[0])])
        command_post = _node_id(tb, 0)
        for i, skew in enumerate(SKEWS_S[1:], start=1):     # they answer node 0's pulls
            tb.start_node(i, name=f"n{i}", extra_args=[
                "--wall-clock-skew", str(skew),
                "--set", f'export.collectors=["{command_post}"]'])
        node_ids = [_node_id(tb, i) for i in range(N_NODES)]
        alice_signal = write_test_signal(work / "alice.wav", 11, SIGNAL_S)
        bob_signal = write_test_signal(work / "bob.wav", 22, SIGNAL_S)
        alice = tb.start_baresip(0, "alice", audio_in=work / "alice.wav",
                                 contacts=[f"sip:bob@{DOMAIN}"])
        bob = tb.start_baresip(N_NODES - 1, "bob", audio_in=work / "bob.wav",
                               contacts=[f"sip:alice@{DOMAIN}"])
        registered = wait_until(lambda: alice.registered() and bob.registered(), REGISTER_S)
        assert registered is not None, "REGISTER failed\n" + tb.describe()
        for node, aor in ((0, f"sip:bob@{DOMAIN}"), (N_NODES - 1, f"sip:alice@{DOMAIN}")):
            assert wait_binding(tb, node, aor, CONVERGE_S) is not None, tb.describe()
        message_call_ids = [_message(alice, bob, f"export-message-{n}-{time.monotonic_ns()}")
                            for n in range(MESSAGES)]
        call_with_audio(tb, alice, bob, alice_signal, bob_signal, setup_s=CALL_SETUP_S,
                        call_s=CALL_S, hangup_s=HANGUP_S)
        call_id = requests_with(alice, "INVITE", sent=True)[-1].headers["call-id"]
        held_text = _store_and_forward(tb)
        yield Incident(tb, alice, bob, call_id, message_call_ids, held_text, node_ids)


@dataclass
class Exported:
    collected: Path
    out: Path
    collect: dict[str, Any]
    summary: dict[str, Any]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def exported(incident: Incident, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    tb = incident.tb
    collected = tmp_path_factory.mktemp("collected")
    t0 = time.monotonic()
    done = _ctl(tb, 0, "collect", "--out", str(collected), "--json",
                timeout_s=COLLECT_TIMEOUT_S)
    print(f"\nctl collect: {time.monotonic() - t0:.1f} s, exit {done.returncode}")
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{tb.describe()}"
    collect = json.loads(done.stdout)
    out = tmp_path_factory.mktemp("export-out")
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "meshcomm.cli.main", "export", str(collected),
                          "--out", str(out), "--json", "--reference", incident.node_ids[0]],
                         capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False)
    print(f"meshcomm export: {time.monotonic() - t0:.1f} s, exit {run.returncode}")
    assert run.returncode == 0, f"{run.stdout}{run.stderr}"
    summary = json.loads(run.stdout)
    with (out / "timeline.jsonl").open(encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    return Exported(collected, out, collect, summary, events)


def test_collect_gathers_every_journal_over_the_mesh(incident: Incident,
                                                     exported: Exported) -> None:
    held = {p.name for p in exported.collected.iterdir() if (p / "journal.sqlite").is_file()}
    assert held == set(incident.node_ids), (held, exported.collect)
    for node_id in incident.node_ids:
        assert (exported.collected / node_id / "public.key").is_file()


def test_export_verifies_every_device_and_writes_four_outputs(incident: Incident,
                                                               exported: Exported) -> None:
    summary = exported.summary
    assert summary["verified"] is True and summary["problems"] == [], summary["problems"]
    assert {d["device"] for d in summary["devices"]} == set(incident.node_ids)
    assert all(d["verified"] and d["merged"] for d in summary["devices"])
    for name in ("timeline.jsonl", "timeline.csv", "sip.pcapng", "report.html"):
        assert (exported.out / name).stat().st_size > 0, name
    assert summary["events"] == len(exported.events)
    texts = json.dumps([e["data"] for e in exported.events])
    for call_id in [incident.call_id, *incident.message_call_ids]:
        assert call_id in texts, call_id


def test_offsets_match_the_skews_and_no_receipt_precedes_its_send(
        incident: Incident, exported: Exported) -> None:
    offsets = {d["device"]: d["offset_s"] for d in exported.summary["devices"]}
    errors = {}
    for node_id, skew in zip(incident.node_ids, SKEWS_S, strict=True):
        assert offsets[node_id] is not None, f"no offset for {node_id}"
        errors[node_id[:8]] = round(offsets[node_id] - skew, 4)
    print(f"\noffset errors (s): {errors}")
    assert all(abs(e) <= OFFSET_TOLERANCE_S for e in errors.values()), errors
    sends: dict[str, tuple[int, float]] = {}
    violations, pairs = [], 0
    for index, event in enumerate(exported.events):
        data = event["data"]
        env = data.get("env") if event["type"] == "sip.message" else None
        if env and data.get("dir") == "to-mesh":
            sends.setdefault(env, (index, event["corrected_s"]))
        elif env and data.get("dir") == "from-mesh" and env in sends:
            pairs += 1
            sent_at, sent_s = sends[env]
            if event["corrected_s"] < sent_s or index < sent_at:
                violations.append((env, sent_s, event["corrected_s"]))
    print(f"{pairs} send/receipt pairs by envelope id, {len(violations)} violations")
    assert pairs >= 2 * MESSAGES and not violations, violations[:5]


def _tshark(*args: str) -> str:
    done = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_capture_shows_every_journaled_sip_message_and_the_call(
        incident: Incident, exported: Exported) -> None:
    require_program("tshark", "tshark")
    from meshcomm.export.pcap import expected_packets

    pcap = str(exported.out / "sip.pcapng")
    shown = [line for line in _tshark("-r", pcap, "-Y", "sip").splitlines() if line.strip()]
    expected = expected_packets(exported.out / "timeline.jsonl")
    print(f"\ntshark shows {len(shown)} SIP packets; the journals give {expected}")
    assert len(shown) == expected > 0
    # The call's dialog on the three SIP hops it crossed (client -> node 0's gateway, that
    # gateway -> node 4's over the mesh, which relays it without SIP, -> client): INVITE,
    # 200, ACK, BYE and the BYE's 200 on each (more under loss: retransmissions).
    rows = _tshark("-r", pcap, "-Y", f'sip.Call-ID == "{incident.call_id}"', "-T", "fields",
                   "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method")
    seen = [tuple(row.split("\t")) for row in rows.splitlines() if row.strip()]
    for step in (("INVITE", "", "INVITE"), ("", "200", "INVITE"), ("ACK", "", "ACK"),
                 ("BYE", "", "BYE"), ("", "200", "BYE")):
        assert seen.count(step) >= SIP_HOPS, (step, seen)
    taps = _tshark("-z", "help")
    if "voip,calls" in taps:        # Wireshark >= 4.2's tshark (Debian 12 has 4.0)
        calls = _tshark("-r", pcap, "-q", "-z", "voip,calls")
        assert incident.call_id in calls or f"sip:alice@{DOMAIN}" in calls, calls


def test_the_report_loads_in_chromium_and_shows_the_call_ladder(
        incident: Incident, exported: Exported, tmp_path: Path) -> None:
    from tools.testbed.browser import load_page

    page = load_page(exported.out / "report.html", tmp_path / "report.png")
    assert page.console_errors == [], page.console_errors
    assert incident.call_id in page.dom
    assert page.screenshot_distinct_colours() > 16
