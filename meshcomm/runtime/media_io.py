"""The asyncio edge of the media relay: one pair of UDP ports per call stream.

:class:`UdpMediaPorts` is the :class:`~meshcomm.media.relay.PortAllocator` of a running
gateway: it binds non-blocking UDP sockets on the gateway's local address (port 0, or
even/odd pairs from a configured range) and reads them with ``loop.add_reader`` -- no
tasks, so nothing is left running when a call's ports are released.

The media relay itself (:class:`~meshcomm.media.relay.MediaRelay`) is a part of the node
core (:class:`~meshcomm.node.core.NodeCore`): a datagram read here goes to the node driver's
``receive_client_media`` (the pump), and the relay's ``ClientPacket`` outputs come back to
:meth:`UdpMediaPorts.send` through the driver's ``to_client_media``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from meshcomm.errors import ConfigError
from meshcomm.media.packet import Channel
from meshcomm.media.session import ClientPacket, LocalPorts
from meshcomm.runtime.counters import MediaPortCounter

log = logging.getLogger(__name__)

#: Read buffer: any UDP datagram fits; the session drops what is too large to relay.
RECV_BUFFER_BYTES = 65535
#: Datagrams read per readiness callback before yielding to the loop.
READ_BATCH = 64
#: Attempts to find an adjacent RTCP port when binding with port 0.
ADJACENT_PORT_ATTEMPTS = 8

DatagramSink = Callable[[str, int, Channel, bytes], None]


@dataclass(slots=True)
class _Bound:
    ports: LocalPorts
    sockets: dict[Channel, socket.socket]


class UdpMediaPorts:
    """Binds the call ports; implements the relay's PortAllocator protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bind_host: str, sink: DatagramSink,
                 port_range: tuple[int, int] | None = None) -> None:
        if port_range is not None:
            first, last = port_range
            if not 0 < first < last <= 65535 or first + first % 2 + 1 > last:
                raise ConfigError("media.port_range",
                                  "must hold at least one even/odd port pair")
        self.loop = loop
        self.bind_host = bind_host
        self.port_range = port_range
        self.sink = sink
        self.counters: Counter[str] = Counter()
        self._family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self._calls: dict[str, dict[int, _Bound]] = {}
        self._next_even = port_range[0] + port_range[0] % 2 if port_range else 0
        self._closed = False

    # ------------------------------------------------------------ PortAllocator
    def allocate(self, call_id: str, index: int) -> LocalPorts | None:
        if self._closed:             # stopping: no new call ports
            return None
        pair = self._bind_pair()
        if pair is None:
            self.counters[MediaPortCounter.PORTS_EXHAUSTED] += 1
            return None
        rtp, rtcp = pair
        ports = LocalPorts(self.bind_host, rtp.getsockname()[1], rtcp.getsockname()[1])
        bound = _Bound(ports, {Channel.RTP: rtp, Channel.RTCP: rtcp})
        self._calls.setdefault(call_id, {})[index] = bound
        for channel, sock in bound.sockets.items():
            self.loop.add_reader(sock.fileno(), self._readable, call_id, index, channel, sock)
        return ports

    def release(self, call_id: str) -> None:
        for bound in self._calls.pop(call_id, {}).values():
            for sock in bound.sockets.values():
                self.loop.remove_reader(sock.fileno())
                sock.close()

    def close(self) -> None:
        """Release every call's ports; nothing is bound any more after this."""
        self._closed = True
        for call_id in list(self._calls):
            self.release(call_id)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_sockets(self) -> int:
        return sum(len(b.sockets) for legs in self._calls.values() for b in legs.values())

    # ------------------------------------------------------------ binding
    def _socket(self, port: int) -> socket.socket | None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.bind_host, port))
        except OSError:
            sock.close()
            return None
        return sock

    def _bind_pair(self) -> tuple[socket.socket, socket.socket] | None:
        if self.port_range is None:
            return self._bind_any_pair()
        first, last = self.port_range
        span = max(1, (last - first + 1) // 2)
        for _ in range(span):
            port = self._next_even
            self._next_even = port + 2 if port + 3 <= last else first + first % 2
            pair = self._bind_at(port)
            if pair is not None:
                return pair
        return None

    def _bind_at(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        rtp = self._socket(port)
        if rtp is None:
            return None
        rtcp = self._socket(port + 1)
        if rtcp is None:
            rtp.close()
            return None
        return rtp, rtcp

    def _bind_any_pair(self) -> tuple[socket.socket, socket.socket] | None:
        for _ in range(ADJACENT_PORT_ATTEMPTS):
            rtp = self._socket(0)
            if rtp is None:
                return None
            port = rtp.getsockname()[1]
            rtcp = self._socket(port + 1) if port < 65535 else None
            if rtcp is not None:
                return rtp, rtcp
            rtp.close()
        rtp, rtcp = self._socket(0), self._socket(0)   # not adjacent: SDP gets a=rtcp
        if rtp is None or rtcp is None:
            for sock in (rtp, rtcp):
                if sock is not None:
                    sock.close()
            return None
        return rtp, rtcp

    # ------------------------------------------------------------ datagrams
    def _readable(self, call_id: str, index: int, channel: Channel,
                  sock: socket.socket) -> None:
        for _ in range(READ_BATCH):
            try:
                data, _src = sock.recvfrom(RECV_BUFFER_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # e.g. ICMP port unreachable reported on the socket
                self.counters[MediaPortCounter.RX_ERRORS] += 1
                log.debug("media port %s/%d: %s", call_id, index, exc)
                return
            self.sink(call_id, index, channel, data)
            if sock.fileno() < 0:    # the call ended while handling this datagram
                return

    def send(self, packet: ClientPacket) -> None:
        bound = self._calls.get(packet.call_id, {}).get(packet.index)
        if bound is None:
            self.counters[MediaPortCounter.TX_NO_PORT] += 1
            return
        try:
            bound.sockets[packet.via].sendto(packet.data, packet.dst)
        except OSError as exc:       # full buffer, unreachable, wrong family
            self.counters[MediaPortCounter.TX_ERRORS] += 1
            log.debug("media send to %s failed: %s", packet.dst, exc)
