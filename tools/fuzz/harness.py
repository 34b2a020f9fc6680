"""Builders shared by the fuzz targets: small, deterministic node set-ups and seed inputs
made with the project's own encoders (no hand-written frames).

Every builder is deterministic (fixed keys, seeded ``random.Random``, virtual time), so a
crashing input replays exactly with ``python -m tools.fuzz.run NAME --replay FILE``.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from meshcomm.dht.port import DhtOp
from meshcomm.journal.codec import normalize_data
from meshcomm.journal.events import JournalRecord
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaConfig, MediaRelay, SdpPath, SequentialPortAllocator
from meshcomm.media.session import ClientPacket, MeshMedia
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.gateway.core import SipGateway
from meshcomm.node.gateway.types import Address, GatewayConfig, LocalDatagram
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.node.storeforward import SfPersist, StoreForward, StoreForwardConfig
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.sdp import parse_sdp_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import UaConfig
from meshcomm.types import Datagram, LinkAddr, NodeId

ROOT = Path(__file__).resolve().parents[2]
SIP_VECTORS = ROOT / "tests" / "sip" / "vectors"
DOMAIN = "incident.local"
WALL_OFFSET_S = 1.7e9
FAST_OVERLAY = OverlayConfig(hello_interval_s=0.2, neighbour_timeout_s=1.0,
                             anti_entropy_interval_s=0.4)
CLIENT: Address = ("127.0.0.1", 5070)
PEER_LINK = LinkAddr("peer")
#: One fuzz input may carry several messages, fed in order, separated by this.
MESSAGE_SEPARATOR = b"\n--fuzz-next--\n"
MAX_MESSAGES_PER_INPUT = 6
#: Virtual time between two messages of one input, and the horizon of the timer sweep.
MESSAGE_SPACING_S = 0.1
TIMER_SWEEP_S = (0.5, 5.0, 40.0, 400.0)


class DrivenCore(Protocol):
    """What :func:`drive` needs of a sans-IO core (the overlay node, the user agent)."""

    def receive(self, data: bytes, src: Any, now: float) -> None: ...

    def to_send(self, now: float) -> object: ...

    def on_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


def _drain(core: DrivenCore, now: float) -> None:
    core.to_send(now)
    while core.next_event() is not None:
        pass


def drive(core: DrivenCore, messages: list[bytes], src: object, now: float) -> None:
    """Feed ``messages`` from ``src`` MESSAGE_SPACING_S apart, draining output and events
    after each, then fire the timers of the sweep (see :func:`sweep_timers`)."""
    for msg in messages:
        core.receive(msg, src, now)
        _drain(core, now)
        now += MESSAGE_SPACING_S
    for later in TIMER_SWEEP_S:
        core.on_timer(now + later)
        _drain(core, now + later)


def identity(name: str) -> Identity:
    return Identity(hashlib.sha256(b"fuzz-" + name.encode()).digest())


class AcceptAllVerifier(SignatureVerifier):
    """Says every signature is good: lets the fuzzer past the signature checks, into the
    handlers behind them (the way fuzzers of checksummed formats disable checksums)."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return True


def split_messages(data: bytes) -> list[bytes]:
    return data.split(MESSAGE_SEPARATOR, MAX_MESSAGES_PER_INPUT - 1)


def join_messages(*messages: bytes) -> bytes:
    return MESSAGE_SEPARATOR.join(messages)


