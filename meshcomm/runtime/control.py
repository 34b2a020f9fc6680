"""The control API of a running node: a unix socket in its data dir (``control.sock``, 0600).

Protocol: one JSON object per line in, one JSON object per line out, any number of requests
per connection. A request is ``{"cmd": "who"}`` (plus command arguments later); a reply is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. A bad request gets an
error reply; an over-long line gets an error reply and the connection is closed. Nothing a
client sends can stop the server except the ``stop`` command.

Commands are an Enum and dispatch is an explicit table (:class:`ControlServer` takes it).
:func:`control_request` is the blocking client used by
``meshcomm ctl`` and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from meshcomm.errors import DecodeError
from meshcomm.runtime.counters import ControlCounter

log = logging.getLogger(__name__)

CONTROL_SOCKET_FILE: Final = "control.sock"
CONTROL_SOCKET_MODE: Final = 0o600
#: Longest request line accepted (bytes, newline included).
MAX_REQUEST_BYTES: Final = 4096
#: Largest reply a client reads (bytes).
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
#: Concurrent client connections; more are answered with an error and closed.
MAX_CONNECTIONS: Final = 16
#: A connection idle for this long is closed.
IDLE_TIMEOUT_S: Final = 30.0
#: Longest path a unix socket can be bound to (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH_BYTES: Final = 107
DEFAULT_CLIENT_TIMEOUT_S: Final = 5.0
LISTEN_BACKLOG: Final = 16
#: What is read and thrown away after refusing an over-long line, at most, before closing.
DISCARD_MAX_BYTES: Final = 1 << 20
DISCARD_TIMEOUT_S: Final = 1.0
#: Connections accepted per readiness callback before yielding to the loop.
ACCEPT_BATCH: Final = 16


class ControlCommand(StrEnum):
    WHO = "who"
    STATUS = "status"
    STOP = "stop"
    SEND = "send"        # {"to": AOR, "text": TEXT, "wait_s": seconds}: MESSAGE, its outcome
    INBOX = "inbox"      # {"since": seq}: MESSAGEs delivered to the node's own AoR
    OUTBOX = "outbox"    # MESSAGEs held for store-and-forward (queued / held by / delivered)
    COLLECT = "collect"  # {"action": "start", "out": DIR} / "status" / "cancel": journals
    REVOKE = "revoke"    # {"record": HEX} / {"kind", "subject", "note"}: a trust record
    USER = "user"        # {"action": "add", "aor", "password"} / "remove" / "list": SIP users
    HANDOVER = "handover"  # {"action": "give", "aor", "to"} / "accept", "handover": role address


@dataclass(frozen=True, slots=True)
class ControlRequest:
    command: ControlCommand
    args: Mapping[str, object]


#: A command handler: request -> JSON-able result, or an awaitable of one (a command that
#: waits for the network, like ``send``). Raise DecodeError for bad arguments.
Handler = Callable[[ControlRequest], object]


class ControlError(Exception):
    """The client could not get a reply (node not running, socket gone, bad reply)."""


class NodeNotRunning(ControlError):
    pass


def decode_request_untrusted(line: bytes) -> ControlRequest:
    """Parse one request line; raises only DecodeError."""
    if len(line) > MAX_REQUEST_BYTES:
        raise DecodeError("request too long", reason="oversized")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("request must be a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise DecodeError('request needs "cmd" (a string)')
    try:
        command = ControlCommand(cmd)
    except ValueError:
        known = ", ".join(c.value for c in ControlCommand)
        raise DecodeError(f"unknown command {cmd[:40]!r}; known: {known}",
                          reason="unknown_command") from None
    args = {k: v for k, v in obj.items() if k != "cmd"}
    return ControlRequest(command, args)


def encode_reply(reply: Mapping[str, object]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ControlError(f"control socket path {path} is longer than "
                           f"{MAX_SOCKET_PATH_BYTES} bytes; use a shorter --data-dir")


class ControlServer:
    """Serves the control socket. ``serve()`` runs until cancelled; use it in a TaskGroup."""

    def __init__(self, path: Path, handlers: Mapping[ControlCommand, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.counters: dict[str, int] = dict.fromkeys(ControlCounter, 0)
        self._sock: socket.socket | None = None
        self._connections = 0

    def bind(self) -> None:
        """Create the socket file (mode 0600); removes a stale one left by a dead node."""
        check_socket_path(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(os.fsencode(self.path))
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, CONTROL_SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self._sock = sock

    def close(self) -> None:
        """Close the socket and remove its file; a file that cannot be removed (a data dir
        that turned read-only) is logged in one line and left for the next start."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("control socket %s not removed: %s", self.path,
                            (exc.strerror or str(exc)).lower())

    async def serve(self, tg: asyncio.TaskGroup) -> None:
        """Accept connections until cancelled; each connection is a task in ``tg``.

        Accepting is a reader callback, not a task: a request already waiting on a new
        connection (``meshcomm ctl`` writes it right after connecting) is handled in that
        same callback, so a ``send`` has its MESSAGE on the radio before the loop turns;
        the reply and any further requests are the connection's task."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        listener = self._sock
        loop.add_reader(listener.fileno(), self._on_acceptable, listener, tg)
        try:
            await loop.create_future()          # until cancelled
        finally:
            if not loop.is_closed():
                loop.remove_reader(listener.fileno())
            self.close()

    def _on_acceptable(self, listener: socket.socket, tg: asyncio.TaskGroup) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the backlog waits for the next try
                self.counters[ControlCounter.REFUSED_CONNECTIONS] += 1
                log.warning("control socket: accept failed: %s", exc.strerror or exc)
                return
            conn.setblocking(False)
            self._start(conn, tg)

    def _start(self, conn: socket.socket, tg: asyncio.TaskGroup) -> None:
        """A new connection: refused when there are too many, else its first request
        handled now if it is already there, and a task for the rest."""
        if self._connections >= MAX_CONNECTIONS:
            self.counters[ControlCounter.REFUSED_CONNECTIONS] += 1
            with contextlib.suppress(OSError):
                conn.send(encode_reply({"ok": False, "error": "too many connections"}))
            conn.close()
            return
        self._connections += 1
        buf = bytearray()
        first: dict[str, object] | None = None
        with contextlib.suppress(OSError):     # nothing there yet, or an error: the task
            buf += conn.recv(MAX_REQUEST_BYTES + 1)
        end = buf.find(b"\n")
        if 0 <= end < MAX_REQUEST_BYTES and buf[:end].strip():
            first = self.handle_line(bytes(buf[:end + 1]))
            del buf[:end + 1]
        tg.create_task(self._connection(conn, buf, first))

    async def _connection(self, conn: socket.socket, buf: bytearray,
                          first: dict[str, object] | None) -> None:
        try:
            if first is not None:
                await self._reply(conn, await self._complete(first))
            await self._serve_lines(conn, buf)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._connections -= 1
            conn.close()

    async def _serve_lines(self, conn: socket.socket, buf: bytearray) -> None:
        loop = asyncio.get_running_loop()
        while True:
            end = buf.find(b"\n")
            if end >= MAX_REQUEST_BYTES or (end < 0 and len(buf) > MAX_REQUEST_BYTES):
                self.counters[ControlCounter.BAD_REQUESTS] += 1
                await self._reply(conn, {"ok": False, "error": "request line too long"})
                await self._discard_rest(conn)
                return
            if end >= 0:
                line = bytes(buf[:end + 1])
                del buf[:end + 1]
                if line.strip():
                    await self._reply(conn, await self.handle_line_async(line))
                continue
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                data = await loop.sock_recv(conn, MAX_REQUEST_BYTES + 1)
            if not data:
                if buf.strip():
                    await self._reply(conn, await self.handle_line_async(bytes(buf)))
                return
            buf += data

    @staticmethod
    async def _discard_rest(conn: socket.socket) -> None:
        """After the last reply: read what the client is still sending (bounded in bytes
        and time) so that closing does not reset the connection before it reads the
        reply."""
        conn.shutdown(socket.SHUT_WR)
        loop = asyncio.get_running_loop()
        left = DISCARD_MAX_BYTES
        async with asyncio.timeout(DISCARD_TIMEOUT_S):
            while left > 0 and (data := await loop.sock_recv(conn, min(left, 65536))):
                left -= len(data)

    @staticmethod
    async def _reply(conn: socket.socket, reply: Mapping[str, object]) -> None:
        await asyncio.get_running_loop().sock_sendall(conn, encode_reply(reply))

    async def handle_line_async(self, line: bytes) -> dict[str, object]:
        """Like :meth:`handle_line`, awaiting a handler's awaitable result."""
        return await self._complete(self.handle_line(line))

    async def _complete(self, reply: dict[str, object]) -> dict[str, object]:
        """``reply`` of :meth:`handle_line` with an awaitable result awaited."""
        result = reply.get("result")
        if not reply.get("ok") or not inspect.isawaitable(result):
            return reply
        try:
            value = await result
            json.dumps(value, allow_nan=False)
        except Exception as exc:
            return self._failed(exc, "internal error")
        return {"ok": True, "result": value}

    def handle_line(self, line: bytes) -> dict[str, object]:
        """One request line -> one reply object (never raises for bad input)."""
        try:
            request = decode_request_untrusted(line)
        except DecodeError as exc:
            self.counters[ControlCounter.BAD_REQUESTS] += 1
            return {"ok": False, "error": str(exc)}
        handler = self.handlers.get(request.command)
        if handler is None:
            self.counters[ControlCounter.BAD_REQUESTS] += 1
            return {"ok": False, "error": f"command {request.command.value!r} not available"}
        self.counters[ControlCounter.REQUESTS] += 1
        try:
            result = handler(request)
            if not inspect.isawaitable(result):
                json.dumps(result, allow_nan=False)
        except Exception as exc:
            return self._failed(exc, f"internal error in {request.command.value!r}")
        return {"ok": True, "result": result}

    def _failed(self, exc: Exception, internal_error: str) -> dict[str, object]:
        """The reply when a handler (or its awaitable) raised, called in the except block:
        a DecodeError is the client's mistake and its message goes back; anything else is
        our bug, logged with its traceback and answered with ``internal_error``."""
        if isinstance(exc, DecodeError):
            self.counters[ControlCounter.BAD_REQUESTS] += 1
            return {"ok": False, "error": str(exc)}
        self.counters[ControlCounter.ERRORS] += 1
        log.exception("control command failed: %s", internal_error)
        return {"ok": False, "error": internal_error}


