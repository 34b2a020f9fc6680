"""The uplink radio on loopback (127.0.0.1 and ::1): unicast and the peer "broadcast",
peers learned by hearing and by add_peers, their expiry and bound, oversize datagrams from
the wire, malformed addresses, and IPv6."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

import pytest

from meshcomm.errors import LocalProtocolError
from radios import ImpairedRadio, Impairment
from radios.base import MESH_DATAGRAM_MAX_BYTES
from radios.uplink import (
    ADDED_PEER_TTL_S,
    HEARD_PEER_SILENT_S,
    MAX_LEARNED_PEERS,
    UplinkRadio,
    parse_peer,
)
from tests.radios.conftest import Inbox

V4 = "127.0.0.1"
V6 = "::1"


class Clock:
    """A hand-stepped clock for the peers' expiry."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@asynccontextmanager
async def opened(*radios: UplinkRadio) -> AsyncIterator[list[Inbox]]:
    boxes = []
    try:
        for radio in radios:
            await radio.open()
            box = Inbox()
            radio.set_receiver(box)
            boxes.append(box)
        yield boxes
    finally:
        for radio in radios:
            radio.close()


def addr(radio: UplinkRadio, host: str = V4) -> str:
    return f"[{host}]:{radio.bound_port}" if ":" in host else f"{host}:{radio.bound_port}"


