"""The fuzz targets: one entry function per place that reads untrusted bytes.

An entry function takes one input (bytes) and raises only on a bug:

* decoders (``*_untrusted``): any exception other than DecodeError escapes (the documented
  exception of the contract, ARCHITECTURE.md rule 6);
* ``receive``-style entry points: any exception at all escapes (they must count and drop).

Each target also names its seeds: inputs built with the project's own encoders, the SIP
test vectors and recorded client traffic.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from meshcomm.errors import DecodeError
from meshcomm.journal.chain import JournalChain
from meshcomm.journal.codec import canonical_data_untrusted, decode_data_untrusted
from meshcomm.journal.store import decode_row_untrusted
from meshcomm.location.binding import binding_from_envelope_untrusted
from meshcomm.media.keys import parse_nonce_untrusted
from meshcomm.media.packet import Channel, decode_media_untrusted, open_media_untrusted
from meshcomm.media.relay import MediaSetupError, SdpPath
from meshcomm.media.sdp_rewrite import parse_body_untrusted, peer_media_untrusted
from meshcomm.node.kinds import AppKind
from meshcomm.node.storage import decode_delivered_row_untrusted, decode_held_row_untrusted
from meshcomm.node.storeforward_wire import (
    SfMsgType,
    decode_message_untrusted,
    decode_parcel_untrusted,
    decode_receipt_untrusted,
    encode_message,
    make_parcel,
    make_receipt,
)
from meshcomm.overlay import media as overlay_media
from meshcomm.runtime.control import ControlCommand, decode_request_untrusted
from meshcomm.runtime.sipgw import FramingError, content_length_untrusted
from meshcomm.security.credentials import decode_credential_untrusted, issue_credential
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.message import parse_message_untrusted
from meshcomm.sip.msg_headers import (
    parse_cseq_untrusted,
    parse_name_addr_list_untrusted,
    parse_name_addr_untrusted,
    parse_via_untrusted,
    parse_vias_untrusted,
)
from meshcomm.sip.presence import parse_pidf_untrusted
from meshcomm.sip.sdp import parse_sdp_untrusted
from meshcomm.sip.uri import parse_uri_untrusted
from meshcomm.wire import codec
from meshcomm.wire.envelope import MsgType, decode_signed_untrusted, parse_frame_untrusted
from radios.ether import decode_frame_untrusted as ether_decode_frame_untrusted
from radios.ether import encode_frame as ether_encode_frame
from tools.fuzz import harness as h
from tools.fuzz.pump import runtime_pump, runtime_pump_seeds

Entry = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    entry: Entry
    seeds: Callable[[], list[bytes]]
    contract: str


# ====================================================================== wire / security
def wire_frame(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.unpack_untrusted(data)
    try:
        frame, _hop = parse_frame_untrusted(data)
        env = frame.resolve("fuzz", frame.origin_key or bytes(32))
    except DecodeError:
        return
    try:
        decode_signed_untrusted(env.signed_bytes, env.signature)
        if env.msg_type is MsgType.BINDING:
            binding = binding_from_envelope_untrusted(env)
            if binding.credential is not None:
                decode_credential_untrusted(binding.credential)
    except DecodeError:
        pass


def credential(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_credential_untrusted(data)


def credential_seeds() -> list[bytes]:
    agency, device = h.identity("agency"), h.identity("device")
    cred = issue_credential(agency, aor_pattern=f"sip:*@{h.DOMAIN}", role="medic",
                            device_key=bytes(device.public_key), issued_at=1_700_000_000,
                            expires_at=1_800_000_000)
    return [codec.pack([cred.signed_bytes, cred.signature])]


# ====================================================================== overlay
def _overlay_receive(verifier_factory: Callable[[], SignatureVerifier]) -> Entry:
    def entry(data: bytes) -> None:
        node = h.mesh_node("fuzzed", verifier=verifier_factory())
        h.drive(node, h.split_messages(data), h.PEER_LINK, 0.5)
    return entry


@cache
def overlay_seeds() -> list[bytes]:
    frames = h.overlay_frames()
    return frames + [h.join_messages(*frames[i:i + 3]) for i in range(0, len(frames), 7)]


def overlay_media_decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        overlay_media.decode_media_untrusted(data)


def overlay_media_seeds() -> list[bytes]:
    return [f for f in overlay_seeds() if f[:1] in overlay_media.MEDIA_MARKERS]


# ====================================================================== gateway
def gateway_local(data: bytes) -> None:
    st = h.station()
    now = 1.0
    for msg in h.split_messages(data):
        st.pump.sip(msg, h.CLIENT, now)
        now += h.MESSAGE_SPACING_S
    h.sweep_timers(st, now)


def gateway_mesh(data: bytes) -> None:
    st = h.station()
    now = 1.0
    for msg in h.split_messages(data):
        st.gateway.receive_mesh(st.peer.node_id, msg, 2, now)
        h.drain_station(st, now)
        now += h.MESSAGE_SPACING_S
    h.sweep_timers(st, now)


# ====================================================================== store-and-forward
def storeforward_mesh(data: bytes) -> None:
    st = h.station()
    now = 1.0
    for seq, body in enumerate(h.split_messages(data)):
        st.sf.on_mesh(h.mesh_unicast(st.peer, AppKind.STORE_FORWARD, body, seq), now)
        h.drain_station(st, now)
        now += h.MESSAGE_SPACING_S
    h.sweep_timers(st, now)


def _parcel(sender: str = "peer") -> tuple[bytes, bytes, bytes]:
    ident = h.identity(sender)
    parcel = make_parcel(ident, incident="default", msg_id=b"m" * 16,
                         from_aor=f"sip:bob@{h.DOMAIN}", to_aor=f"sip:alice@{h.DOMAIN}",
                         created_wall_s=h.WALL_OFFSET_S, sip=h.request(
                             "MESSAGE", "alice", "bob", h.CLIENT, call_id="sf1", body=b"hi",
                             content_type="text/plain"))
    return parcel.msg_id, parcel.signed, parcel.signature


@cache
def sf_message_seeds() -> list[bytes]:
    msg_id, signed, signature = _parcel()
    gw = h.identity("gw")
    receipt = make_receipt(gw, incident="default", msg_id=msg_id,
                           to_aor=f"sip:alice@{h.DOMAIN}", delivered_wall_s=h.WALL_OFFSET_S)
    offer = encode_message(SfMsgType.OFFER, signed, signature)
    deliver = encode_message(SfMsgType.DELIVER, signed, signature)
    accept = encode_message(SfMsgType.ACCEPT, msg_id)
    rcpt = encode_message(SfMsgType.RECEIPT, receipt.signed, receipt.signature)
    return [offer, deliver, accept, rcpt, h.join_messages(offer, deliver),
            h.join_messages(deliver, rcpt), h.join_messages(offer, accept, rcpt)]


def sf_wire(data: bytes) -> None:
    try:
        msg = decode_message_untrusted(data)
    except DecodeError:
        return
    for decode in (decode_parcel_untrusted, decode_receipt_untrusted):
        with contextlib.suppress(DecodeError):
            decode(msg.blob, msg.signature)


def sf_rows(data: bytes) -> None:
    args = h.unpack_args(data, 6)
    if args is not None:
        with contextlib.suppress(DecodeError):
            decode_held_row_untrusted(args)
    one = h.unpack_args(data, 1)
    if one is not None:
        with contextlib.suppress(DecodeError):
            decode_delivered_row_untrusted(one)


def sf_row_seeds() -> list[bytes]:
    msg_id, signed, signature = _parcel()
    return [h.pack_args(msg_id, signed, signature, 1, "held", "self"),
            h.pack_args(msg_id, signed, signature, 0, "delivered", "ab" * 32),
            h.pack_args(msg_id)]


# ====================================================================== media
def relay_mesh(data: bytes) -> None:
    """First byte picks the stream (the call's own, or the rest of the input's first 8
    bytes); the rest is the payload of a MediaReceived for b's relay."""
    pair = h.relay_pair()
    known = h.relay_mesh_payloads()
    if not data:
        return
    stream = known[0].stream if data[0] & 1 else data[1:9]
    for payload in h.split_messages(data[1:]):
        pair.b.from_mesh(pair.a.node_id, stream, payload, 1.0)
    pair.b.on_timer(1000.0)
    while pair.b.next_event() is not None:
        pass


