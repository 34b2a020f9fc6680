"""Simulated SIP clients: the project's own :class:`~meshcomm.sip.ua.UserAgent` acting as
the softphone of a simulated node, attached to that node's gateway.

A client registers its node's AoR with its gateway once the mesh has formed, sends
MESSAGEs and places calls when the traffic plan says so (INVITE with an SDP offer; the
callee's client answers with an SDP answer at once), then sends a media frame every
:data:`FRAME_INTERVAL_S` to the gateway's call port named in the SDP it was given, both
ways, until the caller hangs up (BYE) after the call's duration.

Nothing is assumed delivered: every MESSAGE carries its traffic id in its body and every
media frame its call id, direction and sequence number (an RTP header: SSRC =
``2 * call key + direction``), so :class:`TrafficStats` counts deliveries, duplicates and
losses from what the far clients actually received. A call's key travels as the session
id of its SDP (``o=`` line), which the gateways pass on unchanged.

The client is a sans-IO core like the node: the simulator moves its datagrams to and
from the node's pump and keeps its one timer in the event heap.

:class:`ClientMedia` lets a test choose what the clients offer and send in their calls (a
codec policy, a frame source called at each 20-ms tick) and see every packet a client gets
from its gateway, with its virtual time (a tap); the default is the CLI's.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from meshcomm.errors import DecodeError
from meshcomm.media.session import ClientPacket
from meshcomm.node.gateway.types import Address, LocalDatagram
from meshcomm.sim.metrics import SimCounter, percentile
from meshcomm.sip.sdp import (
    AudioPolicy,
    NotAcceptable,
    SessionDescription,
    answer_offer,
    make_offer,
)
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEstablished,
    CallHandle,
    IncomingCall,
    IncomingMessage,
    RequestFailed,
    RequestHandle,
    RequestSucceeded,
    UaConfig,
    UaEvent,
)

#: The SIP domain of the simulated incident (every AoR is ``sip:<node>@DOMAIN``).
DOMAIN = "incident.local"
#: Where the node's gateway listens for its clients (GatewayConfig's defaults).
GATEWAY_ADDR: Address = ("127.0.0.1", 5060)
#: The softphone's SIP address on its device.
CLIENT_ADDR: Address = ("127.0.0.1", 5070)
#: The softphone's first RTP port; each call takes the next even port.
CLIENT_FIRST_RTP_PORT = 40000
CLIENT_RTP_PORTS = 1000
#: One media frame every 20 ms each way (a 20 ms Opus packet).
FRAME_INTERVAL_S = 0.02
FRAME_PAYLOAD_BYTES = 40
#: RTP header: V=2, payload type 111 (dynamic, Opus), sequence, timestamp, SSRC.
_RTP = struct.Struct("!BBHII")
_RTP_VERSION_BYTE = 0x80
_OPUS_PT = 111
_SAMPLES_PER_FRAME = 960
MESSAGE_PREFIX = "meshcomm-sim message "
REGISTER_EXPIRES_S = 3600
#: Traffic ids are bounded so the counters of a run stay bounded too.
MAX_TRAFFIC_IDS = 1 << 20


class Direction(Enum):
    """Of a call's media: caller to callee, callee to caller."""

    FORWARD = 0
    BACKWARD = 1


@dataclass(slots=True)
class MessageRecord:
    key: int
    src: str
    dst: str
    sent_at: float
    outcome: int | None = None          # final status the sender's client got
    received_at: list[float] = field(default_factory=list)


@dataclass(slots=True)
class CallRecord:
    key: int
    src: str
    dst: str
    attempted_at: float
    duration_s: float
    established_at: float | None = None
    answered: bool = False
    ended_status: int | None = None
    bye_status: int | None = None        # final status the caller's BYE got
    sent: list[int] = field(default_factory=lambda: [0, 0])
    received: list[set[int]] = field(default_factory=lambda: [set(), set()])
    duplicate_frames: int = 0


