"""A minimal UDP SIP client for benchmarks: a timing UAC and an always-answering UAS.

Not a general user agent: loopback to a node's gateway only (no loss there, so no
retransmission), one transaction at a time. Sockets are handed in already bound (inside the
namespace of the node whose gateway they talk to: 127.0.0.1:5060 there).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Final

GATEWAY: Final = ("127.0.0.1", 5060)
DOMAIN: Final = "incident.local"
TRANSACTION_TIMEOUT_S: Final = 10.0
RTP_TIMEOUT_S: Final = 1.0
MAX_DATAGRAM_BYTES: Final = 65535
SERVE_POLL_S: Final = 0.2
RTP_HEADER = bytes([0x80, 0x00])  # V=2, PT 0 (PCMU)
RTP_PAYLOAD_BYTES: Final = 160


@dataclass
class Parsed:
    first_line: str
    headers: list[tuple[str, str]]
    body: str

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    @property
    def status(self) -> int | None:
        return int(self.first_line.split()[1]) if self.first_line.startswith("SIP/") else None


_COMPACT = {"v": "via", "i": "call-id", "f": "from", "t": "to", "m": "contact",
            "l": "content-length", "c": "content-type"}


def parse(data: bytes) -> Parsed:
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return Parsed(lines[0], headers, body)


def build(first_line: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [first_line, *(f"{n}: {v}" for n, v in headers),
             f"Content-Length: {len(body.encode())}", "", ""]
    return "\r\n".join(lines).encode() + body.encode()


def sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def sdp_media(body: str) -> tuple[str, int] | None:
    host, port = None, None
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[-1]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (host, port) if host and port else None


def _tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Call:
    call_id: str
    from_tag: str
    to_tag: str
    aor: str
    target: str
    routes: list[str]
    setup_s: float
    media: tuple[str, int] | None


@dataclass
class SipUac:
    sock: socket.socket
    rtp_sock: socket.socket
    user: str = "bench-uac"
    cseq: int = 1

    def _via(self) -> tuple[str, str]:
        port = self.sock.getsockname()[1]
        return ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{_tag()};rport")

    def _transaction(self, data: bytes, call_id: str, method: str) -> tuple[Parsed, float] | None:
        t0 = time.monotonic()
        self.sock.sendto(data, GATEWAY)
        deadline = t0 + TRANSACTION_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                reply = parse(self.sock.recv(MAX_DATAGRAM_BYTES))
            except TimeoutError:
                return None
            if (reply.status is not None and reply.status >= 200
                    and reply.get("call-id") == call_id and reply.get("cseq").endswith(method)):
                return reply, time.monotonic() - t0
        return None

    def _request(self, method: str, uri: str, aor: str, call_id: str, from_tag: str,
                 extra: list[tuple[str, str]], to_tag: str = "") -> list[tuple[str, str]]:
        self.cseq += 1
        return [self._via(), ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{DOMAIN}>;tag={from_tag}"),
                ("To", f"<{aor}>" + (f";tag={to_tag}" if to_tag else "")),
                ("Call-ID", call_id), ("CSeq", f"{self.cseq} {method}"), *extra]

    def message(self, aor: str) -> float | None:
        """Seconds from MESSAGE to its 200 OK (None: no 2xx within the timeout)."""
        call_id = _tag()
        headers = self._request("MESSAGE", aor, aor, call_id, _tag(),
                                [("Content-Type", "text/plain")])
        got = self._transaction(build(f"MESSAGE {aor} SIP/2.0", headers, "bench"),
                                call_id, "MESSAGE")
        return got[1] if got is not None and got[0].status == 200 else None

    def invite(self, aor: str) -> Call | None:
        call_id, from_tag = _tag(), _tag()
        port = self.sock.getsockname()[1]
        headers = self._request("INVITE", aor, aor, call_id, from_tag, [
            ("Contact", f"<sip:{self.user}@127.0.0.1:{port}>"),
            ("Content-Type", "application/sdp")])
        got = self._transaction(build(f"INVITE {aor} SIP/2.0", headers,
                                      sdp(self.rtp_sock.getsockname()[1])), call_id, "INVITE")
        if got is None or got[0].status != 200:
            return None
        reply, setup_s = got
        target = reply.get("contact").strip("<>").split(">")[0]
        routes = list(reversed([r for rr in reply.all("record-route") for r in rr.split(",")]))
        call = Call(call_id, from_tag, reply.get("to").rsplit("tag=", 1)[-1], aor, target,
                    [r.strip() for r in routes], setup_s, sdp_media(reply.body))
        self._in_dialog(call, "ACK", cseq=self.cseq)
        return call

    def _in_dialog(self, call: Call, method: str, cseq: int | None = None) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        headers = [self._via(), ("Max-Forwards", "70"),
                   ("From", f"<sip:{self.user}@{DOMAIN}>;tag={call.from_tag}"),
                   ("To", f"<{call.aor}>;tag={call.to_tag}"), ("Call-ID", call.call_id),
                   ("CSeq", f"{cseq} {method}"), *(("Route", r) for r in call.routes)]
        data = build(f"{method} {call.target} SIP/2.0", headers)
        if method == "ACK":
            self.sock.sendto(data, GATEWAY)
        return data

    def bye(self, call: Call) -> bool:
        data = self._in_dialog(call, "BYE")
        got = self._transaction(data, call.call_id, "BYE")
        return got is not None and got[0].status == 200

    def rtp_probe(self, call: Call, uas: SipUas, packets: int, interval_s: float) -> list[float]:
        """One-way delays of RTP packets sent to the media address of the 200's SDP."""
        if call.media is None:
            return []
        delays = []
        uas.rtp_sock.settimeout(RTP_TIMEOUT_S)
        for seq in range(packets):
            packet = RTP_HEADER + seq.to_bytes(2, "big") + bytes(8 + RTP_PAYLOAD_BYTES)
            t0 = time.monotonic()
            self.rtp_sock.sendto(packet, call.media)
            try:
                while True:
                    got = uas.rtp_sock.recv(MAX_DATAGRAM_BYTES)
                    if got[2:4] == seq.to_bytes(2, "big"):
                        delays.append(time.monotonic() - t0)
                        break
            except (TimeoutError, OSError):
                continue
            time.sleep(interval_s)
        return delays


