"""MediaRelay: every call's media at one gateway, and the gateway's SDP hook (sans-IO).

The SIP gateway calls :meth:`MediaRelay.rewrite_sdp` for every SDP body it passes
(INVITE, 18x/2xx, ACK, re-INVITE/UPDATE and their answers), and :meth:`MediaRelay.end_call`
when the dialog or the call attempt ends. The relay is a part of the node core
(:class:`meshcomm.node.core.NodeCore`): it feeds :meth:`from_client` with a client's
datagrams from the call's ports and :meth:`from_mesh` with ``MediaReceived`` frames, and
sends what they return; the ports are the edge's (``meshcomm.runtime.media_io``).

Resources are taken lazily and given back promptly (issue 8): a call holds ports, and
one of ``max_calls`` slots, only once an SDP from the mesh needs them (the far answer of a
call our client places, or the offer of a call to our client); a local client's offer
waiting for its answer is only a nonce, bounded by ``max_offers``. A call whose offer and
answer both passed and that relays no media (and sees no SDP) for
``media_idle_timeout_s`` is ended (its peer vanished without a BYE); any other call idle
for ``idle_timeout_s`` is ended too, so a lost BYE cannot leak ports. Ended calls are
reported as :class:`MediaCallEnded` events carrying the call's counters.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from meshcomm.errors import (
    ConfigError,
    DecodeError,
    LocalProtocolError,
    MeshcommError,
    TrustError,
)
from meshcomm.media.counters import MediaCounter
from meshcomm.media.keys import (
    MAX_CALL_ID_BYTES,
    KeyAgreement,
    new_ephemeral_secret,
    new_media_nonce,
)
from meshcomm.media.packet import Channel
from meshcomm.media.sdp_rewrite import (
    NOT_ACCEPTABLE_HERE,
    client_endpoints,
    for_client,
    for_mesh,
    parse_body_untrusted,
    peer_media_untrusted,
    relayable,
)
from meshcomm.media.session import (
    DROP_COUNTERS,
    ClientPacket,
    DropReason,
    LocalPorts,
    MediaSession,
    MeshMedia,
)
from meshcomm.security.identity import Identity

#: SIP status for "no media resources now" (RFC 3261 §21.5.4).
SERVICE_UNAVAILABLE = 503
MAX_EVENTS = 1024


class SdpPath(enum.StrEnum):
    """Which way an SDP body passes the gateway (the gateway's ``SdpDirection``)."""

    CLIENT_TO_MESH = "client-to-mesh"
    MESH_TO_CLIENT = "mesh-to-client"


class EndReason(enum.Enum):
    HANGUP = "hangup"   # the gateway ended the call (BYE, CANCEL, failure answer)
    IDLE = "idle"       # no media and no SDP for idle_timeout_s


#: The counter of each way a call ends (a test checks every reason has one).
CALL_END_COUNTERS: Final[Mapping[EndReason, MediaCounter]] = {
    EndReason.HANGUP: MediaCounter.CALLS_ENDED_HANGUP,
    EndReason.IDLE: MediaCounter.CALLS_ENDED_IDLE,
}


class MediaSetupError(MeshcommError):
    """No media resources for a call (ports or call slots exhausted): answer 503."""

    def __init__(self, message: str, *, status_hint: int = SERVICE_UNAVAILABLE,
                 reason: str = "media_exhausted") -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MediaCallEnded:
    call_id: str
    reason: EndReason
    counters: tuple[tuple[str, int], ...]


#: Offers of local clients waiting for their answer (no ports yet), per call slot.
OFFERS_PER_CALL = 4


@dataclass(frozen=True, slots=True)
class MediaConfig:
    #: A call without SDP and media for this long is ended (a lost BYE; ringing calls).
    idle_timeout_s: float = 900.0
    #: Calls holding ports at once.
    max_calls: int = 64
    #: A negotiated call (offer and answer seen) relaying no media for this long is ended.
    media_idle_timeout_s: float = 30.0
    #: Offers without ports at once (0: OFFERS_PER_CALL * max_calls).
    max_offers: int = 0

    def __post_init__(self) -> None:
        if not self.idle_timeout_s > 0:
            raise ConfigError("media.idle_timeout_s", "must be > 0")
        if not self.media_idle_timeout_s > 0:
            raise ConfigError("media.media_idle_timeout_s", "must be > 0")
        if self.max_calls < 1:
            raise ConfigError("media.max_calls", "must be >= 1")
        if self.max_offers < 0:
            raise ConfigError("media.max_offers", "must be >= 0")

    @property
    def offer_limit(self) -> int:
        return self.max_offers or OFFERS_PER_CALL * self.max_calls


class PortAllocator(Protocol):
    """Opens the gateway's local UDP ports for one m-line of a call."""

    def allocate(self, call_id: str, index: int) -> LocalPorts | None:
        """RTP and RTCP ports for m-line ``index`` of ``call_id``; None when exhausted."""
        ...

    def release(self, call_id: str) -> None:
        """Close every port of ``call_id`` (idempotent)."""
        ...


class SequentialPortAllocator:
    """Port pairs (even RTP, RTP+1 RTCP) from a range, without sockets: for the simulator
    and tests, where nothing is bound."""

    def __init__(self, address: str, first_port: int = 20000, last_port: int = 20999) -> None:
        if first_port % 2 or not 0 < first_port < last_port <= 65535:
            raise LocalProtocolError("port range must start even and be within 1..65535")
        self.address = address
        self._free = list(range(first_port, last_port, 2))
        heapq.heapify(self._free)
        self._held: dict[str, list[int]] = {}

    def allocate(self, call_id: str, index: int) -> LocalPorts | None:
        if not self._free:
            return None
        port = heapq.heappop(self._free)
        self._held.setdefault(call_id, []).append(port)
        return LocalPorts(self.address, port, port + 1)

    def release(self, call_id: str) -> None:
        for port in self._held.pop(call_id, []):
            heapq.heappush(self._free, port)


class MediaRelay:
    """All media sessions of one gateway, indexed by Call-ID and by receive stream."""

    def __init__(self, identity: Identity, allocator: PortAllocator, rng: random.Random,
                 config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.allocator = allocator
        self.rng = rng
        self.agreement = KeyAgreement(identity)
        self.node_id = identity.node_id
        self.sessions: dict[str, MediaSession] = {}
        #: Sessions holding ports (the others are offers waiting for their answer).
        self.calls_with_ports = 0
        self.counters: Counter[str] = Counter()
        self._receive: dict[tuple[bytes, bytes], tuple[str, int]] = {}
        self._events: deque[MediaCallEnded] = deque(maxlen=MAX_EVENTS)
        self._clock_s: float = 0.0

    # ------------------------------------------------------------ the SDP hook
    def rewrite_sdp(self, direction: str, call_id: str, body: bytes,
                    now: float | None = None, *, client_host: str = "") -> bytes:
        """The gateway's hook: the body as it must go on. Raises DecodeError (bad or
        unusable SDP; ``status_hint`` 400 from the client, 488 from the mesh) and
        MediaSetupError (503: no ports or call slots). ``client_host``: the gateway's
        address toward the local client, written instead of a wildcard bind address."""
        try:
            path = SdpPath(direction)
        except ValueError as exc:
            raise LocalProtocolError(f"unknown SDP direction {direction!r}") from exc
        if now is not None:
            self._clock_s = max(self._clock_s, now)
        from_mesh = path is SdpPath.MESH_TO_CLIENT
        sdp = parse_body_untrusted(body, from_mesh=from_mesh)
        if not from_mesh:
            session = self._session(call_id)
            session.last_activity_s = now      # None: stamped by the next on_timer
            session.clients = client_endpoints(sdp)
            self.counters[MediaCounter.SDP_TO_MESH] += 1
            return for_mesh(sdp, self.agreement.public_key, session.local_nonce,
                            session.eph_public).serialize()
        peer = peer_media_untrusted(sdp)
        session = self._session(call_id)
        session.last_activity_s = now
        try:
            keyed = session.set_peer(peer, self.agreement)
        except TrustError as exc:
            raise DecodeError(str(exc), status_hint=NOT_ACCEPTABLE_HERE,
                              reason=exc.reason) from exc
        if keyed:
            self.counters[MediaCounter.CALLS_KEYED] += 1
        session.peer_mux = {i: m.has_attribute("rtcp-mux") for i, m in enumerate(sdp.media)}
        for index, m in enumerate(sdp.media):
            if relayable(m) and index not in session.legs:
                if not session.legs and self.calls_with_ports >= self.config.max_calls:
                    self.counters[MediaCounter.CALLS_REFUSED] += 1
                    raise MediaSetupError("too many calls with media")
                ports = self.allocator.allocate(call_id, index)
                if ports is None:
                    self.counters[MediaCounter.PORTS_EXHAUSTED] += 1
                    raise MediaSetupError("no free media ports")
                if not session.legs:
                    self.calls_with_ports += 1
                session.add_leg(index, ports)
        self._index_streams(session)
        self.counters[MediaCounter.SDP_TO_CLIENT] += 1
        ports_by_index = {i: leg.ports for i, leg in session.legs.items()}
        return for_client(sdp, ports_by_index, client_host).serialize()

    def _session(self, call_id: str) -> MediaSession:
        session = self.sessions.get(call_id)
        if session is not None:
            return session
        if len(call_id.encode("utf-8", "surrogateescape")) > MAX_CALL_ID_BYTES:
            raise MediaSetupError("Call-ID too long for media", status_hint=400,
                                  reason="call_id_too_long")
        if self.calls_with_ports >= self.config.max_calls:
            self.counters[MediaCounter.CALLS_REFUSED] += 1
            raise MediaSetupError("too many calls with media")
        if len(self.sessions) - self.calls_with_ports >= self.config.offer_limit:
            self.counters[MediaCounter.OFFERS_REFUSED] += 1
            raise MediaSetupError("too many call offers waiting for an answer")
        session = MediaSession(call_id, new_media_nonce(self.rng),
                               new_ephemeral_secret(self.rng))
        self.sessions[call_id] = session
        self.counters[MediaCounter.CALLS_STARTED] += 1
        return session

    def _index_streams(self, session: MediaSession) -> None:
        if session.peer is None:
            return
        origin = session.peer.node_id
        for leg in session.legs.values():
            if leg.receive_stream is not None:
                self._receive[(origin, leg.receive_stream)] = (session.call_id, leg.index)

    # ------------------------------------------------------------ packet path
    def from_client(self, call_id: str, index: int, arrived_on: Channel, data: bytes,
                    now: float) -> MeshMedia | None:
        """A datagram that arrived on the ``arrived_on`` port of m-line ``index``."""
        self._clock_s = max(self._clock_s, now)
        session = self.sessions.get(call_id)
        if session is None or index not in session.legs:
            self.counters[MediaCounter.DROP_NO_SESSION] += 1
            return None
        return session.from_client(index, arrived_on, data, now)

    def from_mesh(self, origin: bytes, stream: bytes, payload: bytes,
                  now: float) -> ClientPacket | None:
        """The fields of a ``MediaReceived`` event."""
        self._clock_s = max(self._clock_s, now)
        target = self._receive.get((origin, stream))
        if target is None:
            self.counters[DROP_COUNTERS[DropReason.UNKNOWN_STREAM]] += 1
            return None
        call_id, index = target
        return self.sessions[call_id].from_mesh(index, payload, now)

    # ------------------------------------------------------------ teardown
    def end_call(self, call_id: str, now: float) -> None:
        """Release the call's ports and keys (BYE, CANCEL, failure). Idempotent."""
        self._clock_s = max(self._clock_s, now)
        self._end(call_id, EndReason.HANGUP)

    def _end(self, call_id: str, reason: EndReason) -> None:
        session = self.sessions.pop(call_id, None)
        if session is None:
            return
        self.allocator.release(call_id)
        if session.legs:
            self.calls_with_ports -= 1
        if session.peer is not None:
            origin = session.peer.node_id
            for leg in session.legs.values():
                if leg.receive_stream is not None:
                    self._receive.pop((origin, leg.receive_stream), None)
        self.counters[CALL_END_COUNTERS[reason]] += 1
        self.counters.update(session.counters)
        self._events.append(MediaCallEnded(call_id, reason,
                                           tuple(sorted(session.counters.items()))))

    # ------------------------------------------------------------ driving API
    def _idle_limit(self, session: MediaSession) -> float:
        """How long ``session`` may stay idle: short once offer and answer both passed
        (a live call relays media; silence means the peer vanished), else long."""
        if session.peer is not None and session.clients:
            return min(self.config.media_idle_timeout_s, self.config.idle_timeout_s)
        return self.config.idle_timeout_s

    def next_timer(self) -> float | None:
        if not self.sessions:
            return None
        return min((s.last_activity_s if s.last_activity_s is not None else self._clock_s)
                   + self._idle_limit(s) for s in self.sessions.values())

    def on_timer(self, now: float) -> None:
        self._clock_s = max(self._clock_s, now)
        for call_id, session in list(self.sessions.items()):
            if session.last_activity_s is None:
                session.last_activity_s = now
            elif session.last_activity_s + self._idle_limit(session) <= now:
                self._end(call_id, EndReason.IDLE)

    def next_event(self) -> MediaCallEnded | None:
        return self._events.popleft() if self._events else None
