"""The NAT mapping questions of the uplink radio (radios/uplink_mapped.py): an answer
counts only with the nonce of our last question to that peer, mapped addresses expire,
answers are rate-limited, and on loopback a relay asking its configured peer learns the
address it is seen at (its own: no NAT here, so nothing new is reported)."""

from __future__ import annotations

import asyncio
import socket

from radios.uplink import UplinkRadio
from radios.uplink_mapped import (
    ANSWER,
    ANSWERS_BURST,
    MAPPED_FRESH_S,
    MAX_MAPPED,
    NONCE_BYTES,
    QUESTION,
    MappedAddresses,
    answer_for,
)
from tests.radios.test_uplink_radio import V4, addr, opened, run


def test_answers_count_only_with_the_last_questions_nonce() -> None:
    m = MappedAddresses()
    q = m.question("192.0.2.1:4223")
    nonce = q[len(QUESTION):]
    assert m.on_answer(ANSWER + b"\x00" * NONCE_BYTES + b"198.51.100.2:9", "192.0.2.1:4223",
                       0.0) is None                           # wrong nonce
    assert m.on_answer(ANSWER + nonce + b"198.51.100.2:9", "192.0.2.9:4223", 0.0) is None
    assert m.on_answer(ANSWER + nonce + b"198.51.100.2:9", "192.0.2.1:4223",
                       0.0) == "198.51.100.2:9"
    assert m.on_answer(ANSWER + nonce + b"198.51.100.3:9", "192.0.2.1:4223",
                       0.0) is None                           # a nonce answers once
    assert m.fresh(1.0) == ("198.51.100.2:9",)
    assert m.fresh(MAPPED_FRESH_S + 1.0) == ()
    assert answer_for(b"junk", "x") is None
    assert answer_for(QUESTION + b"short", "x") is None
    for garbage in (b"", ANSWER, ANSWER + nonce, ANSWER + nonce + b"x" * 500,
                    ANSWER + nonce + b"\xff\xfe"):
        assert m.on_answer(garbage, "192.0.2.1:4223", 0.0) is None


def test_mapped_addresses_are_bounded() -> None:
    m = MappedAddresses()
    for i in range(MAX_MAPPED + 5):
        peer = f"192.0.2.{i}:1"
        q = m.question(peer)
        m.on_answer(ANSWER + q[len(QUESTION):] + f"198.51.100.{i}:9".encode(), peer, float(i))
    assert len(m.fresh(float(MAX_MAPPED + 5))) == MAX_MAPPED


def test_a_relay_learns_where_its_peer_sees_it_and_answers_are_rate_limited() -> None:
    async def scenario() -> None:
        server = UplinkRadio([V4], 0)
        async with opened(server):
            relay = UplinkRadio([V4], 0, peers=[addr(server)], ask_mapped=True)
            reported: list[tuple[str, ...]] = []
            relay.on_mapped = reported.append
            async with opened(relay) as (box,):
                for _ in range(100):
                    if relay.mapped_addrs():
                        break
                    await asyncio.sleep(0.02)
                assert relay.mapped_addrs() == (addr(relay),)
                assert reported == []            # its own address: no NAT, nothing new
                assert not box.items             # control datagrams never reach the node
                assert server.counters["mapped_answered"] == 1
            raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            raw.bind((V4, 0))
            try:
                host, port = V4, server.bound_port
                for _ in range(ANSWERS_BURST * 3):       # a flood of questions
                    raw.sendto(QUESTION + b"n" * NONCE_BYTES, (host, port))
                raw.sendto(ANSWER + b"n" * NONCE_BYTES + b"1.2.3.4:5", (host, port))
                await asyncio.sleep(0.3)
            finally:
                raw.close()
            assert server.counters["mapped_answered"] <= 1 + ANSWERS_BURST + 10
            assert server.counters["mapped_answers_limited"] > 0
            assert server.counters["dropped_control"] == 1      # the unasked answer
            assert server.mapped_addrs() == ()
    run(scenario)