@dataclass
class SipUas:
    sock: socket.socket
    user: str
    rtp_sock: socket.socket
    registered_s: float | None = None
    handled: dict[str, int] = field(default_factory=dict)
    _stop: bool = False

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{DOMAIN}"

    def register(self) -> bool:
        call_id, port = _tag(), self.sock.getsockname()[1]
        headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{_tag()};rport"),
                   ("Max-Forwards", "70"), ("From", f"<{self.aor}>;tag={_tag()}"),
                   ("To", f"<{self.aor}>"), ("Call-ID", call_id), ("CSeq", "1 REGISTER"),
                   ("Contact", f"<sip:{self.user}@127.0.0.1:{port}>"), ("Expires", "600")]
        self.sock.sendto(build(f"REGISTER sip:{DOMAIN} SIP/2.0", headers), GATEWAY)
        self.sock.settimeout(TRANSACTION_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):
            while True:
                reply = parse(self.sock.recv(MAX_DATAGRAM_BYTES))
                if reply.get("call-id") == call_id and (reply.status or 0) >= 200:
                    return reply.status == 200
        return False

    def stop(self) -> None:
        self._stop = True

    def serve(self) -> None:
        self.sock.settimeout(SERVE_POLL_S)
        while not self._stop:
            try:
                data, src = self.sock.recvfrom(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError:
                return
            request = parse(data)
            if request.status is not None:
                continue
            method = request.first_line.split(" ", 1)[0]
            self.handled[method] = self.handled.get(method, 0) + 1
            if method != "ACK":
                self.sock.sendto(self._answer(request, method), src)

    def _answer(self, request: Parsed, method: str) -> bytes:
        headers = [("Via", v) for v in request.all("via")]
        to = request.get("to")
        if "tag=" not in to:
            to += f";tag={_tag()}"
        headers += [("From", request.get("from")), ("To", to),
                    ("Call-ID", request.get("call-id")), ("CSeq", request.get("cseq"))]
        body = ""
        if method == "INVITE":
            port = self.sock.getsockname()[1]
            headers += [("Record-Route", r) for r in request.all("record-route")]
            headers += [("Contact", f"<sip:{self.user}@127.0.0.1:{port}>"),
                        ("Content-Type", "application/sdp")]
            body = sdp(self.rtp_sock.getsockname()[1])
        return build("SIP/2.0 200 OK", headers, body)