def relay_mesh_seeds() -> list[bytes]:
    payloads = [m.payload for m in h.relay_mesh_payloads()]
    return [b"\x01" + p for p in payloads] + [b"\x01" + h.join_messages(*payloads)]


def relay_client(data: bytes) -> None:
    """First byte: bit 0 the channel (RTP/RTCP), bit 1 the m-line index (0 or 1)."""
    pair = h.relay_pair()
    if not data:
        return
    channel = Channel.RTCP if data[0] & 1 else Channel.RTP
    index = (data[0] >> 1) & 1
    for packet in h.split_messages(data[1:]):
        pair.a.from_client(pair.call_id, index, channel, packet, 1.0)
    pair.a.on_timer(1000.0)
    while pair.a.next_event() is not None:
        pass


def relay_client_seeds() -> list[bytes]:
    rtp = [h.rtp_packet(i) for i in range(3)]
    return [b"\x00" + p for p in rtp] + [b"\x01" + h.rtcp_rr(), b"\x00" + h.join_messages(*rtp)]


def relay_sdp(data: bytes) -> None:
    """The SDP hook with an SDP body from the mesh (first byte odd) or the client."""
    pair = h.relay_pair()
    if not data:
        return
    path = SdpPath.MESH_TO_CLIENT if data[0] & 1 else SdpPath.CLIENT_TO_MESH
    for i, body in enumerate(h.split_messages(data[1:])):
        call_id = pair.call_id if data[0] & 2 else f"new-{i}"
        with contextlib.suppress(DecodeError, MediaSetupError):
            pair.b.rewrite_sdp(path, call_id, body, 1.0)


