"""SDP (RFC 4566) parsing and serialization, and RFC 3264 offer/answer for audio.

Codecs: Opus (RFC 7587, ``opus/48000/2`` with ``a=ptime``, ``a=maxptime`` and the
``useinbandfec``/``usedtx`` format parameters), PCMU and PCMA (static payload types 0 and
8), and ``telephone-event`` (RFC 4733). Direction attributes (RFC 3264 §5.1, §6.1) and
hold/resume (RFC 3264 §8.4) are handled; an offer with no acceptable audio stream gives
:class:`NotAcceptable`, which the user agent turns into a 488.

:func:`parse_sdp_untrusted` reads bytes from the network and raises only ``DecodeError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from meshcomm.errors import DecodeError

MAX_SDP_SIZE_BYTES = 16 * 1024
MAX_SDP_LINES = 512
MAX_SDP_LINE_BYTES = 1024
MAX_MEDIA_DESCRIPTIONS = 16
MAX_FORMATS_PER_MEDIA = 64
MAX_ATTRIBUTES_PER_SECTION = 128
MAX_PORT = 65535
#: Most digits of a number in SDP we read (payload types, clock rates, channels).
MAX_NUMBER_DIGITS = 10
#: Highest RTP payload type (RFC 3550: 7 bits).
MAX_PAYLOAD_TYPE = 127

_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")


class Direction(enum.Enum):
    """RFC 3264 §5.1 / RFC 4566 §6 stream direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @staticmethod
    def from_flags(send: bool, recv: bool) -> Direction:
        return _DIRECTION_BY_FLAGS[(send, recv)]


_DIRECTION_BY_FLAGS = {
    (True, True): Direction.SENDRECV,
    (True, False): Direction.SENDONLY,
    (False, True): Direction.RECVONLY,
    (False, False): Direction.INACTIVE,
}
_DIRECTION_NAMES = frozenset(d.value for d in Direction)


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` line (RFC 4566 §5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` line (RFC 4566 §5.7)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_null(self) -> bool:
        """RFC 2543 style hold (c=0.0.0.0), RFC 3264 §8.4."""
        return self.address == "0.0.0.0"


