"""sip.pcapng (meshcomm/export/pcap.py), read back with the real tshark: as many SIP
packets as the counting rule says, the call in VoIP Calls (or, on a tshark without that
tap, the same dialog read field by field), no malformed packet, journal entries named in
the packet comments; the planner's pairing, addressing and bounds; hostile header text;
a write that fails leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshcomm.export.pcap import (
    Addressing,
    PacketPlanner,
    expected_packets,
    iter_timeline,
    sip_payload,
    write_pcap,
    write_pcap_stats,
)
from tests.export.test_pcap_incident import (
    ALICE,
    CALL_ID,
    A,
    B,
    export_incident,
    mesh_name,
    sip_data,
)

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed "
                                  "(tools/debian-packages.txt)")


def tshark(*args: str) -> str:
    assert TSHARK is not None
    run = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=60,
                         check=True)
    return run.stdout


def _call_seen_by_tshark(capture: Path) -> list[str]:
    """The call's packets as tshark reads them: "<method or status>" in capture order."""
    rows = tshark("-r", str(capture), "-Y", f'sip.Call-ID == "{CALL_ID}"', "-T", "fields",
                  "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method")
    return [line.replace("\t", " ").strip() for line in rows.splitlines()]


@needs_tshark
def test_the_capture_has_every_message_once_per_hop_and_the_call(tmp_path: Path) -> None:
    out, _ = export_incident(tmp_path)
    stats = write_pcap_stats(out / "timeline.jsonl", out / "sip.pcapng")
    # 46 sip.message records, one a drop: 45. 10 mesh hops journaled on both ends (pairs),
    # one 404 journaled originated then to-client, one 480 to store.
    assert (stats.records, stats.pairs, stats.originated_folded, stats.no_wire,
            stats.unbuildable, stats.minimal) == (45, 10, 1, 1, 0, 6)
    assert stats.packets == (stats.records - stats.pairs - stats.originated_folded
                             - stats.no_wire - stats.unbuildable) == 33
    capture = out / "sip.pcapng"
    assert expected_packets(out / "timeline.jsonl") == 33
    assert len(tshark("-r", str(capture), "-Y", "sip").splitlines()) == 33
    sip_stat = tshark("-r", str(capture), "-q", "-z", "sip,stat")
    assert "Number of SIP messages: 33" in sip_stat
    for line in ("INVITE          :     3", "ACK             :     3",
                 "BYE             :     3", "SIP 180 Ringing         :     3"):
        assert line in sip_stat
    # The call: each message on its three hops (client -> node, node -> node, node ->
    # client) in order.
    seen = _call_seen_by_tshark(capture)
    assert seen == [s for s in ("INVITE  INVITE", "180 INVITE", "200 INVITE", "ACK  ACK",
                                "BYE  BYE", "200 BYE") for _ in range(3)]
    taps = subprocess.run([TSHARK or "", "-z", "help"], capture_output=True, text=True,
                          timeout=60).stdout
    if "voip,calls" in taps:                     # Wireshark >= 4.2's tshark
        calls = tshark("-r", str(capture), "-q", "-z", "voip,calls")
        assert CALL_ID in calls or "sip:alice@incident" in calls
    expert = tshark("-r", str(capture), "-q", "-z", "expert")
    assert "Malformed" not in expert and "Warnings" not in expert and "Errors" not in expert


@needs_tshark
def test_packets_carry_the_corrected_time_addresses_and_journal_entry(tmp_path: Path) -> None:
    out, _ = export_incident(tmp_path)
    write_pcap(out / "timeline.jsonl", out / "sip.pcapng")
    first = next(e for e in iter_timeline(out / "timeline.jsonl")
                 if e["type"] == "sip.message")
    row = tshark("-r", str(out / "sip.pcapng"), "-c", "2", "-T", "fields", "-e",
                 "frame.time_epoch", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.dstport",
                 "-e", "frame.comment").splitlines()
    when, src, dst, port, comment = row[0].split("\t")
    assert abs(float(when) - float(first["corrected_s"])) < 1e-5        # type: ignore[arg-type]
    a_ip = "10." + ".".join(str(b) for b in A.node_id[:3])
    b_ip = "10." + ".".join(str(b) for b in B.node_id[:3])
    assert (src, dst, port) == ("127.0.0.1", a_ip, "5060")
    assert comment == f"meshcomm journal device={A.node_id.hex()} seq={first['seq']} " \
                      "dir=from-client"
    assert row[1].split("\t")[1:3] == [a_ip, b_ip]                      # the mesh hop


def test_a_mesh_hop_is_one_packet_whichever_end_comes_first() -> None:
    planner = PacketPlanner()
    a, b = A.node_id.hex(), B.node_id.hex()

    def event(device: str, seq: int, direction: str, peer: str, env: str | None,
              t: float) -> dict[str, object]:
        return {"device": device, "seq": seq, "type": "sip.message", "corrected_s": t,
                "data": sip_data(direction, peer, "MESSAGE", None, call_id="m", cseq=1,
                                 env=env)}

    # receipt before the send (a device whose clock could not be corrected)
    assert len(planner.add(event(b, 1, "from-mesh", mesh_name(A), "e1", 1.0))) == 1
    assert planner.add(event(a, 1, "to-mesh", mesh_name(B), "e1", 2.0)) == []
    # no env (older journals): a retransmission sent twice, received once
    for seq in (2, 3):
        assert len(planner.add(event(a, seq, "to-mesh", mesh_name(B), None, 3.0))) == 1
    assert planner.add(event(b, 2, "from-mesh", mesh_name(A), None, 3.1)) == []
    # the same env between other nodes is another hop
    assert len(planner.add(event(a, 4, "from-mesh", "cc" * 8 + ".mesh", "e1", 4.0))) == 1
    assert planner.stats.pairs == 2 and planner.stats.packets == 4


