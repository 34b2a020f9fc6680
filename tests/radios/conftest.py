"""Fixtures for the radio conformance suite: three stations that all hear each other.

* ``mem``: a fresh full-mesh in-process medium per test; ``mem+delay``: the same behind
  the impairment wrapper.
* ``udp``, ``ether``: three network namespaces on a shared bridge (tools.testbed.shared),
  each driver opened inside its namespace with setns.
* ``udp4``: the same, with IPv6 disabled and IPv4 link-local addresses, so the UDP driver
  takes its IPv4 broadcast fallback.

The namespace beds are built once per session (building takes about a second).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from radios import Impairment, Radio, open_radio
from radios.mem import drop_medium
from tests.envcheck import require_root
from tools.testbed import Testbed, in_netns, shared

KINDS = ["mem", "mem+delay", "udp", "udp4", "ether"]
#: The impairment wrapper must pass the suite too (a delay keeps frame order intact).
CONFORMANCE_DELAY = Impairment(delay_s=0.002)
WAIT_S = 5.0


@dataclass
class Stations:
    """Specs of three stations and the namespace each must be opened in."""

    kind: str
    specs: list[str]
    namespaces: list[str | None]
    impairment: Impairment | None = None

    def make(self) -> list[Radio]:
        return [open_radio(spec, impairment=self.impairment, seed=i)
                for i, spec in enumerate(self.specs)]

    async def open(self, radios: list[Radio]) -> None:
        for index, radio in enumerate(radios):
            await self.open_one(radio, index)

    async def open_one(self, radio: Radio, index: int) -> None:
        """Open ``radio`` as station ``index`` (inside that station's namespace)."""
        ns = self.namespaces[index]
        if ns is None:
            await radio.open()
        else:
            with in_netns(ns):
                await radio.open()

    async def open_all(self) -> list[Radio]:
        radios = self.make()
        await self.open(radios)
        return radios


@dataclass
class Inbox:
    """Collects (payload, src) from one radio; lets a test await a count."""

    items: list[tuple[bytes, str]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, data: bytes, src: str) -> None:
        self.items.append((data, src))
        self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[tuple[bytes, str]]:
        async def _wait() -> None:
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout_s)
        return self.items

    @property
    def payloads(self) -> list[bytes]:
        return [data for data, _ in self.items]


def inboxes(radios: list[Radio]) -> list[Inbox]:
    boxes = [Inbox() for _ in radios]
    for radio, box in zip(radios, boxes, strict=True):
        radio.set_receiver(box)
    return boxes


def _build_bed(ipv4: bool) -> Iterator[Testbed]:
    require_root()
    with shared(3) as bed:
        if ipv4:
            for i in range(3):
                with in_netns(bed.ns(i)):
                    Path("/proc/sys/net/ipv6/conf/radio0/disable_ipv6").write_text("1")
                bed.run(i, ["ip", "addr", "add", f"169.254.77.{i + 1}/16",
                            "broadcast", "169.254.255.255", "dev", "radio0"])
        yield bed


@pytest.fixture(scope="session")
def bed_v6() -> Iterator[Testbed]:
    yield from _build_bed(ipv4=False)


@pytest.fixture(scope="session")
def bed_v4() -> Iterator[Testbed]:
    yield from _build_bed(ipv4=True)


@pytest.fixture(params=KINDS)
def stations(request: pytest.FixtureRequest) -> Iterator[Stations]:
    kind: str = request.param
    if kind.startswith("mem"):
        medium = f"conf-{uuid.uuid4().hex[:8]}"
        impairment = CONFORMANCE_DELAY if kind == "mem+delay" else None
        yield Stations(kind, [f"mem:{medium}/{s}" for s in "abc"], [None, None, None],
                       impairment)
        drop_medium(medium)
        return
    bed: Testbed = request.getfixturevalue("bed_v4" if kind == "udp4" else "bed_v6")
    driver = "ether" if kind == "ether" else "udp"
    yield Stations(kind, [f"{driver}:radio0"] * 3, list(bed.namespaces))
