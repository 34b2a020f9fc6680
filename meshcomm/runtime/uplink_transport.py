"""The uplink transport (issue 10): the uplink mesh's MeshNode and its UDP radio, shared by
``meshcomm relay`` (with an uplink) and ``meshcomm dht-node``.

* **Port rule.** The transport listens on the DHT node's port + :data:`UPLINK_TRANSPORT_PORT_OFFSET`
  (a DHT node on 4222: the transport on 4223), on the same addresses. With ``--dht-port 0``
  that port is tried first and any free port taken when it is busy. A relay's configured
  peers are its bootstrap nodes with the same offset (``--dht-bootstrap 192.0.2.1:4222``:
  ``192.0.2.1:4223``), and the addresses a relay publishes in its DHT attachments name
  the transport port.
* **Uplink mesh.** A second overlay on the uplink, same identity and incident as the
  island's node, role ``relay`` and capability ``uplink``; each member registers
  :func:`uplink_aor` there so the uplink mesh learns a route to it (through a dht-node
  when two relays cannot reach each other directly).
* **Behind NATs.** A relay's transport asks its configured peers which address they see it
  at (:mod:`radios.uplink_mapped`); :class:`UplinkContacts` names those mapped addresses,
  besides its own, in its uplink-mesh binding and its DHT attachments, so a relay behind
  another NAT sends to them and both NATs open where they allow it (hole punching);
  otherwise the uplink mesh routes through the dht-node.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Final

from meshcomm.dht.api import UPLINK_CAP
from meshcomm.dht.records import MAX_UPLINK_ADDRS
from meshcomm.location.table import TrustPolicy
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storeforward import RELAY_ROLE
from meshcomm.overlay.config import OverlayConfig
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustStore
from meshcomm.security.verify import SignatureVerifier
from radios import ImpairedRadio, Impairment, Radio
from radios.uplink import PORT_MAX, UplinkRadio, format_peer

log = logging.getLogger(__name__)

#: The uplink transport's UDP port is the DHT node's port plus this.
UPLINK_TRANSPORT_PORT_OFFSET: Final = 1
#: Domain of the uplink mesh's AoRs (a reserved name: never resolvable in DNS).
UPLINK_AOR_DOMAIN: Final = "uplink.invalid"
#: Contacts of an uplink-mesh binding (own and mapped addresses), within MAX_CONTACTS.
MAX_UPLINK_CONTACTS: Final = 8
#: Hex digits of the node id in an uplink AoR (64 bits).
UPLINK_AOR_ID_HEX: Final = 16


def uplink_aor(node_id: bytes) -> str:
    """The AoR a node registers on the uplink mesh: ``sip:<16 hex of its id>@uplink.invalid``."""
    return f"sip:{node_id.hex()[:UPLINK_AOR_ID_HEX]}@{UPLINK_AOR_DOMAIN}"


def transport_port(dht_port: int) -> int:
    """The uplink transport's port for a DHT node on ``dht_port`` (0 for 0: any)."""
    return dht_port + UPLINK_TRANSPORT_PORT_OFFSET if dht_port else 0


def transport_peer(host: str, dht_port: int) -> str | None:
    """``HOST:DHTPORT`` of a DHT node -> its transport's ``HOST:PORT`` (IPv6 in brackets);
    None when the port would leave the port range."""
    port = dht_port + UPLINK_TRANSPORT_PORT_OFFSET
    if not 1 <= port <= PORT_MAX:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_uplink_mesh(identity: Identity, *, incident: str, trust: TrustPolicy,
                     overlay: OverlayConfig, registration_lifetime_s: int,
                     rng: random.Random, now: float, seq_base: int, wall_offset_s: float,
                     credential: bytes | None,
                     trust_store: TrustStore | None = None) -> MeshNode:
    """The uplink mesh's node: role relay, capability uplink (see the module docstring),
    ``overlay`` as the uplink uses it (:meth:`OverlayConfig.for_uplink`).
    ``trust_store``: the island node's, shared, so revocations cross sites both ways."""
    settings = NodeSettings(incident=incident, role=RELAY_ROLE,
                            registration_lifetime_s=registration_lifetime_s, trust=trust,
                            overlay=overlay.for_uplink(), caps=(UPLINK_CAP,))
    return MeshNode(identity, settings, verifier=SignatureVerifier(), rng=rng, now=now,
                    seq_base=seq_base, wall_offset_s=wall_offset_s, credential=credential,
                    trust=trust_store)


