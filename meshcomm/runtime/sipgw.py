"""The SIP gateway's sockets: one UDP endpoint and one TCP listener (asyncio edge).

Every datagram, and every message framed off a TCP stream (RFC 3261 §18.3: the header
section up to CRLFCRLF, then Content-Length bytes of body), goes to ``deliver(data, addr)``.
A TCP connection is named ``("tcp#<n>", peer port)`` so the sans-IO gateway can answer on
it; messages for a closed connection are dropped and counted. Limits: message size
(MAX_SIP_MESSAGE_BYTES), header section size, open connections, idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Callable
from typing import Final

from meshcomm.node.gateway_types import (
    MAX_SIP_MESSAGE_BYTES,
    TCP_HOST_PREFIX,
    Address,
    LocalDatagram,
)

log = logging.getLogger(__name__)

#: Longest header section read from a TCP stream (bytes).
MAX_TCP_HEADER_BYTES: Final = 16 * 1024
#: A TCP connection silent for this long is closed (seconds).
TCP_IDLE_TIMEOUT_S: Final = 300.0
_CONTENT_LENGTH_RE: Final = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*$",
                                       re.IGNORECASE | re.MULTILINE)

Deliver = Callable[[bytes, Address], None]


class FramingError(Exception):
    """The TCP stream is not framed SIP (the connection is closed)."""


def content_length_untrusted(head: bytes) -> int:
    """Content-Length of a header section (0 if absent, §18.3 requires it on TCP)."""
    found = _CONTENT_LENGTH_RE.findall(head.replace(b"\r\n", b"\n"))
    if len(set(found)) > 1:
        raise FramingError("conflicting Content-Length headers")
    length = int(found[0]) if found else 0
    if length + len(head) > MAX_SIP_MESSAGE_BYTES:
        raise FramingError("message too large")
    return length


async def read_framed(reader: asyncio.StreamReader) -> bytes | None:
    """One SIP message from a stream; None at a clean end of stream."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise FramingError("stream ended inside a message") from None
            return None
        except asyncio.LimitOverrunError:
            raise FramingError("header section too large") from None
        if head.strip(b"\r\n"):
            break                                    # skip CRLF keep-alives (RFC 5626)
    body = await reader.readexactly(content_length_untrusted(head))
    return head + body


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipSockets) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.owner.counters["udp_errors"] += 1


class SipSockets:
    """UDP and TCP listeners of the gateway on ``host`` (ports 0: any free port)."""

    def __init__(self, host: str, udp_port: int, tcp_port: int, deliver: Deliver, *,
                 max_tcp_connections: int) -> None:
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.deliver = deliver
        self.max_tcp_connections = max_tcp_connections
        self.counters: dict[str, int] = {"udp_rx": 0, "udp_tx": 0, "udp_errors": 0,
                                         "udp_oversize": 0, "tcp_rx": 0, "tcp_tx": 0,
                                         "tcp_framing_errors": 0, "tcp_refused": 0,
                                         "tcp_closed_peer": 0}
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[str, asyncio.StreamWriter] = {}
        self._conn_ids = itertools.count(1)

    async def open(self) -> None:
        """Bind both sockets (raises OSError, e.g. when the port is taken)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.udp_port))
        self._udp = transport
        self.udp_port = int(transport.get_extra_info("sockname")[1])
        tcp_port = self.udp_port if self.tcp_port == 0 and self.udp_port else self.tcp_port
        try:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, tcp_port, limit=MAX_TCP_HEADER_BYTES)
        except OSError:
            if self.tcp_port != 0:
                transport.close()
                raise
            self._server = await asyncio.start_server(
                self._on_connection, self.host, 0, limit=MAX_TCP_HEADER_BYTES)
        self.tcp_port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._conns.values():
            writer.close()
        self._conns.clear()

    @property
    def tcp_connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------ input
    def on_datagram(self, data: bytes, addr: Address) -> None:
        self.counters["udp_rx"] += 1
        if len(data) > MAX_SIP_MESSAGE_BYTES:
            self.counters["udp_oversize"] += 1
        self.deliver(data, addr)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_tcp_connections:
            self.counters["tcp_refused"] += 1
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        name = f"{TCP_HOST_PREFIX}{next(self._conn_ids)}"
        addr: Address = (name, int(peer[1]) if peer else 0)
        self._conns[name] = writer
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                    message = await read_framed(reader)
                if message is None:
                    return
                self.counters["tcp_rx"] += 1
                self.deliver(message, addr)
        except FramingError as exc:
            self.counters["tcp_framing_errors"] += 1
            log.info("SIP TCP %s: %s; closing", addr[0], exc)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.pop(name, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # ------------------------------------------------------------ output
    def send(self, dgram: LocalDatagram) -> None:
        host, port = dgram.dest
        if host.startswith(TCP_HOST_PREFIX):
            writer = self._conns.get(host)
            if writer is None or writer.is_closing():
                self.counters["tcp_closed_peer"] += 1
                return
            writer.write(dgram.data)
            self.counters["tcp_tx"] += 1
            return
        if self._udp is None:
            return
        try:
            self._udp.sendto(dgram.data, (host, port))
            self.counters["udp_tx"] += 1
        except (OSError, ValueError) as exc:
            self.counters["udp_errors"] += 1
            log.debug("SIP UDP to %s:%s failed: %s", host, port, exc)