def relay_sdp_seeds() -> list[bytes]:
    pair = h.relay_pair()
    offer = pair.a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "x", h.client_sdp("127.0.0.1", 40002))
    return [b"\x01" + offer, b"\x03" + offer, b"\x00" + h.client_sdp("127.0.0.1", 40004)]


def media_packet(data: bytes) -> None:
    for decode in (decode_media_untrusted,
                   lambda p: open_media_untrusted(b"k" * 32, b"s" * 8, p)):
        with contextlib.suppress(DecodeError):
            decode(data)


# ====================================================================== SIP
def ua_receive(data: bytes) -> None:
    h.drive(h.user_agent().ua, h.split_messages(data), ("127.0.0.1", 5060), 0.2)


def sip_message(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_message_untrusted(data)


def sip_sdp(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_sdp_untrusted(data)
    for from_mesh in (False, True):
        with contextlib.suppress(DecodeError):
            peer_media_untrusted(parse_body_untrusted(data, from_mesh=from_mesh))


def sdp_seeds() -> list[bytes]:
    seeds = [h.client_sdp("127.0.0.1", 4000)]
    pair = h.relay_pair()
    seeds.append(pair.a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "y", h.client_sdp("::1", 4002)))
    for msg in h.sip_vectors():
        _head, sep, body = msg.partition(b"\r\n\r\n")
        if sep and body.startswith(b"v=0"):
            seeds.append(body)
    return seeds


def sip_pidf(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_pidf_untrusted(data)


def pidf_seeds() -> list[bytes]:
    return [(b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@incident.local">'
             b'<tuple id="t1"><status><basic>open</basic></status>'
             b'<note>on scene</note></tuple></presence>')]


_HEADER_PARSERS: tuple[Callable[[str], object], ...] = (
    parse_uri_untrusted, parse_name_addr_untrusted, parse_via_untrusted, parse_cseq_untrusted,
    lambda t: parse_vias_untrusted(t.split("\n")),
    lambda t: parse_name_addr_list_untrusted(t.split("\n")),
    parse_nonce_untrusted,
)


def sip_headers(data: bytes) -> None:
    """First byte picks the parser; the rest is the header value (decoded as the message
    parser decodes heads: UTF-8 with surrogateescape)."""
    if not data:
        return
    parse = _HEADER_PARSERS[data[0] % len(_HEADER_PARSERS)]
    with contextlib.suppress(DecodeError):
        parse(data[1:].decode("utf-8", "surrogateescape"))


def header_seeds() -> list[bytes]:
    values = [b"sip:alice@incident.local;transport=udp", b'"Al" <sip:alice@[::1]:5060>;tag=x',
              b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport", b"314159 INVITE",
              b"SIP/2.0/UDP a;branch=z9hG4bKa\nSIP/2.0/TCP b:5;branch=z9hG4bKb",
              b"<sip:a@b>\n<sips:c@d;lr>", b"00112233445566778899aabbccddeeff"]
    return [bytes([i]) + v for i, v in enumerate(values)]


def sip_framing(data: bytes) -> None:
    with contextlib.suppress(DecodeError, FramingError):
        content_length_untrusted(data)


# ====================================================================== runtime / journal
def control_request(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_request_untrusted(data)


def control_seeds() -> list[bytes]:
    return [json.dumps({"cmd": c.value}).encode() for c in ControlCommand] + [
        b'{"cmd": "send", "to": "sip:bob@incident.local", "text": "hi", "wait_s": 2}',
        b'{"cmd": "inbox", "since": 3}']


def journal_row(data: bytes) -> None:
    row = h.unpack_args(data, 8)
    if row is None:
        return
    try:
        entry = decode_row_untrusted(row)
    except DecodeError:
        return
    with contextlib.suppress(DecodeError):
        canonical_data_untrusted(entry.data)


def journal_row_seeds() -> list[bytes]:
    chain = JournalChain(b"n" * 32)
    seeds = []
    samples: list[dict[str, object]] = [{"node": "ab", "role": "relay"},
                                         {"n": 1, "x": [1.5, None, b"z"]}, {}]
    for i, data in enumerate(samples):
        entry, data_bytes = chain.append_encoded("node_started", data, float(i), 1.7e9 + i)
        seeds.append(h.pack_args(entry.seq, entry.mono_s, entry.wall_s, entry.node_id,
                                 entry.type.encode(), data_bytes, entry.prev_hash,
                                 entry.entry_hash))
    return seeds


def journal_data(data: bytes) -> None:
    try:
        decoded = decode_data_untrusted(data)
    except DecodeError:
        return
    with contextlib.suppress(DecodeError):
        canonical_data_untrusted(decoded)


def journal_data_seeds() -> list[bytes]:
    return [bytes(h.unpack_args(s, 8)[5]) for s in journal_row_seeds()]  # type: ignore[index,arg-type]


# ====================================================================== radios
def radio_ether(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        ether_decode_frame_untrusted(data, 1500)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("wire_frame", wire_frame, overlay_seeds, "DecodeError only"),
    Target("credential", credential, credential_seeds, "DecodeError only"),
    Target("overlay_receive", _overlay_receive(SignatureVerifier), overlay_seeds,
           "MeshNode.receive: no exception"),
    Target("overlay_receive_nosig", _overlay_receive(h.AcceptAllVerifier), overlay_seeds,
           "MeshNode.receive, signatures accepted: no exception"),
    Target("overlay_media", overlay_media_decode, overlay_media_seeds, "DecodeError only"),
    Target("gateway_local", gateway_local, lambda: h.gateway_seeds(mesh=False),
           "SipGateway.receive_local: no exception"),
    Target("gateway_mesh", gateway_mesh, lambda: h.gateway_seeds(mesh=True),
           "SipGateway.receive_mesh: no exception"),
    Target("runtime_pump", runtime_pump, runtime_pump_seeds,
           "NodeDriver pump: nothing contained, journal takes every record, keeps answering"),
    Target("storeforward_mesh", storeforward_mesh, sf_message_seeds,
           "StoreForward.on_mesh: no exception"),
    Target("sf_wire", sf_wire, sf_message_seeds, "DecodeError only"),
    Target("sf_rows", sf_rows, sf_row_seeds, "DecodeError only"),
    Target("relay_mesh", relay_mesh, relay_mesh_seeds, "MediaRelay.from_mesh: no exception"),
    Target("relay_client", relay_client, relay_client_seeds,
           "MediaRelay.from_client: no exception"),
    Target("relay_sdp", relay_sdp, relay_sdp_seeds,
           "MediaRelay.rewrite_sdp: DecodeError or MediaSetupError only"),
    Target("media_packet", media_packet,
           lambda: [m.payload for m in h.relay_mesh_payloads()], "DecodeError only"),
    Target("ua_receive", ua_receive, h.ua_seeds, "UserAgent.receive: no exception"),
    Target("sip_message", sip_message, h.sip_vectors, "DecodeError only"),
    Target("sip_sdp", sip_sdp, sdp_seeds, "DecodeError only"),
    Target("sip_pidf", sip_pidf, pidf_seeds, "DecodeError only"),
    Target("sip_headers", sip_headers, header_seeds, "DecodeError only"),
    Target("sip_framing", sip_framing, lambda: [s.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
                                                for s in h.sip_vectors()],
           "DecodeError or FramingError (documented) only"),
    Target("control_request", control_request, control_seeds, "DecodeError only"),
    Target("journal_row", journal_row, journal_row_seeds, "DecodeError only"),
    Target("journal_data", journal_data, journal_data_seeds, "DecodeError only"),
    Target("radio_ether", radio_ether,
           lambda: [ether_encode_frame(f) for f in overlay_seeds()[:20]], "DecodeError only"),
)}

__all__ = ["TARGETS", "Target"]
