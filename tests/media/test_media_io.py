"""Media relays on their real UDP call ports on loopback: two gateways in one asyncio loop.

Each gateway is a :class:`MediaRelay` on :class:`UdpMediaPorts`, wired as the node driver
wires them (a datagram on a call port -> ``relay.from_client``; a frame from the mesh ->
``relay.from_mesh`` -> ``UdpMediaPorts.send``). The clients are plain UDP sockets; the mesh
between the two gateways is a direct hand-off of each MEDIA frame on the next loop turn.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from meshcomm.errors import ConfigError
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaCallEnded, MediaRelay, SdpPath
from meshcomm.media.session import MeshMedia
from meshcomm.runtime.media_io import UdpMediaPorts
from meshcomm.security.identity import Identity
from meshcomm.sip.sdp import parse_sdp_untrusted
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


class Gateway:
    """One gateway's media: the relay core on real call ports."""

    def __init__(self, loop: asyncio.AbstractEventLoop, identity: Identity) -> None:
        self.loop = loop
        self.node_id = identity.node_id
        self.ports = UdpMediaPorts(loop, "127.0.0.1", self.from_client)
        self.relay = MediaRelay(identity, self.ports, random.Random(identity.node_id))
        self.peer: Gateway | None = None

    def rewrite_sdp(self, direction: SdpPath, call_id: str, body: bytes) -> bytes:
        return self.relay.rewrite_sdp(direction, call_id, body, self.loop.time())

    def from_client(self, call_id: str, index: int, channel: Channel, data: bytes) -> None:
        frame = self.relay.from_client(call_id, index, channel, data, self.loop.time())
        if frame is not None:
            assert self.peer is not None and frame.dst_node == self.peer.node_id
            self.loop.call_soon(self.peer.from_mesh, self.node_id, frame)

    def from_mesh(self, origin: bytes, frame: MeshMedia) -> None:
        packet = self.relay.from_mesh(origin, frame.stream, frame.payload, self.loop.time())
        if packet is not None:
            self.ports.send(packet)

    def end_call(self, call_id: str) -> list[MediaCallEnded]:
        self.relay.end_call(call_id, self.loop.time())
        ended = []
        while (event := self.relay.next_event()) is not None:
            ended.append(event)
        return ended

    def close(self) -> None:
        for call_id in list(self.relay.sessions):
            self.end_call(call_id)
        self.ports.close()


def wire(loop: asyncio.AbstractEventLoop) -> tuple[Gateway, Gateway]:
    a = Gateway(loop, Identity(b"\x01" * 32))
    b = Gateway(loop, Identity(b"\x02" * 32))
    a.peer, b.peer = b, a
    return a, b


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
        assert gw_b.relay.sessions[CALL].counters["rtp_to_client"] == PACKETS
        ended = gw_b.end_call(CALL)
        assert [e.call_id for e in ended] == [CALL] and gw_b.ports.open_sockets == 0
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
