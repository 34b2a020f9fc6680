"""report.html (meshcomm/export/report.py) from a timeline written by the real export:
every section and the call's ladder, nothing fetched, journal text rendered as text
(a ``<script>`` in a SIP header, an AoR, a Call-ID and a drop reason), bounded tables
under floods; and in headless Chromium (tools/testbed/browser.py): no console message,
the ladder with its INVITE arrow in the DOM and visible in a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from meshcomm.export.pcap import write_pcap
from meshcomm.export.pipeline import export
from meshcomm.export.report import (
    MAX_LADDER_ARROWS,
    MAX_LADDERS,
    MAX_LISTED_DIALOGS,
    MAX_TRACKED,
    ReportData,
    render_report,
    write_report,
)
from tests.export.test_pcap_incident import (
    ALICE,
    CALL_ID,
    A,
    B,
    C,
    export_incident,
    incident_journals,
    sip_data,
    write_device,
)
from tools.testbed.browser import colour_box, find_chromium, load_page

HOSTILE = '<script>alert("x")</script><img src="http://fetch.invalid/x.png">'
#: The ladders' arrow colour (templates/report.html.j2).
ARROW_RGB = (0x1F, 0x4E, 0x8C)
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium not installed (tools/debian-packages.txt)")


def _report(tmp_path: Path, **kw: object) -> Path:
    out, summary = export_incident(tmp_path, incident_journals(**kw))  # type: ignore[arg-type]
    write_report(out / "timeline.jsonl", summary, out / "report.html")
    return out / "report.html"


def test_every_section_and_the_call_ladder_offline(tmp_path: Path) -> None:
    page = _report(tmp_path).read_text(encoding="utf-8")
    for section in ("summary", "devices", "clocks", "timeline", "topology", "ladders",
                    "latency", "drops"):
        assert f'<section id="{section}">' in page
    ladder = page[page.index(f'data-call-id="{CALL_ID}"'):]
    ladder = ladder[:ladder.index("</svg>")]
    labels = re.findall(r'<text class="msg"[^>]*>([^<]*)</text>', ladder)
    assert labels == [x for x in ("INVITE", "180 Ringing (INVITE)", "200 OK (INVITE)", "ACK",
                                  "BYE", "200 OK (BYE)") for _ in range(3)]
    assert ">127.0.0.1:5062 @" in ladder and ">node " in ladder
    # the figures of the incident (see test_pcap_incident): 3 devices, B 2 h ahead
    assert ">7200.000000<" in page and "unknown (raw time kept)" in page
    assert "overlay: bad_signature" in page and "sip: undecodable" in page
    assert "404 Not Found (MESSAGE)" in page and "503 Service Unavailable (MESSAGE) shed" in page
    assert "neighbour down" in page and "lost" in page
    # self-contained: nothing that could be fetched
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'\ssrc=', page)
    assert all(h.startswith("#") for h in re.findall(r'\shref="([^"]*)"', page))
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))    # in-page
    assert "default-src 'none'" in page


def test_journal_text_is_rendered_as_text(tmp_path: Path) -> None:
    page = _report(tmp_path, hostile=HOSTILE).read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(" in page                       # AoR, Call-ID, drop reason
    assert page.count("&lt;script&gt;") >= 3
    assert "$x^{2" in page                                      # not parsed as mathtext


def test_tables_stay_bounded_under_a_flood() -> None:
    data = ReportData()
    for i in range(MAX_TRACKED + 5_000):          # every record a new dialog
        data.add({"device": "ab" * 32, "seq": i, "type": "sip.message",
                  "corrected_s": 1000.0 + i * 0.01,
                  "data": sip_data("from-client", ALICE, "MESSAGE", None,
                                   call_id=f"flood-{i}", cseq=1)})
    data.finish()
    drawn = [d for d in data.dialogs.values() if d.hidden >= 0]  # type: ignore[attr-defined]
    assert len(drawn) == MAX_LADDERS
    assert len(data.dialogs) == 2 * MAX_LADDERS + MAX_LISTED_DIALOGS
    assert len(data._counted) == MAX_TRACKED and data.messages == MAX_TRACKED + 5_000
    assert len(data.bins) <= 300 and data.bin_s > 1.0


def test_many_calls_are_drawn_up_to_the_limit_then_listed(tmp_path: Path) -> None:
    out, summary = export_incident(tmp_path, incident_journals(extra_calls=MAX_LADDERS + 4))
    page = render_report(out / "timeline.jsonl", summary)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="ladder-svg"') == (
        MAX_LADDERS + 4)          # 20 calls; 4 message dialogs: msg-1, msg-old, nf, shed
    listed = page[page.index("Further dialogs"):]
    assert len(re.findall(r"<td>call</td>", listed)) == 5
    assert MAX_LADDER_ARROWS >= 18


def test_a_report_that_cannot_be_written_leaves_nothing(tmp_path: Path) -> None:
    out, summary = export_incident(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_report(out / "timeline.jsonl", summary, blocker / "report.html")
    script = ("import json, resource, signal, sys\nfrom pathlib import Path\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "from meshcomm.export.report import write_report\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
              "try:\n    write_report(Path(sys.argv[1]), json.loads(sys.argv[2]), "
              "Path(sys.argv[3]))\nexcept OSError as e:\n    print('failed', e.errno)\n")
    run = subprocess.run([sys.executable, "-c", script, str(out / "timeline.jsonl"),
                          json.dumps(summary), str(out / "report.html")],
                         capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.stdout.strip() == "failed 27", run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["timeline.csv", "timeline.jsonl"]


@needs_chromium
def test_the_report_loads_in_chromium_and_shows_the_call_ladder(tmp_path: Path) -> None:
    report = _report(tmp_path, hostile=HOSTILE)
    shot = tmp_path / "report.png"
    loaded = load_page(report, shot)
    assert loaded.console == (), loaded.console
    assert loaded.load_s < 30
    assert "<script" not in loaded.dom.split("</head>", 1)[1]     # the hostile text is text
    dom_ladder = loaded.dom[loaded.dom.index(f'data-call-id="{CALL_ID}"'):]
    assert re.search(r'<svg[^>]*class="ladder-svg"', dom_ladder)
    assert re.search(r'<text class="msg"[^>]*>INVITE</text>', dom_ladder)
    # The ladder is on the screenshot: the arrows' colour, and a varied picture there.
    box = colour_box(shot, ARROW_RGB, 560)
    assert box is not None, "no ladder arrow on the screenshot"
    assert loaded.screenshot_distinct_colours(box) > 50      # text, arrows, lines
    from PIL import Image

    with Image.open(shot) as image:
        image.crop(box).save(tmp_path / "ladder.png")


def test_a_tampered_journal_kept_with_allow_unverified_is_marked(tmp_path: Path) -> None:
    journals = incident_journals()
    dirs = [write_device(tmp_path / "devices", who, sorted(journals.records[side],
                                                           key=lambda r: r[0]))
            for side, who in (("a", A), ("b", B), ("c", C))]
    conn = sqlite3.connect(dirs[1] / "journal.sqlite")         # B's history edited
    conn.execute("UPDATE entries SET wall_s = wall_s + 5 WHERE seq = 9")
    conn.commit()
    conn.close()
    out = tmp_path / "out"
    summary = json.loads(json.dumps(export(dirs, out, allow_unverified=True).as_json()))
    write_report(out / "timeline.jsonl", summary, out / "report.html")
    page = (out / "report.html").read_text(encoding="utf-8")
    row = page[page.index(f'title="{B.node_id.hex()}"'):]
    row = row[:row.index("</tr>")]
    assert ">problems<" in row and "entry 9: <b>edited</b>" in row
    ladder = page[page.index(f'data-call-id="{CALL_ID}"'):]
    ladder = ladder[:ladder.index("</svg>")]
    assert ladder.count('stroke-dasharray="6 3"') == ladder.count("(unverified)") > 0
    assert write_pcap(out / "timeline.jsonl", out / "sip.pcapng") == 33
    if shutil.which("tshark"):
        comments = subprocess.run(
            ["tshark", "-r", str(out / "sip.pcapng"), "-T", "fields", "-e", "frame.comment"],
            capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
        marked = [c for c in comments if c.endswith(" UNVERIFIED")]
        assert marked and all(f"device={B.node_id.hex()}" in c for c in marked)
