"""``sip.pcapng``: every journaled SIP message as a UDP packet at its corrected time
(issue 11, an IO adapter around a sans-IO planner).

:func:`write_pcap` streams ``timeline.jsonl`` (written by :mod:`.outputs`, in timeline
order) and writes one packet per SIP message *on the wire* with scapy's ``PcapNgWriter``,
so Wireshark's SIP Flows and VoIP Calls show every conversation across the mesh. The rules
(docs/export-outputs.md):

* **Addresses.** A node is ``10.a.b.c`` from the first bytes of its node id (bytes 0-2; on
  a collision or a ``.0``/``.255`` host the next window of the id's first 8 bytes, then a
  hash), port 5060; a mesh peer ``<16 hex>.mesh`` is the node with that id prefix, so both
  ends of a mesh hop get the same address. A local client is at its journaled ``ip:port``;
  a client name that is not an IP address (the built-in UA, ``builtin.invalid``) gets a
  derived address in 198.18.0.0/15. An IPv6 client talks to the node's ``fd00::<id prefix>``.
* **Direction.** from-client: client -> node; to-client: node -> client; to-mesh: node ->
  peer node; from-mesh: peer node -> node; originated: node -> where the response went.
* **Which records are packets.** Every ``sip.message`` record that is not a drop, except:
  (a) a ``from-mesh`` record paired with a ``to-mesh`` record of the other end of the same
  hop (same ``env``; for records without ``env``, same Call-ID, CSeq, method and status),
  one to one in timeline order, either coming first: one hop, one packet; (b) an
  ``originated`` record followed by the same device's next SIP record being the
  ``to-client``/``to-mesh`` record of that response to the same peer (the gateway journals
  a response it generates, then again as it sends it); (c) records whose peer is ``store``
  (no wire destination). So ``packets = records - pairs - originated_folded - no_wire``
  (:class:`PcapStats`).
* **Payload.** The record's ``start`` line and ``headers``; the body when the journal kept
  it (``body``), else none. Content-Length is set to the body actually in the packet; when
  that differs from what was journaled, an ``X-Meshcomm-Body`` header gives the journaled
  length and SHA-256 so nothing is lost. A record without ``start``/``headers`` (an older
  journal) is rebuilt minimally from method/status/Call-ID/CSeq/From/To and says so in an
  ``X-Meshcomm-Rebuilt`` header. Each packet's pcapng comment names the journal entry:
  ``device``, ``seq``, ``dir`` (and ``UNVERIFIED`` for a journal merged with
  ``--allow-unverified``).

Memory is bounded: one line at a time (:data:`MAX_LINE_BYTES`), one pending ``originated``
record per device, at most :data:`MAX_UNPAIRED` unpaired mesh records (the oldest dropped
first and counted: an evicted one is written unpaired) and :data:`MAX_ADDRESSES` addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from scapy.packet import Packet

#: A timeline.jsonl line longer than this is skipped (and counted).
MAX_LINE_BYTES: Final = 1 << 20
#: Unpaired to-mesh / from-mesh records kept for pairing (oldest evicted first).
MAX_UNPAIRED: Final = 200_000
#: Derived addresses kept collision-checked (beyond: derived without the check).
MAX_ADDRESSES: Final = 100_000
#: A UDP payload larger than this cannot be one IPv4 datagram: such a record is skipped.
MAX_UDP_PAYLOAD: Final = 65_507
NODE_PORT: Final = 5060
#: Progress is reported every this many packets (or report events).
PROGRESS_EVERY: Final = 20_000
PEER_HEX_CHARS: Final = 16
MESH_SUFFIX: Final = ".mesh"
SIP_TYPE: Final = "sip.message"
FROM_CLIENT, TO_CLIENT, FROM_MESH, TO_MESH = "from-client", "to-client", "from-mesh", "to-mesh"
ORIGINATED, DROPPED, STORE = "originated", "dropped", "store"
WIRE_DIRECTIONS: Final = frozenset({FROM_CLIENT, TO_CLIENT, FROM_MESH, TO_MESH, ORIGINATED})
#: Reason phrases for minimal rebuilds (anything else: "Status").
REASONS: Final[Mapping[int, str]] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 500: "Server Internal Error", 503: "Service Unavailable"}
_CONTENT_LENGTH_NAMES: Final = frozenset({"content-length", "l"})

Endpoint = tuple[str, int]


# ============================================================ reading timeline.jsonl
@dataclass(slots=True)
class ReadStats:
    lines: int = 0
    skipped: int = 0          # oversized or not a JSON object


def iter_timeline(path: Path, stats: ReadStats | None = None) -> Iterator[dict[str, object]]:
    """The events of a timeline.jsonl, one line at a time (a line over
    :data:`MAX_LINE_BYTES` or not a JSON object is skipped and counted)."""
    counts = stats if stats is not None else ReadStats()
    with open(path, "rb") as handle:
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            counts.lines += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                counts.skipped += 1
                while line and not line.endswith(b"\n"):      # the rest of that line
                    line = handle.readline(MAX_LINE_BYTES)
                continue
            try:
                event = json.loads(line)
            except ValueError:
                counts.skipped += 1
                continue
            if isinstance(event, dict):
                yield event
            else:
                counts.skipped += 1


def sip_data(event: Mapping[str, object]) -> dict[str, object] | None:
    """The data of a non-drop ``sip.message`` event, else None."""
    data = event.get("data")
    if event.get("type") != SIP_TYPE or not isinstance(data, dict):
        return None
    return data if data.get("dir") in WIRE_DIRECTIONS else None


# ============================================================ addresses
class Addressing:
    """Deterministic synthetic addresses (see the module docstring), collision-checked."""

    def __init__(self, max_addresses: int = MAX_ADDRESSES) -> None:
        self.max_addresses = max_addresses
        self._by_key: dict[str, str] = {}
        self._taken: set[str] = set()
        self.unchecked = 0

    def node(self, device_or_peer: str, v6: bool = False) -> str:
        """The address of the node whose id (hex) starts with ``device_or_peer``'s first
        16 hex digits (a full id, or a ``<16 hex>.mesh`` peer name)."""
        prefix = device_or_peer.removesuffix(MESH_SUFFIX)[:PEER_HEX_CHARS].lower()
        try:
            raw = bytes.fromhex(prefix.ljust(PEER_HEX_CHARS, "0"))
        except ValueError:
            raw = hashlib.sha256(prefix.encode("utf-8", "replace")).digest()[:8]
        if v6:
            return str(ipaddress.IPv6Address(b"\xfd" + b"\0" * 7 + raw))
        windows = [raw[i:i + 3] for i in range(len(raw) - 2)]
        return self._assign("node:" + raw.hex(), "10", windows)

    def named(self, device: str, host: str) -> str:
        """A client name that is not an IP address, on ``device``: 198.18.0.0/15."""
        digest = hashlib.sha256(f"{device}/{host}".encode("utf-8", "replace")).digest()
        windows = [bytes([18 + (digest[i] & 1), digest[i + 1], digest[i + 2]])
                   for i in range(0, 27, 3)]
        return self._assign(f"name:{device}/{host}", "198", windows)

    def _assign(self, key: str, first: str, windows: list[bytes]) -> str:
        found = self._by_key.get(key)
        if found is not None:
            return found
        counter = 0
        while True:
            for window in windows:
                if window[2] in (0, 255):
                    continue
                address = f"{first}.{window[0]}.{window[1]}.{window[2]}"
                if address not in self._taken:
                    return self._keep(key, address)
                if len(self._by_key) >= self.max_addresses:
                    self.unchecked += 1
                    return address
            counter += 1
            windows = [hashlib.sha256(f"{key}#{counter}".encode()).digest()[:3]]

    def _keep(self, key: str, address: str) -> str:
        if len(self._by_key) >= self.max_addresses:
            self.unchecked += 1
            return address
        self._by_key[key] = address
        self._taken.add(address)
        return address


def _client(peer: str) -> tuple[str, int] | None:
    """("host", port) of a client peer text "ip:port" (IPv6 possibly in brackets)."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    number = int(port)
    return (host.strip("[]"), number) if 0 < number <= 0xFFFF else None


