"""``[upstream]`` at start-up (issue 10 item 5): what the relay's core needs to register its
island at a conventional SIP registrar and to forward unknown AoRs to the upstream proxy.

:func:`upstream_plan` reads the password file (mode-checked like ``uplink.secret_file``;
the password is never logged and never in a repr), resolves the registrar's and the
proxy's host names once with the standard library (A/AAAA through ``getaddrinfo``: there
is no NAPTR/SRV lookup, RFC 3263's full procedure needs a DNS library the project does not
carry), and works out the relay's contact address as the upstream reaches it: ``contact``
when configured, else the uplink interface's address and the gateway's UDP port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshcomm.config import NodeConfig, Role, parse_host_port, parse_registrar
from meshcomm.errors import ConfigError
from meshcomm.location.table import TrustMode
from meshcomm.node.gateway.types import Address
from meshcomm.node.upstream import UpstreamConfig
from meshcomm.security.keystore import read_secret_file
from meshcomm.sip.digest import Secret

log = logging.getLogger(__name__)

#: Longest password read from ``upstream.password_file`` (bytes, after stripping).
MAX_PASSWORD_BYTES: Final = 256
#: Hosts a gateway listening there cannot be reached at from another machine.
_WILDCARD: Final = frozenset({"0.0.0.0", "::", "[::]", ""})


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    """``proxy``: where requests for unknown AoRs go (GatewayConfig.upstream) and
    where REGISTERs go; ``config``: the registration client's settings."""

    proxy: Address
    config: UpstreamConfig
    #: ``[upstream] trusted`` (GatewayConfig.upstream_trusted): keep its asserted identities.
    trusted: bool = False


def read_password_file(path: Path) -> str:
    """The password in ``path`` (surrounding whitespace stripped); ConfigError naming
    ``upstream.password_file`` when it cannot be read or is empty or too long."""
    password = read_secret_file(path, "upstream.password_file", 1, MAX_PASSWORD_BYTES)
    try:
        return password.decode()
    except UnicodeDecodeError:
        raise ConfigError("upstream.password_file",
                          f"{str(path)!r} is not UTF-8 text") from None


async def resolve_address(host: str, port: int, key: str) -> Address:
    """``host`` (a name or an address literal) -> the first A/AAAA address, once."""
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(key, f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return str(sockaddr[0]), port
    raise ConfigError(key, f"{host!r} has no IPv4 or IPv6 address")


def contact_address(cfg: NodeConfig, sip_host: str, sip_port: int,
                    uplink_host: str | None) -> Address:
    """The relay's gateway as the upstream reaches it (see the module docstring)."""
    if cfg.upstream.contact:
        return parse_host_port(cfg.upstream.contact)
    if uplink_host is not None:
        if sip_host not in _WILDCARD and sip_host != uplink_host:
            log.warning("upstream: the SIP gateway listens on %s, not on the uplink address "
                        "%s: the upstream cannot reach it (set [sip] listen_host)",
                        sip_host, uplink_host)
        return uplink_host, sip_port
    if sip_host not in _WILDCARD:
        return sip_host, sip_port
    raise ConfigError("upstream.contact", "no uplink address to register: set contact "
                                          "(HOST:PORT of this relay's SIP gateway)")


async def upstream_plan(cfg: NodeConfig, *, sip_host: str, sip_port: int,
                        uplink_host: str | None) -> UpstreamPlan | None:
    """The upstream plan of a relay (None when ``[upstream] registrar`` is empty)."""
    up = cfg.upstream
    if not up.registrar:
        return None
    if cfg.node.role is not Role.RELAY:
        raise ConfigError("upstream.registrar", "only a relay talks to an upstream registrar")
    if up.trusted and cfg.trust.policy is not TrustMode.AGENCY:
        raise ConfigError("upstream.trusted", 'needs [trust] policy = "agency": under "open" '
                          "any device may join the mesh, so no node honours an identity "
                          "asserted for a caller beyond it")
    reg_host, reg_port = parse_registrar(up.registrar)
    proxy_host, proxy_port = parse_host_port(up.proxy) if up.proxy else (reg_host, reg_port)
    proxy = await resolve_address(proxy_host, proxy_port,
                                  "upstream.proxy" if up.proxy else "upstream.registrar")
    secret = None
    if up.password_file is not None:
        secret = Secret(up.username, read_password_file(Path(up.password_file).expanduser()))
    host, port = contact_address(cfg, sip_host, sip_port, uplink_host)
    config = UpstreamConfig(registrar=up.registrar, proxy=proxy, contact_host=host,
                            contact_port=port, secret=secret, expires_s=up.expires_s,
                            domain=up.domain or cfg.node.domain, max_aors=up.max_aors,
                            timers=cfg.sip.timers)
    log.info("upstream: registering the island's %s AoRs at %s via %s:%d as %s:%d%s; its "
             "asserted identities are %s", config.domain, up.registrar, proxy[0], proxy[1],
             host, port, " (digest credentials set)" if secret is not None else "",
             "kept (trusted)" if up.trusted else "removed")
    return UpstreamPlan(proxy, config, up.trusted)
