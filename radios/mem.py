"""In-process radio medium for tests and multi-node runs in one process.

A :class:`MemMedium` is a named shared channel with stations. Who hears whom is either
everyone-hears-everyone (``full_mesh=True``, the default) or an explicit set of directed
links (``full_mesh=False`` plus :meth:`MemMedium.connect` / :meth:`MemMedium.disconnect`).
Frames are delivered on the event loop (``loop.call_soon``), never synchronously inside
``send()``.

Spec: ``mem:MEDIUM/STATION``; the neighbour address a receiver sees is the sender's station
name. Media are kept in a module registry by name: :func:`get_medium` returns (and creates)
one, :func:`drop_medium` forgets it (tests should drop what they create).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

from meshcomm.errors import ConfigError, LocalProtocolError
from radios.base import LINK_ADDR_SEPARATOR, RADIO_KEY_PATH, Radio

#: Default payload limit of the in-process medium (like Ethernet).
MEM_MTU_BYTES = 1500
#: Longest medium or station name accepted.
MEM_NAME_MAX_CHARS = 64


def _check_name(what: str, name: str, spec: str) -> str:
    bad = "/" + LINK_ADDR_SEPARATOR
    if not name or len(name) > MEM_NAME_MAX_CHARS or any(ch in name for ch in bad):
        raise ConfigError(
            RADIO_KEY_PATH,
            f"{spec!r}: {what} name must be 1..{MEM_NAME_MAX_CHARS} characters "
            f"without '/' or '|'",
        )
    return name


def parse_mem_arg(spec: str, arg: str) -> tuple[str, str]:
    """Split ``MEDIUM/STATION`` (the part of the spec after ``mem:``)."""
    medium, sep, station = arg.partition("/")
    if not sep:
        raise ConfigError(RADIO_KEY_PATH, f"{spec!r}: expected mem:MEDIUM/STATION")
    return _check_name("medium", medium, spec), _check_name("station", station, spec)


class MemMedium:
    """A named shared channel. See the module docstring."""

    def __init__(self, name: str, *, full_mesh: bool = True, mtu_bytes: int = MEM_MTU_BYTES):
        self.name = name
        self.full_mesh = full_mesh
        self.mtu_bytes = mtu_bytes
        self._stations: dict[str, MemRadio] = {}
        self._links: set[tuple[str, str]] = set()  # (transmitter, receiver)

    @property
    def stations(self) -> list[str]:
        return sorted(self._stations)

    def connect(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Let ``b`` hear ``a`` (and ``a`` hear ``b`` when ``both_ways``)."""
        self._require_explicit()
        self._links.add((a, b))
        if both_ways:
            self._links.add((b, a))

    def disconnect(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Stop ``b`` hearing ``a`` (and the reverse when ``both_ways``)."""
        self._require_explicit()
        self._links.discard((a, b))
        if both_ways:
            self._links.discard((b, a))

    def connect_chain(self, stations: Iterable[str]) -> None:
        """Link consecutive stations both ways (each hears only its neighbours)."""
        names = list(stations)
        for a, b in itertools.pairwise(names):
            self.connect(a, b)

    def hears(self, receiver: str, transmitter: str) -> bool:
        if receiver == transmitter:
            return False
        return self.full_mesh or (transmitter, receiver) in self._links

    def _require_explicit(self) -> None:
        if self.full_mesh:
            raise LocalProtocolError(
                f"medium {self.name!r} is full-mesh; create it with full_mesh=False to "
                "set links"
            )

    def attach(self, radio: MemRadio) -> None:
        if radio.station in self._stations:
            raise LocalProtocolError(
                f"medium {self.name!r}: station {radio.station!r} is already open"
            )
        self._stations[radio.station] = radio

    def detach(self, radio: MemRadio) -> None:
        if self._stations.get(radio.station) is radio:
            del self._stations[radio.station]

    def transmit(self, sender: MemRadio, data: bytes, dst: str | None) -> int:
        """Queue ``data`` for every station that hears ``sender``; returns the count."""
        if dst is not None:
            targets = [self._stations[dst]] if dst in self._stations else []
        else:
            targets = [r for name, r in sorted(self._stations.items()) if name != sender.station]
        queued = 0
        for radio in targets:
            if self.hears(radio.station, sender.station):
                radio.enqueue(data, sender.station)
                queued += 1
        return queued


_MEDIA: dict[str, MemMedium] = {}


def get_medium(name: str, *, full_mesh: bool = True) -> MemMedium:
    """Return medium ``name``, creating it (with ``full_mesh``) if it does not exist."""
    medium = _MEDIA.get(name)
    if medium is None:
        medium = _MEDIA[name] = MemMedium(name, full_mesh=full_mesh)
    return medium


def drop_medium(name: str) -> None:
    """Forget medium ``name`` (its open stations keep working until closed)."""
    _MEDIA.pop(name, None)


class MemRadio(Radio):
    """A station on an in-process :class:`MemMedium`."""

    def __init__(self, name: str, medium: str, station: str) -> None:
        self.medium = get_medium(medium)
        super().__init__(name, self.medium.mtu_bytes)
        self.station = station
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        if self._open:
            raise LocalProtocolError(f"radio {self.name}: already open")
        self._loop = asyncio.get_running_loop()
        self.medium.attach(self)
        self._open = True

    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        if dst is not None and (not dst or LINK_ADDR_SEPARATOR in dst or "/" in dst):
            raise LocalProtocolError(f"radio {self.name}: bad destination {dst!r}")
        self.count_tx(len(data))
        if self.medium.transmit(self, bytes(data), dst) == 0 and dst is not None:
            self.count("dropped_unreachable")

    def enqueue(self, data: bytes, src_station: str) -> None:
        """Called by the medium: deliver ``data`` on this station's event loop."""
        if self._loop is None or not self._open:
            return
        self._loop.call_soon(self._arrive, data, src_station)

    def _arrive(self, data: bytes, src_station: str) -> None:
        if self._open:
            self.deliver(data, src_station)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.medium.detach(self)
