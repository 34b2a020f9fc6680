"""The asyncio edge of the media relay: one pair of UDP ports per call stream.

:class:`UdpMediaPorts` is the :class:`~meshcomm.media.relay.PortAllocator` of a running
gateway: it binds non-blocking UDP sockets on the gateway's local address (port 0, or
even/odd pairs from a configured range) and reads them with ``loop.add_reader`` -- no
tasks, so nothing is left running when a call's ports are released.

:class:`MediaIO` drives one :class:`~meshcomm.media.relay.MediaRelay`:

* datagrams from a client's call ports -> ``relay.from_client`` -> ``send_media(MeshMedia)``
  (the runtime's callback: ``MeshNode.send_media`` then the node driver's pump);
* :meth:`MediaIO.on_media` (``MediaReceived`` events of the node) -> ``relay.from_mesh`` ->
  sent from the call's port to the client;
* :meth:`MediaIO.rewrite_sdp` is the gateway's SDP hook, :meth:`MediaIO.end_call` ends a
  call's media; one loop timer ends idle calls; :class:`MediaCallEnded` events go to an
  optional sink (the journal).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from meshcomm.errors import ConfigError
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaCallEnded, MediaConfig, MediaRelay
from meshcomm.media.session import ClientPacket, LocalPorts, MeshMedia
from meshcomm.overlay.media import MediaReceived
from meshcomm.runtime.onetimer import OneTimer
from meshcomm.security.identity import Identity

log = logging.getLogger(__name__)

#: Read buffer: any UDP datagram fits; the session drops what is too large to relay.
RECV_BUFFER_BYTES = 65535
#: Datagrams read per readiness callback before yielding to the loop.
READ_BATCH = 64
#: Attempts to find an adjacent RTCP port when binding with port 0.
ADJACENT_PORT_ATTEMPTS = 8

MediaSender = Callable[[MeshMedia], None]
DatagramSink = Callable[[str, int, Channel, bytes], None]
EndedSink = Callable[[MediaCallEnded], None]


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

    # ------------------------------------------------------------ PortAllocator
    def allocate(self, call_id: str, index: int) -> LocalPorts | None:
        pair = self._bind_pair()
        if pair is None:
            self.counters["ports_exhausted"] += 1
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
        for call_id in list(self._calls):
            self.release(call_id)

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
                self.counters["rx_errors"] += 1
                log.debug("media port %s/%d: %s", call_id, index, exc)
                return
            self.sink(call_id, index, channel, data)
            if sock.fileno() < 0:    # the call ended while handling this datagram
                return

    def send(self, packet: ClientPacket) -> None:
        bound = self._calls.get(packet.call_id, {}).get(packet.index)
        if bound is None:
            self.counters["tx_no_port"] += 1
            return
        try:
            bound.sockets[packet.via].sendto(packet.data, packet.dst)
        except OSError as exc:       # full buffer, unreachable, wrong family
            self.counters["tx_errors"] += 1
            log.debug("media send to %s failed: %s", packet.dst, exc)


class MediaIO:
    """One gateway's media: the relay core, its UDP ports, its idle timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, identity: Identity, *,
                 send_media: MediaSender, bind_host: str = "127.0.0.1",
                 port_range: tuple[int, int] | None = None, config: MediaConfig | None = None,
                 ended_sink: EndedSink | None = None, rng: random.Random | None = None) -> None:
        self.loop = loop
        self.send_media = send_media
        self.ended_sink = ended_sink
        self.ports = UdpMediaPorts(loop, bind_host, self._from_client, port_range)
        # Media nonces must be unpredictable: system randomness unless a test seeds one.
        self.relay = MediaRelay(identity, self.ports, rng or random.SystemRandom(), config)
        self._timer = OneTimer(loop, self._on_timer)
        self._closed = False

    # ------------------------------------------------------------ gateway side
    def rewrite_sdp(self, direction: str, call_id: str, body: bytes) -> bytes:
        """The gateway's SDP hook (see MediaRelay.rewrite_sdp for what it raises)."""
        try:
            return self.relay.rewrite_sdp(direction, call_id, body, self.loop.time())
        finally:
            self._settle()

    def end_call(self, call_id: str) -> None:
        self.relay.end_call(call_id, self.loop.time())
        self._settle()

    def on_media(self, event: MediaReceived) -> None:
        """A MEDIA frame for this node (from the node driver's event sink)."""
        if self._closed:
            return
        packet = self.relay.from_mesh(event.origin, event.stream, event.payload,
                                      self.loop.time())
        if packet is not None:
            self.ports.send(packet)

    # ------------------------------------------------------------ client side
    def _from_client(self, call_id: str, index: int, channel: Channel, data: bytes) -> None:
        out = self.relay.from_client(call_id, index, channel, data, self.loop.time())
        if out is not None:
            self.send_media(out)

    # ------------------------------------------------------------ timer, events
    def _settle(self) -> None:
        while (event := self.relay.next_event()) is not None:
            log.info("media of call %s ended (%s)", event.call_id, event.reason.value)
            if self.ended_sink is not None:
                self.ended_sink(event)
        if self._closed:
            return
        self._timer.arm(self.relay.next_timer())

    def _on_timer(self) -> None:
        if self._closed:
            return
        self.relay.on_timer(self.loop.time())
        self._settle()

    def counters(self) -> Counter[str]:
        """Relay totals (ended calls), live sessions' counters and the socket counters."""
        total: Counter[str] = Counter(self.relay.counters)
        for session in self.relay.sessions.values():
            total.update(session.counters)
        total.update(self.ports.counters)
        return total

    def close(self) -> None:
        """End every call's media and close every port. Idempotent."""
        if self._closed:
            return
        now = self.loop.time()
        for call_id in list(self.relay.sessions):
            self.relay.end_call(call_id, now)
        self._settle()
        self._closed = True
        self._timer.cancel()
        self.ports.close()
