"""A small SIP phone for the media tests: a stock :class:`~meshcomm.sip.ua.UserAgent` on a
real UDP socket, plus an RTP socket that sends a synthetic 20 ms PCMU stream to the address
in the far SDP and counts what arrives from the far phone (by SSRC).

Used in one asyncio loop beside in-process nodes, and as a child process inside a network
namespace::

    python -m tests.runtime.ua_media callee --gateway 127.0.0.1:5060 --user bob
    python -m tests.runtime.ua_media caller --gateway 127.0.0.1:5060 --user alice \\
        --to sip:bob@incident.local --seconds 3

Each prints one JSON object (its :class:`PhoneReport`) on stdout when its call has ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from meshcomm.sip.sdp import NotAcceptable, SessionDescription, answer_offer, make_offer
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEstablished,
    CallHandle,
    IncomingCall,
    RequestFailed,
    RequestSucceeded,
    UaConfig,
    UaEvent,
)

DOMAIN = "incident.local"
PACKET_INTERVAL_S = 0.02
SAMPLES_PER_PACKET = 160
RTP_HEADER = struct.Struct("!BBHII")
#: Upper bound of one phase (register, ring, answer, hang-up) of the scripted call.
PHASE_TIMEOUT_S = 20.0
#: The callee also hangs up on its own if no BYE comes this long after the RTP stopped.
CALLEE_MAX_CALL_S = 120.0
RECV_BYTES = 2048


@dataclass
class PhoneReport:
    role: str
    established: bool = False
    sent: int = 0
    received: int = 0
    #: RTP sequence numbers received from the far phone, in arrival order.
    received_seqs: list[int] = field(default_factory=list)
    remote_rtp: tuple[str, int] | None = None
    end_reason: str = ""
    end_status: int | None = None


class Phone:
    """UA + RTP socket; all on the running loop, no threads."""

    def __init__(self, user: str, gateway: tuple[str, int], ssrc: int, *,
                 host: str = "127.0.0.1") -> None:
        self.user = user
        self.gateway = gateway
        self.ssrc = ssrc
        self.host = host
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.sip, self.rtp):
            sock.bind((host, 0))
            sock.setblocking(False)
        self.ua = UserAgent(UaConfig(aor=f"sip:{user}@{DOMAIN}", local_host=host,
                                     local_port=self.sip.getsockname()[1],
                                     outbound_proxy=gateway), random.Random(ssrc))
        self.events: asyncio.Queue[UaEvent] = asyncio.Queue()
        self.report = PhoneReport(role="")
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sip.fileno(), self._sip_readable)
        self._loop.add_reader(self.rtp.fileno(), self._rtp_readable)

    @property
    def rtp_port(self) -> int:
        return int(self.rtp.getsockname()[1])

    # ------------------------------------------------------------ SIP plumbing
    def pump(self) -> None:
        now = self._loop.time()
        for out in self.ua.to_send(now):
            self.sip.sendto(out.data, out.dest)
        while (event := self.ua.next_event()) is not None:
            self.events.put_nowait(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.ua.next_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.on_timer(self._loop.time())
        self.pump()

    def _sip_readable(self) -> None:
        while True:
            try:
                data, _src = self.sip.recvfrom(65535)
            except BlockingIOError:
                break
            self.ua.receive(data, self.gateway, self._loop.time())
        self.pump()

    async def next_event(self, *kinds: type[UaEvent]) -> UaEvent:
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            while True:
                event = await self.events.get()
                if isinstance(event, kinds):
                    return event

    async def register(self) -> None:
        self.ua.register(expires_s=600)
        self.pump()
        event = await self.next_event(RequestSucceeded, RequestFailed)
        if not isinstance(event, RequestSucceeded):
            raise AssertionError(f"{self.user}: REGISTER failed: {event}")

    def offer(self) -> SessionDescription:
        return make_offer(address=self.host, rtp_port=self.rtp_port, session_id=self.ssrc)

    # ------------------------------------------------------------ RTP
    def _rtp_readable(self) -> None:
        while True:
            try:
                data = self.rtp.recv(RECV_BYTES)
            except (BlockingIOError, ConnectionRefusedError):
                return
            if len(data) >= RTP_HEADER.size:
                _vpxcc, _mpt, seq, _ts, ssrc = RTP_HEADER.unpack_from(data)
                if ssrc != self.ssrc:
                    self.report.received += 1
                    self.report.received_seqs.append(seq)

    async def stream(self, remote: tuple[str, int], stop: asyncio.Event) -> None:
        """Send 20 ms RTP packets to ``remote`` until ``stop`` is set."""
        seq = 0
        next_at = self._loop.time()
        payload = bytes(SAMPLES_PER_PACKET)
        while not stop.is_set():
            header = RTP_HEADER.pack(0x80, 0, seq & 0xFFFF,
                                     (seq * SAMPLES_PER_PACKET) & 0xFFFFFFFF, self.ssrc)
            try:
                self.rtp.sendto(header + payload, remote)
                self.report.sent += 1
            except OSError:
                pass
            seq += 1
            next_at += PACKET_INTERVAL_S
            try:
                async with asyncio.timeout(max(0.0, next_at - self._loop.time())):
                    await stop.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sock in (self.sip, self.rtp):
            self._loop.remove_reader(sock.fileno())
            sock.close()


def remote_rtp(sdp: SessionDescription | None) -> tuple[str, int]:
    assert sdp is not None and sdp.media, "no SDP"
    conn = sdp.media[0].connection or sdp.connection
    assert conn is not None, "SDP without c="
    return conn.address, sdp.media[0].port


def _ended(phone: Phone, event: UaEvent) -> None:
    if isinstance(event, CallEnded):
        phone.report.end_reason = event.reason.name
        phone.report.end_status = event.status


async def call(phone: Phone, to_aor: str, seconds: float) -> PhoneReport:
    """Call ``to_aor``, stream RTP for ``seconds`` after the answer, then BYE."""
    phone.report.role = "caller"
    handle = phone.ua.invite(to_aor, phone.offer())
    phone.pump()
    event = await phone.next_event(CallEstablished, CallEnded)
    if not isinstance(event, CallEstablished):
        _ended(phone, event)
        return phone.report
    phone.report.established = True
    remote = remote_rtp(event.remote_sdp)
    phone.report.remote_rtp = remote
    stop = asyncio.Event()
    sender = asyncio.create_task(phone.stream(remote, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await sender
    await asyncio.sleep(0.3)                       # the last packets in flight
    phone.ua.bye(handle)
    phone.pump()
    _ended(phone, await phone.next_event(CallEnded))
    return phone.report


async def answer(phone: Phone) -> PhoneReport:
    """Answer the first call, stream RTP until the caller's BYE."""
    phone.report.role = "callee"
    incoming = await phone.next_event(IncomingCall)
    assert isinstance(incoming, IncomingCall) and incoming.offer is not None
    result = answer_offer(incoming.offer, address=phone.host, rtp_port=phone.rtp_port,
                          session_id=phone.ssrc)
    assert not isinstance(result, NotAcceptable), result
    phone.ua.answer(incoming.call, result[0])
    phone.pump()
    remote = remote_rtp(incoming.offer)
    phone.report.remote_rtp = remote
    established = await phone.next_event(CallEstablished, CallEnded)
    if not isinstance(established, CallEstablished):
        _ended(phone, established)
        return phone.report
    phone.report.established = True
    stop = asyncio.Event()
    sender = asyncio.create_task(phone.stream(remote, stop))
    try:
        async with asyncio.timeout(CALLEE_MAX_CALL_S):
            _ended(phone, await _wait_end(phone, incoming.call))
    finally:
        stop.set()
        await sender
    return phone.report


async def _wait_end(phone: Phone, handle: CallHandle) -> UaEvent:
    while True:
        event = await phone.events.get()
        if isinstance(event, CallEnded) and event.call == handle:
            return event


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(args: argparse.Namespace) -> PhoneReport:
    phone = Phone(args.user, _address(args.gateway), args.ssrc)
    try:
        await phone.register()
        if args.role == "callee":
            print(json.dumps({"registered": args.user}), flush=True)
            return await answer(phone)
        return await call(phone, args.to, args.seconds)
    finally:
        phone.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ua_media")
    parser.add_argument("role", choices=("caller", "callee"))
    parser.add_argument("--gateway", default="127.0.0.1:5060")
    parser.add_argument("--user", required=True)
    parser.add_argument("--to", default="")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--ssrc", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.ssrc:
        args.ssrc = 0xA11CE if args.role == "caller" else 0xB0B
    report = asyncio.run(_main(args))
    print(json.dumps(asdict(report)), flush=True)
    return 0 if report.established else 1


if __name__ == "__main__":
    sys.exit(main())