# --------------------------------------------------------------------------- client
def _connect(path: Path, timeout_s: float) -> socket.socket:
    check_socket_path(path)
    if not path.exists():
        raise NodeNotRunning(f"no node is running with data dir {path.parent} "
                             f"({path.name} not found)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(os.fsencode(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise NodeNotRunning(f"no node is running with data dir {path.parent} "
                                 f"(stale {path.name})") from None
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > MAX_REPLY_BYTES:
            break
    data = b"".join(chunks)
    if b"\n" not in data:
        raise ControlError("the node closed the connection without a complete reply")
    return data.split(b"\n", 1)[0]


def control_request(path: Path, command: ControlCommand | str, *,
                    timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S, **args: Any) -> Any:
    """Send one request to the node at control socket ``path``; return its ``result``.

    Raises NodeNotRunning when nobody listens there, ControlError for an error reply,
    a timeout or a malformed reply.
    """
    # Encoded before connecting: the node reads the request as it accepts (see serve).
    line = json.dumps({"cmd": str(command), **args}).encode() + b"\n"
    sock = _connect(path, timeout_s)
    try:
        sock.sendall(line)
        reply_line = _read_line(sock)
    except TimeoutError:
        raise ControlError(f"no reply from {path} within {timeout_s} s") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(reply_line)
    except ValueError as exc:
        raise ControlError(f"malformed reply from the node: {exc}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError("malformed reply from the node")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "error")))
    return reply.get("result")
