"""Media relays on real UDP sockets on loopback: two gateways in one asyncio loop.

The clients are plain UDP sockets; the mesh between the two gateways is a direct hand-off
of each MEDIA frame (``MediaReceived`` built from the ``MeshMedia``) on the next loop turn.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from meshcomm.errors import ConfigError
from meshcomm.media.relay import SdpPath
from meshcomm.media.session import MeshMedia
from meshcomm.overlay.media import MediaReceived
from meshcomm.runtime.media_io import MediaIO, MediaSender, UdpMediaPorts
from meshcomm.security.identity import Identity
from meshcomm.sip.sdp import parse_sdp_untrusted
from meshcomm.types import NodeId
from tests.media.helpers import client_sdp, rtcp_receiver_report, rtp_packet

CALL = "udp-call@loopback"
PACKETS = 50
TIMEOUT_S = 5.0


class Client:
    """A SIP client's media sockets: RTP and RTCP on any free ports (a=rtcp names RTCP)."""

    def __init__(self) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.rtp, self.rtcp):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)

    def sdp(self) -> bytes:
        return client_sdp("127.0.0.1", self.rtp.getsockname()[1],
                          extra=f"a=rtcp:{self.rtcp.getsockname()[1]}\r\n")

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def gateway_ports(body: bytes) -> tuple[int, int]:
    """(RTP, RTCP) port a client must send to, from the SDP it received."""
    m = parse_sdp_untrusted(body).media[0]
    rtcp = m.attribute("rtcp")
    return m.port, int(rtcp.split()[0]) if rtcp else m.port + 1


def wire(loop: asyncio.AbstractEventLoop) -> tuple[MediaIO, MediaIO]:
    ids = {"a": Identity(b"\x01" * 32), "b": Identity(b"\x02" * 32)}
    gateways: dict[str, MediaIO] = {}

    def mesh_to(dst: str, src: str) -> MediaSender:
        def send(frame: MeshMedia) -> None:
            assert frame.dst_node == ids[dst].node_id
            event = MediaReceived(NodeId(ids[src].node_id), frame.stream, frame.payload, 4)
            loop.call_soon(gateways[dst].on_media, event)
        return send

    for me, other in (("a", "b"), ("b", "a")):
        gateways[me] = MediaIO(loop, ids[me], send_media=mesh_to(other, me),
                               rng=random.Random(me))
    return gateways["a"], gateways["b"]


async def receive(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(got) < count:
            got.append((await loop.sock_recvfrom(sock, 2048))[0])
    return got


async def call_both_ways() -> None:
    loop = asyncio.get_running_loop()
    gw_a, gw_b = wire(loop)
    alice, bob = Client(), Client()
    try:
        to_bob = gw_b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL,
                                  gw_a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL, alice.sdp()))
        to_alice = gw_a.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL,
                                    gw_b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL, bob.sdp()))
        a_rtp, a_rtcp = gateway_ports(to_alice)
        b_rtp, b_rtcp = gateway_ports(to_bob)
        assert gw_a.ports.open_sockets == 2 and gw_b.ports.open_sockets == 2
        for seq in range(PACKETS):
            alice.rtp.sendto(rtp_packet(seq, 0xA), ("127.0.0.1", a_rtp))
            bob.rtp.sendto(rtp_packet(seq, 0xB, 660.0), ("127.0.0.1", b_rtp))
        alice.rtcp.sendto(rtcp_receiver_report(0xA), ("127.0.0.1", a_rtcp))
        bob.rtcp.sendto(rtcp_receiver_report(0xB), ("127.0.0.1", b_rtcp))
        at_bob, at_alice = await asyncio.gather(receive(bob.rtp, PACKETS),
                                                receive(alice.rtp, PACKETS))
        assert sorted(at_bob, key=lambda p: struct.unpack("!H", p[2:4])[0]) == [
            rtp_packet(seq, 0xA) for seq in range(PACKETS)]
        assert sorted(at_alice, key=lambda p: struct.unpack("!H", p[2:4])[0]) == [
            rtp_packet(seq, 0xB, 660.0) for seq in range(PACKETS)]
        rtcp_at_bob, rtcp_at_alice = await asyncio.gather(receive(bob.rtcp, 1),
                                                          receive(alice.rtcp, 1))
        assert rtcp_at_bob == [rtcp_receiver_report(0xA)]
        assert rtcp_at_alice == [rtcp_receiver_report(0xB)]
        assert gw_b.counters()["rtp_to_client"] == PACKETS
        ended: list[str] = []
        gw_b.ended_sink = lambda event: ended.append(event.call_id)
        gw_b.end_call(CALL)
        assert ended == [CALL] and gw_b.ports.open_sockets == 0
        gw_a.close()
        assert gw_a.ports.open_sockets == 0
    finally:
        gw_a.close()
        gw_b.close()
        alice.close()
        bob.close()


def test_rtp_and_rtcp_both_ways_through_two_gateways_on_loopback() -> None:
    asyncio.run(call_both_ways())


async def bounded_range() -> None:
    loop = asyncio.get_running_loop()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    first = port - port % 2
    ports = UdpMediaPorts(loop, "127.0.0.1", lambda *args: None, (first, first + 1))
    try:
        got = ports.allocate("c1", 0)
        if got is None:      # somebody else took the probed pair meanwhile: nothing to show
            return
        assert (got.rtp_port, got.rtcp_port) == (first, first + 1)
        assert ports.allocate("c2", 0) is None                 # the range is used up
        assert ports.counters["ports_exhausted"] == 1
        ports.release("c1")
        again = ports.allocate("c3", 0)
        assert again is not None and again.rtp_port == first
    finally:
        ports.close()
    assert ports.open_sockets == 0


def test_a_configured_range_hands_out_even_odd_pairs_until_exhausted() -> None:
    asyncio.run(bounded_range())


def test_a_range_without_a_full_pair_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigError):
            UdpMediaPorts(loop, "127.0.0.1", lambda *args: None, (20001, 20002))
    finally:
        loop.close()
