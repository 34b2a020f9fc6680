"""sip.pcapng and report.html from journals the real gateways wrote: a chain of three whole
nodes (tests/node/gateway_net.Net, stock UAs, the media relay), alice on n0 calls bob on
n2 (INVITE, answer, BYE) and sends him a MESSAGE; each node's journal records are written,
with the virtual time they were emitted at (n2's clock an hour ahead), to real journal
files, exported by the real pipeline, and then: the counting rule holds against counts
taken from the journals themselves, tshark shows that many packets and the call, and the
report draws the call's ladder across the two gateways."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from meshcomm.export.pcap import expected_packets, write_pcap_stats
from meshcomm.export.pipeline import export
from meshcomm.export.report import write_report
from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.journal.store import JournalStore
from meshcomm.media.relay import MediaConfig
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import IDENTITY_FILE, write_key_file
from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer
from meshcomm.sip.ua_events import CallEnded, CallEstablished, IncomingCall, RequestSucceeded
from tests.node.gateway_net import DOMAIN, Net, of_kind, registered

SEED = 7
SKEW_S = 3600.0                    # n2's wall clock
WALL_BASE_S = 1.7e9
ALICE_PORT, BOB_PORT = 5070, 5072
TSHARK = shutil.which("tshark")
STEP_S = 1e-4


def _identity(i: int) -> Identity:
    """The identity Net gives station i (tests/node/gateway_net.Net)."""
    return Identity(hashlib.sha256(f"gw-test-{SEED}-{i}".encode()).digest())


def _run_incident() -> tuple[Net, list[list[tuple[float, JournalRecord]]], str]:
    net = Net(3, media=MediaConfig(), seed=SEED)
    stamped: list[list[tuple[float, JournalRecord]]] = [[] for _ in net.stations]
    # The net settles each instant at once (a message crosses in zero virtual time): each
    # record is stamped STEP_S after the one emitted before it, so stamps follow the
    # order the net ran things in (a receipt after its send), as real processing would.
    last = [0.0]
    for i, station in enumerate(net.stations):      # note when each record was emitted
        original = station.edge.record

        def record(rec: JournalRecord, _i: int = i, _orig: object = original) -> None:
            last[0] = max(net.now, last[0] + STEP_S)
            stamped[_i].append((last[0], rec))
            _orig(rec)  # type: ignore[operator]
        station.edge.record = record  # type: ignore[method-assign]
        station.use(station.core)          # the pump binds edge.record when built
    net.converge()
    alice = registered(net, 0, ALICE_PORT, "alice")
    bob = registered(net, 2, BOB_PORT, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    call = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4000,
                                                       session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(2, BOB_PORT), IncomingCall)))
    incoming = of_kind(net.events(2, BOB_PORT), IncomingCall)[0]
    assert incoming.offer is not None
    answer = answer_offer(incoming.offer, address="127.0.0.1", rtp_port=6000, session_id=2)
    assert not isinstance(answer, NotAcceptable)
    bob.answer(incoming.call, answer[0])
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEstablished)))
    net.run_for(1.0)
    alice.bye(call)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    alice.message(f"sip:bob@{DOMAIN}", "water at sector 4")
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), RequestSucceeded)[2:]))
    net.run_for(2.0)
    call_id = next(str(r.data["call_id"]) for _, r in stamped[0]
                   if r.type is JournalEventType.SIP_MESSAGE and r.data.get("method") == "INVITE")
    return net, stamped, call_id


def _write_journals(root: Path, stamped: list[list[tuple[float, JournalRecord]]]) -> list[Path]:
    dirs = []
    for i, records in enumerate(stamped):
        who = _identity(i)
        data_dir = root / f"n{i}"
        data_dir.mkdir(parents=True)
        write_key_file(data_dir / IDENTITY_FILE, who)
        skew = SKEW_S if i == 2 else 0.0
        with JournalStore.open(data_dir / "journal.sqlite", who.node_id) as store:
            for now, rec in records:
                store.append_record(rec, now, WALL_BASE_S + now + skew)
            store.checkpoint(who.sign, 0.0, WALL_BASE_S + records[-1][0] + skew + 1.0)
            store.flush()
        dirs.append(data_dir)
    return dirs


def _expected(stamped: list[list[tuple[float, JournalRecord]]]) -> dict[str, int]:
    """The counting rule's terms, counted from the journals directly."""
    sip = [(i, dict(r.data)) for i, records in enumerate(stamped) for _, r in records
           if r.type is JournalEventType.SIP_MESSAGE]
    wire = [(i, d) for i, d in sip if d["dir"] != "dropped"]
    sent = {str(d["env"]) for _, d in wire if d["dir"] == "to-mesh"}
    pairs = sum(1 for _, d in wire if d["dir"] == "from-mesh" and d.get("env") in sent)
    return {"records": len(wire), "pairs": pairs,
            "originated": sum(1 for _, d in wire if d["dir"] == "originated"),
            "to_store": sum(1 for _, d in wire if d["peer"] == "store")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, dict[str, object], dict[str, int], str]:
    root = tmp_path_factory.mktemp("gateways")
    _, stamped, call_id = _run_incident()
    out = root / "out"
    summary = export(_write_journals(root / "devices", stamped), out)
    return out, json.loads(json.dumps(summary.as_json())), _expected(stamped), call_id