# ============================================================ payloads
_CONTROL: Final = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


def _clean(text: str) -> str:
    """Journal text is untrusted: no CR/LF/NUL may start a header of its own."""
    return text.translate(_CONTROL)


def _header_pairs(headers: object) -> list[tuple[str, str]] | None:
    if not isinstance(headers, list):
        return None
    pairs = []
    for item in headers:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(part, str) for part in item)):
            return None
        pairs.append((str(item[0]), str(item[1])))
    return pairs


def _kept_body(data: Mapping[str, object]) -> bytes:
    body = data.get("body")
    if isinstance(body, str):
        try:
            return bytes.fromhex(body)
        except ValueError:
            return b""
    return b""


def _minimal_lines(data: Mapping[str, object]) -> list[str] | None:
    """Start line and headers from the fields every journal has (None: not even those)."""
    method, status = data.get("method"), data.get("status")
    if not isinstance(method, str) or not method.isalpha():
        return None
    cseq = data.get("cseq")
    number = cseq if isinstance(cseq, int) and 0 <= cseq < 2**31 else 0
    to_aor, from_aor = str(data.get("to", "")), str(data.get("from", ""))
    if isinstance(status, int) and 100 <= status <= 699:
        start = f"SIP/2.0 {status} {REASONS.get(status, 'Status')}"
    elif status is None:
        target = to_aor if to_aor.startswith(("sip:", "sips:", "tel:")) else "sip:unknown.invalid"
        start = f"{method} {target} SIP/2.0"
    else:
        return None
    return [_clean(start), f"From: <{_clean(from_aor)}>", f"To: <{_clean(to_aor)}>",
            f"Call-ID: {_clean(str(data.get('call_id', '')))}", f"CSeq: {number} {method}",
            "X-Meshcomm-Rebuilt: minimal (no start line and headers in the journal)"]