def unpack_args(data: bytes, count: int) -> list[object] | None:
    """A msgpack array of ``count`` values (the arguments of a multi-argument decoder);
    None when the input is not one (such inputs are simply not interesting)."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False,
                                unicode_errors="surrogateescape")
    except Exception:
        return None
    if not isinstance(value, list) or len(value) != count:
        return None
    return value


def pack_args(*values: object) -> bytes:
    packed: bytes = msgpack.packb(list(values), use_bin_type=True)
    return packed


# ---------------------------------------------------------------------- mesh nodes
def mesh_node(name: str, *, verifier: SignatureVerifier | None = None,
              role: str = "handset") -> MeshNode:
    return MeshNode(identity(name), NodeSettings(overlay=FAST_OVERLAY, role=role),
                    verifier=verifier or SignatureVerifier(),
                    rng=random.Random(name), now=0.0, seq_base=1 << 32,
                    wall_offset_s=WALL_OFFSET_S)


def exchange(a: MeshNode, b: MeshNode, now: float, log: list[bytes] | None = None) -> None:
    """Deliver what each of ``a`` and ``b`` sends to the other (a two-node radio)."""
    for src, dst, link in ((a, b, LinkAddr("a")), (b, a, LinkAddr("b"))):
        for dgram in src.to_send(now):
            if log is not None:
                log.append(dgram.data)
            dst.receive(dgram.data, link, now)


def run_pair(a: MeshNode, b: MeshNode, until_s: float, log: list[bytes] | None = None,
             start_s: float = 0.0) -> float:
    now = start_s
    while now < until_s:
        for node in (a, b):
            t = node.next_timer()
            if t is not None and t <= now:
                node.on_timer(now)
        exchange(a, b, now, log)
        now += 0.05
    return now


def overlay_frames() -> list[bytes]:
    """Frames of every kind two real nodes exchange: HELLO, BINDING, anti-entropy, UNICAST
    with ACK (fragmented too), MEDIA and its ACK."""
    a, b = mesh_node("a"), mesh_node("b")
    log: list[bytes] = []
    a.register(f"sip:a@{DOMAIN}", (f"sip:a@{DOMAIN}",), 0.0)
    b.register(f"sip:b@{DOMAIN}", (f"sip:b@{DOMAIN}",), 0.0)
    now = run_pair(a, b, 1.5, log)
    a.send_unicast(b.node_id, AppKind.SIP, b"MESSAGE sip:b SIP/2.0\r\n\r\n", now)
    a.send_unicast(b.node_id, AppKind.STORE_FORWARD, bytes(range(256)) * 12, now)
    a.send_media(b.node_id, b"s" * 8, b"m" * 60, now)
    a.deregister(f"sip:a@{DOMAIN}", now)
    run_pair(a, b, now + 1.0, log, start_s=now)
    unique = list(dict.fromkeys(log))
    return unique[:200]


def feed_peer_bindings(node: MeshNode, peer: MeshNode, now: float) -> None:
    """Let ``node`` learn ``peer`` as neighbour and its registrations."""
    for _ in range(3):
        for dgram in peer.to_send(now):
            node.receive(dgram.data, PEER_LINK, now)
        now += 0.25
        t = peer.next_timer()
        if t is not None and t <= now:
            peer.on_timer(now)


# ---------------------------------------------------------------------- gateway station
class CheckingEdge:
    """The :class:`~meshcomm.node.pump.Edge` of a fuzzed station: what the pump hands
    over goes nowhere (writes succeed), except that every journal record must be storable
    as it is (the cores normalise what comes from the wire: the LocalProtocolError of
    ``normalize_data`` is a crash)."""

    def transmit(self, dgram: Datagram) -> None:
        pass

    def store(self, batch: list[SfPersist]) -> bool:
        return True

    def store_freshness(self, updates: FreshnessUpdates) -> bool:
        return True

    def record(self, record: JournalRecord) -> None:
        normalize_data(record.data)

    def to_client(self, dgram: LocalDatagram) -> None:
        pass

    def to_client_media(self, packet: ClientPacket) -> None:
        pass

    def dht(self, op: DhtOp) -> None:
        pass

    def other(self, event: object) -> None:
        pass

    def arm(self, deadline: float | None) -> None:
        pass


@dataclass
class Station:
    """A whole node (NodeCore) driven through the one pump on a :class:`CheckingEdge`."""

    core: NodeCore
    pump: Pump
    peer: MeshNode

    @property
    def gateway(self) -> SipGateway:
        assert self.core.gateway is not None
        return self.core.gateway

    @property
    def sf(self) -> StoreForward:
        assert self.core.sf is not None
        return self.core.sf


def station(*, verifier: SignatureVerifier | None = None) -> Station:
    """A relay node's whole stack (:func:`~meshcomm.node.core.compose`): MeshNode +
    SipGateway with store-and-forward as its holder and the media relay; a peer node
    (bob) known through its binding, and a local client (alice) registered at CLIENT."""
    node = mesh_node("gw", verifier=verifier, role="relay")
    peer = mesh_node("peer")
    peer.register(f"sip:bob@{DOMAIN}", (f"sip:bob@{DOMAIN}",), 0.0)
    feed_peer_bindings(node, peer, 0.0)
    relay = MediaRelay(identity("gw"), SequentialPortAllocator("127.0.0.1", 20000, 20020),
                       random.Random(3), MediaConfig())
    sf = StoreForward(node, StoreForwardConfig(), now=0.0)
    core = compose(node, gateway_config=GatewayConfig(), rng=random.Random(5),
                   node_aor=f"sip:gw@{DOMAIN}", now=0.0, sf=sf, relay=relay)
    st = Station(core, Pump(core, CheckingEdge()), peer)
    st.pump.sip(register_request("alice", CLIENT), CLIENT, 0.0)
    return st


def drain_station(st: Station, now: float) -> None:
    """After an input given to one part directly: move what it queued between the parts
    and out through the pump (every journal record is checked by the edge)."""
    st.pump.command(now, lambda: st.core.settle(now))


def sweep_timers(st: Station, now: float) -> None:
    """Fire the timers a little, a lot and much later (timeouts, expiries, linger)."""
    for later in TIMER_SWEEP_S:
        st.pump.timer(now + later)


# ---------------------------------------------------------------------- SIP messages
def register_request(user: str, addr: Address) -> bytes:
    host, port = addr
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-reg-{user}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=r{user}\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: reg-{user}@{host}\r\n"
            f"CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{host}:{port}>\r\n"
            f"Expires: 3600\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def client_sdp(address: str, port: int) -> bytes:
    lines = ["v=0", f"o=- 1234 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0",
             f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def request(method: str, to_user: str, from_user: str, addr: Address, *, call_id: str,
            cseq: int = 1, body: bytes = b"", content_type: str | None = None,
            branch: str | None = None, extra: str = "") -> bytes:
    host, port = addr
    ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (f"{method} sip:{to_user}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK-' + call_id}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{from_user}@{DOMAIN}>;tag=f{from_user}\r\n"
            f"To: <sip:{to_user}@{DOMAIN}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{from_user}@{host}:{port}>\r\n"
            f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n").encode() + body


def response_to(req: bytes, status: int, reason: str, *, to_tag: str = "fz",
                body: bytes = b"", content_type: str | None = None) -> bytes:
    """A response to ``req`` made by copying its dialog headers (RFC 3261 §8.2.6.2)."""
    head = req.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    keep = []
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append(line)
        elif name in ("to", "t"):
            keep.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    ctype = [f"Content-Type: {content_type}"] if content_type else []
    lines = [f"SIP/2.0 {status} {reason}", *keep,
             f"Contact: <sip:fz@{CLIENT[0]}:{CLIENT[1]}>", *ctype,
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def sip_vectors() -> list[bytes]:
    files = sorted(p for p in SIP_VECTORS.rglob("*") if p.suffix in (".dat", ".sip"))
    return [p.read_bytes() for p in files]


def gateway_seeds(mesh: bool) -> list[bytes]:
    """Requests and dialog sequences as a local client (or a peer gateway) would send."""
    addr: Address = CLIENT if not mesh else ("198.51.100.7", 5060)
    src, dst = ("alice", "bob") if not mesh else ("bob", "alice")
    sdp = client_sdp(addr[0], 40000)
    if mesh:    # as the peer's gateway sends it: rewritten by its media relay (key, nonce)
        peer_relay = MediaRelay(identity("peer"),
                                SequentialPortAllocator("198.51.100.7", 20000, 20010),
                                random.Random(4))
        sdp = peer_relay.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "c1", sdp, 0.0)
    invite = request("INVITE", dst, src, addr, call_id="c1", body=sdp,
                     content_type="application/sdp")
    ack = request("ACK", dst, src, addr, call_id="c1", branch="z9hG4bK-ack")
    bye = request("BYE", dst, src, addr, call_id="c1", cseq=2, branch="z9hG4bK-bye")
    cancel = request("CANCEL", dst, src, addr, call_id="c1", branch="z9hG4bK-c1")
    message = request("MESSAGE", dst, src, addr, call_id="m1", body=b"hello",
                      content_type="text/plain")
    to_absent = request("MESSAGE", "carol", src, addr, call_id="m2", body=b"held?",
                        content_type="text/plain")
    subscribe = request("SUBSCRIBE", dst, src, addr, call_id="s1",
                        extra="Event: presence\r\nExpires: 600\r\n")
    options = request("OPTIONS", "gw", src, addr, call_id="o1")
    seeds = [invite, message, to_absent, subscribe, options,
             join_messages(invite, ack, bye), join_messages(invite, cancel),
             join_messages(invite, response_to(invite, 180, "Ringing"),
                           response_to(invite, 200, "OK", body=sdp,
                                       content_type="application/sdp"), ack, bye),
             join_messages(message, response_to(message, 200, "OK")),
             register_request("dave", addr)]
    return seeds + sip_vectors()


# ---------------------------------------------------------------------- user agent
@dataclass
class UaSetup:
    ua: UserAgent
    sent: list[bytes]


UA_ADDR: Address = ("127.0.0.1", 5080)


def user_agent() -> UaSetup:
    """A UA that has an INVITE, a SUBSCRIBE and a MESSAGE outstanding (deterministic rng)."""
    ua = UserAgent(UaConfig(aor=f"sip:alice@{DOMAIN}", local_host=UA_ADDR[0],
                            local_port=UA_ADDR[1], outbound_proxy=("127.0.0.1", 5060)),
                   random.Random(11))
    ua.invite(f"sip:bob@{DOMAIN}", parse_sdp_untrusted(client_sdp(UA_ADDR[0], 41000)))
    ua.subscribe(f"sip:bob@{DOMAIN}")
    ua.message(f"sip:bob@{DOMAIN}", "hi")
    sent = [d.data for d in ua.to_send(0.0)]
    while ua.next_event() is not None:
        pass
    return UaSetup(ua, sent)


def ua_seeds() -> list[bytes]:
    setup = user_agent()
    sdp = client_sdp("127.0.0.1", 42000)
    seeds: list[bytes] = []
    for req in setup.sent:
        seeds.append(response_to(req, 100, "Trying"))
        seeds.append(response_to(req, 180, "Ringing"))
        seeds.append(response_to(req, 200, "OK", body=sdp, content_type="application/sdp")
                     if req.startswith(b"INVITE") else response_to(req, 200, "OK"))
        seeds.append(response_to(req, 486, "Busy Here"))
    invite = request("INVITE", "alice", "bob", ("127.0.0.1", 5060), call_id="in1", body=sdp,
                     content_type="application/sdp")
    seeds.append(join_messages(invite, request("ACK", "alice", "bob", ("127.0.0.1", 5060),
                                               call_id="in1", branch="z9hG4bK-a")))
    seeds.append(join_messages(invite, request("CANCEL", "alice", "bob",
                                               ("127.0.0.1", 5060), call_id="in1",
                                               branch="z9hG4bK-in1")))
    return seeds + sip_vectors()


# ---------------------------------------------------------------------- media relay
@dataclass
class RelayPair:
    a: MediaRelay
    b: MediaRelay
    call_id: str


RELAY_CALL = "call-1@fuzz"


def relay_pair() -> RelayPair:
    """Two gateways' relays with one keyed call between them (a's client called b's)."""
    a = MediaRelay(identity("relay-a"), SequentialPortAllocator("127.0.0.1", 30000, 30100),
                   random.Random(1))
    b = MediaRelay(identity("relay-b"), SequentialPortAllocator("127.0.0.1", 31000, 31100),
                   random.Random(2))
    on_mesh = a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, RELAY_CALL, client_sdp("127.0.0.1", 40000),
                            0.0)
    b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, RELAY_CALL, on_mesh, 0.0)
    answer = b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, RELAY_CALL, client_sdp("127.0.0.1", 50000),
                           0.0)
    a.rewrite_sdp(SdpPath.MESH_TO_CLIENT, RELAY_CALL, answer, 0.0)
    return RelayPair(a, b, RELAY_CALL)


def rtp_packet(seq: int, ssrc: int = 0x1234) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc)
    return header + bytes(160)


def rtcp_rr(ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def relay_mesh_payloads() -> list[MeshMedia]:
    """What a's relay sends over the mesh to b for a few RTP and RTCP packets."""
    pair = relay_pair()
    out = []
    for seq in range(4):
        media = pair.a.from_client(pair.call_id, 0, Channel.RTP, rtp_packet(seq), 1.0)
        if media is not None:
            out.append(media)
    rtcp = pair.a.from_client(pair.call_id, 0, Channel.RTCP, rtcp_rr(), 1.0)
    if rtcp is not None:
        out.append(rtcp)
    return out


def mesh_unicast(origin: MeshNode, kind: int, body: bytes, seq: int = 1) -> UnicastReceived:
    return UnicastReceived(NodeId(origin.node_id), bytes(origin.identity.public_key), kind, body,
                           1, seq)


def datagrams(items: list[Datagram]) -> list[bytes]:
    return [d.data for d in items]
