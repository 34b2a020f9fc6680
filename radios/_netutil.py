"""Small Linux interface queries shared by the socket drivers.

Everything here answers for the network namespace of the *calling thread* (ioctls on a
fresh socket, ``/proc/thread-self/net``), so a driver opened inside a namespace entered with
setns sees that namespace's interfaces.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from meshcomm.errors import ConfigError
from radios.base import RADIO_KEY_PATH

SIOCGIFADDR = 0x8915
SIOCGIFMTU = 0x8921
_IFREQ_BYTES = 40
#: IPv6 address flags (include/uapi/linux/if_addr.h).
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
#: Scope value of link-local addresses in /proc/net/if_inet6.
IPV6_SCOPE_LINK = 0x20


def _proc_net() -> Path:
    thread_self = Path("/proc/thread-self/net")
    return thread_self if thread_self.exists() else Path("/proc/self/net")


def ifindex(iface: str, spec: str) -> int:
    """Interface index of ``iface``; ConfigError if there is no such interface."""
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise ConfigError(RADIO_KEY_PATH, f"{spec!r}: no network interface {iface!r}") from None


def _ifreq(iface: str, request: int, family: int) -> bytes:
    req = struct.pack("16s24x", iface.encode())
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        return fcntl.ioctl(sock.fileno(), request, req)[: _IFREQ_BYTES]


def iface_mtu_bytes(iface: str) -> int:
    """The interface MTU (OSError if the interface vanished)."""
    return int(struct.unpack_from("i", _ifreq(iface, SIOCGIFMTU, socket.AF_INET), 16)[0])


def iface_ipv4_address(iface: str) -> str | None:
    """The primary IPv4 address of ``iface``, or None."""
    try:
        reply = _ifreq(iface, SIOCGIFADDR, socket.AF_INET)
    except OSError:
        return None
    return socket.inet_ntoa(reply[20:24])


def ipv6_enabled(iface: str) -> bool:
    """False when the kernel has no IPv6 or it is disabled on ``iface``."""
    if not socket.has_ipv6:
        return False
    path = Path("/proc/sys/net/ipv6/conf") / iface / "disable_ipv6"
    try:
        return path.read_text().strip() == "0"
    except OSError:
        return False


def link_local_addresses(iface: str) -> list[tuple[str, int]]:
    """(address, flags) of every IPv6 link-local address on ``iface``."""
    try:
        lines = (_proc_net() / "if_inet6").read_text().splitlines()
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for line in lines:
        fields = line.split()
        if len(fields) != 6 or fields[5] != iface or int(fields[3], 16) != IPV6_SCOPE_LINK:
            continue
        address = str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
        found.append((address, int(fields[4], 16)))
    return found


def usable_link_local(iface: str, index: int) -> str | None:
    """A link-local address of ``iface`` that DAD has finished with and that binds."""
    for address, flags in link_local_addresses(iface):
        if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            continue
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            probe.bind((address, 0, 0, index))
        except OSError:
            continue
        finally:
            probe.close()
        return address
    return None


def errno_name(exc: OSError) -> str:
    """Lower-case errno name for a drop counter (``enobufs``), ``oserror`` if unknown."""
    if exc.errno is None:
        return "oserror"
    return errno.errorcode.get(exc.errno, "oserror").lower()


__all__ = [
    "errno_name",
    "iface_ipv4_address",
    "iface_mtu_bytes",
    "ifindex",
    "ipv6_enabled",
    "link_local_addresses",
    "usable_link_local",
]
