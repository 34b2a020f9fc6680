"""The SIP gateway's sockets: one UDP endpoint and one TCP listener (asyncio edge).

Every datagram, and every message framed off a TCP stream (RFC 3261 §18.3: the header
section up to CRLFCRLF, then Content-Length bytes of body), goes to ``deliver(data, addr)``.

UDP is read fast so that admission happens in the gateway, not by the kernel dropping
what overflows the socket queue (issue 8): the socket's receive buffer is enlarged
(:data:`UDP_RECEIVE_BUFFER_BYTES`), and each readiness callback drains up to
:data:`UDP_READ_BATCH` datagrams and hands them to ``deliver_batch`` at once when it is
set (the node driver then pumps once per batch instead of once per datagram).
A TCP connection is named ``("tcp#<n>", peer port)`` so the sans-IO gateway can answer on
it; messages for a closed connection are dropped and counted. Limits: message size
(MAX_SIP_MESSAGE_BYTES), header section size, open connections, idle time.

TCP connections are accepted by :meth:`SipSockets.serve`, which runs as a task of the
node's TaskGroup and starts each connection handler in that same group (architecture rule
3: no task outside a TaskGroup); cancelling ``serve`` closes the listener and every
connection, so the group ends with no connection left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
from collections.abc import Callable
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.types import (
    MAX_SIP_MESSAGE_BYTES,
    TCP_HOST_PREFIX,
    Address,
    LocalDatagram,
)
from meshcomm.runtime.counters import SipSocketCounter

log = logging.getLogger(__name__)

#: Longest header section read from a TCP stream (bytes).
MAX_TCP_HEADER_BYTES: Final = 16 * 1024
#: A TCP connection silent for this long is closed (seconds).
TCP_IDLE_TIMEOUT_S: Final = 300.0
#: Pending TCP connections the kernel queues before accept.
TCP_LISTEN_BACKLOG: Final = 64
#: Pause after a failed accept (e.g. out of file descriptors), seconds.
ACCEPT_RETRY_S: Final = 0.1
_CONTENT_LENGTH_RE: Final = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*$",
                                       re.IGNORECASE | re.MULTILINE)

#: Receive buffer asked for the UDP socket (the kernel caps it at net.core.rmem_max
#: unless the process may force it): 4 MiB hold about 5 s of a 500 datagram/s flood.
UDP_RECEIVE_BUFFER_BYTES: Final = 4 * 1024 * 1024
#: Datagrams read per readiness callback before yielding to the loop.
UDP_READ_BATCH: Final = 256
#: Largest UDP datagram read (larger ones are truncated by the kernel; counted oversize).
UDP_MAX_DATAGRAM_BYTES: Final = 65535

Deliver = Callable[[bytes, Address], None]
DeliverBatch = Callable[[list[tuple[bytes, Address]]], None]


class FramingError(DecodeError):
    """The TCP stream is not framed SIP (the connection is closed). A DecodeError, so
    ``content_length_untrusted`` keeps the contract of rule 6."""


def content_length_untrusted(head: bytes) -> int:
    """Content-Length of a header section (0 if absent, §18.3 requires it on TCP)."""
    found = _CONTENT_LENGTH_RE.findall(head.replace(b"\r\n", b"\n"))
    if len(set(found)) > 1:
        raise FramingError("conflicting Content-Length headers")
    length = int(found[0]) if found else 0
    if length + len(head) > MAX_SIP_MESSAGE_BYTES:
        raise FramingError("message too large")
    return length


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The header section of the next SIP message on a stream (CRLF keep-alives skipped);
    None at a clean end of stream. Cancelled while waiting, it consumes nothing of the
    message (StreamReader.readuntil takes bytes only once the separator is there)."""
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
            return head                              # skip CRLF keep-alives (RFC 5626)


