"""The addresses of the uplink interface: where a relay's DHT node binds (and nowhere else).

Linux only, like the radio drivers: the primary IPv4 address comes from the
``SIOCGIFADDR`` ioctl, the IPv6 addresses from ``/proc/net/if_inet6``. Of IPv6, only a
usable global-scope address is taken (not link-local: OpenDHT cannot bind a scoped address;
not tentative, deprecated or failed duplicate-address detection).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshcomm.errors import MeshcommError

#: ioctl: the interface's (primary) IPv4 address.
SIOCGIFADDR: Final = 0x8915
IF_INET6_PATH: Final = Path("/proc/net/if_inet6")
#: /proc/net/if_inet6 scope of a global address.
_SCOPE_GLOBAL: Final = 0x00
#: IFA_F_* flags that make an address unusable for binding.
_IFA_F_DADFAILED: Final = 0x08
_IFA_F_DEPRECATED: Final = 0x20
_IFA_F_TENTATIVE: Final = 0x40
_UNUSABLE: Final = _IFA_F_DADFAILED | _IFA_F_DEPRECATED | _IFA_F_TENTATIVE
#: Linux IFNAMSIZ.
_IFNAMSIZ: Final = 16


class UplinkAddressError(MeshcommError):
    """The uplink interface does not exist or has no usable address."""


@dataclass(frozen=True, slots=True)
class UplinkAddresses:
    """An interface's addresses to bind on (None: none of that family)."""

    interface: str
    ipv4: str | None
    ipv6: str | None


def ipv4_address(interface: str) -> str | None:
    """The interface's primary IPv4 address, or None when it has none."""
    request = struct.pack("256s", interface.encode()[:_IFNAMSIZ - 1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return None
            raise
    return socket.inet_ntoa(reply[20:24])


def ipv6_addresses(interface: str, table: str | None = None) -> list[str]:
    """The interface's usable global IPv6 addresses, from ``/proc/net/if_inet6`` (or the
    given text of that table)."""
    if table is None:
        try:
            table = IF_INET6_PATH.read_text()
        except OSError:
            return []          # no IPv6 in this kernel
    found = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) != 6 or fields[5] != interface:
            continue
        address, scope, flags = fields[0], int(fields[3], 16), int(fields[4], 16)
        if scope != _SCOPE_GLOBAL or flags & _UNUSABLE or len(address) != 32:
            continue
        found.append(str(ipaddress.IPv6Address(bytes.fromhex(address))))
    return found


def uplink_addresses(interface: str) -> UplinkAddresses:
    """The addresses the DHT node of a relay binds on ``interface`` (IPv4 and/or IPv6);
    raise UplinkAddressError naming the interface when it is missing or has none."""
    try:
        socket.if_nametoindex(interface)
    except OSError:
        raise UplinkAddressError(f"uplink interface {interface!r} does not exist") from None
    v4 = ipv4_address(interface)
    v6 = ipv6_addresses(interface)
    if v4 is None and not v6:
        raise UplinkAddressError(f"uplink interface {interface!r} has no usable address "
                                 "(no IPv4, no global IPv6): is it up and configured?")
    return UplinkAddresses(interface, v4, v6[0] if v6 else None)
