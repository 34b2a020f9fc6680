"""SIPp's built-in standard scenarios against our UA core on a plain UDP socket (loopback).

* ``sipp -sn uac`` calls us: INVITE -> (100, 180) -> 200 -> ACK -> pause -> BYE -> 200.
* ``sipp -sn uas`` answers us: we INVITE, it sends 180 and 200, we ACK and BYE.

The blocking socket edge below is the whole "runtime": it feeds datagrams and the clock
into the sans-IO core and transmits what the core wants sent.
"""

from __future__ import annotations

import csv
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer
from meshcomm.sip.timers import TimerConfig
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEstablished,
    IncomingCall,
    RequestSucceeded,
    UaConfig,
    UaEvent,
)
from tests.envcheck import require_program

CALLS = 3
LOOPBACK = "127.0.0.1"
SIPP_TIMEOUT_S = 40
#: Loopback has no loss; a short T1 keeps any retransmission quick.
LOOPBACK_TIMERS = TimerConfig(t1_s=0.5, t2_s=4.0, t4_s=5.0)


def _user_agent(sock: socket.socket, user: str) -> UserAgent:
    port = sock.getsockname()[1]
    config = UaConfig(aor=f"sip:{user}@{LOOPBACK}", local_host=LOOPBACK, local_port=port,
                      timers=LOOPBACK_TIMERS)
    return UserAgent(config, random.Random(7))


def _drive(ua: UserAgent, sock: socket.socket, proc: subprocess.Popen[bytes],
           react: Callable[[UaEvent], None], limit_s: float) -> None:
    """The edge: run until SIPp exits (and our queue is flushed) or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        for dgram in ua.to_send(now):
            sock.sendto(dgram.data, dgram.dest)
        while (event := ua.next_event()) is not None:
            react(event)
        if proc.poll() is not None:
            return
        timer = ua.next_timer()
        wait_s = 0.05 if timer is None else min(0.05, max(0.0, timer - now))
        sock.settimeout(wait_s or 0.001)
        try:
            data, src = sock.recvfrom(65535)
            ua.receive(data, (src[0], src[1]), time.monotonic())
        except TimeoutError:
            pass
        except ConnectionRefusedError:   # ICMP port unreachable while SIPp starts
            pass
        timer = ua.next_timer()
        if timer is not None and time.monotonic() >= timer:
            ua.on_timer(time.monotonic())
    proc.kill()
    raise AssertionError("SIPp did not finish in time")


def _sipp_stats(path: Path) -> dict[str, str]:
    files = sorted(path.glob("*.csv"))
    assert files, f"SIPp wrote no statistics file in {path}"
    with files[-1].open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    assert rows, "empty SIPp statistics"
    return rows[-1]


def _sipp(sipp: str, scenario: str, tmp_path: Path, target: str | None,
          local_port: int) -> subprocess.Popen[bytes]:
    args = [sipp, "-sn", scenario, "-i", LOOPBACK, "-p", str(local_port), "-m", str(CALLS),
            "-r", "2", "-d", "200", "-nostdin", "-timeout", str(SIPP_TIMEOUT_S),
            "-timeout_error", "-trace_stat", "-fd", "1",
            "-stf", str(tmp_path / f"{scenario}_stats.csv"),
            "-trace_err", "-error_file", str(tmp_path / f"{scenario}_errors.log")]
    if target is not None:
        args.append(target)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tmp_path)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def test_sipp_uac_calls_our_ua(tmp_path: Path) -> None:
    sipp = require_program("sipp", "sip-tester")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        ua = _user_agent(sock, "service")
        port = sock.getsockname()[1]
        seen: list[UaEvent] = []

        def react(event: UaEvent) -> None:
            seen.append(event)
            if isinstance(event, IncomingCall):
                assert event.offer is not None
                result = answer_offer(event.offer, address=LOOPBACK, rtp_port=40000,
                                      session_id=1)
                assert not isinstance(result, NotAcceptable)
                ua.answer(event.call, result[0])

        proc = _sipp(sipp, "uac", tmp_path, f"{LOOPBACK}:{port}", 0)
        _drive(ua, sock, proc, react, SIPP_TIMEOUT_S + 10)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert proc.returncode == 0, f"sipp uac exit {proc.returncode}: {stderr[-2000:]}"
    stats = _sipp_stats(tmp_path)
    assert int(stats["SuccessfulCall(C)"]) == CALLS and int(stats["FailedCall(C)"]) == 0
    assert sum(isinstance(e, IncomingCall) for e in seen) == CALLS
    assert sum(isinstance(e, CallEstablished) for e in seen) == CALLS
    assert sum(isinstance(e, CallEnded) for e in seen) == CALLS


def test_our_ua_calls_sipp_uas(tmp_path: Path) -> None:
    sipp = require_program("sipp", "sip-tester")
    sipp_port = _free_udp_port()
    proc = _sipp(sipp, "uas", tmp_path, None, sipp_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        ua = _user_agent(sock, "caller")
        seen: list[UaEvent] = []
        offer = make_offer(address=LOOPBACK, rtp_port=40002, session_id=2)
        # No wait for SIPp to bind: a lost first INVITE is retransmitted (Timer A).
        calls = [ua.invite(f"sip:service@{LOOPBACK}:{sipp_port}", offer) for _ in range(CALLS)]

        def react(event: UaEvent) -> None:
            seen.append(event)
            if isinstance(event, CallEstablished):
                ua.bye(event.call)

        _drive(ua, sock, proc, react, SIPP_TIMEOUT_S + 10)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert proc.returncode == 0, f"sipp uas exit {proc.returncode}: {stderr[-2000:]}"
    stats = _sipp_stats(tmp_path)
    assert int(stats["SuccessfulCall(C)"]) == CALLS and int(stats["FailedCall(C)"]) == 0
    established = {e.call for e in seen if isinstance(e, CallEstablished)}
    assert established == set(calls)
    assert sum(isinstance(e, CallEnded) for e in seen) == CALLS
    byes_ok = [e for e in seen if isinstance(e, RequestSucceeded) and e.method == "BYE"]
    assert len(byes_ok) <= CALLS   # SIPp may exit before its last 200 to BYE is read
