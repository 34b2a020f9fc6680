"""baresip 1.0.0 as a stock SIP client beside a meshcomm node, driven over ``ctrl_tcp``.

:func:`write_config` generates a config dir: modules ``g711`` (PCMU/PCMA: the codec a
correlation test wants, deterministic and lossless up to companding), ``aufile`` (the WAV
source; at the end of the file baresip ends the call itself, so give a file longer than the
call), ``sndfile`` (dumps the audio each call sends and receives as WAV files in the config
dir: ``dump-*-enc.wav`` = sent, ``dump-*-dec.wav`` = received and decoded), ``account``,
``contact`` (``/message`` sends to the current contact), ``menu`` and ``ctrl_tcp``. No
audio player is loaded (no sound hardware): the received audio still passes the decode
filters, so the dump is complete. The account registers to the node's gateway:
``<sip:USER@DOMAIN>;outbound="sip:127.0.0.1:5060";regint=...;answermode=auto``.

baresip runs with ``-s`` (SIP trace to stdout); the trace in its log is how a test sees the
SIP messages it sent and received (:func:`parse_trace`), because ``ctrl_tcp`` in 1.0.0
reports call events but not incoming MESSAGEs.

Control: ``ctrl_tcp`` speaks netstrings carrying JSON: a command is
``{"command": "dial", "params": "sip:b@incident.local", "token": "7"}``, a response
``{"response": true, "ok": true, "data": "...", "token": "7"}``; events such as
``{"event": true, "type": "CALL_ESTABLISHED", ...}`` arrive on the same connection. Commands
of 1.0.0 used here: ``dial``, ``hangup``, ``accept``, ``message``, ``contact_next``,
``reginfo``, ``listcalls``, ``quit``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

MODULE_PATH: Final = "/usr/lib/baresip/modules"
#: Port of ctrl_tcp inside the client's namespace (namespaces do not share ports).
CTRL_PORT: Final = 4444
#: baresip binds SIP on the port and TLS-less TCP on port + 1: keep clear of the node.
DEFAULT_SIP_PORT: Final = 5070
DEFAULT_DOMAIN: Final = "incident.local"
#: Registration refresh interval asked of baresip (s).
REGISTER_INTERVAL_S: Final = 600
CONNECT_TIMEOUT_S: Final = 10.0
RESPONSE_TIMEOUT_S: Final = 5.0
MAX_NETSTRING_BYTES: Final = 1_000_000
RECV_CHUNK_BYTES: Final = 65536
POLL_S: Final = 0.05
#: Lines of a traced body read at most (bodies here are short texts and SDP).
MAX_BODY_LINES: Final = 200


class BaresipError(RuntimeError):
    """baresip did not start, answer or behave as asked."""


def write_config(conf_dir: Path, user: str, *, node_sip_port: int, sip_port: int,
                 audio_in: Path | None, domain: str = DEFAULT_DOMAIN,
                 contacts: tuple[str, ...] = (), answer_auto: bool = True) -> None:
    """Write ``config``, ``accounts`` and ``contacts`` into ``conf_dir``."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    source = f"aufile,{audio_in}" if audio_in is not None else "ausine,440"
    lines = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",
        f"audio_source {source}",
        "audio_player nothing,nothing",
        "audio_alert nothing,nothing",
        "audio_srate 8000",
        "audio_channels 1",
        "rtp_ports 20000-29999",
        "jitter_buffer_delay 3-10",
        f"module_path {MODULE_PATH}",
        "module g711.so",
        "module aufile.so",
        "module ausine.so",
        "module sndfile.so",
        "module_app account.so",
        "module_app contact.so",
        "module_app menu.so",
        "module_app ctrl_tcp.so",
        f"ctrl_tcp_listen 127.0.0.1:{CTRL_PORT}",
        f"snd_path {conf_dir}",
    ]
    (conf_dir / "config").write_text("\n".join(lines) + "\n")
    params = [f'outbound="sip:127.0.0.1:{node_sip_port};transport=udp"',
              f"regint={REGISTER_INTERVAL_S}"]
    if answer_auto:
        params.append("answermode=auto")
    (conf_dir / "accounts").write_text(f"<sip:{user}@{domain}>;" + ";".join(params) + "\n")
    (conf_dir / "contacts").write_text("".join(f"<{aor}>\n" for aor in contacts))


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def split_netstrings(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete netstrings at the start of ``buffer``."""
    out = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            break
        length_text = bytes(buffer[:colon])
        if not length_text.isdigit() or int(length_text) > MAX_NETSTRING_BYTES:
            raise BaresipError(f"bad netstring header {length_text[:20]!r}")
        end = colon + 1 + int(length_text)
        if len(buffer) < end + 1:
            break
        if buffer[end:end + 1] != b",":
            raise BaresipError("netstring without its trailing comma")
        out.append(bytes(buffer[colon + 1:end]))
        del buffer[:end + 1]
    return out


@dataclass(frozen=True, slots=True)
class TracedSip:
    """One SIP message of a baresip trace: ``sent`` by baresip or received by it."""

    sent: bool
    first_line: str
    headers: dict[str, str]
    body: str

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if self.first_line.startswith("SIP/2.0"):
            return self.headers.get("cseq", " ").split()[-1]
        return self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        if not self.first_line.startswith("SIP/2.0"):
            return None
        return int(self.first_line.split()[1])

    @property
    def branch(self) -> str:
        via = self.headers.get("via", "")
        match = re.search(r"branch=([^;,\s]+)", via)
        return match.group(1) if match else ""


_TRACE_START = re.compile(r"^(UDP|TCP) (\S+) -> (\S+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: baresip's once-a-frame call statistics line ("[0:00:04] audio=64000/0 (bit/s)").
_STATS = re.compile(r"^\s*\[\d+:\d\d:\d\d\]")


def parse_trace(text: str, own_port: int) -> list[TracedSip]:
    """The SIP messages in a ``baresip -s`` log; ``sent`` when the source is ``own_port``."""
    messages = []
    lines = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        match = _TRACE_START.match(lines[i].strip())
        if match is None or i + 1 >= len(lines):
            i += 1
            continue
        sent = match.group(2).rsplit(":", 1)[-1] == str(own_port)
        first, j = lines[i + 1].strip(), i + 2
        headers: dict[str, str] = {}
        while j < len(lines) and lines[j].strip():
            name, _, value = lines[j].partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
            j += 1
        length = int(headers.get("content-length", headers.get("l", "0")) or 0)
        body = "\n".join(lines[j + 1:j + 1 + MAX_BODY_LINES])[:length] if length else ""
        messages.append(TracedSip(sent, first, headers, body))
        i = j
    return messages


@dataclass
class BaresipClient:
    """A running baresip beside node ``index`` (see the module docstring)."""

    index: int
    user: str
    conf_dir: Path
    log_path: Path
    sip_port: int
    domain: str
    proc: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None
    _token: int = 0
    reader_error: str | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    # connection

    def connect(self, opener: Callable[[], socket.socket]) -> None:
        """Connect ``ctrl_tcp`` (``opener`` creates the socket inside the namespace)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise BaresipError(f"baresip {self.user} exited\n{self.log_tail()}")
            try:
                self._sock = opener()
                self._sock.settimeout(None)  # the reader blocks; commands wait on _cond
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"baresip {self.user}: ctrl_tcp does not answer\n"
                                       f"{self.log_tail()}") from None
                time.sleep(POLL_S)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"baresip-{self.user}")
        self._reader.start()

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        buffer = bytearray()
        while True:
            try:
                chunk = sock.recv(RECV_CHUNK_BYTES)
            except OSError:
                chunk = b""
            if not chunk:
                return
            buffer += chunk
            try:
                for item in split_netstrings(buffer):
                    self._dispatch(json.loads(item))
            except (BaresipError, ValueError) as exc:
                self.reader_error = str(exc)
                return

    def _dispatch(self, obj: dict[str, Any]) -> None:
        with self._cond:
            if obj.get("response"):
                self._responses[str(obj.get("token"))] = obj
            elif obj.get("event"):
                self.events.append(obj)
            self._cond.notify_all()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None

    # commands

    def command(self, name: str, params: str | None = None,
                timeout_s: float = RESPONSE_TIMEOUT_S) -> str:
        """Run one ctrl_tcp command; its ``data``; BaresipError when not ok."""
        if self._sock is None:
            raise BaresipError("not connected")
        self._token += 1
        token = str(self._token)
        request: dict[str, str] = {"command": name, "token": token}
        if params is not None:
            request["params"] = params
        self._sock.sendall(netstring(json.dumps(request).encode()))
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout_s):
                raise BaresipError(f"baresip {self.user}: no response to {name}")
            reply = self._responses.pop(token)
        if not reply.get("ok"):
            raise BaresipError(f"baresip {self.user}: {name} failed: {reply.get('data')}")
        return str(reply.get("data", ""))

    def dial(self, aor: str) -> None:
        self.command("dial", aor)

    def hangup(self) -> None:
        self.command("hangup")

    def message(self, aor: str, text: str) -> None:
        """Send a MESSAGE to ``aor`` (one of the contacts given at start)."""
        for _ in range(len(self.contacts()) + 1):
            current = (self.conf_dir / "current_contact").read_text().strip()
            if aor in current:
                self.command("message", text)
                return
            self.command("contact_next")
        raise BaresipError(f"{aor} is not among the contacts of {self.user}")

    def contacts(self) -> list[str]:
        return [line for line in (self.conf_dir / "contacts").read_text().splitlines() if line]

    # observation

    def wait_event(self, kind: str, timeout_s: float, *, after: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` at index >= ``after``; BaresipError on timeout."""
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events[after:] if e.get("type") == kind), None)
        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout_s):
                raise BaresipError(f"baresip {self.user}: no {kind} within {timeout_s} s; "
                                   f"events: {[e.get('type') for e in self.events]}\n"
                                   f"{self.log_tail()}")
            event = found()
        assert event is not None
        return event

    def trace(self) -> list[TracedSip]:
        return parse_trace(self.log_text(), self.sip_port)

    def registered(self) -> bool:
        """True once a REGISTER of ours got a 200 (seen in the trace)."""
        return any(m.sent is False and m.status == 200 and m.method == "REGISTER"
                   for m in self.trace())

    def recordings(self) -> tuple[Path, Path]:
        """(sent, received) WAV dumps of the latest call."""
        enc = sorted(self.conf_dir.glob("dump-*-enc.wav"))
        dec = sorted(self.conf_dir.glob("dump-*-dec.wav"))
        if not enc or not dec:
            raise BaresipError(f"baresip {self.user}: no call recording in {self.conf_dir}")
        return enc[-1], dec[-1]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        text = _ANSI.sub("", self.log_text()).replace("\r", "\n")
        kept = [line for line in text.splitlines() if line.strip() and not _STATS.match(line)]
        return "\n".join(kept[-lines:])