#: Makes the frame a client sends at a 20-ms tick of a call: (the call, the direction the
#: client sends in, the RTP sequence number the frame takes, now) -> the datagram, or None
#: for silence (nothing sent this tick; the sequence number is not used). The client counts
#: what it receives per call by SSRC ``2 * call key + direction``, as :func:`rtp_frame`
#: builds it: a source whose frames should be counted uses that SSRC.
MediaSource = Callable[[CallRecord, Direction, int, float], bytes | None]
#: Sees every media packet a client gets from its gateway: (client name, packet, now).
MediaTap = Callable[[str, ClientPacket, float], None]


@dataclass(frozen=True, slots=True)
class ClientMedia:
    """What the simulated clients offer and send in calls, and who watches what they
    receive (set on the :class:`~meshcomm.sim.incident.Incident` before the run)."""

    #: the codecs a client offers and accepts (RFC 3264), in preference order
    policy: AudioPolicy = field(default_factory=AudioPolicy)
    #: None: :func:`rtp_frame` frames
    source: MediaSource | None = None
    tap: MediaTap | None = None


@dataclass(slots=True)
class TrafficStats:
    """What the simulated clients sent and what reached the far clients, per id."""

    messages: dict[int, MessageRecord] = field(default_factory=dict)
    calls: dict[int, CallRecord] = field(default_factory=dict)
    #: planned traffic that could not start (its client's node was down or unregistered)
    skipped: int = 0
    registrations: int = 0
    stray_frames: int = 0
    #: planned MESSAGEs that reached a node's built-in UA instead of its client
    to_builtin_ua: int = 0

    def to_node_inbox(self, body: bytes) -> None:
        if body.startswith(MESSAGE_PREFIX.encode()):
            self.to_builtin_ua += 1

    def report(self) -> dict[str, object]:
        return {"messages": self._messages(), "calls": self._calls()}

    def _messages(self) -> dict[str, object]:
        recs = list(self.messages.values())
        latency = [r.received_at[0] - r.sent_at for r in recs if r.received_at]
        return {
            "sent": len(recs),
            "delivered": sum(1 for r in recs if r.received_at),
            "duplicates": sum(max(0, len(r.received_at) - 1) for r in recs),
            "held": sum(1 for r in recs if r.outcome == 202),
            "failed": sum(1 for r in recs if r.outcome is not None and r.outcome >= 300),
            "pending_at_end": sum(1 for r in recs if _pending(r)),
            "latency_s": {"p50": round(percentile(latency, 0.5), 4),
                          "p95": round(percentile(latency, 0.95), 4),
                          "max": round(max(latency, default=0.0), 4)},
            "skipped": self.skipped,
            "to_node_inbox": self.to_builtin_ua,
        }

    def _calls(self) -> dict[str, object]:
        recs = list(self.calls.values())
        setup = [r.established_at - r.attempted_at for r in recs
                 if r.established_at is not None]
        sent = sum(sum(r.sent) for r in recs)
        received = sum(len(s) for r in recs for s in r.received)
        return {
            "attempted": len(recs),
            "established": len(setup),
            "setup_s": {"p50": round(percentile(setup, 0.5), 4),
                        "p95": round(percentile(setup, 0.95), 4)},
            "media_both_ways": sum(1 for r in recs if all(r.received)),
            "media_frames_sent": sent,
            "media_frames_received": received,
            "media_frames_lost": sent - received,
            "media_frames_duplicated": sum(r.duplicate_frames for r in recs),
        }


def _pending(record: MessageRecord) -> bool:
    """Not delivered when the run ended, yet not lost: held by store-and-forward (202),
    or still waiting for its final answer. A run too short for a retry reports it here,
    never as failed."""
    return not record.received_at and (record.outcome is None or record.outcome == 202)


def rtp_frame(key: int, direction: Direction, seq: int) -> bytes:
    """A media frame of call ``key``: an RTP header naming it, then a fixed payload."""
    header = _RTP.pack(_RTP_VERSION_BYTE, _OPUS_PT, seq & 0xFFFF,
                       (seq * _SAMPLES_PER_FRAME) & 0xFFFFFFFF, 2 * key + direction.value)
    return header + bytes(FRAME_PAYLOAD_BYTES)


