"""This host's source address toward a peer (the edge side of ``gateway.rfc.OwnHosts``).

A gateway listening on a wildcard (``0.0.0.0``, ``::``) must write an address the client
can reach into Via and Record-Route. The kernel's routing table knows it: a UDP socket
``connect``-ed to the peer (no packet is sent) has the source address the kernel would use
as its local name.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

log = logging.getLogger(__name__)


def source_address_toward(peer_host: str) -> str | None:
    """The local address the kernel would send from to ``peer_host`` (an IP address
    literal), or None when there is no route or the host is not an address."""
    try:
        address = ipaddress.ip_address(peer_host.strip("[]"))
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((str(address), 9))       # discard port; nothing is sent
            local = sock.getsockname()[0]
    except OSError as exc:
        log.debug("no source address toward %s: %s", peer_host, exc)
        return None
    return str(local).partition("%")[0] or None