def sip_payload(data: Mapping[str, object]) -> tuple[bytes, bool] | None:
    """The SIP message a record describes, and whether it was rebuilt minimally (None:
    the record has too little to rebuild anything). See the module docstring."""
    body = _kept_body(data)
    start, headers = data.get("start"), _header_pairs(data.get("headers"))
    journaled_length: str | None = None
    if isinstance(start, str) and start and headers is not None:
        lines, minimal = [_clean(start)], False
        for name, value in headers:
            if name.strip().lower() in _CONTENT_LENGTH_NAMES:
                journaled_length = value.strip()
                lines.append(f"{_clean(name)}: {len(body)}")
            else:
                lines.append(f"{_clean(name)}: {_clean(value)}")
        if journaled_length is None:
            lines.append(f"Content-Length: {len(body)}")
    else:
        built = _minimal_lines(data)
        if built is None:
            return None
        lines, minimal = [*built, f"Content-Length: {len(body)}"], True
    note = _body_note(data, body, journaled_length)
    if note:
        lines.insert(len(lines) - (0 if journaled_length is not None else 1), note)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body, minimal


def _body_note(data: Mapping[str, object], body: bytes, journaled_length: str | None) -> str:
    """``X-Meshcomm-Body`` when the packet carries less body than the message had."""
    length = data.get("body_len")
    if not isinstance(length, int) and journaled_length is not None:
        length = (int(journaled_length) if journaled_length.isdigit()
                  and len(journaled_length) <= 10 else None)
    digest = data.get("body_sha256")
    if (isinstance(length, int) and length == len(body)) or (length is None and not digest):
        return ""
    parts = ["omitted"] + ([f"length={length}"] if isinstance(length, int) else [])
    if isinstance(digest, str):
        parts.append(f"sha256={_clean(digest)}")
    return "X-Meshcomm-Body: " + "; ".join(parts)


# ============================================================ the planner (sans-IO)
@dataclass(frozen=True, slots=True)
class PlannedPacket:
    time_s: float
    src: Endpoint
    dst: Endpoint
    payload: bytes
    comment: str
    #: the journal record the packet was written from (its device and data)
    device: str = field(default="", compare=False)
    data: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    #: False: from a journal that failed verification, merged with --allow-unverified
    verified: bool = True


@dataclass(slots=True)
class PcapStats:
    """What :func:`write_pcap_stats` did: ``packets == records - pairs -
    originated_folded - no_wire - unbuildable``."""

    records: int = 0              # non-drop sip.message records read
    packets: int = 0
    pairs: int = 0                # a to-mesh and a from-mesh record of one hop: one packet
    originated_folded: int = 0    # an originated record sent as the next to-* record
    no_wire: int = 0              # peer "store", or no peer
    unbuildable: int = 0          # nothing to rebuild a message from, or over a datagram
    minimal: int = 0              # packets rebuilt minimally (older journals)
    evicted: int = 0              # unpaired mesh records forgotten (MAX_UNPAIRED)
    lines_skipped: int = 0        # timeline.jsonl lines not read (oversized, not JSON)


_PairKey = tuple[str, str, tuple[object, ...]]


@dataclass(slots=True)
class _Unpaired:
    side: str                     # "send" (to-mesh) or "recv" (from-mesh)
    count: int


def _same_response(first: Mapping[str, object], then: Mapping[str, object]) -> bool:
    """``then`` is the to-client/to-mesh record of the response ``first`` originated."""
    return (then.get("dir") in (TO_CLIENT, TO_MESH)
            and all(first.get(k) == then.get(k)
                    for k in ("peer", "call_id", "cseq", "method", "status", "start")))