def run(scenario: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(scenario())


def test_unicast_both_ways_and_the_sender_is_learned() -> None:
    async def scenario() -> None:
        a, b = UplinkRadio([V4], 0), UplinkRadio([V4], 0)
        async with opened(a, b) as (box_a, box_b):
            assert a.bound_port and b.bound_port and a.name == "uplink"
            a.send(b"hello b", addr(b))
            assert await box_b.wait_for(1) == [(b"hello b", addr(a))]
            assert b.peers() == [addr(a)] and b.counters["peers_learned"] == 1
            b.send(b"hello a", None)          # b's "broadcast": every peer it knows
            assert await box_a.wait_for(1) == [(b"hello a", addr(b))]
            assert a.counters["tx"] == 1 and a.counters["rx"] == 1
            assert b.counters["tx"] == 1 and b.counters["rx_bytes"] == len(b"hello b")

    run(scenario)


def test_broadcast_goes_to_every_configured_and_learned_peer() -> None:
    async def scenario() -> None:
        a, b, d = UplinkRadio([V4], 0), UplinkRadio([V4], 0), UplinkRadio([V4], 0)
        async with opened(a, b, d) as (box_a, box_b, box_d):
            c = UplinkRadio([V4], 0, peers=[addr(a), addr(b)])
            async with opened(c) as (box_c,):
                assert c.peers() == [addr(a), addr(b)]
                d.send(b"d was here", addr(c))      # d becomes a heard peer of c
                await box_c.wait_for(1)
                c.send(b"all", None)
                c.send(b"all again", "")
                for box in (box_a, box_b, box_d):
                    assert (await box.wait_for(2)) == [(b"all", addr(c)),
                                                       (b"all again", addr(c))]
                assert c.counters["tx"] == 6

    run(scenario)


def test_a_configured_peer_that_is_this_radio_is_left_out() -> None:
    async def scenario() -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((V4, 0))
        port = probe.getsockname()[1]
        probe.close()
        radio = UplinkRadio([V4], port, peers=[f"{V4}:{port}", f"localhost:{port + 1}"])
        async with opened(radio):
            # itself left out; the host name resolved to its IPv4 address
            assert radio.peers() == [f"{V4}:{port + 1}"]

    run(scenario)


def test_heard_peers_expire_when_silent_added_ones_later_configured_never() -> None:
    async def scenario() -> None:
        clock = Clock()
        a, b = UplinkRadio([V4], 0), UplinkRadio([V4], 0)
        async with opened(a, b) as (_box_a, _box_b):
            c = UplinkRadio([V4], 0, peers=[addr(a)], clock=clock)
            async with opened(c) as (box_c,):
                assert c.add_peers(["192.0.2.7:4223", "192.0.2.7:4223", addr(c)]) == 1
                assert c.counters["peers_add_skipped"] == 1      # itself
                b.send(b"x", addr(c))
                await box_c.wait_for(1)
                assert set(c.peers()) == {addr(a), addr(b), "192.0.2.7:4223"}
                clock.t += HEARD_PEER_SILENT_S - 1
                b.send(b"still here", addr(c))                  # heard again: kept
                await box_c.wait_for(2)
                clock.t += HEARD_PEER_SILENT_S - 1
                assert addr(b) in c.peers()
                clock.t += 2
                assert set(c.peers()) == {addr(a), "192.0.2.7:4223"}
                clock.t += ADDED_PEER_TTL_S
                assert c.peers() == [addr(a)]
                assert c.counters["peers_expired"] == 2
                c.send(b"only a", None)
                assert c.counters["tx"] == 1

    run(scenario)


def test_an_added_peer_that_is_heard_stays_while_heard() -> None:
    async def scenario() -> None:
        clock = Clock()
        b = UplinkRadio([V4], 0)
        async with opened(b):
            c = UplinkRadio([V4], 0, clock=clock)
            async with opened(c) as (box_c,):
                c.add_peers([addr(b)])
                rounds = int(ADDED_PEER_TTL_S // HEARD_PEER_SILENT_S) + 2
                for round_ in range(1, rounds + 1):
                    clock.t += HEARD_PEER_SILENT_S - 1    # past the add's TTL in the end
                    b.send(b"alive", addr(c))
                    await box_c.wait_for(round_)
                    assert c.peers() == [addr(b)]
                clock.t += HEARD_PEER_SILENT_S + 1
                assert c.peers() == []

    run(scenario)


def test_learned_peers_are_bounded_and_a_flood_evicts_its_own_oldest_first() -> None:
    async def scenario() -> None:
        keeper = UplinkRadio([V4], 0)
        configured = UplinkRadio([V4], 0)
        async with opened(keeper, configured):
            c = UplinkRadio([V4], 0, peers=[addr(configured)])
            async with opened(c) as (box_c,):
                flood = []
                try:
                    for index in range(2 * MAX_LEARNED_PEERS):
                        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        flood.append(sock)
                        sock.bind((f"127.0.{index // 200 + 1}.{index % 200 + 1}", 0))
                    keeper.send(b"k", addr(c))
                    await box_c.wait_for(1)
                    for index, sock in enumerate(flood):
                        sock.sendto(b"f", (V4, c.bound_port))
                        if index % 64 == 63:          # the keeper keeps talking
                            await box_c.wait_for(index + 2 + index // 64)
                            keeper.send(b"k", addr(c))
                    await box_c.wait_for(len(flood) + 1 + len(flood) // 64)
                    names = ["{}:{}".format(*sock.getsockname()) for sock in flood]
                finally:
                    for sock in flood:
                        sock.close()
                peers = c.peers()
                assert len(peers) == MAX_LEARNED_PEERS + 1           # + the configured one
                assert addr(configured) in peers and addr(keeper) in peers
                # the newest of the flood are kept, its oldest went first
                flood_kept = [p for p in peers if p not in (addr(configured), addr(keeper))]
                assert len(flood_kept) == MAX_LEARNED_PEERS - 1
                assert flood_kept == names[-len(flood_kept):]
                assert c.counters["peers_evicted"] == 2 * MAX_LEARNED_PEERS + 1 \
                    - MAX_LEARNED_PEERS

    run(scenario)


def test_oversize_datagrams_from_the_wire_are_dropped_counted_and_not_learned() -> None:
    async def scenario() -> None:
        c = UplinkRadio([V4], 0)
        async with opened(c) as (box_c,):
            raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                raw.bind((V4, 0))
                raw.sendto(b"z" * (MESH_DATAGRAM_MAX_BYTES + 1), (V4, c.bound_port))
                raw.sendto(b"y" * MESH_DATAGRAM_MAX_BYTES, (V4, c.bound_port))
                items = await box_c.wait_for(1)
                assert [len(data) for data, _ in items] == [MESH_DATAGRAM_MAX_BYTES]
                assert c.counters["dropped_oversize"] == 1
                assert c.counters["peers_learned"] == 1
            finally:
                raw.close()
            with pytest.raises(LocalProtocolError, match="exceeds mtu"):
                c.send(b"z" * (MESH_DATAGRAM_MAX_BYTES + 1), None)

    run(scenario)


@pytest.mark.parametrize("dst", ["host", "1.2.3.4", "example.com:4223", "[::1]:0",
                                 "1.2.3.4:70000", "::1:4223", "[1.2.3.4]:5", "1.2.3.4:x"])
def test_a_malformed_destination_is_a_local_protocol_error(dst: str) -> None:
    async def scenario() -> None:
        c = UplinkRadio([V4], 0)
        async with opened(c):
            with pytest.raises(LocalProtocolError):
                c.send(b"x", dst)
            assert c.add_peers([dst]) == 0
            assert c.counters["peers_add_skipped"] == 1

    run(scenario)


def test_misuse_is_a_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        UplinkRadio([V4, "127.0.0.2"], 0)
    with pytest.raises(LocalProtocolError):
        UplinkRadio([], 0)
    with pytest.raises(LocalProtocolError, match="not open"):
        UplinkRadio([V4], 0).send(b"x", None)


def test_parse_peer_canonicalises() -> None:
    assert parse_peer("[2001:DB8:0::1]:4223")[2] == "[2001:db8::1]:4223"
    assert parse_peer("192.0.2.1:1")[1] == ("192.0.2.1", 1)


def test_ipv6_and_both_families_on_one_port() -> None:
    async def scenario() -> None:
        v6_only, v4_only = UplinkRadio([V6], 0), UplinkRadio([V4], 0)
        async with opened(v6_only, v4_only) as (box6, box4):
            dual = UplinkRadio([V4, V6], 0, peers=[addr(v6_only, V6), addr(v4_only)])
            async with opened(dual) as (box_dual,):
                assert dual.peers() == [addr(v6_only, V6), addr(v4_only)]
                dual.send(b"both", None)
                assert await box6.wait_for(1) == [(b"both", addr(dual, V6))]
                assert await box4.wait_for(1) == [(b"both", addr(dual, V4))]
                v6_only.send(b"six", addr(dual, V6))
                assert await box_dual.wait_for(1) == [(b"six", addr(v6_only, V6))]
                assert v4_only.add_peers([addr(dual, V6)]) == 0   # no IPv6 socket there
                with pytest.raises(LocalProtocolError):
                    v4_only.send(b"x", "[::1")
                v4_only.send(b"x", addr(dual, V6))
                assert v4_only.counters["dropped_no_family"] == 1

    run(scenario)


def test_the_impairment_wrapper_passes_the_peer_broadcast_through() -> None:
    async def scenario() -> None:
        a = UplinkRadio([V4], 0)
        async with opened(a) as (box_a,):
            inner = UplinkRadio([V4], 0, peers=[addr(a)])
            wrapped = ImpairedRadio(inner, Impairment(delay_s=0.01), random.Random(1))
            await wrapped.open()
            try:
                wrapped.send(b"slow", None)
                assert (await box_a.wait_for(1))[0][0] == b"slow"
            finally:
                wrapped.close()
            assert not inner.is_open

    run(scenario)