def test_the_packets_are_the_journals_less_the_pairs(
        exported: tuple[Path, dict[str, object], dict[str, int], str]) -> None:
    out, summary, expected, call_id = exported
    assert summary["verified"] is True
    stats = write_pcap_stats(out / "timeline.jsonl", out / "sip.pcapng")
    assert stats.records == expected["records"] and stats.pairs == expected["pairs"]
    assert stats.no_wire == expected["to_store"] and stats.minimal == 0
    assert stats.originated_folded <= expected["originated"]
    assert stats.evicted == stats.unbuildable == 0
    assert stats.packets == (stats.records - stats.pairs - stats.originated_folded
                             - stats.no_wire)
    assert expected_packets(out / "timeline.jsonl") == stats.packets
    if TSHARK is None:
        pytest.skip("tshark not installed")
    lines = subprocess.run([TSHARK, "-r", str(out / "sip.pcapng"), "-Y", "sip"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert len(lines.splitlines()) == stats.packets
    fields = subprocess.run(
        [TSHARK, "-r", str(out / "sip.pcapng"), "-Y", f'sip.Call-ID == "{call_id}"', "-T",
         "fields", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    seen = [" ".join(line.split()) for line in fields.splitlines()]
    # each message of the call on its three hops: alice -> n0 -> n2 -> bob (or back)
    for message in ("INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"):
        assert seen.count(message if " " in message else f"{message} {message}") >= 3, seen
    assert seen.index("INVITE INVITE") < seen.index("200 INVITE") < seen.index("ACK ACK") \
        < seen.index("BYE BYE") < seen.index("200 BYE")


def test_the_report_draws_the_call_across_both_gateways(
        exported: tuple[Path, dict[str, object], dict[str, int], str]) -> None:
    out, summary, _, call_id = exported
    write_report(out / "timeline.jsonl", summary, out / "report.html")
    page = (out / "report.html").read_text(encoding="utf-8")
    ladder = page[page.index(f'data-call-id="{call_id}"'):]
    ladder = ladder[:ladder.index("</svg>")]
    columns = re.findall(r'<text class="col"[^>]*>([^<]*)</text>', ladder)
    n0, n2 = (f"node {_identity(i).node_id[:4].hex()}" for i in (0, 2))
    assert columns[:3] == [f"127.0.0.1:{ALICE_PORT} @{n0[5:]}", n0, n2]
    arrows = re.findall(r'<text class="msg"[^>]*>([^<]*)</text>', ladder)
    # alice's INVITE, n0's 100 Trying back to her, the INVITE across, n2's 100 back to n0,
    # the INVITE to bob (each gateway answers 100 hop by hop as it relays)
    assert arrows[:5] == ["INVITE", "100 Trying (INVITE)", "INVITE", "100 Trying (INVITE)",
                          "INVITE"]
    assert arrows.count("INVITE") == arrows.count("ACK") == arrows.count("BYE") == 3
    assert arrows.index("180 Ringing (INVITE)") < arrows.index("200 OK (INVITE)") \
        < arrows.index("ACK") < arrows.index("BYE") < arrows.index("200 OK (BYE)")
    assert "sip:bob@" + DOMAIN in page and "sip:alice@" + DOMAIN in page
    offsets = {d["device"]: d["offset_s"] for d in summary["devices"]}  # type: ignore[union-attr,index]
    skew = offsets[_identity(2).node_id.hex()] - offsets[_identity(0).node_id.hex()]
    assert abs(skew - SKEW_S) < 0.01
