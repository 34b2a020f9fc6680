"""Zero-config UDP radio: IPv6 link-local multicast, IPv4 broadcast as the fallback.

Spec ``udp:IFACE`` (or ``udp:IFACE:PORT``; interface names cannot contain ':').

* **IPv6 (preferred).** No address configuration beyond the kernel's automatic fe80::
  address. Broadcasts go to the link-local multicast group :data:`MULTICAST_GROUP_V6`
  (``ff02::114``, the IANA "any private experiment" group; link scope, hop limit 1) on
  :data:`DEFAULT_PORT`. ``open()`` waits up to :data:`ADDRESS_WAIT_S` for a link-local
  address that has passed DAD (right after an interface is created it is "tentative") and
  that binds. Neighbour addresses look like ``[fe80::1c2f:aff:fe01:2]:47923``; the scope
  is always this radio's interface.
* **IPv4 (fallback)** when IPv6 is disabled on the interface, or no usable link-local
  address appeared in time, and the interface has an IPv4 address: broadcasts go to
  255.255.255.255 with SO_BINDTODEVICE; neighbour addresses look like
  ``169.254.7.1:47923``.

Own transmissions are not received back (multicast loop off, and datagrams from our own
address and port are dropped as ``dropped_own``). Non-blocking; reads via
``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from typing import Any

from meshcomm.errors import ConfigError, LocalProtocolError
from radios import _netutil as net
from radios._sockradio import SOCKET_RCVBUF_BYTES, SocketRadio
from radios.base import MESH_DATAGRAM_MAX_BYTES, RADIO_KEY_PATH, validate_ifname

logger = logging.getLogger(__name__)

#: Link-local multicast group for mesh broadcasts (IANA "any private experiment", ff0X::114).
MULTICAST_GROUP_V6 = "ff02::114"
#: IPv4 fallback broadcast address.
BROADCAST_V4 = "255.255.255.255"
#: Default UDP port of the mesh radio (registered range; not known to be IANA-assigned).
DEFAULT_PORT = 47923
#: How long open() waits for a usable (post-DAD) link-local address.
ADDRESS_WAIT_S = 5.0
ADDRESS_POLL_S = 0.05
#: IPv6 + UDP header sizes, and IPv4 + UDP.
V6_OVERHEAD_BYTES = 48
V4_OVERHEAD_BYTES = 28
#: Linux socket options not exported by the socket module.
IPV6_MULTICAST_ALL = 29
PORT_MAX = 65535
#: Neighbour addresses remembered per radio, each way (sender -> address string, address
#: string -> socket address), so a datagram costs no parsing or formatting; emptied when
#: full (an outsider sending from many addresses only costs the parsing again).
ADDR_CACHE_MAX = 1024


def parse_udp_arg(spec: str, arg: str) -> tuple[str, int]:
    """Split ``IFACE[:PORT]`` (the part of the spec after ``udp:``)."""
    iface, sep, port_text = arg.partition(":")
    port = DEFAULT_PORT
    if sep:
        if not port_text.isdigit() or not 1 <= int(port_text) <= PORT_MAX:
            raise ConfigError(RADIO_KEY_PATH, f"{spec!r}: port must be 1..{PORT_MAX}")
        port = int(port_text)
    return validate_ifname(iface, spec), port


def _format_addr(family: int, host: str, port: int) -> str:
    host = host.partition("%")[0]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def _parse_dst(dst: str, family: int, index: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """Turn an address string this driver reported back into a socket address."""
    try:
        if family == socket.AF_INET6:
            if not dst.startswith("["):
                raise ValueError("expected [ADDR]:PORT")
            host, _, port_text = dst[1:].partition("]:")
            ipaddress.IPv6Address(host)
            return (host, int(port_text), 0, index)
        host, _, port_text = dst.rpartition(":")
        ipaddress.IPv4Address(host)
        return (host, int(port_text))
    except ValueError as exc:
        raise LocalProtocolError(f"not a neighbour address of this radio: {dst!r}") from exc


class UdpRadio(SocketRadio):
    """The zero-config UDP driver. See the module docstring."""

    def __init__(self, name: str, iface: str, *, port: int = DEFAULT_PORT,
                 address_wait_s: float = ADDRESS_WAIT_S) -> None:
        super().__init__(name, MESH_DATAGRAM_MAX_BYTES)
        self.iface = iface
        self.port = port
        self.address_wait_s = address_wait_s
        self.family: int | None = None
        self.own_address: str | None = None
        self._index = 0
        self._broadcast_addr: tuple[str, int] | tuple[str, int, int, int] = ("", 0)
        #: address string -> socket address (``send``); (host, port) as received -> the
        #: address string, None for our own (``_handle_datagram``). See ADDR_CACHE_MAX.
        self._dst_cache: dict[str, tuple[str, int] | tuple[str, int, int, int]] = {}
        self._src_cache: dict[tuple[str, int], str | None] = {}

    async def open(self) -> None:
        self._check_not_open()
        loop = asyncio.get_running_loop()
        self._index = net.ifindex(self.iface, self.name)
        family, own = await self._wait_for_address(loop)
        sock = self._make_socket(family)
        self.mtu_bytes = net.iface_mtu_bytes(self.iface) - (
            V6_OVERHEAD_BYTES if family == socket.AF_INET6 else V4_OVERHEAD_BYTES
        )
        self.family, self.own_address = family, own
        self._dst_cache.clear()
        self._src_cache.clear()
        if family == socket.AF_INET6:
            self._broadcast_addr = (MULTICAST_GROUP_V6, self.port, 0, self._index)
        else:
            self._broadcast_addr = (BROADCAST_V4, self.port)
        self._attach(sock, loop)
        logger.info("radio %s: open, %s, own address %s", self.name,
                    "IPv6 multicast" if family == socket.AF_INET6 else "IPv4 broadcast",
                    _format_addr(family, own, self.port))

    async def _wait_for_address(self, loop: asyncio.AbstractEventLoop) -> tuple[int, str]:
        """Wait out DAD for a link-local address; else fall back to the IPv4 address."""
        if net.ipv6_enabled(self.iface):
            deadline = loop.time() + self.address_wait_s
            while True:
                address = net.usable_link_local(self.iface, self._index)
                if address is not None:
                    return socket.AF_INET6, address
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(ADDRESS_POLL_S)
            logger.warning("radio %s: no usable IPv6 link-local address after %.1f s",
                           self.name, self.address_wait_s)
        v4 = net.iface_ipv4_address(self.iface)
        if v4 is None:
            raise ConfigError(
                RADIO_KEY_PATH,
                f"{self.name!r}: interface {self.iface!r} has no usable IPv6 link-local "
                "address and no IPv4 address (is it up?)",
            )
        return socket.AF_INET, v4

    def _make_socket(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.iface.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self._index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
                sock.bind(("::", self.port, 0, 0))
                mreq = socket.inet_pton(socket.AF_INET6, MULTICAST_GROUP_V6) + struct.pack(
                    "@I", self._index
                )
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.bind(("0.0.0.0", self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        assert self._sock is not None and self.family is not None
        if dst is None:
            addr = self._broadcast_addr
        elif (cached := self._dst_cache.get(dst)) is not None:
            addr = cached
        else:
            addr = _parse_dst(dst, self.family, self._index)
            if len(self._dst_cache) >= ADDR_CACHE_MAX:
                self._dst_cache.clear()
            self._dst_cache[dst] = addr
        self._sendto(data, addr, len(data), dst)

    def _handle_received(self, data: bytes, addr: Any) -> None:
        self._handle_datagram(data, addr[0], addr[1])

    def _handle_datagram(self, data: bytes, host: str, port: int) -> None:
        key = (host, port)
        cache = self._src_cache
        if key in cache:
            src = cache[key]
        else:
            src = self._source_of(host, port)
            if len(cache) >= ADDR_CACHE_MAX:
                cache.clear()
            cache[key] = src
        if src is None:
            self.count("dropped_own")
            return
        if len(data) > self.mtu_bytes:
            self.count("dropped_oversize")
            return
        self.deliver(data, src)

    def _source_of(self, host: str, port: int) -> str | None:
        """The address string of a sender (None: our own transmission)."""
        assert self.family is not None
        host = host.partition("%")[0]
        if host == self.own_address and port == self.port:
            return None
        return _format_addr(self.family, host, port)