def parse_frame_untrusted(data: bytes) -> tuple[int, Direction, int]:
    """(call key, direction, sequence) of a frame made by :func:`rtp_frame`."""
    if len(data) < _RTP.size:
        raise DecodeError("media frame shorter than an RTP header", reason="short_frame")
    first, _pt, seq, _ts, ssrc = _RTP.unpack_from(data)
    if first != _RTP_VERSION_BYTE:
        raise DecodeError("not an RTP frame of the simulator", reason="bad_frame")
    return ssrc >> 1, Direction(ssrc & 1), seq


@dataclass(slots=True)
class ClientCall:
    record: CallRecord
    handle: CallHandle
    direction: Direction                 # the direction this client sends in
    gateway_port: int | None = None      # the gateway's call port this client sends to
    seq: int = 0
    live: bool = True
    relay_call_id: str | None = None     # the gateway's call behind gateway_port


class SimClient:
    """One softphone (see the module docstring). ``wake`` asks the simulator to move the
    client's datagrams soon (called when a datagram from the gateway arrived)."""

    def __init__(self, name: str, aor: str, rng: random.Random, stats: TrafficStats,
                 wake: Callable[[], None], media: ClientMedia | None = None) -> None:
        self.name = name
        self.aor = aor
        self.stats = stats
        self.wake = wake
        self.media = media or ClientMedia()
        self.ua = UserAgent(UaConfig(aor=aor, local_host=CLIENT_ADDR[0],
                                     local_port=CLIENT_ADDR[1], outbound_proxy=GATEWAY_ADDR,
                                     register_expires_s=REGISTER_EXPIRES_S), rng)
        self.registered = False
        self._register: RequestHandle | None = None
        self._messages: dict[RequestHandle, MessageRecord] = {}
        self._byes: dict[RequestHandle, CallRecord] = {}
        self._calls: dict[CallHandle, ClientCall] = {}
        self._next_port = CLIENT_FIRST_RTP_PORT
        #: calls whose media must start (the simulator schedules their frames)
        self.media_starts: list[ClientCall] = []
        self.timer_gen = 0
        self.armed_at: float | None = None
        self.flush_pending = False
        self.counters: Counter[SimCounter] = Counter()

    # ------------------------------------------------------------ commands
    def register(self) -> None:
        self._register = self.ua.register(expires_s=REGISTER_EXPIRES_S)

    def send_message(self, record: MessageRecord, to_aor: str) -> None:
        handle = self.ua.message(to_aor, f"{MESSAGE_PREFIX}{record.key} from {self.name}")
        self._messages[handle] = record

    def call(self, record: CallRecord, to_aor: str) -> None:
        offer = make_offer(address=CLIENT_ADDR[0], rtp_port=self._port(),
                           session_id=record.key, policy=self.media.policy)
        handle = self.ua.invite(to_aor, offer)
        self._calls[handle] = ClientCall(record, handle, Direction.FORWARD)

    def hang_up(self, call: ClientCall) -> None:
        if call.live:
            call.live = False
            self._byes[self.ua.bye(call.handle)] = call.record

    def _port(self) -> int:
        port = self._next_port
        self._next_port += 2
        if self._next_port >= CLIENT_FIRST_RTP_PORT + CLIENT_RTP_PORTS:
            self._next_port = CLIENT_FIRST_RTP_PORT
        return port

    # ------------------------------------------------------------ from the gateway
    def from_gateway(self, dgram: LocalDatagram, now: float) -> None:
        if dgram.dest != CLIENT_ADDR:
            self.counters[SimCounter.SIP_NOT_FOR_CLIENT] += 1
            return
        self.ua.receive(dgram.data, GATEWAY_ADDR, now)
        self.wake()

    def from_gateway_media(self, packet: ClientPacket, now: float) -> None:
        if self.media.tap is not None:
            self.media.tap(self.name, packet, now)
        try:
            key, direction, seq = parse_frame_untrusted(packet.data)
        except DecodeError:
            self.counters[SimCounter.UNDECODABLE_FRAMES] += 1
            return
        record = self.stats.calls.get(key)
        if record is None:
            self.stats.stray_frames += 1
            return
        got = record.received[direction.value]
        if seq in got:
            record.duplicate_frames += 1
        got.add(seq)

    # ------------------------------------------------------------ driving
    def take_outgoing(self, now: float) -> list[bytes]:
        """Handle the UA's events and collect what it sends to the gateway."""
        out: list[bytes] = []
        for _ in range(8):
            self._handle_events(now)
            sent = self.ua.to_send(now)
            if not sent:
                break
            out.extend(d.data for d in sent)
        self._handle_events(now)
        return out

    def next_frame(self, call: ClientCall, now: float) -> bytes | None:
        """The frame ``call`` sends at this tick, or None (silence: nothing to send)."""
        seq = call.seq + 1
        source = self.media.source
        frame = (rtp_frame(call.record.key, call.direction, seq) if source is None
                 else source(call.record, call.direction, seq, now))
        if frame is not None:
            call.seq = seq
            call.record.sent[call.direction.value] += 1
        return frame

    def _handle_events(self, now: float) -> None:
        while (event := self.ua.next_event()) is not None:
            self._on_event(event, now)

    def _on_event(self, event: UaEvent, now: float) -> None:
        if isinstance(event, RequestSucceeded | RequestFailed):
            self._on_outcome(event, now)
        elif isinstance(event, IncomingMessage):
            self._on_message(event, now)
        elif isinstance(event, IncomingCall):
            self._on_incoming_call(event, now)
        elif isinstance(event, CallEstablished):
            self._on_established(event, now)
        elif isinstance(event, CallEnded):
            call = self._calls.pop(event.call, None)
            if call is not None:
                call.live = False
                if call.direction is Direction.FORWARD:
                    call.record.ended_status = event.status

    def _on_outcome(self, event: RequestSucceeded | RequestFailed, now: float) -> None:
        if event.request == self._register:
            if isinstance(event, RequestSucceeded) and not self.registered:
                self.registered = True
                self.stats.registrations += 1
            return
        record = self._messages.pop(event.request, None)
        if record is not None:
            record.outcome = event.status
        call = self._byes.pop(event.request, None)
        if call is not None:
            call.bye_status = event.status

    def _on_message(self, event: IncomingMessage, now: float) -> None:
        text = event.body.decode("utf-8", "replace")
        if not text.startswith(MESSAGE_PREFIX):
            return
        key_text = text.removeprefix(MESSAGE_PREFIX).partition(" ")[0]
        record = self.stats.messages.get(int(key_text)) if key_text.isdigit() else None
        if record is not None:
            record.received_at.append(now)

    def _on_incoming_call(self, event: IncomingCall, now: float) -> None:
        offer = event.offer
        key = _call_key(offer)
        record = self.stats.calls.get(key) if key is not None else None
        if offer is None or record is None:
            self.ua.reject(event.call, 488)
            return
        result = answer_offer(offer, address=CLIENT_ADDR[0], rtp_port=self._port(),
                              session_id=record.key, policy=self.media.policy)
        if isinstance(result, NotAcceptable):
            self.ua.reject(event.call, 488)
            return
        call = ClientCall(record, event.call, Direction.BACKWARD, _media_port(offer))
        self._calls[event.call] = call
        record.answered = True
        self.ua.answer(event.call, result[0])

    def _on_established(self, event: CallEstablished, now: float) -> None:
        call = self._calls.get(event.call)
        if call is None:
            return
        if call.direction is Direction.FORWARD:
            call.gateway_port = _media_port(event.remote_sdp)
            if call.record.established_at is None:
                call.record.established_at = now
        self.media_starts.append(call)


def _call_key(sdp: SessionDescription | None) -> int | None:
    if sdp is None or not sdp.origin.session_id.isdigit():
        return None
    key = int(sdp.origin.session_id)
    return key if key < MAX_TRAFFIC_IDS else None


def _media_port(sdp: SessionDescription | None) -> int | None:
    if sdp is None or not sdp.media or sdp.media[0].port == 0:
        return None
    return sdp.media[0].port