class PacketPlanner:
    """Timeline events in (:meth:`add`, in timeline order), packets out; :meth:`finish`
    at the end. See the module docstring for the rules."""

    def __init__(self, max_unpaired: int = MAX_UNPAIRED,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self.stats = PcapStats()
        self.addressing = Addressing(max_addresses)
        self.max_unpaired = max_unpaired
        #: unpaired mesh records of each hop (sender, receiver, message)
        self._unpaired: OrderedDict[_PairKey, _Unpaired] = OrderedDict()
        #: per device, an originated record waiting for that device's next SIP record
        self._pending: dict[str, Mapping[str, object]] = {}

    def add(self, event: Mapping[str, object]) -> list[PlannedPacket]:
        data = sip_data(event)
        if data is None:
            return []
        self.stats.records += 1
        device = str(event.get("device", ""))
        out: list[PlannedPacket] = []
        pending = self._pending.pop(device, None)
        if pending is not None:
            pending_data = sip_data(pending)
            if pending_data is not None and _same_response(pending_data, data):
                self.stats.originated_folded += 1
            else:
                out.extend(self._packet(pending))
        if data.get("dir") == ORIGINATED and data.get("peer") != STORE:
            if len(self._pending) >= self.addressing.max_addresses:
                oldest = next(iter(self._pending))
                out.extend(self._packet(self._pending.pop(oldest)))
            self._pending[device] = event
            return out
        out.extend(self._packet(event))
        return out

    def finish(self) -> list[PlannedPacket]:
        out = [p for event in self._pending.values() for p in self._packet(event)]
        self._pending.clear()
        return out

    def _packet(self, event: Mapping[str, object]) -> list[PlannedPacket]:
        data = sip_data(event)
        if data is None:
            return []
        device = str(event.get("device", ""))
        ends = self._endpoints(device, data)
        if ends is None:
            self.stats.no_wire += 1
            return []
        built = sip_payload(data)
        if built is None or len(built[0]) > MAX_UDP_PAYLOAD:
            self.stats.unbuildable += 1
            return []
        if self._paired(device, data):
            self.stats.pairs += 1
            return []
        payload, minimal = built
        self.stats.packets += 1
        self.stats.minimal += minimal
        verified = event.get("verified") is not False
        comment = (f"meshcomm journal device={device} seq={event.get('seq')} "
                   f"dir={data.get('dir')}" + (" rebuilt=minimal" if minimal else "")
                   + ("" if verified else " UNVERIFIED"))
        return [PlannedPacket(_time_of(event), ends[0], ends[1], payload, comment, device,
                              data, verified)]

    def _endpoints(self, device: str, data: Mapping[str, object]
                   ) -> tuple[Endpoint, Endpoint] | None:
        peer = data.get("peer")
        if not isinstance(peer, str) or not peer or peer == STORE:
            return None
        v6 = False
        if peer.endswith(MESH_SUFFIX):
            far: Endpoint = (self.addressing.node(peer), NODE_PORT)
        else:
            client = _client(peer) or (peer, NODE_PORT)
            try:
                v6 = ipaddress.ip_address(client[0]).version == 6
                far = (str(ipaddress.ip_address(client[0])), client[1])
            except ValueError:
                far = (self.addressing.named(device, client[0]), client[1])
        here = (self.addressing.node(device, v6), NODE_PORT)
        if data.get("dir") in (FROM_CLIENT, FROM_MESH):
            return far, here
        return here, far

    def _paired(self, device: str, data: Mapping[str, object]) -> bool:
        """True when this mesh record is the other end of a hop already written."""
        direction, peer = data.get("dir"), str(data.get("peer", ""))
        if direction not in (TO_MESH, FROM_MESH) or not peer.endswith(MESH_SUFFIX):
            return False
        me, other = device[:PEER_HEX_CHARS].lower(), peer[:-len(MESH_SUFFIX)].lower()
        env = data.get("env")
        message: tuple[object, ...] = (("env", env) if isinstance(env, str) and env else
                                       ("sip", data.get("call_id"), data.get("cseq"),
                                        data.get("method"), data.get("status")))
        side = "send" if direction == TO_MESH else "recv"
        key: _PairKey = (me, other, message) if side == "send" else (other, me, message)
        found = self._unpaired.get(key)
        if found is not None and found.side != side:
            found.count -= 1
            if found.count == 0:
                del self._unpaired[key]
            return True
        if found is not None:
            found.count += 1
            return False
        if len(self._unpaired) >= self.max_unpaired:
            self.stats.evicted += self._unpaired.popitem(last=False)[1].count
        self._unpaired[key] = _Unpaired(side, 1)
        return False


def _time_of(event: Mapping[str, object]) -> float:
    for name in ("corrected_s", "raw_wall_s"):
        value = event.get(name)
        if isinstance(value, int | float) and 0.0 <= value < 2.0**32:
            return float(value)
    return 0.0


# ============================================================ the writer (IO)
def write_pcap(timeline_jsonl: Path, out: Path, *,
               progress: Callable[[int], None] | None = None) -> int:
    """Write ``out`` (sip.pcapng) from ``timeline_jsonl``; returns the number of packets.
    Whole or not at all: a temporary file renamed into place (OSError leaves none).
    ``progress`` is called with the number of packets every :data:`PROGRESS_EVERY`."""
    return write_pcap_stats(timeline_jsonl, out, progress=progress).packets


def write_pcap_stats(timeline_jsonl: Path, out: Path, *,
                     progress: Callable[[int], None] | None = None) -> PcapStats:
    """:func:`write_pcap` with the counts that explain the number of packets."""
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.partial")
    planner, read = PacketPlanner(), ReadStats()
    try:
        writer = PcapNgWriter(str(temp))
        try:
            writer.write_header(Ether())          # a valid file even with no packet
            for event in iter_timeline(timeline_jsonl, read):
                for packet in planner.add(event):
                    writer.write_packet(_frame(packet))
                    if progress is not None and planner.stats.packets % PROGRESS_EVERY == 0:
                        progress(planner.stats.packets)
            for packet in planner.finish():
                writer.write_packet(_frame(packet))
            writer.flush()
            os.fsync(writer.f.fileno())
        finally:
            writer.close()
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    planner.stats.lines_skipped = read.skipped
    return planner.stats


def _mac(address: str) -> str:
    """A locally administered MAC for a synthetic address (Ethernet framing lets IPv4 and
    IPv6 packets share one pcapng interface)."""
    return "02:" + ":".join(f"{b:02x}" for b in hashlib.sha256(address.encode()).digest()[:5])


def _frame(packet: PlannedPacket) -> Packet:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    (src, sport), (dst, dport) = packet.src, packet.dst
    udp = UDP(sport=sport, dport=dport)
    udp.add_payload(packet.payload)
    network = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    network.add_payload(udp)
    frame = Ether(src=_mac(src), dst=_mac(dst))
    frame.add_payload(network)          # (not "/": it copies every layer, 3x slower)
    frame.time = packet.time_s
    frame.comments = [packet.comment.encode("utf-8", "replace")]
    return frame


# ============================================================ the rule, counted apart
def expected_packets(timeline_jsonl: Path) -> int:
    """The number of packets the counting rule gives for ``timeline_jsonl``, counted
    apart from :class:`PacketPlanner` (a check for tests and investigators: ``tshark -Y
    sip`` should show this many). Mesh pairs are counted order-free as, per hop and
    message, min(sends, receipts); its tables grow with the distinct mesh messages (a
    checking tool, not part of the export)."""
    records = no_wire = unbuildable = folded = 0
    sends: Counter[tuple[object, ...]] = Counter()
    receipts: Counter[tuple[object, ...]] = Counter()
    last_originated: dict[str, Mapping[str, object]] = {}
    for event in iter_timeline(timeline_jsonl):
        data = sip_data(event)
        if data is None:
            continue
        records += 1
        device = str(event.get("device", ""))
        before = last_originated.pop(device, None)
        if before is not None and _same_response(before, data):
            folded += 1        # the originated record is this one's packet
        peer = data.get("peer")
        if not isinstance(peer, str) or not peer or peer == STORE:
            no_wire += 1
            continue
        built = sip_payload(data)
        if built is None or len(built[0]) > MAX_UDP_PAYLOAD:
            unbuildable += 1
            continue
        if data.get("dir") == ORIGINATED:
            last_originated[device] = data
        if data.get("dir") in (TO_MESH, FROM_MESH) and peer.endswith(MESH_SUFFIX):
            me, other = device[:PEER_HEX_CHARS].lower(), peer[:-len(MESH_SUFFIX)].lower()
            env = data.get("env")
            message = (("env", env) if isinstance(env, str) and env else
                       ("sip", data.get("call_id"), data.get("cseq"), data.get("method"),
                        data.get("status")))
            if data.get("dir") == TO_MESH:
                sends[(me, other, message)] += 1
            else:
                receipts[(other, me, message)] += 1
    pairs = sum(min(n, receipts[key]) for key, n in sends.items())
    return records - pairs - folded - no_wire - unbuildable
