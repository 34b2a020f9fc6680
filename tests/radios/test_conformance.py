"""The one conformance suite every radio driver passes (mem, udp, udp4 fallback, ether).

Three stations a, b, c all hear each other. Absence of a frame is shown with a barrier: a
later frame on the same path arrives, and the unwanted one did not arrive before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator

import pytest

from meshcomm.errors import LocalProtocolError
from radios import MESH_DATAGRAM_MAX_BYTES, Radio
from tests.radios.conftest import Inbox, Stations, inboxes


@contextlib.asynccontextmanager
async def opened(stations: Stations) -> AsyncIterator[tuple[list[Radio], list[Inbox]]]:
    radios = stations.make()
    try:
        await stations.open(radios)
        yield radios, inboxes(radios)
    finally:
        for radio in radios:
            radio.close()


async def learn_addresses(radios: list[Radio], boxes: list[Inbox]) -> dict[tuple[int, int], str]:
    """Each station broadcasts once; returns {(receiver, sender): src address seen}."""
    seen: dict[tuple[int, int], str] = {}
    for sender, radio in enumerate(radios):
        counts = [len(box.items) for box in boxes]
        radio.send(f"hello {sender}".encode(), None)
        for receiver, box in enumerate(boxes):
            if receiver == sender:
                continue
            items = await box.wait_for(counts[receiver] + 1)
            data, src = items[counts[receiver]]
            assert data == f"hello {sender}".encode()
            seen[receiver, sender] = src
    for box in boxes:
        box.items.clear()
    return seen


def test_broadcast_reaches_every_neighbour(stations: Stations) -> None:
    async def scenario() -> None:
        async with opened(stations) as (radios, boxes):
            radios[0].send(b"to all", None)
            got_b = await boxes[1].wait_for(1)
            got_c = await boxes[2].wait_for(1)
            assert got_b[0][0] == got_c[0][0] == b"to all"
            # Both neighbours name the sender the same way, and never with the separator.
            assert got_b[0][1] == got_c[0][1]
            assert "|" not in got_b[0][1]

    asyncio.run(scenario())


def test_unicast_reaches_only_the_addressed_neighbour_and_can_be_answered(
    stations: Stations,
) -> None:
    async def scenario() -> None:
        async with opened(stations) as (radios, boxes):
            seen = await learn_addresses(radios, boxes)
            radios[0].send(b"for b only", seen[0, 1])
            data, src_a = (await boxes[1].wait_for(1))[0]
            assert data == b"for b only"
            assert src_a == seen[1, 0]
            radios[1].send(b"answer", src_a)
            assert (await boxes[0].wait_for(1))[0] == (b"answer", seen[0, 1])
            radios[0].send(b"barrier", None)
            await boxes[2].wait_for(1)
            assert boxes[2].payloads == [b"barrier"]

    asyncio.run(scenario())


def test_own_frames_are_not_received(stations: Stations) -> None:
    async def scenario() -> None:
        async with opened(stations) as (radios, boxes):
            radios[0].send(b"mine", None)
            await boxes[1].wait_for(1)
            radios[1].send(b"barrier", None)
            await boxes[0].wait_for(1)
            assert boxes[0].payloads == [b"barrier"]
            assert boxes[1].payloads == [b"mine"]

    asyncio.run(scenario())


def test_oversize_payload_is_refused(stations: Stations) -> None:
    async def scenario() -> None:
        async with opened(stations) as (radios, _):
            radio = radios[0]
            assert radio.mtu_bytes >= MESH_DATAGRAM_MAX_BYTES
            with pytest.raises(LocalProtocolError):
                radio.send(b"x" * (radio.mtu_bytes + 1), None)
            assert radio.counters["tx"] == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("size_bytes", [1, 45, 60, MESH_DATAGRAM_MAX_BYTES])
def test_payloads_arrive_intact(stations: Stations, size_bytes: int) -> None:
    payload = random.Random(size_bytes).randbytes(size_bytes)

    async def scenario() -> None:
        async with opened(stations) as (radios, boxes):
            seen = await learn_addresses(radios, boxes)
            radios[0].send(payload, None)
            radios[0].send(payload[::-1], seen[0, 1])
            got = await boxes[1].wait_for(2)
            assert [data for data, _ in got] == [payload, payload[::-1]]
            assert (await boxes[2].wait_for(1))[0][0] == payload

    asyncio.run(scenario())


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_is_clean_and_idempotent(stations: Stations) -> None:
    async def scenario() -> None:
        fds_before = _open_fds()
        async with opened(stations) as (radios, boxes):
            radios[1].close()
            radios[1].close()
            assert not radios[1].is_open
            with pytest.raises(LocalProtocolError):
                radios[1].send(b"after close", None)
            radios[0].send(b"b is gone", None)
            await boxes[2].wait_for(1)
            assert boxes[1].items == []
            # A closed radio can be opened again and works.
            await stations.open_one(radios[1], 1)
            radios[0].send(b"b is back", None)
            assert (await boxes[1].wait_for(1))[0][0] == b"b is back"
        assert all(not r.is_open for r in radios)
        # Closing left no socket behind (fds_before already includes the event loop's).
        assert _open_fds() <= fds_before

    asyncio.run(scenario())


def test_counters_count(stations: Stations) -> None:
    async def scenario() -> None:
        async with opened(stations) as (radios, boxes):
            seen = await learn_addresses(radios, boxes)
            before = [dict(r.counters) for r in radios]
            radios[0].send(b"12345", None)
            radios[0].send(b"1234567", seen[0, 2])
            await boxes[1].wait_for(1)
            await boxes[2].wait_for(2)
            a, b, c = ({k: r.counters[k] - old.get(k, 0) for k in ("tx", "tx_bytes", "rx",
                        "rx_bytes")} for r, old in zip(radios, before, strict=True))
            assert a == {"tx": 2, "tx_bytes": 12, "rx": 0, "rx_bytes": 0}
            assert b == {"tx": 0, "tx_bytes": 0, "rx": 1, "rx_bytes": 5}
            assert c == {"tx": 0, "tx_bytes": 0, "rx": 2, "rx_bytes": 12}

    asyncio.run(scenario())
