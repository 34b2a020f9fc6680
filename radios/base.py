"""The one interface every link driver implements, and ``open_radio`` to pick a driver.

A radio carries opaque datagrams (mesh datagrams are at most 1200 bytes) between this node
and the neighbours that hear it. Drivers run on the asyncio event loop of the node runtime:

* ``await radio.open()`` acquires the socket (or the in-process medium station);
* ``radio.send(data, dst)`` never blocks: ``dst`` None is a link broadcast, otherwise it is
  an address string that the same driver reported as ``src_addr`` to the receiver callback;
* ``radio.set_receiver(cb)`` installs ``cb(payload, src_addr)``, called on the event loop;
* ``radio.close()`` releases everything; it is idempotent.

The runtime composes a node's link address for a neighbour as ``f"{radio.name}|{src_addr}"``,
so a driver's address strings never contain ``"|"``.

Counters (``radio.counters``) always hold ``tx``, ``rx``, ``tx_bytes`` and ``rx_bytes``;
drops are counted under ``dropped_<reason>`` keys as they happen (``dropped_buffer_full``,
``dropped_own``, ``dropped_malformed``...).
"""

from __future__ import annotations

import abc
import enum
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshcomm.errors import ConfigError, LocalProtocolError

if TYPE_CHECKING:
    from radios.impair import Impairment

logger = logging.getLogger(__name__)

#: Largest datagram the mesh layer ever hands to a radio.
MESH_DATAGRAM_MAX_BYTES = 1200
#: Linux interface names are at most 15 characters (IFNAMSIZ - 1).
IFNAME_MAX_CHARS = 15
#: Separator the runtime uses between radio name and neighbour address.
LINK_ADDR_SEPARATOR = "|"
#: Config key path used in ConfigError for radio specs.
RADIO_KEY_PATH = "radio"

Receiver = Callable[[bytes, str], None]

_BASE_COUNTERS = ("tx", "rx", "tx_bytes", "rx_bytes")


class Radio(abc.ABC):
    """A link driver. See the module docstring for the contract."""

    name: str
    mtu_bytes: int
    counters: dict[str, int]

    def __init__(self, name: str, mtu_bytes: int) -> None:
        self.name = name
        self.mtu_bytes = mtu_bytes
        self.counters = dict.fromkeys(_BASE_COUNTERS, 0)
        self._receiver: Receiver | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Acquire the link; after this returns, send() works and frames are delivered."""

    @abc.abstractmethod
    def send(self, data: bytes, dst: str | None) -> None:
        """Queue one datagram; never blocks. Oversize raises LocalProtocolError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link; idempotent."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """True between a successful open() and close()."""

    def set_receiver(self, callback: Receiver) -> None:
        """Install the callback that gets ``(payload, src_addr)`` on the event loop."""
        self._receiver = callback

    # -- helpers for drivers -------------------------------------------------------------

    def count(self, key: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``key`` (created on first use)."""
        self.counters[key] = self.counters.get(key, 0) + amount

    def check_send(self, data: bytes) -> None:
        """Raise LocalProtocolError unless ``data`` may be sent now."""
        if not self.is_open:
            raise LocalProtocolError(f"radio {self.name}: send() while not open")
        if len(data) > self.mtu_bytes:
            raise LocalProtocolError(
                f"radio {self.name}: payload of {len(data)} bytes exceeds mtu "
                f"{self.mtu_bytes} bytes"
            )

    def count_tx(self, size_bytes: int) -> None:
        self.counters["tx"] += 1
        self.counters["tx_bytes"] += size_bytes

    def deliver(self, data: bytes, src_addr: str) -> None:
        """Hand one received payload to the receiver callback (counting it)."""
        receiver = self._receiver
        if receiver is None:
            self.count("dropped_no_receiver")
            return
        self.counters["rx"] += 1
        self.counters["rx_bytes"] += len(data)
        try:
            receiver(data, src_addr)
        except Exception:
            # A bug in the layer above must not kill the driver's read loop.
            self.count("receiver_errors")
            logger.exception("radio %s: receiver callback failed", self.name)


class RadioKind(enum.Enum):
    UDP = "udp"
    ETHER = "ether"
    MEM = "mem"


def validate_ifname(name: str, spec: str) -> str:
    """Return ``name`` if it is a valid Linux interface name, else raise ConfigError."""
    if not name or len(name) > IFNAME_MAX_CHARS or name in (".", ".."):
        raise ConfigError(
            RADIO_KEY_PATH,
            f"{spec!r}: interface name must be 1..{IFNAME_MAX_CHARS} characters",
        )
    if any(ch in name for ch in "/:|") or any(ch.isspace() for ch in name):
        raise ConfigError(RADIO_KEY_PATH, f"{spec!r}: invalid interface name {name!r}")
    return name


def _make_udp(spec: str, arg: str) -> Radio:
    from radios.udp import UdpRadio, parse_udp_arg

    iface, port = parse_udp_arg(spec, arg)
    return UdpRadio(spec, iface, port=port)


def _make_ether(spec: str, arg: str) -> Radio:
    from radios.ether import EtherRadio

    return EtherRadio(spec, validate_ifname(arg, spec))


def _make_mem(spec: str, arg: str) -> Radio:
    from radios.mem import MemRadio, parse_mem_arg

    medium, station = parse_mem_arg(spec, arg)
    return MemRadio(spec, medium, station)


_FACTORIES: dict[RadioKind, Callable[[str, str], Radio]] = {
    RadioKind.UDP: _make_udp,
    RadioKind.ETHER: _make_ether,
    RadioKind.MEM: _make_mem,
}

SPEC_FORMS = "udp:IFACE[:PORT], ether:IFACE or mem:MEDIUM/STATION"


def open_radio(
    spec: str, *, impairment: Impairment | None = None, seed: int | None = None
) -> Radio:
    """Create (not yet opened) the driver for ``spec``; wrap it in an impairment if given.

    ``seed`` seeds the impairment's random.Random (give each node its own seed).
    Raises ConfigError on a bad spec.
    """
    kind_text, sep, arg = spec.partition(":")
    if not sep:
        raise ConfigError(RADIO_KEY_PATH, f"{spec!r}: expected {SPEC_FORMS}")
    try:
        kind = RadioKind(kind_text)
    except ValueError:
        raise ConfigError(
            RADIO_KEY_PATH, f"{spec!r}: unknown radio kind {kind_text!r}; expected {SPEC_FORMS}"
        ) from None
    radio = _FACTORIES[kind](spec, arg)
    if impairment is None:
        return radio
    from radios.impair import ImpairedRadio

    return ImpairedRadio(radio, impairment, random.Random(seed))
