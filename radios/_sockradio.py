"""Shared plumbing of the socket drivers (udp, ether): non-blocking send with counted
drops, batched reads on the event loop, and idempotent close."""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
from typing import Any

from meshcomm.errors import LocalProtocolError
from radios import _netutil as net
from radios.base import Radio

logger = logging.getLogger(__name__)

#: Datagrams read per readiness callback before yielding to the loop.
RX_BATCH = 64
RECV_BUFFER_BYTES = 65535
#: Kernel receive buffer (SO_RCVBUF) asked for on every driver socket.
SOCKET_RCVBUF_BYTES = 1 << 20


class SocketRadio(Radio):
    def __init__(self, name: str, mtu_bytes: int) -> None:
        super().__init__(name, mtu_bytes)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def _check_not_open(self) -> None:
        if self._sock is not None:
            raise LocalProtocolError(f"radio {self.name}: already open")

    def _attach(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._on_readable)

    def _sendto(self, frame: bytes, addr: Any, size_bytes: int, dst: str | None) -> None:
        """Send without blocking; a full buffer or a socket error is a counted drop."""
        assert self._sock is not None
        try:
            self._sock.sendto(frame, addr)
        except BlockingIOError:
            self.count("dropped_buffer_full")
            return
        except OSError as exc:
            self.count(f"dropped_{net.errno_name(exc)}")
            logger.debug("radio %s: send to %s failed: %s", self.name, dst, exc)
            return
        self.count_tx(size_bytes)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(RX_BATCH):
            if sock is None or self._sock is not sock:
                return  # closed by a receiver callback
            try:
                data, addr = sock.recvfrom(RECV_BUFFER_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                self.count(f"dropped_{net.errno_name(exc)}")
                continue
            self._handle_received(data, addr)

    @abc.abstractmethod
    def _handle_received(self, data: bytes, addr: Any) -> None:
        """One datagram as recvfrom returned it."""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
