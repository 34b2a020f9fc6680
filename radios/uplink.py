"""The uplink transport (issue 10): the uplink mesh's datagrams over UDP on a relay's uplink.

An :class:`UplinkRadio` is named ``"uplink"`` (``meshcomm.types.UPLINK_RADIO``), so the
runtime's link addresses of uplink peers read ``"uplink|203.0.113.5:4223"`` (IPv6:
``"uplink|[2001:db8::5]:4223"``). It opens one UDP socket per address it is given (the
uplink interface's IPv4 and/or IPv6 address; it binds there only), all on one port (0: any
free port, the same for every socket; :attr:`UplinkRadio.bound_port` reports it).

There is no link broadcast on a WAN: ``send(data, None)`` (or ``""``) sends one copy to
every known peer, ``send(data, "HOST:PORT")`` to that one. The peers are

* **configured** (the bootstrap nodes: ``--dht-bootstrap HOST:PORT`` becomes
  ``HOST:PORT+1``; host names are resolved at :meth:`UplinkRadio.open`): never forgotten;
* **heard**: the source of every datagram received is learned and forgotten after
  :data:`HEARD_PEER_SILENT_S` of silence;
* **added** by :meth:`UplinkRadio.add_peers` (the relays named by DHT attachments): kept
  :data:`ADDED_PEER_TTL_S` after the last add, or as long as they are heard.

Heard and added peers together are at most :data:`MAX_LEARNED_PEERS`; when a new one comes
in, the learned peer heard (or added, if never heard) least recently goes first, so a
flood of datagrams from new source addresses replaces the flood's own older entries before
it touches a peer that keeps talking. Datagrams are at most
:data:`~radios.base.MESH_DATAGRAM_MAX_BYTES`; a longer one received is dropped and counted
(``dropped_oversize``) and its source is not learned. A ``dst`` that is not an IP
``HOST:PORT`` is a :class:`~meshcomm.errors.LocalProtocolError`, as on the other radios.

Behind a NAT: the radio (with ``ask_mapped``) asks its configured peers every
:data:`~radios.uplink_mapped.PROBE_INTERVAL_S` which address they see it at, answers such
questions from others (rate-limited), and reports the mapped addresses through
:attr:`UplinkRadio.on_mapped` when they change (:mod:`radios.uplink_mapped`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from meshcomm.errors import LocalProtocolError
from meshcomm.types import UPLINK_RADIO
from radios._sockradio import SOCKET_RCVBUF_BYTES, SocketRadio
from radios.base import MESH_DATAGRAM_MAX_BYTES, Radio
from radios.uplink_mapped import (
    ANSWER,
    PROBE_INTERVAL_S,
    QUESTION,
    MappedAddresses,
    answer_for,
    is_control,
)

logger = logging.getLogger(__name__)

#: A peer learned by hearing it is forgotten after this long without a datagram from it.
HEARD_PEER_SILENT_S: Final = 120.0
#: A peer named by add_peers is kept this long after it was last named (or heard).
ADDED_PEER_TTL_S: Final = 600.0
#: Learned (heard or added) peers kept at most; configured ones do not count.
MAX_LEARNED_PEERS: Final = 256
#: Configured peers accepted (the bootstrap nodes; config allows 16).
MAX_CONFIGURED_PEERS: Final = 64
#: Expired learned peers are looked for at most this often.
PRUNE_INTERVAL_S: Final = 1.0
#: When port 0 is asked for and the first socket's port is taken for the other family,
#: try again with a new port this many times.
BIND_ATTEMPTS: Final = 8
PORT_MAX: Final = 65535

#: A socket address as socket.sendto takes it.
SockAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass(slots=True)
class _Learned:
    """A learned peer: where to send, and until when it is kept."""

    family: int
    sockaddr: SockAddr
    expires_at: float


def format_peer(family: int, host: str, port: int) -> str:
    """The peer address string of ``host``/``port`` (IPv6 in brackets, no scope)."""
    if family == socket.AF_INET6:
        return f"[{host.partition('%')[0]}]:{port}"
    return f"{host}:{port}"


def parse_peer(text: str) -> tuple[int, SockAddr, str]:
    """``"A.B.C.D:PORT"`` or ``"[V6]:PORT"`` -> (family, socket address, canonical text);
    LocalProtocolError for anything else (a host name, a port out of 1..65535)."""
    host, sep, port_text = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= PORT_MAX:
            raise ValueError("expected HOST:PORT with a port in 1..65535")
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        if bracketed != (address.version == 6):
            raise ValueError("an IPv6 address goes in brackets, an IPv4 one does not")
    except ValueError as exc:
        raise LocalProtocolError(f"not an uplink peer address: {text!r} ({exc})") from None
    port = int(port_text)
    if address.version == 6:
        return socket.AF_INET6, (str(address), port, 0, 0), format_peer(
            socket.AF_INET6, str(address), port)
    return socket.AF_INET, (str(address), port), f"{address}:{port}"


class _UplinkSocket(SocketRadio):
    """One UDP socket of an UplinkRadio (one address family); counts into the owner's
    counters and hands what it reads to the owner."""

    def __init__(self, owner: UplinkRadio, family: int) -> None:
        super().__init__(owner.name, MESH_DATAGRAM_MAX_BYTES)
        self.counters = owner.counters
        self.family = family
        self._owner = owner

    async def open(self) -> None:
        raise LocalProtocolError("an uplink socket is opened by its UplinkRadio")

    def bind(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> int:
        """Bind to ``host``/``port`` and start reading; returns the bound port."""
        self._check_not_open()
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            bound = int(sock.getsockname()[1])
        except BaseException:
            sock.close()
            raise
        self._attach(sock, loop)
        return bound

    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        if dst is None:
            raise LocalProtocolError("an uplink socket sends to one peer")
        _family, sockaddr, _text = parse_peer(dst)
        self.send_to(data, sockaddr, dst)

    def send_to(self, data: bytes, sockaddr: SockAddr, dst: str) -> None:
        self._sendto(data, sockaddr, len(data), dst)

    def _handle_received(self, data: bytes, addr: Any) -> None:
        self._owner.on_datagram(data, self.family, addr[0], addr[1])


class UplinkRadio(Radio):
    """UDP on the uplink interface's addresses, to a known set of peers. See the module
    docstring."""

    def __init__(self, addresses: Sequence[str], port: int, *,
                 peers: Sequence[str] = (), name: str = UPLINK_RADIO,
                 clock: Callable[[], float] | None = None, ask_mapped: bool = False) -> None:
        super().__init__(name, MESH_DATAGRAM_MAX_BYTES)
        families = [socket.AF_INET6 if ipaddress.ip_address(a).version == 6 else socket.AF_INET
                    for a in addresses]
        if not addresses or len(set(families)) != len(families):
            raise LocalProtocolError(f"uplink radio: one address per family, got {addresses}")
        if not 0 <= port <= PORT_MAX:
            raise LocalProtocolError(f"uplink radio: port {port} not in 0..{PORT_MAX}")
        if len(peers) > MAX_CONFIGURED_PEERS:
            raise LocalProtocolError(f"uplink radio: at most {MAX_CONFIGURED_PEERS} peers")
        self.addresses = tuple(str(ipaddress.ip_address(a)) for a in addresses)
        self.port = port
        #: The port every socket is bound to (set by open()).
        self.bound_port = 0
        self._peer_specs = tuple(peers)
        self._clock = clock
        self._sockets: dict[int, _UplinkSocket] = {}
        self._own: set[str] = set()
        #: Configured peers: canonical address -> (family, socket address).
        self._configured: dict[str, tuple[int, SockAddr]] = {}
        #: Learned peers, least recently heard (or added) first.
        self._learned: OrderedDict[str, _Learned] = OrderedDict()
        self._next_prune = 0.0
        #: The addresses NATs map us to, as configured peers see them (radios.uplink_mapped),
        #: and who hears when they change (the runtime: our binding and attachments).
        self._mapping = MappedAddresses()
        self._mapped: tuple[str, ...] = ()
        self.on_mapped: Callable[[tuple[str, ...]], None] | None = None
        self._probe_handle: asyncio.Handle | None = None
        #: Ask the configured peers for our mapped address (a relay; a dht-node answers).
        self.ask_mapped = ask_mapped
        for key in ("peers_learned", "peers_expired", "peers_evicted", "dropped_oversize",
                    "dropped_own", "mapped_questions", "mapped_answered",
                    "mapped_answers_limited", "mapped_learned", "dropped_control"):
            self.counters[key] = 0

    # ------------------------------------------------------------ lifecycle
    @property
    def is_open(self) -> bool:
        return bool(self._sockets)

    async def open(self) -> None:
        if self._sockets:
            raise LocalProtocolError(f"radio {self.name}: already open")
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        self._bind_all(loop)
        self._own = {format_peer(family, host, self.bound_port)
                     for family, host in zip(self._sockets, self.addresses, strict=True)}
        for spec in self._peer_specs:
            await self._configure(loop, spec)
        logger.info("radio %s: open on %s, udp/%d, %d configured peer(s)", self.name,
                    ", ".join(self.addresses), self.bound_port, len(self._configured))
        if self._configured and self.ask_mapped:
            self._probe_handle = loop.call_soon(self._probe, loop)

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask every configured peer where it sees us; check the mapped set's freshness."""
        if not self._sockets:
            return
        for text, (family, sockaddr) in self._configured.items():
            self.count("mapped_questions")
            self._sockets[family].send_to(self._mapping.question(text), sockaddr, text)
        self._mapped_changed()
        self._probe_handle = loop.call_later(PROBE_INTERVAL_S, self._probe, loop)

    def mapped_addrs(self) -> tuple[str, ...]:
        """The addresses NATs map this transport to, as peers saw them lately."""
        return self._mapping.fresh(self.now())

    def _mapped_changed(self) -> None:
        mapped = tuple(a for a in self.mapped_addrs() if a not in self._own)
        if mapped != self._mapped:
            self._mapped = mapped
            if self.on_mapped is not None:
                self.on_mapped(mapped)

    def _on_control(self, data: bytes, family: int, sockaddr: SockAddr, text: str) -> None:
        now = self.now()
        if data.startswith(QUESTION):
            reply = answer_for(data, text)
            if reply is None:
                self.count("dropped_control")
            elif not self._mapping.may_answer(now):
                self.count("mapped_answers_limited")
            else:
                self.count("mapped_answered")
                self._sockets[family].send_to(reply, sockaddr, text)
            return
        addr = self._mapping.on_answer(data, text, now) if data.startswith(ANSWER) else None
        if addr is None:
            self.count("dropped_control")
            return
        try:
            parse_peer(addr)
        except LocalProtocolError:
            self.count("dropped_control")
            return
        self.count("mapped_learned")
        self._mapped_changed()

    def _bind_all(self, loop: asyncio.AbstractEventLoop) -> None:
        """One socket per address, all on one port (port 0: a free one for all)."""
        for attempt in range(BIND_ATTEMPTS):
            port = self.port
            try:
                for host in self.addresses:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    sock = _UplinkSocket(self, family)
                    port = sock.bind(host, port, loop)
                    self._sockets[family] = sock
                self.bound_port = port
                return
            except OSError:
                self.close()
                if self.port != 0 or attempt == BIND_ATTEMPTS - 1:
                    raise

    async def _configure(self, loop: asyncio.AbstractEventLoop, spec: str) -> None:
        """Add one configured peer (a host name is resolved now; unresolvable: logged)."""
        host, _, port_text = spec.rpartition(":")
        try:
            family, sockaddr, text = parse_peer(spec)
        except LocalProtocolError:
            try:
                infos = await loop.getaddrinfo(host.strip("[]"), int(port_text),
                                               type=socket.SOCK_DGRAM)
            except (OSError, ValueError) as exc:
                logger.warning("radio %s: peer %s not resolved: %s", self.name, spec, exc)
                return
            found = [(i[0], i[4][0]) for i in infos if i[0] in self._sockets]
            if not found:
                logger.warning("radio %s: peer %s has no address of a family this uplink "
                               "has", self.name, spec)
                return
            family, sockaddr, text = parse_peer(format_peer(found[0][0], str(found[0][1]),
                                                            int(port_text)))
        if family not in self._sockets:
            logger.warning("radio %s: peer %s: this uplink has no address of its family",
                           self.name, spec)
            return
        if text not in self._own:
            self._configured[text] = (family, sockaddr)

    def close(self) -> None:
        if self._probe_handle is not None:
            self._probe_handle.cancel()
            self._probe_handle = None
        sockets, self._sockets = self._sockets, {}
        for sock in sockets.values():
            sock.close()

    # ------------------------------------------------------------ peers
    def now(self) -> float:
        return self._clock() if self._clock is not None else 0.0

    def peers(self) -> list[str]:
        """Every peer a broadcast goes to now: configured first, then learned."""
        self._prune(self.now(), force=True)
        return [*self._configured, *self._learned]

    def add_peers(self, addrs: Iterable[str]) -> int:
        """Learn peers named by the uplink mesh's edge (e.g. the relays of DHT attachments);
        a malformed address, our own, or one of a family this uplink has not is skipped
        (counted ``peers_add_skipped``). Returns how many were new."""
        now = self.now()
        new = 0
        for addr in addrs:
            try:
                family, sockaddr, text = parse_peer(addr)
            except LocalProtocolError:
                self.count("peers_add_skipped")
                continue
            if family not in self._sockets or text in self._own:
                self.count("peers_add_skipped")
                continue
            if text in self._configured:
                continue
            new += self._learn(text, family, sockaddr, now + ADDED_PEER_TTL_S, now,
                               heard=False)
        return new

    def _learn(self, text: str, family: int, sockaddr: SockAddr, expires_at: float,
               now: float, *, heard: bool) -> int:
        """Learn or refresh one peer; returns 1 if it is new."""
        peer = self._learned.get(text)
        if peer is not None:
            peer.expires_at = max(peer.expires_at, expires_at)
            if heard:
                self._learned.move_to_end(text)
            return 0
        self._prune(now)
        while len(self._learned) >= MAX_LEARNED_PEERS:
            self._learned.popitem(last=False)
            self.count("peers_evicted")
        self._learned[text] = _Learned(family, sockaddr, expires_at)
        self.count("peers_learned")
        return 1

    def _prune(self, now: float, *, force: bool = False) -> None:
        if not force and now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL_S
        for text in [t for t, p in self._learned.items() if p.expires_at <= now]:
            del self._learned[text]
            self.count("peers_expired")

    # ------------------------------------------------------------ datagrams
    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        if dst:
            family, sockaddr, _text = parse_peer(dst)
            sock = self._sockets.get(family)
            if sock is None:
                self.count("dropped_no_family")
                return
            sock.send_to(data, sockaddr, dst)
            return
        self._prune(self.now())
        for text, (family, sockaddr) in self._configured.items():
            self._sockets[family].send_to(data, sockaddr, text)
        for text, peer in self._learned.items():
            self._sockets[peer.family].send_to(data, peer.sockaddr, text)

    def on_datagram(self, data: bytes, family: int, host: str, port: int) -> None:
        """One datagram read by one of the sockets."""
        text = format_peer(family, host, port)
        if text in self._own:
            self.count("dropped_own")
            return
        if len(data) > MESH_DATAGRAM_MAX_BYTES:
            self.count("dropped_oversize")
            return
        sockaddr: SockAddr = (host, port) if family == socket.AF_INET else (
            host.partition("%")[0], port, 0, 0)
        if is_control(data):               # not the mesh's: a NAT mapping question/answer
            self._on_control(data, family, sockaddr, text)
            return
        if text not in self._configured:
            now = self.now()
            self._learn(text, family, sockaddr, now + HEARD_PEER_SILENT_S, now, heard=True)
        self.deliver(data, text)
