"""Raw Ethernet radio: own EtherType over AF_PACKET, no IP needed (root).

Spec ``ether:IFACE``. Frames carry EtherType :data:`ETHERTYPE` (0x88B5, IEEE 802 "local
experimental"); the Ethernet payload is a 2-byte big-endian length followed by the mesh
datagram, because Ethernet pads short frames to 60 bytes. Broadcast goes to
ff:ff:ff:ff:ff:ff; unicast to a neighbour's MAC, which is the neighbour address
(``"02:5e:10:00:00:01"``). Own frames and frames for other hosts (promiscuous bridge
ports) are ignored. Uses a cooked (SOCK_DGRAM) packet socket from the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

from meshcomm.errors import DecodeError, LocalProtocolError
from radios import _netutil as net
from radios._sockradio import SOCKET_RCVBUF_BYTES, SocketRadio
from radios.base import MESH_DATAGRAM_MAX_BYTES

logger = logging.getLogger(__name__)

#: IEEE 802 local experimental EtherType 1.
ETHERTYPE = 0x88B5
BROADCAST_MAC = b"\xff" * 6
MAC_LEN = 6
LENGTH_PREFIX_BYTES = 2
#: Largest payload the 2-byte length prefix can describe.
LENGTH_PREFIX_MAX = 0xFFFF
#: Linux packet types (linux/if_packet.h) and the socket option to skip our own frames.
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23

_LENGTH = struct.Struct("!H")


def encode_frame(data: bytes) -> bytes:
    """Ethernet payload for ``data``: length prefix + data."""
    if len(data) > LENGTH_PREFIX_MAX:
        raise LocalProtocolError(f"payload of {len(data)} bytes cannot be length-prefixed")
    return _LENGTH.pack(len(data)) + data


def decode_frame_untrusted(frame: bytes, max_payload_bytes: int) -> bytes:
    """The mesh datagram inside an Ethernet payload; DecodeError if malformed.

    Trailing bytes beyond the declared length are Ethernet padding and are ignored.
    """
    if len(frame) < LENGTH_PREFIX_BYTES:
        raise DecodeError("ether frame shorter than its length prefix", reason="truncated")
    (length,) = _LENGTH.unpack_from(frame)
    if length > max_payload_bytes:
        raise DecodeError(f"ether payload of {length} bytes exceeds {max_payload_bytes}",
                          reason="oversize")
    if length > len(frame) - LENGTH_PREFIX_BYTES:
        raise DecodeError("ether frame shorter than its declared length", reason="truncated")
    return bytes(frame[LENGTH_PREFIX_BYTES:LENGTH_PREFIX_BYTES + length])


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """``"02:00:00:00:00:01"`` -> 6 bytes; LocalProtocolError if it is not a MAC."""
    parts = text.split(":")
    try:
        if len(parts) != MAC_LEN or any(len(p) != 2 for p in parts):
            raise ValueError(text)
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise LocalProtocolError(f"not a neighbour address of this radio: {text!r}") from None


class EtherRadio(SocketRadio):
    """The raw Ethernet driver. See the module docstring."""

    def __init__(self, name: str, iface: str) -> None:
        super().__init__(name, MESH_DATAGRAM_MAX_BYTES)
        self.iface = iface
        self.own_mac = b""

    async def open(self) -> None:
        self._check_not_open()
        loop = asyncio.get_running_loop()
        net.ifindex(self.iface, self.name)  # ConfigError if absent
        # Protocol 0 at creation: nothing is queued until bind() picks interface + type.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)
            # Older kernels lack this option: outgoing frames are then filtered by type.
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.bind((self.iface, ETHERTYPE))
            self.own_mac = bytes(sock.getsockname()[4][:MAC_LEN])
            self.mtu_bytes = min(net.iface_mtu_bytes(self.iface) - LENGTH_PREFIX_BYTES,
                                 LENGTH_PREFIX_MAX)
        except BaseException:
            sock.close()
            raise
        self._attach(sock, loop)
        logger.info("radio %s: open, own MAC %s", self.name, format_mac(self.own_mac))

    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        assert self._sock is not None
        mac = BROADCAST_MAC if dst is None else parse_mac(dst)
        self._sendto(encode_frame(data), (self.iface, ETHERTYPE, 0, 0, mac), len(data), dst)

    def _handle_received(self, data: bytes, addr: Any) -> None:
        self._handle_frame(data, addr[2], bytes(addr[4][:MAC_LEN]))

    def _handle_frame(self, frame: bytes, pkttype: int, src_mac: bytes) -> None:
        if pkttype == PACKET_OUTGOING or src_mac == self.own_mac:
            self.count("dropped_own")
            return
        if pkttype == PACKET_OTHERHOST:
            self.count("dropped_not_for_us")
            return
        try:
            data = decode_frame_untrusted(frame, self.mtu_bytes)
        except DecodeError as exc:
            self.count(f"dropped_{exc.reason}")
            return
        self.deliver(data, format_mac(src_mac))
