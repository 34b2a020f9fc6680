"""Driver-specific behaviour beyond the conformance suite: specs, address families, DAD,
bad frames from the wire, and the in-process medium's connectivity map."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from radios import _netutil, open_radio
from radios.ether import ETHERTYPE, decode_frame_untrusted, encode_frame
from radios.mem import MemRadio, drop_medium, get_medium
from radios.udp import ADDR_CACHE_MAX, DEFAULT_PORT, MULTICAST_GROUP_V6, UdpRadio
from tests.radios.conftest import Inbox
from tools.testbed import Testbed, in_netns

# -- specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "expected"),
        ("udp", "expected"),
        ("wifi:wlan0", "unknown radio kind 'wifi'"),
        ("udp:", "interface name"),
        ("udp:averyveryverylongname", "interface name"),
        ("udp:eth0:0", "port"),
        ("udp:eth0:70000", "port"),
        ("udp:eth0:http", "port"),
        ("ether:a/b", "invalid interface name"),
        ("ether:a|b", "invalid interface name"),
        ("mem:medium", "mem:MEDIUM/STATION"),
        ("mem:/a", "medium name"),
        ("mem:m/", "station name"),
        ("mem:m/a|b", "station name"),
    ],
)
def test_bad_spec_is_a_config_error_naming_it(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_radio(spec)
    assert fragment in str(info.value)
    assert repr(spec) in str(info.value)
    assert info.value.key_path == "radio"


def test_good_specs_pick_their_driver() -> None:
    udp = open_radio("udp:eth0:4000")
    assert isinstance(udp, UdpRadio)
    assert (udp.iface, udp.port, udp.name) == ("eth0", 4000, "udp:eth0:4000")
    assert open_radio("udp:eth0").port == DEFAULT_PORT  # type: ignore[attr-defined]
    assert type(open_radio("ether:eth0")).__name__ == "EtherRadio"
    assert isinstance(open_radio("mem:spec-test/a"), MemRadio)
    drop_medium("spec-test")


def test_missing_interface_is_a_config_error() -> None:
    async def scenario() -> None:
        for spec in ("udp:nosuchif9", "ether:nosuchif9"):
            with pytest.raises(ConfigError, match="no network interface 'nosuchif9'"):
                await open_radio(spec).open()

    asyncio.run(scenario())


# -- UDP: address families and DAD ----------------------------------------------------------


def test_udp_picks_ipv6_multicast_or_the_ipv4_fallback(bed_v6: Testbed, bed_v4: Testbed) -> None:
    async def scenario() -> None:
        for bed, family, mtu_bytes in ((bed_v6, socket.AF_INET6, 1500 - 48),
                                       (bed_v4, socket.AF_INET, 1500 - 28)):
            radio = UdpRadio("udp:radio0", "radio0")
            with in_netns(bed.ns(0)):
                await radio.open()
            try:
                assert radio.family == family
                assert radio.mtu_bytes == mtu_bytes
                own = radio.own_address or ""
                if family == socket.AF_INET6:
                    assert own.startswith("fe80:")
                else:
                    assert own == "169.254.77.1"
            finally:
                radio.close()

    asyncio.run(scenario())


@contextlib.contextmanager
def extra_link(bed: Testbed, *, dad: bool, addr_gen_none: bool = False) -> Iterator[None]:
    """A veth pair x0 (node 0) -- x1 (node 1) with DAD switched on or off, brought up."""
    bed.run(0, ["ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1",
                "netns", bed.ns(1)])
    try:
        for node, name in ((0, "x0"), (1, "x1")):
            with in_netns(bed.ns(node)):
                conf = Path("/proc/sys/net/ipv6/conf") / name
                (conf / "accept_dad").write_text("1" if dad else "0")
                if addr_gen_none:
                    (conf / "addr_gen_mode").write_text("1")
            bed.run(node, ["ip", "link", "set", name, "up"])
        yield
    finally:
        bed.run(0, ["ip", "link", "del", "x0"], check=False)


def test_udp_open_waits_out_dad_on_a_fresh_interface(bed_v6: Testbed) -> None:
    async def scenario() -> None:
        a, b = UdpRadio("udp:x0", "x0"), UdpRadio("udp:x1", "x1")
        with extra_link(bed_v6, dad=True):
            with in_netns(bed_v6.ns(0)):
                flags = [f for _, f in _netutil.link_local_addresses("x0")]
                await a.open()
            with in_netns(bed_v6.ns(1)):
                await b.open()
            try:
                # The address was still tentative (or not even there) when open() started.
                assert all(f & _netutil.IFA_F_TENTATIVE for f in flags)
                box = Inbox()
                b.set_receiver(box)
                a.send(b"after dad", None)
                assert (await box.wait_for(1))[0][0] == b"after dad"
            finally:
                a.close()
                b.close()

    asyncio.run(scenario())


def test_udp_without_any_address_is_a_config_error(bed_v6: Testbed) -> None:
    async def scenario() -> None:
        with extra_link(bed_v6, dad=False, addr_gen_none=True), in_netns(bed_v6.ns(0)):
            radio = UdpRadio("udp:x0", "x0", address_wait_s=0.2)
            with pytest.raises(ConfigError, match="no usable IPv6 link-local address"):
                await radio.open()
            assert not radio.is_open

    asyncio.run(scenario())


def test_udp_drops_oversize_datagrams_from_the_wire(bed_v6: Testbed) -> None:
    async def scenario() -> None:
        radio = UdpRadio("udp:radio0", "radio0")
        with in_netns(bed_v6.ns(0)):
            await radio.open()
        box = Inbox()
        radio.set_receiver(box)
        with in_netns(bed_v6.ns(1)):
            raw = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"radio0")
            with in_netns(bed_v6.ns(1)):
                ifindex = socket.if_nametoindex("radio0")
            group = (MULTICAST_GROUP_V6, DEFAULT_PORT, 0, ifindex)
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            raw.sendto(b"z" * 3000, group)
            raw.sendto(b"fits", group)
            assert (await box.wait_for(1))[0][0] == b"fits"
            assert box.payloads == [b"fits"]
            assert radio.counters["dropped_oversize"] == 1
        finally:
            raw.close()
            radio.close()

    asyncio.run(scenario())


# -- Ether: frames from the wire ------------------------------------------------------------


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=1600))
def test_ether_decoder_returns_bytes_or_decode_error(frame: bytes, limit: int) -> None:
    try:
        data = decode_frame_untrusted(frame, limit)
    except DecodeError:
        return
    assert len(data) <= limit
    assert frame[2:].startswith(data)


@given(st.binary(max_size=1500), st.binary(max_size=60))
def test_ether_frame_round_trip_ignores_padding(data: bytes, padding: bytes) -> None:
    assert decode_frame_untrusted(encode_frame(data) + padding, 1500) == data


def test_ether_counts_malformed_frames_from_the_wire(bed_v6: Testbed) -> None:
    async def scenario() -> None:
        radio = open_radio("ether:radio0")
        with in_netns(bed_v6.ns(0)):
            await radio.open()
        box = Inbox()
        radio.set_receiver(box)
        with in_netns(bed_v6.ns(1)):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            dst = ("radio0", ETHERTYPE, 0, 0, b"\xff" * 6)
            raw.sendto(b"\x05", dst)  # shorter than the prefix (Ethernet pads it, though)
            raw.sendto(struct.pack("!H", 1499) + b"x" * 100, dst)  # over mtu_bytes
            raw.sendto(struct.pack("!H", 200) + b"x" * 100, dst)  # truncated
            raw.sendto(encode_frame(b"good"), dst)
            assert (await box.wait_for(1))[0][0] == b"good"
            assert box.payloads == [b"good"]
            drops = {k: v for k, v in radio.counters.items() if k.startswith("dropped_")}
            assert drops == {"dropped_truncated": 2, "dropped_oversize": 1}
        finally:
            raw.close()
            radio.close()

    asyncio.run(scenario())


# -- mem: connectivity map ------------------------------------------------------------------


def test_mem_explicit_links_decide_who_hears_whom() -> None:
    async def scenario() -> None:
        medium = get_medium("links-test", full_mesh=False)
        medium.connect_chain(["a", "b", "c"])
        medium.connect("c", "d", both_ways=False)  # d hears c, c does not hear d
        radios = {s: open_radio(f"mem:links-test/{s}") for s in "abcd"}
        boxes = {s: Inbox() for s in "abcd"}
        for s, radio in radios.items():
            await radio.open()
            radio.set_receiver(boxes[s])
        try:
            radios["a"].send(b"from a", None)
            radios["d"].send(b"from d", None)
            radios["d"].send(b"to c", "c")
            radios["c"].send(b"from c", None)
            await boxes["d"].wait_for(1)
            await boxes["b"].wait_for(2)
            assert boxes["b"].items == [(b"from a", "a"), (b"from c", "c")]
            assert boxes["c"].payloads == []
            assert boxes["d"].payloads == [b"from c"]
            assert boxes["a"].payloads == []
            assert radios["d"].counters["dropped_unreachable"] == 1
            medium.disconnect("a", "b")
            radios["a"].send(b"unheard", "b")
            radios["c"].send(b"barrier", None)
            await boxes["b"].wait_for(3)
            assert boxes["b"].payloads[-1] == b"barrier"
        finally:
            for radio in radios.values():
                radio.close()
            drop_medium("links-test")

    asyncio.run(scenario())


def test_mem_misuse_is_a_local_protocol_error() -> None:
    async def scenario() -> None:
        medium = get_medium("misuse-test")
        with pytest.raises(LocalProtocolError, match="full-mesh"):
            medium.connect("a", "b")
        first, second = open_radio("mem:misuse-test/a"), open_radio("mem:misuse-test/a")
        await first.open()
        try:
            with pytest.raises(LocalProtocolError, match="already open"):
                await second.open()
            with pytest.raises(LocalProtocolError, match="bad destination"):
                first.send(b"x", "a|b")
        finally:
            first.close()
            drop_medium("misuse-test")

    asyncio.run(scenario())


def test_udp_sender_and_destination_addresses_are_cached_within_a_bound() -> None:
    """A datagram costs no address parsing or formatting once its neighbour is known; a
    flood from many senders keeps the caches within ADDR_CACHE_MAX and every datagram
    still carries its own sender's address; our own datagrams are dropped, a malformed
    destination is still refused."""
    radio = UdpRadio("udp:eth0", "eth0")
    radio.family, radio.own_address, radio._index = socket.AF_INET6, "fe80::1", 3
    heard: list[str] = []
    radio.set_receiver(lambda _data, src: heard.append(src))
    senders = [f"fe80::{i + 2:x}" for i in range(3 * ADDR_CACHE_MAX)]
    for _ in range(2):
        for host in senders:
            radio._handle_datagram(b"x", f"{host}%eth0", 4000)
    assert heard == [f"[{host}]:4000" for host in senders] * 2
    assert len(radio._src_cache) <= ADDR_CACHE_MAX
    radio._handle_datagram(b"x", "fe80::1%eth0", DEFAULT_PORT)
    radio._handle_datagram(b"x", "fe80::1%eth0", DEFAULT_PORT)
    assert radio.counters["dropped_own"] == 2 and len(heard) == 2 * len(senders)
    sent: list[object] = []
    radio._sock = cast(socket.socket, object())        # send() checks only is_open
    radio._sendto = lambda _d, addr, _n, _dst: sent.append(addr)  # type: ignore[method-assign,assignment]
    for host in senders:
        radio.send(b"x", f"[{host}]:4000")
        radio.send(b"x", f"[{host}]:4000")
    assert sent == [(host, 4000, 0, 3) for host in senders for _ in range(2)]
    assert len(radio._dst_cache) <= ADDR_CACHE_MAX
    with pytest.raises(LocalProtocolError):
        radio.send(b"x", "[not-an-address]:4000")
    assert "[not-an-address]:4000" not in radio._dst_cache
