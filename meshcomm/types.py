"""Small shared types: identifiers, addresses, datagrams and the sans-IO driving API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType, Protocol

#: SHA-256 of a device's Ed25519 public key (32 bytes).
NodeId = NewType("NodeId", bytes)
#: Raw Ed25519 public key (32 bytes).
PublicKey = NewType("PublicKey", bytes)
#: A SIP address-of-record, e.g. ``sip:medic-7@fire.example``.
Aor = NewType("Aor", str)
#: An opaque, radio-specific address of a neighbour as a driver reports it
#: (for example ``"wlan0|fe80::1"`` for UDP, ``"eth1|02:00:00:00:00:01"`` for raw frames,
#: ``"n17"`` in the simulator). Cores never parse it; they only hand it back to the driver.
LinkAddr = NewType("LinkAddr", str)

#: Link addresses of a relay's uplink (issue 10) start with this radio name and separator:
#: ``"uplink|203.0.113.5:4223"``. A core's frames for ``UPLINK_BROADCAST`` go to every
#: uplink peer the edge knows; frames with ``dst`` None go out on the radios only, never on
#: the uplink (the island's gossip stays in the island).
UPLINK_RADIO = "uplink"
UPLINK_PREFIX = UPLINK_RADIO + "|"
UPLINK_BROADCAST = LinkAddr(UPLINK_PREFIX)

NODE_ID_LEN = 32
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


@dataclass(frozen=True, slots=True)
class Datagram:
    """One frame a core wants transmitted. ``dst`` None means link-local broadcast."""

    data: bytes
    dst: LinkAddr | None = None


class SansIOCore(Protocol):
    """The one driving API every protocol core implements (ARCHITECTURE.md rule 2)."""

    def receive(self, data: bytes, src: LinkAddr, now: float) -> None: ...

    def to_send(self, now: float) -> list[Datagram]: ...

    def next_timer(self) -> float | None: ...

    def on_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


def short_id(node_id: bytes) -> str:
    """Human-readable short form of a node id (first 8 hex digits)."""
    return node_id[:4].hex()