async def open_uplink_radio(addresses: tuple[str, ...], dht_port: int, peers: tuple[str, ...],
                            *, any_port_if_busy: bool, impairment: Impairment | None = None,
                            seed: int = 0, ask_mapped: bool = False) -> Radio:
    """Open the uplink radio on ``addresses`` at the port rule's port for a DHT node bound
    to ``dht_port``; when that port is busy (or past 65535) and ``any_port_if_busy`` (the
    DHT port was asked for as 0), on any free port (logged). Wrapped in the impairment if
    given. OSError when it cannot bind."""
    port = transport_port(dht_port)
    if port > PORT_MAX:
        if not any_port_if_busy:
            raise OSError(errno.ERANGE, f"DHT port {dht_port} leaves no port for the uplink "
                                        "transport (DHT port + 1)")
        port = 0

    def build(bind_port: int) -> Radio:
        radio = UplinkRadio(addresses, bind_port, peers=peers, ask_mapped=ask_mapped)
        if impairment is None or impairment.is_null:
            return radio
        return ImpairedRadio(radio, impairment, random.Random(seed))

    radio = build(port)
    try:
        await radio.open()
    except OSError as exc:
        if not (any_port_if_busy and port and exc.errno == errno.EADDRINUSE):
            raise
        log.warning("uplink transport: udp/%d is in use; taking any free port", port)
        radio = build(0)
        await radio.open()
    return radio


def own_addrs(radio: UplinkRadio) -> tuple[str, ...]:
    """The transport's own ``HOST:PORT`` addresses (not the unspecified 0.0.0.0 / ::)."""
    return tuple(format_peer(socket.AF_INET6 if ":" in host else socket.AF_INET, host,
                             radio.bound_port)
                 for host in radio.addresses if not ipaddress.ip_address(host).is_unspecified)


class UplinkContacts:
    """A relay's uplink addresses as it names them (its uplink-mesh binding's contacts and
    its DHT attachments' addresses): its own, then those NATs map it to. ``announce``
    registers the binding (after the register delay); a change of the mapped addresses
    (the transport's ``on_mapped``) registers it again and re-publishes the attachments."""

    def __init__(self, driver: NodeDriver, mesh: MeshNode, own: tuple[str, ...],
                 set_dht_addrs: Callable[[tuple[str, ...], float], None] | None) -> None:
        self.driver = driver
        self.mesh = mesh
        self.own = own
        self.mapped: tuple[str, ...] = ()
        self.announced = False
        self._set_dht_addrs = set_dht_addrs

    @property
    def contacts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.own, *self.mapped)))[:MAX_UPLINK_CONTACTS]

    def announce_after(self, delay_s: float, loop: asyncio.AbstractEventLoop
                       ) -> asyncio.TimerHandle:
        """:meth:`announce` after ``delay_s`` (its first HELLOs heard, as the island's
        node does)."""
        return loop.call_later(delay_s, self.announce)

    def announce(self) -> None:
        if self.driver.closed:
            return
        self.announced = True
        now = self.driver.now()
        aor, contacts = uplink_aor(self.mesh.node_id), self.contacts
        self.driver.pump_.command(now, lambda: self.mesh.register(aor, contacts, now))
        log.info("uplink mesh: announced %s (contacts %s)", aor, ", ".join(contacts) or "none")

    def on_mapped(self, mapped: tuple[str, ...]) -> None:
        if mapped == self.mapped or self.driver.closed:
            return
        self.mapped = mapped
        log.info("uplink transport: seen from outside as %s", ", ".join(mapped) or "nothing")
        if self._set_dht_addrs is not None:
            now = self.driver.now()
            addrs = self.contacts[:MAX_UPLINK_ADDRS]
            setter = self._set_dht_addrs
            self.driver.pump_.command(now, lambda: setter(addrs, now))
        if self.announced:
            self.announce()