Attribute = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section with its ``i=``, ``c=``, ``b=``, ``k=`` and ``a=`` lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: tuple[tuple[str, int], ...] = ()
    attributes: tuple[Attribute, ...] = ()
    information: str | None = None

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def has_attribute(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type -> rtpmap, including the static types 0 and 8 when listed."""
        found: dict[int, RtpMap] = {}
        for fmt in self.formats:
            if _is_pt(fmt) and int(fmt) in _STATIC_RTPMAPS:
                found[int(fmt)] = _STATIC_RTPMAPS[int(fmt)]
        for key, value in self.attributes:
            if key == "rtpmap" and value is not None:
                parsed = _parse_rtpmap(value)
                if parsed is not None:
                    found[parsed.payload_type] = parsed
        return found

    def fmtp(self, payload_type: int) -> dict[str, str]:
        """Format parameters of ``payload_type`` as a dict (``a=fmtp:PT k=v;k=v``)."""
        prefix = f"{payload_type} "
        for key, value in self.attributes:
            if key == "fmtp" and value is not None and value.startswith(prefix):
                return _parse_fmtp_params(value[len(prefix):])
        return {}

    @property
    def direction(self) -> Direction | None:
        for key, _value in self.attributes:
            if key in _DIRECTION_NAMES:
                return Direction(key)
        return None

    def int_attribute(self, name: str) -> int | None:
        value = self.attribute(name)
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP document. ``other_lines`` keeps i/u/e/p/z/k/r lines in order."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: tuple[tuple[int, int], ...] = ((0, 0),)
    bandwidths: tuple[tuple[str, int], ...] = ()
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    other_lines: tuple[tuple[str, str], ...] = ()
    version: int = 0

    @property
    def direction(self) -> Direction | None:
        for key, _value in self.attributes:
            if key in _DIRECTION_NAMES:
                return Direction(key)
        return None

    def serialize(self) -> bytes:
        return serialize_sdp(self)


_STATIC_RTPMAPS = {
    0: RtpMap(0, "PCMU", 8000, None),
    8: RtpMap(8, "PCMA", 8000, None),
}


# --------------------------------------------------------------------------- parsing
def _parse_rtpmap(value: str) -> RtpMap | None:
    pt_text, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    if not _is_pt(pt_text) or len(parts) not in (2, 3) or not _is_number(parts[1]):
        return None
    channels: int | None = None
    if len(parts) == 3:
        if not _is_number(parts[2]):
            return None
        channels = int(parts[2])
    return RtpMap(int(pt_text), parts[0], int(parts[1]), channels)


def _parse_fmtp_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";"):
        name, _, value = item.strip().partition("=")
        if name:
            params[name.strip().lower()] = value.strip()
    return params


def _split_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name, rest if sep else None)


def _is_number(text: str) -> bool:
    """A plain ASCII number of at most MAX_NUMBER_DIGITS digits."""
    return 0 < len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit()


def _is_pt(text: str) -> bool:
    """An RTP payload type (0..127)."""
    return _is_number(text) and int(text) <= MAX_PAYLOAD_TYPE


def _to_int(text: str, what: str, maximum: int = 2**63) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 20 or int(text) > maximum:
        raise DecodeError(f"SDP: bad {what}: {text[:40]!r}", reason="bad_sdp")
    return int(text)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise DecodeError("SDP: c= needs nettype addrtype address", reason="bad_sdp")
    return Connection(address=parts[2], nettype=parts[0], addrtype=parts[1])


def _parse_bandwidth(value: str) -> tuple[str, int]:
    kind, sep, amount = value.partition(":")
    if not sep or not kind:
        raise DecodeError("SDP: b= needs type:value", reason="bad_sdp")
    return (kind, _to_int(amount.strip(), "bandwidth"))


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise DecodeError("SDP: m= needs media port proto fmt", reason="bad_sdp")
    if len(parts) - 3 > MAX_FORMATS_PER_MEDIA:
        raise DecodeError("SDP: too many formats", reason="sdp_limit")
    port_text, _, count_text = parts[1].partition("/")
    port = _to_int(port_text, "port", MAX_PORT)
    count = _to_int(count_text, "port count", MAX_PORT) if count_text else None
    return MediaDescription(media=parts[0], port=port, proto=parts[2],
                            formats=tuple(parts[3:]), port_count=count)


def _split_lines(data: bytes) -> list[tuple[str, str]]:
    if len(data) > MAX_SDP_SIZE_BYTES:
        raise DecodeError("SDP body too large", reason="sdp_limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("SDP is not UTF-8", reason="bad_sdp") from exc
    raw_lines = [line.rstrip("\r") for line in text.split("\n")]
    while raw_lines and raw_lines[-1] == "":
        raw_lines.pop()
    if len(raw_lines) > MAX_SDP_LINES:
        raise DecodeError("SDP has too many lines", reason="sdp_limit")
    lines: list[tuple[str, str]] = []
    for line in raw_lines:
        if len(line) > MAX_SDP_LINE_BYTES:
            raise DecodeError("SDP line too long", reason="sdp_limit")
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise DecodeError(f"SDP: malformed line {line[:40]!r}", reason="bad_sdp")
        lines.append((line[0], line[2:]))
    return lines


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise DecodeError("SDP: o= needs six fields", reason="bad_sdp")
    return Origin(parts[0], parts[1], _to_int(parts[2], "session version"),
                  parts[3], parts[4], parts[5])


def _parse_times(value: str) -> tuple[int, int]:
    parts = value.split()
    if len(parts) != 2:
        raise DecodeError("SDP: t= needs start and stop", reason="bad_sdp")
    return (_to_int(parts[0], "start time"), _to_int(parts[1], "stop time"))


@dataclass(slots=True)
class _SessionBuilder:
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    times: list[tuple[int, int]] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)


def _session_line(builder: _SessionBuilder, kind: str, value: str) -> None:
    if kind == "o":
        builder.origin = _parse_origin(value)
    elif kind == "s":
        builder.session_name = value
    elif kind == "c":
        builder.connection = _parse_connection(value)
    elif kind == "t":
        builder.times.append(_parse_times(value))
    elif kind == "b":
        builder.bandwidths.append(_parse_bandwidth(value))
    elif kind == "a":
        if len(builder.attributes) >= MAX_ATTRIBUTES_PER_SECTION:
            raise DecodeError("SDP: too many attributes", reason="sdp_limit")
        builder.attributes.append(_split_attribute(value))
    elif kind == "v":
        raise DecodeError("SDP: repeated v= line", reason="bad_sdp")
    else:
        builder.other_lines.append((kind, value))


def _media_line(current: MediaDescription, kind: str, value: str) -> MediaDescription:
    if kind == "c":
        return replace(current, connection=_parse_connection(value))
    if kind == "b":
        return replace(current, bandwidths=(*current.bandwidths, _parse_bandwidth(value)))
    if kind == "a":
        if len(current.attributes) >= MAX_ATTRIBUTES_PER_SECTION:
            raise DecodeError("SDP: too many attributes", reason="sdp_limit")
        return replace(current, attributes=(*current.attributes, _split_attribute(value)))
    if kind == "i":
        return replace(current, information=value)
    return current  # k= (deprecated) is ignored at media level


def parse_sdp_untrusted(data: bytes) -> SessionDescription:
    """Parse an SDP body (RFC 4566 §5). Raises only ``DecodeError``."""
    lines = _split_lines(data)
    if not lines or lines[0] != ("v", "0"):
        raise DecodeError("SDP must start with v=0", reason="bad_sdp")
    builder = _SessionBuilder()
    current: MediaDescription | None = None
    for kind, value in lines[1:]:
        if kind == "m":
            if current is not None:
                builder.media.append(current)
            if len(builder.media) >= MAX_MEDIA_DESCRIPTIONS:
                raise DecodeError("SDP: too many media descriptions", reason="sdp_limit")
            current = _parse_media_line(value)
        elif current is not None:
            if kind not in _MEDIA_TYPES:
                raise DecodeError(f"SDP: {kind}= not allowed in media section",
                                  reason="bad_sdp")
            current = _media_line(current, kind, value)
        else:
            if kind not in _SESSION_TYPES:
                raise DecodeError(f"SDP: unknown line type {kind}=", reason="bad_sdp")
            _session_line(builder, kind, value)
    if current is not None:
        builder.media.append(current)
    if builder.origin is None or builder.session_name is None:
        raise DecodeError("SDP: o= and s= are mandatory", reason="bad_sdp")
    return SessionDescription(
        origin=builder.origin, session_name=builder.session_name,
        connection=builder.connection, times=tuple(builder.times) or ((0, 0),),
        bandwidths=tuple(builder.bandwidths), attributes=tuple(builder.attributes),
        media=tuple(builder.media), other_lines=tuple(builder.other_lines))


# ---------------------------------------------------------------------- serializing
def _attribute_lines(attributes: tuple[Attribute, ...]) -> list[str]:
    return [f"a={name}" if value is None else f"a={name}:{value}" for name, value in attributes]


def serialize_sdp(sdp: SessionDescription) -> bytes:
    """Canonical SDP text (RFC 4566 §5 line order, CRLF line ends)."""
    order = "iuepkrz"
    lines = [f"v={sdp.version}", f"o={sdp.origin}", f"s={sdp.session_name}"]
    before_c = [(k, v) for k, v in sdp.other_lines if k in "iuep"]
    after_t = [(k, v) for k, v in sdp.other_lines if k in "rzk"]
    lines += [f"{k}={v}" for k, v in sorted(before_c, key=lambda kv: order.index(kv[0]))]
    if sdp.connection is not None:
        lines.append(f"c={sdp.connection}")
    lines += [f"b={kind}:{amount}" for kind, amount in sdp.bandwidths]
    lines += [f"t={start} {stop}" for start, stop in sdp.times]
    lines += [f"{k}={v}" for k, v in sorted(after_t, key=lambda kv: "rzk".index(kv[0]))]
    lines += _attribute_lines(sdp.attributes)
    for m in sdp.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        lines.append(f"m={m.media} {port} {m.proto} {' '.join(m.formats)}")
        if m.information is not None:
            lines.append(f"i={m.information}")
        if m.connection is not None:
            lines.append(f"c={m.connection}")
        lines += [f"b={kind}:{amount}" for kind, amount in m.bandwidths]
        lines += _attribute_lines(m.attributes)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# ------------------------------------------------------------------ offer / answer
class AudioCodec(enum.Enum):
    """Audio codecs this stack negotiates, with their rtpmap names and clock rates."""

    OPUS = ("opus", 48000, 2)
    PCMU = ("PCMU", 8000, None)
    PCMA = ("PCMA", 8000, None)

    @property
    def encoding(self) -> str:
        return str(self.value[0])

    @property
    def clock_rate(self) -> int:
        return int(self.value[1])

    @property
    def channels(self) -> int | None:
        channels = self.value[2]
        return None if channels is None else int(channels)


#: Payload types we use in our own offers (the answerer keeps the offerer's numbers).
OFFER_PAYLOAD_TYPES = {AudioCodec.OPUS: 96, AudioCodec.PCMU: 0, AudioCodec.PCMA: 8}
TELEPHONE_EVENT_PT_BY_RATE = {48000: 101, 8000: 100}
TELEPHONE_EVENT = "telephone-event"


@dataclass(frozen=True, slots=True)
class AudioPolicy:
    """What this endpoint can do, in preference order (first is best)."""

    codecs: tuple[AudioCodec, ...] = (AudioCodec.OPUS, AudioCodec.PCMU, AudioCodec.PCMA)
    ptime_ms: int = 20
    maxptime_ms: int = 60
    opus_useinbandfec: bool = True   # RFC 7587 §6.1: we can decode in-band FEC
    opus_usedtx: bool = False
    telephone_event: bool = True


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """The outcome of offer/answer for the audio stream, from our point of view."""

    codec: AudioCodec
    payload_type: int
    remote_address: str
    remote_port: int
    direction: Direction              # our direction: sends -> we transmit RTP
    ptime_ms: int
    remote_fmtp: tuple[tuple[str, str], ...] = ()   # what the peer asks of our encoder
    telephone_event_pt: int | None = None


@dataclass(frozen=True, slots=True)
class NotAcceptable:
    """No audio stream of the offer is acceptable: the UA answers 488 (RFC 3264 §6)."""

    reason: str


def _codec_attributes(policy: AudioPolicy, codec: AudioCodec, pt: int) -> list[Attribute]:
    attrs: list[Attribute] = [("rtpmap", str(RtpMap(pt, codec.encoding, codec.clock_rate,
                                                    codec.channels)))]
    if codec is AudioCodec.OPUS:
        fmtp = (f"useinbandfec={int(policy.opus_useinbandfec)};"
                f"usedtx={int(policy.opus_usedtx)}")
        attrs.append(("fmtp", f"{pt} {fmtp}"))
    return attrs


def _audio_section(policy: AudioPolicy, chosen: list[tuple[AudioCodec, int]],
                   event_pt: int | None, port: int, direction: Direction) -> MediaDescription:
    attrs: list[Attribute] = []
    formats = [str(pt) for _, pt in chosen]
    for codec, pt in chosen:
        attrs += _codec_attributes(policy, codec, pt)
    if event_pt is not None:
        rate = chosen[0][0].clock_rate if chosen else 8000
        formats.append(str(event_pt))
        attrs.append(("rtpmap", f"{event_pt} {TELEPHONE_EVENT}/{rate}"))
        attrs.append(("fmtp", f"{event_pt} 0-16"))
    attrs += [("ptime", str(policy.ptime_ms)), ("maxptime", str(policy.maxptime_ms)),
              (direction.value, None)]
    return MediaDescription(media="audio", port=port, proto="RTP/AVP",
                            formats=tuple(formats), attributes=tuple(attrs))


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def make_offer(*, address: str, rtp_port: int, session_id: int, session_version: int = 1,
               policy: AudioPolicy | None = None, direction: Direction = Direction.SENDRECV,
               username: str = "meshcomm") -> SessionDescription:
    """An audio offer (RFC 3264 §5) listing every codec of ``policy``."""
    pol = policy or AudioPolicy()
    chosen = [(codec, OFFER_PAYLOAD_TYPES[codec]) for codec in pol.codecs]
    event_pt = None
    if pol.telephone_event and chosen:
        event_pt = TELEPHONE_EVENT_PT_BY_RATE[chosen[0][0].clock_rate]
    conn = Connection(address=address, addrtype=_addrtype(address))
    return SessionDescription(
        origin=Origin(username, str(session_id), session_version, "IN", _addrtype(address),
                      address),
        session_name="meshcomm", connection=conn,
        media=(_audio_section(pol, chosen, event_pt, rtp_port, direction),))


def _match_codec(rtpmap: RtpMap, codec: AudioCodec) -> bool:
    if rtpmap.encoding.lower() != codec.encoding.lower():
        return False
    if rtpmap.clock_rate != codec.clock_rate:
        return False
    if codec is AudioCodec.OPUS:
        return rtpmap.channels == 2   # RFC 7587 §7: always "opus/48000/2"
    return rtpmap.channels in (None, 1)


def _pick_codecs(m: MediaDescription, policy: AudioPolicy) -> list[tuple[AudioCodec, int]]:
    """Offered payload types we support, in the offerer's order (RFC 3264 §6.1)."""
    maps = m.rtpmaps()
    chosen: list[tuple[AudioCodec, int]] = []
    for fmt in m.formats:
        if not _is_pt(fmt) or int(fmt) not in maps:
            continue
        for codec in policy.codecs:
            if _match_codec(maps[int(fmt)], codec) and codec not in [c for c, _ in chosen]:
                chosen.append((codec, int(fmt)))
    return chosen


def _telephone_event_pt(m: MediaDescription, clock_rate: int) -> int | None:
    for pt, rtpmap in m.rtpmaps().items():
        if rtpmap.encoding.lower() == TELEPHONE_EVENT and rtpmap.clock_rate == clock_rate:
            return pt
    return None


def _offer_direction(sdp: SessionDescription, m: MediaDescription) -> Direction:
    direction = m.direction or sdp.direction or Direction.SENDRECV
    conn = m.connection or sdp.connection
    if conn is not None and conn.is_null:   # RFC 3264 §8.4: old-style hold
        direction = Direction.from_flags(direction.sends, False)
    return direction


def _stream_address(sdp: SessionDescription, m: MediaDescription) -> str | None:
    conn = m.connection or sdp.connection
    return None if conn is None else conn.address


def answer_offer(offer: SessionDescription, *, address: str, rtp_port: int,
                 session_id: int, session_version: int = 1,
                 policy: AudioPolicy | None = None,
                 direction: Direction = Direction.SENDRECV, username: str = "meshcomm",
                 ) -> tuple[SessionDescription, NegotiatedAudio] | NotAcceptable:
    """Answer ``offer`` (RFC 3264 §6): accept the first acceptable audio stream.

    Every other stream is rejected with port 0 (§6). The answer's direction is the
    intersection of ``direction`` (what we want, e.g. SENDONLY to put the peer on hold)
    and the mirror of the offer's direction (§6.1).
    """
    pol = policy or AudioPolicy()
    sections: list[MediaDescription] = []
    negotiated: NegotiatedAudio | None = None
    for m in offer.media:
        accepted = _answer_stream(offer, m, pol, direction, rtp_port)
        if accepted is None or negotiated is not None:
            sections.append(MediaDescription(media=m.media, port=0, proto=m.proto,
                                             formats=m.formats[:1] or ("0",)))
            continue
        section, negotiated = accepted
        sections.append(section)
    if negotiated is None:
        return NotAcceptable("no acceptable audio stream in the offer")
    answer = SessionDescription(
        origin=Origin(username, str(session_id), session_version, "IN", _addrtype(address),
                      address),
        session_name="meshcomm",
        connection=Connection(address=address, addrtype=_addrtype(address)),
        media=tuple(sections))
    return answer, negotiated


def _answer_stream(offer: SessionDescription, m: MediaDescription, pol: AudioPolicy,
                   wanted: Direction, rtp_port: int,
                   ) -> tuple[MediaDescription, NegotiatedAudio] | None:
    if m.media != "audio" or m.port == 0 or not m.proto.startswith("RTP/"):
        return None
    remote_address = _stream_address(offer, m)
    chosen = _pick_codecs(m, pol)
    if remote_address is None or not chosen:
        return None
    offered = _offer_direction(offer, m)
    ours = Direction.from_flags(wanted.sends and offered.receives,
                                wanted.receives and offered.sends)
    codec, pt = chosen[0]
    event_pt = _telephone_event_pt(m, codec.clock_rate) if pol.telephone_event else None
    section = _audio_section(pol, chosen, event_pt, rtp_port, ours)
    section = replace(section, proto=m.proto)
    remote_ptime = m.int_attribute("ptime")
    negotiated = NegotiatedAudio(
        codec=codec, payload_type=pt, remote_address=remote_address, remote_port=m.port,
        direction=ours, ptime_ms=remote_ptime or pol.ptime_ms,
        remote_fmtp=tuple(sorted(m.fmtp(pt).items())), telephone_event_pt=event_pt)
    return section, negotiated


def negotiate_answer(offer: SessionDescription, answer: SessionDescription,
                     policy: AudioPolicy | None = None) -> NegotiatedAudio | NotAcceptable:
    """The offerer's view of a received answer (RFC 3264 §7)."""
    pol = policy or AudioPolicy()
    for index, m in enumerate(answer.media):
        if m.media != "audio" or m.port == 0 or index >= len(offer.media):
            continue
        remote_address = _stream_address(answer, m)
        chosen = _pick_codecs(m, pol)
        if remote_address is None or not chosen:
            continue
        codec, pt = chosen[0]
        answered = _offer_direction(answer, m)
        ours_offered = offer.media[index].direction or offer.direction or Direction.SENDRECV
        ours = Direction.from_flags(ours_offered.sends and answered.receives,
                                    ours_offered.receives and answered.sends)
        event_pt = (_telephone_event_pt(m, codec.clock_rate) if pol.telephone_event
                    else None)
        return NegotiatedAudio(
            codec=codec, payload_type=pt, remote_address=remote_address,
            remote_port=m.port, direction=ours,
            ptime_ms=m.int_attribute("ptime") or pol.ptime_ms,
            remote_fmtp=tuple(sorted(m.fmtp(pt).items())), telephone_event_pt=event_pt)
    return NotAcceptable("the answer accepted no audio stream")


def with_direction(sdp: SessionDescription, direction: Direction) -> SessionDescription:
    """A new version of our own SDP with every audio stream set to ``direction``.

    Hold is ``SENDONLY`` (or ``INACTIVE`` when the peer already holds us), resume is
    ``SENDRECV`` (RFC 3264 §8.4). The origin's session version is incremented (§8).
    """
    media = []
    for m in sdp.media:
        attrs = tuple((k, v) for k, v in m.attributes if k not in _DIRECTION_NAMES)
        if m.media == "audio" and m.port != 0:
            attrs = (*attrs, (direction.value, None))
        media.append(replace(m, attributes=attrs))
    session_attrs = tuple((k, v) for k, v in sdp.attributes if k not in _DIRECTION_NAMES)
    origin = replace(sdp.origin, session_version=sdp.origin.session_version + 1)
    return replace(sdp, origin=origin, attributes=session_attrs, media=tuple(media))