def test_unpaired_mesh_records_are_bounded(tmp_path: Path) -> None:
    planner = PacketPlanner(max_unpaired=100)
    for i in range(10_000):                    # a flood of receipts nobody sent
        planner.add({"device": B.node_id.hex(), "seq": i, "type": "sip.message",
                     "data": sip_data("from-mesh", mesh_name(A), "MESSAGE", None,
                                      call_id=f"f{i}", cseq=1, env=f"{i:032x}")})
    assert len(planner._unpaired) == 100 and planner.stats.evicted == 9_900
    assert planner.stats.packets == 10_000


def test_node_addresses_are_derived_from_the_id_and_never_collide() -> None:
    addressing = Addressing()
    first = addressing.node("0a0b0c" + "11" * 29)
    same_prefix = addressing.node("0a0b0c" + "22" * 29 + ".mesh")
    assert first == "10.10.11.12" and same_prefix == "10.11.12.34"      # next id window
    assert addressing.node("0a0b0c1111111111.mesh") == first           # same 8-byte prefix
    assert addressing.node("0000ff" + "00" * 29) not in ("10.0.0.255", first, same_prefix)
    assert addressing.node("ab" * 32, v6=True) == "fd00::abab:abab:abab:abab"
    assert Addressing().node("0a0b0c" + "22" * 29) == "10.10.11.12"    # order decides


def test_hostile_header_text_cannot_make_headers_of_its_own() -> None:
    data = sip_data("from-client", ALICE, "MESSAGE", None, call_id="x", cseq=1,
                    extra=(("Subject", "hi\r\nVia: SIP/2.0/UDP evil\r\n\r\nBODY"),))
    built = sip_payload(data)
    assert built is not None
    head = built[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert [h for h in head if h.startswith(b"Via")] == [head[1]]
    assert b"Subject: hi  Via: SIP/2.0/UDP evil    BODY" in head
    assert sip_payload({"dir": "to-client", "method": "<x>", "peer": ALICE}) is None
    assert sip_payload({**data, "headers": [["Content-Length", "9" * 5000]]}) is not None


@needs_tshark
def test_an_ipv6_client_and_a_bad_line_are_handled(tmp_path: Path) -> None:
    timeline = tmp_path / "timeline.jsonl"
    good = {"device": A.node_id.hex(), "seq": 1, "type": "sip.message", "corrected_s": 5.0,
            "data": sip_data("from-client", "[fd00::5]:5062", "MESSAGE", None,
                             call_id="v6", cseq=1)}
    timeline.write_text("not json\n" + "x" * (2 << 20) + "\n" + json.dumps(good) + "\n")
    stats = write_pcap_stats(timeline, tmp_path / "sip.pcapng")
    assert (stats.packets, stats.lines_skipped) == (1, 2)
    row = tshark("-r", str(tmp_path / "sip.pcapng"), "-Y", "sip", "-T", "fields",
                 "-e", "ipv6.src", "-e", "ipv6.dst")
    assert row.split() == ["fd00::5", "fd00::" + A.node_id[:8].hex(":", 2)]


def test_an_empty_timeline_is_a_valid_empty_capture(tmp_path: Path) -> None:
    (tmp_path / "timeline.jsonl").write_text("")
    assert write_pcap(tmp_path / "timeline.jsonl", tmp_path / "sip.pcapng") == 0
    if TSHARK is not None:
        assert tshark("-r", str(tmp_path / "sip.pcapng")) == ""


def test_a_write_that_fails_leaves_no_file_and_keeps_the_old_capture(tmp_path: Path) -> None:
    out, _ = export_incident(tmp_path)
    old = out / "sip.pcapng"
    old.write_bytes(b"previous export")
    # A disk that fills up: the file size limit (as root, permissions would not stop it).
    script = ("import resource, signal, sys\n"
              "from pathlib import Path\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
              "from meshcomm.export.pcap import write_pcap\n"
              "try:\n"
              "    write_pcap(Path(sys.argv[1]), Path(sys.argv[2]))\n"
              "except OSError as e:\n"
              "    print('failed', e.errno)\n")
    run = subprocess.run([sys.executable, "-c", script, str(out / "timeline.jsonl"),
                          str(old)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], env={**os.environ})
    assert run.stdout.strip() == "failed 27", run.stderr             # EFBIG
    assert old.read_bytes() == b"previous export"
    assert sorted(p.name for p in out.iterdir()) == ["sip.pcapng", "timeline.csv",
                                                     "timeline.jsonl"]


def test_a_response_generated_for_the_mesh_is_one_packet_on_both_counts(
        tmp_path: Path) -> None:
    """A 404 node A generates for node B's request: originated, then to-mesh (A); B
    journals its receipt (from-mesh). One packet, by the planner and by the rule."""
    a, b = A.node_id.hex(), B.node_id.hex()
    rows = [(a, 1, "originated", mesh_name(B), None), (a, 2, "to-mesh", mesh_name(B), "e9"),
            (b, 1, "from-mesh", mesh_name(A), "e9")]
    timeline = tmp_path / "timeline.jsonl"
    timeline.write_text("".join(json.dumps({
        "device": device, "seq": seq, "type": "sip.message", "corrected_s": 10.0 + seq,
        "data": sip_data(direction, peer, "MESSAGE", 404, call_id="q", cseq=1, env=env)}
    ) + "\n" for device, seq, direction, peer, env in rows))
    stats = write_pcap_stats(timeline, tmp_path / "sip.pcapng")
    assert (stats.records, stats.originated_folded, stats.pairs, stats.packets) == (3, 1, 1, 1)
    assert expected_packets(timeline) == 1