class SipSockets:
    """UDP and TCP listeners of the gateway on ``host`` (ports 0: any free port).

    ``open()`` binds both; UDP is served at once, TCP once ``serve(tg)`` runs in a
    TaskGroup (it accepts connections until cancelled)."""

    def __init__(self, host: str, udp_port: int, tcp_port: int, deliver: Deliver, *,
                 max_tcp_connections: int,
                 tcp_idle_timeout_s: float = TCP_IDLE_TIMEOUT_S) -> None:
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.deliver = deliver
        #: Set by the runtime: a whole batch of datagrams at once (one pump per batch).
        self.deliver_batch: DeliverBatch | None = None
        #: Set by the runtime: whether a connection carries a live registration (its
        #: client's calls come this way); such a connection outlives the idle timeout.
        self.keep_open: Callable[[Address], bool] | None = None
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_timeout_s = tcp_idle_timeout_s
        self.counters: dict[str, int] = dict.fromkeys(SipSocketCounter, 0)
        self._udp: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The UDP receive buffer the kernel granted (bytes).
        self.udp_receive_buffer = 0
        self._listener: socket.socket | None = None
        self._conns: dict[str, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)

    async def open(self) -> None:
        """Bind both sockets (raises OSError, e.g. when the port is taken)."""
        loop = asyncio.get_running_loop()
        udp = await _bind_udp(self.host, self.udp_port)
        self._udp, self._loop = udp, loop
        self.udp_receive_buffer = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.udp_port = int(udp.getsockname()[1])
        loop.add_reader(udp.fileno(), self._udp_readable)
        tcp_port = self.udp_port if self.tcp_port == 0 and self.udp_port else self.tcp_port
        try:
            try:
                self._listener = await _listen_tcp(self.host, tcp_port)
            except OSError:
                if self.tcp_port != 0:
                    raise
                self._listener = await _listen_tcp(self.host, 0)
        except OSError:
            self._close_udp()
            raise
        self.tcp_port = int(self._listener.getsockname()[1])

    async def serve(self, tg: asyncio.TaskGroup) -> None:
        """Accept TCP connections until cancelled; each connection is a task of ``tg``.
        On the way out the listener and every connection are closed."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("SipSockets.serve() before open()")
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(listener)
                except OSError as exc:
                    self.counters[SipSocketCounter.TCP_ACCEPT_ERRORS] += 1
                    log.info("SIP TCP accept failed: %s", exc)
                    await asyncio.sleep(ACCEPT_RETRY_S)
                    continue
                if len(self._tasks) >= self.max_tcp_connections:
                    self.counters[SipSocketCounter.TCP_REFUSED] += 1
                    conn.close()
                    continue
                task = tg.create_task(self._connection(conn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self.close_tcp()

    def close(self) -> None:
        """Close the UDP socket, the listener and every TCP connection."""
        self._close_udp()
        self.close_tcp()

    def _close_udp(self) -> None:
        if self._udp is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._udp.fileno())
        self._udp.close()
        self._udp = None

    def close_tcp(self) -> None:
        """Close the listener and every TCP connection (their tasks are cancelled; they
        end in their TaskGroup)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for writer in self._conns.values():
            writer.close()
        self._conns.clear()
        for task in self._tasks:
            task.cancel()

    @property
    def tcp_connections(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------ input
    def _udp_readable(self) -> None:
        """Drain up to UDP_READ_BATCH datagrams, then hand them on (one batch)."""
        sock = self._udp
        if sock is None:
            return
        batch: list[tuple[bytes, Address]] = []
        for _ in range(UDP_READ_BATCH):
            try:
                data, addr = sock.recvfrom(UDP_MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:          # e.g. ICMP port unreachable reported on the socket
                self.counters[SipSocketCounter.UDP_ERRORS] += 1
                continue
            if len(data) > MAX_SIP_MESSAGE_BYTES:
                self.counters[SipSocketCounter.UDP_OVERSIZE] += 1
            batch.append((data, (str(addr[0]), int(addr[1]))))
        if not batch:
            return
        self.counters[SipSocketCounter.UDP_RX] += len(batch)
        self.counters[SipSocketCounter.UDP_BATCHES] += 1
        largest = SipSocketCounter.UDP_LARGEST_BATCH
        self.counters[largest] = max(self.counters[largest], len(batch))
        if self.deliver_batch is not None:
            self.deliver_batch(batch)
            return
        for data, addr in batch:
            self.deliver(data, addr)

    def on_datagram(self, data: bytes, addr: Address) -> None:
        """One datagram (tests feed the gateway through this, as a batch of one)."""
        self.counters[SipSocketCounter.UDP_RX] += 1
        if len(data) > MAX_SIP_MESSAGE_BYTES:
            self.counters[SipSocketCounter.UDP_OVERSIZE] += 1
        if self.deliver_batch is not None:
            self.deliver_batch([(data, addr)])
        else:
            self.deliver(data, addr)

    async def _connection(self, conn: socket.socket) -> None:
        """One TCP connection: framed messages to ``deliver`` until EOF, a framing error,
        the idle timeout or cancellation; the connection is always closed."""
        name = f"{TCP_HOST_PREFIX}{next(self._conn_ids)}"
        try:
            reader, writer = await asyncio.open_connection(sock=conn,
                                                           limit=MAX_TCP_HEADER_BYTES)
        except OSError:
            conn.close()
            return
        except asyncio.CancelledError:
            conn.close()
            raise
        peer = writer.get_extra_info("peername")
        addr: Address = (name, int(peer[1]) if peer else 0)
        self._conns[name] = writer
        try:
            await self._read_messages(reader, addr)
        except Exception:       # a bug behind deliver(): this connection ends, not the node
            self.counters[SipSocketCounter.TCP_HANDLER_ERRORS] += 1
            log.exception("SIP TCP %s: handler failed; closing", name)
        finally:
            self._conns.pop(name, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_messages(self, reader: asyncio.StreamReader, addr: Address) -> None:
        try:
            while True:
                head = await self._next_head(reader, addr)
                if head is None:
                    return
                async with asyncio.timeout(self.tcp_idle_timeout_s):
                    body = await reader.readexactly(content_length_untrusted(head))
                self.counters[SipSocketCounter.TCP_RX] += 1
                self.deliver(head + body, addr)
        except FramingError as exc:
            self.counters[SipSocketCounter.TCP_FRAMING_ERRORS] += 1
            log.info("SIP TCP %s: %s; closing", addr[0], exc)
        except TimeoutError:
            self.counters[SipSocketCounter.TCP_IDLE_CLOSED] += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    async def _next_head(self, reader: asyncio.StreamReader, addr: Address) -> bytes | None:
        """The next header section; TimeoutError after the idle timeout, unless the
        connection carries a live registration (:attr:`keep_open`): a registered TCP
        client is reached over its connection until its registration ends (it got 403 or
        nothing once the gateway had closed it, until it connected and registered again).
        The wait restarts then, so the connection closes one idle period after the
        registration is gone."""
        while True:
            try:
                async with asyncio.timeout(self.tcp_idle_timeout_s):
                    return await read_head(reader)
            except TimeoutError:
                if self.keep_open is None or not self.keep_open(addr):
                    raise
                self.counters[SipSocketCounter.TCP_IDLE_KEPT] += 1

    # ------------------------------------------------------------ output
    def send(self, dgram: LocalDatagram) -> None:
        host, port = dgram.dest
        if host.startswith(TCP_HOST_PREFIX):
            writer = self._conns.get(host)
            if writer is None or writer.is_closing():
                self.counters[SipSocketCounter.TCP_CLOSED_PEER] += 1
                return
            writer.write(dgram.data)
            self.counters[SipSocketCounter.TCP_TX] += 1
            return
        if self._udp is None:
            return
        try:
            self._udp.sendto(dgram.data, (host, port))
            self.counters[SipSocketCounter.UDP_TX] += 1
        except BlockingIOError:      # the send buffer is full: dropped like on the wire
            self.counters[SipSocketCounter.UDP_SEND_DROPPED] += 1
        except (OSError, ValueError) as exc:
            self.counters[SipSocketCounter.UDP_ERRORS] += 1
            log.debug("SIP UDP to %s:%s failed: %s", host, port, exc)


async def _bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host``:``port`` with a large receive buffer."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"no address for {host}")
    family, _type, _proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _grow_receive_buffer(sock)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for UDP_RECEIVE_BUFFER_BYTES: forced when the process may (root), else as far
    as net.core.rmem_max allows."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_RECEIVE_BUFFER_BYTES)
            return
        except OSError:
            pass
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)


async def _listen_tcp(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host``:``port`` (IPv4 or IPv6 literal or
    name; SO_REUSEADDR like asyncio's servers)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"no address for {host}")
    family, _type, _proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(TCP_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
