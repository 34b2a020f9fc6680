"""No plaintext leaves the endpoints (issue 12, done-when): real processes in namespaces.

chain(3): ``alice`` (``meshcomm handset``) - ``meshcomm relay`` - ``bob`` (``meshcomm
handset``). While ``dumpcap`` records every interface of the relay's namespace:

1. ``meshcomm ctl send`` from alice reaches bob live (bob's inbox shows the text);
2. a call from a SIP client beside alice's gateway to one beside bob's carries RTP packets
   whose payload is a marker; the callee's client receives the marker (media flowed);
3. bob's node crashes (SIGKILL: its binding remains), a second MESSAGE is held and the
   relay takes custody of it (alice's outbox: held by the relay).

Then the relay's whole data directory (store-and-forward database with its WAL, journal,
everything) and the capture are searched for both texts and the media marker: none is
there. Controls that the search can find things: the capture holds bob's AoR (bindings are
public) and many frames; the relay's database holds one parcel for others.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.envcheck import require_program
from tests.integration.test_storeforward_netns import (
    ALICE,
    BOB,
    BOB_AOR,
    CONVERGE_S,
    CUSTODY_S,
    RELAY,
    SEND_TIMEOUT_S,
    ctl,
    inbox_texts,
    outbox,
)
from tools.testbed import Testbed
from tools.testbed.nodes import wait_until
from tools.testbed.sipclient import SipUac, SipUas

RTP_PACKETS = 20
RTP_WAIT_S = 2.0
CAPTURE_START_S = 1.0


def _udp_in(tb: Testbed, node: int) -> socket.socket:
    with tb.entered(node):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    return sock


def _call_with_marker(tb: Testbed, marker: bytes) -> int:
    """A call alice's client -> a client at bob's node; RTP carrying ``marker``; how many
    packets with the marker the callee's client received."""
    uas = SipUas(_udp_in(tb, BOB), "callee", _udp_in(tb, BOB))
    assert uas.register(), tb.describe()
    thread = threading.Thread(target=uas.serve, daemon=True)
    thread.start()
    got = 0
    try:
        assert wait_until(lambda: uas.aor in (tb.node(ALICE).who_aors() or ()),
                          CONVERGE_S) is not None, tb.describe()
        uac = SipUac(_udp_in(tb, ALICE), _udp_in(tb, ALICE))
        call = uac.invite(uas.aor)
        assert call is not None and call.media is not None, tb.describe()
        uas.rtp_sock.settimeout(RTP_WAIT_S)
        for seq in range(RTP_PACKETS):
            packet = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + bytes(8) + marker
            uac.rtp_sock.sendto(packet, call.media)
            try:
                while marker not in uas.rtp_sock.recv(2048):
                    pass
                got += 1
            except (TimeoutError, OSError):
                continue
        uac.bye(call)
    finally:
        uas.stop()
        thread.join(timeout=2)
    return got


def _found_in(path: Path, needles: dict[str, bytes]) -> list[str]:
    data = path.read_bytes()
    return [f"{name} in {path.name}" for name, needle in needles.items() if needle in data]


def test_relay_db_journal_and_radio_capture_hold_no_plaintext(chain3: Testbed,
                                                               tmp_path: Path) -> None:
    dumpcap = require_program("dumpcap", "tshark")
    tb = chain3
    tb.start_node(ALICE, name="alice")
    tb.start_node(RELAY, role="relay", name="relay")
    tb.start_node(BOB, name="bob")
    assert wait_until(lambda: BOB_AOR in (tb.node(ALICE).who_aors() or ()),
                      CONVERGE_S) is not None, tb.describe()
    capture = tmp_path / "relay.pcapng"
    dump = tb.popen(RELAY, [dumpcap, "-q", "-i", "any", "-w", str(capture)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(CAPTURE_START_S)
    live = f"live secret {secrets.token_hex(8)}"
    held = f"held secret {secrets.token_hex(8)}"
    marker = b"MEDIA-SECRET-" + secrets.token_hex(8).encode()
    try:
        sent = ctl(tb, ALICE, "send", BOB_AOR, live, timeout_s=SEND_TIMEOUT_S)
        assert sent.returncode == 0 and ": delivered" in sent.stdout, sent.stdout + sent.stderr
        assert wait_until(lambda: live in inbox_texts(tb, BOB), 10.0, poll_s=0.5) is not None

        received = _call_with_marker(tb, marker)
        print(f"\nmedia: {received} of {RTP_PACKETS} marked RTP packets reached the callee")
        assert received >= RTP_PACKETS // 2, tb.describe()

        tb.stop_node(BOB, signal.SIGKILL)
        sent = ctl(tb, ALICE, "send", BOB_AOR, held, timeout_s=SEND_TIMEOUT_S)
        assert "accepted, held (202" in sent.stdout, sent.stdout + sent.stderr
        custody = wait_until(lambda: [r["state"] for r in outbox(tb)] == ["held_by"],
                             CUSTODY_S, poll_s=0.5)
        assert custody is not None, f"{outbox(tb)}\n{tb.describe()}"
        relay_sf = tb.node(RELAY).status()["store_forward"]
        assert relay_sf["held_for_others"] == 1, relay_sf
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
    needles = {"live MESSAGE": live.encode(), "held MESSAGE": held.encode(),
               "media payload": marker}
    relay_files = [p for p in tb.node(RELAY).data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix in (".sqlite", ".db") or "sf" in p.name for p in relay_files), relay_files
    leaks = [hit for p in [*relay_files, capture] for hit in _found_in(p, needles)]
    assert leaks == []
    frames = capture.read_bytes()
    assert b"bob@incident.local" in frames and len(frames) > 10_000   # the search can see
