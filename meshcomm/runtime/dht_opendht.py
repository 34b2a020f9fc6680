"""The DHT port on OpenDHT: carries the bridge's operations out on a real DHT node.

:class:`OpenDhtPort` runs one OpenDHT node (``opendht.DhtRunner``: a C++ node with its own
threads) bound to the uplink interface's address(es), executes :data:`~meshcomm.dht.port.DhtOp`
operations and delivers :data:`~meshcomm.dht.port.DhtResult` results to ``on_result`` **on the
asyncio loop** (every OpenDHT callback only queues data and wakes the loop with
``call_soon_threadsafe``; nothing of ours runs on OpenDHT's threads but that).

What OpenDHT does with our operations, and what this edge adds:

* Keys: our 20-byte keys are OpenDHT InfoHashes (160 bits) as they are.
* Values: raw bytes (OpenDHT ``Value`` data, unsigned, unencrypted at this layer: the bridge
  signs and encrypts). A value's 64-bit OpenDHT id is a hash of its bytes, so a repeated put
  of the same bytes is one value on the DHT, not two.
* TTL: OpenDHT keeps a value of its default type for :data:`OPENDHT_VALUE_LIFETIME_S`
  (10 minutes) on the nodes that store it, whatever we ask; the Python binding cannot give a
  value another type. A put with ``ttl_s`` up to that lifetime is put once (the value may
  outlive ``ttl_s`` by up to those 10 minutes: the bridge's records carry their own expiry,
  which it verifies). A put with a longer ``ttl_s`` is put *permanent* (this node re-announces
  it before OpenDHT would drop it) and cancelled after ``ttl_s`` (at most
  :data:`MAX_TTL_S`); at most :data:`MAX_HELD_PUTS` such puts are held, further ones are put
  once (counted). When the node stops, its values live out their 10 minutes.
* Gets end with one ``DhtDone`` (``ok`` False on failure or after ``get_timeout_s``); puts
  too (``put_timeout_s``). Listens report values until cancelled; a listen or a get/put
  refused by a bound ends at once with ``DhtDone(ok=False)``.
* Bounds: values over :data:`~meshcomm.dht.port.MAX_VALUE_BYTES` are dropped; a result holds
  at most :data:`~meshcomm.dht.port.MAX_VALUES_PER_RESULT` values (more come in further
  batches), a get stops after :data:`MAX_VALUES_PER_GET` values, and a listen holds at most
  :data:`MAX_LISTEN_BACKLOG` values waiting for the loop; what is dropped is counted
  (:class:`DhtPortCounter`).
* Health: every ``peers_interval_s`` (``peers_interval_down_s`` while the last found none)
  a ``DhtPeers`` sample: the distinct nodes that answered a probe lookup (a get of a random
  key, ``probe_timeout_s`` at most), IPv4 and IPv6 (:meth:`OpenDhtPort.sample_peers`).
* Peer discovery: with no bootstrap node configured, OpenDHT's local peer discovery
  (multicast on the local segment) finds the other nodes of the same ``network`` id, so two
  vehicles on one LTE router need no set-up.

Two faults of OpenDHT 4.4's Python binding are worked around here: it aborts the whole
process when it cannot bind its socket, so the port checks the address and port with a
socket of its own first (:class:`DhtStartError`); and its ``cancelListen`` releases the
callback object of the *last* listen started (the objects sit in a dict shared by every
``ListenToken``), a use-after-free once two listens exist, so each listen's own object is
put back before it is cancelled. ``join`` holds the GIL while OpenDHT's thread may need it,
so :meth:`OpenDhtPort.close` waits for the shutdown callback before joining.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final

from opendht import _core as _odht  # type: ignore[import-untyped]

from meshcomm.dht.port import (
    DHT_KEY_BYTES,
    MAX_VALUE_BYTES,
    MAX_VALUES_PER_RESULT,
    DhtCancel,
    DhtDone,
    DhtGet,
    DhtListen,
    DhtOp,
    DhtPeers,
    DhtPut,
    DhtResult,
    DhtValues,
)
from meshcomm.errors import LocalProtocolError, MeshcommError

log = logging.getLogger(__name__)

#: OpenDHT's default UDP port.
DEFAULT_DHT_PORT: Final = 4222
#: The OpenDHT network id of meshcomm nodes: nodes of another network (the public Jami DHT
#: is network 0) ignore ours, and peer discovery finds only ours.
MESHCOMM_DHT_NETWORK: Final = 0x6D73
#: How long OpenDHT stores a value of its default type (ValueType USER_DATA), seconds.
OPENDHT_VALUE_LIFETIME_S: Final = 600
#: Longest TTL honoured (longer ones are cut to it), seconds.
MAX_TTL_S: Final = 7 * 24 * 3600
#: Permanent puts held for a TTL beyond OpenDHT's lifetime (beyond: put once, counted).
MAX_HELD_PUTS: Final = 4096
#: Gets and puts in flight at once (beyond: DhtDone(ok=False) at once, counted).
MAX_PENDING_OPS: Final = 4096
#: Listens active at once (beyond: DhtDone(ok=False) at once, counted).
MAX_LISTENS: Final = 1024
#: Values one get may produce; the get is stopped after them (a flood under one key).
MAX_VALUES_PER_GET: Final = 1024
#: Values of one listen waiting for the loop (beyond: dropped, counted).
MAX_LISTEN_BACKLOG: Final = 4 * MAX_VALUES_PER_RESULT
#: Bootstrap nodes accepted.
MAX_BOOTSTRAP_NODES: Final = 16
DEFAULT_GET_TIMEOUT_S: Final = 10.0
DEFAULT_PUT_TIMEOUT_S: Final = 10.0
DEFAULT_PEERS_INTERVAL_S: Final = 5.0
DEFAULT_PEERS_INTERVAL_DOWN_S: Final = 1.0
DEFAULT_PROBE_TIMEOUT_S: Final = 3.0
#: How long a cancelled listen's callback object is kept referenced, seconds.
RETIRED_CALLBACK_S: Final = 60.0
#: ... and at most this many of them (listens cancelled within RETIRED_CALLBACK_S).
MAX_RETIRED_CALLBACKS: Final = 16 * MAX_LISTENS
#: How long close() waits for OpenDHT to confirm its shutdown before joining its threads
#: (OpenDHT confirms once its gets and puts in flight end: ~17 s against a dead peer).
SHUTDOWN_WAIT_S: Final = 60.0
#: How often a stopping port looks whether OpenDHT confirmed, seconds (GIL free meanwhile).
SHUTDOWN_POLL_S: Final = 0.01

_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)

ResultCallback = Callable[[DhtResult], None]


class DhtStartError(MeshcommError):
    """The DHT node cannot start (bad or non-local address, port in use)."""


class DhtPortCounter(StrEnum):
    """What the port did and dropped; every one is reported from the start."""

    GETS = "gets"
    PUTS = "puts"
    LISTENS = "listens"
    CANCELS = "cancels"
    VALUES_DELIVERED = "values_delivered"
    OVERSIZE_DROPPED = "oversize_dropped"
    OVER_LIMIT_DROPPED = "over_limit_dropped"
    GET_FAILED = "get_failed"
    PUT_FAILED = "put_failed"
    GET_TIMEOUTS = "get_timeouts"
    PUT_TIMEOUTS = "put_timeouts"
    REFUSED_PENDING_FULL = "refused_pending_full"
    REFUSED_LISTENS_FULL = "refused_listens_full"
    HELD_PUTS_FULL = "held_puts_full"
    UNKNOWN_CANCELS = "unknown_cancels"


class _Kind(Enum):
    GET = "get"
    PUT = "put"
    LISTEN = "listen"


@dataclass(frozen=True, slots=True)
class DhtBind:
    """Where the node listens: an IPv4 and/or an IPv6 address (None: not that family;
    both None: every address of both families) and a UDP port (0: any free port)."""

    ipv4: str | None
    ipv6: str | None
    port: int


@dataclass(frozen=True, slots=True)
class PortSettings:
    """Timeouts and behaviour of an :class:`OpenDhtPort`."""

    network: int = MESHCOMM_DHT_NETWORK
    get_timeout_s: float = DEFAULT_GET_TIMEOUT_S
    put_timeout_s: float = DEFAULT_PUT_TIMEOUT_S
    #: DhtPeers sample period; None: no samples (benchmarks).
    peers_interval_s: float | None = DEFAULT_PEERS_INTERVAL_S
    #: ... while the last sample found no peer (an uplink coming back is noticed within
    #: about this, plus the uplink's stable period)...
    peers_interval_down_s: float = DEFAULT_PEERS_INTERVAL_DOWN_S
    #: ... and a probe not answered within this counts as no peer.
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    #: None: on when no bootstrap node is given.
    peer_discovery: bool | None = None
    #: The node's 20-byte id (a bootstrap node keeps its id across restarts); None: random.
    node_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class PeerCounts:
    """Good nodes in the routing tables, per family."""

    ipv4: int
    ipv6: int

    @property
    def good(self) -> int:
        return self.ipv4 + self.ipv6


class _Op:
    """One get, put or listen in flight. Written by OpenDHT's thread: ``inbox`` (append),
    ``raw_seen``, ``oversize``, ``over_limit``, ``flush_posted``; the rest by the loop."""

    __slots__ = ("finished", "flush_posted", "held", "inbox", "key", "kind", "listen_token",
                 "over_limit", "oversize", "raw_seen", "reported", "timer", "token", "value")

    def __init__(self, token: int, kind: _Kind, key: Any) -> None:
        self.token = token
        self.kind = kind
        self.key = key
        self.inbox: deque[bytes] = deque()
        self.raw_seen = 0
        self.oversize = 0
        self.over_limit = 0
        self.reported = (0, 0)       # (oversize, over_limit) already counted by the loop
        self.flush_posted = False
        self.timer: asyncio.TimerHandle | None = None
        self.listen_token: Any = None
        self.value: Any = None
        self.held = False
        self.finished = False       # done, timed out or cancelled: nothing more is delivered


def value_id(data: bytes) -> int:
    """The OpenDHT value id of ``data``: a nonzero 64-bit hash (0 means 'pick one')."""
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return digest or 1


def check_bind(bind: DhtBind) -> None:
    """Raise DhtStartError unless the addresses are local addresses of the right family and
    the UDP port is free on them (OpenDHT itself would abort the process)."""
    if not 0 <= bind.port <= 65535:
        raise DhtStartError(f"port {bind.port} is not in 0..65535")
    families = ((socket.AF_INET, bind.ipv4, 4), (socket.AF_INET6, bind.ipv6, 6))
    if bind.ipv4 is None and bind.ipv6 is None:
        families = ((socket.AF_INET, "0.0.0.0", 4), (socket.AF_INET6, "::", 6))
    for family, host, version in families:
        if host is None:
            continue
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise DhtStartError(f"{host!r} is not an IP address") from None
        if address.version != version:
            raise DhtStartError(f"{host} is not an IPv{version} address")
        _probe_bind(family, str(address), bind.port)


def _probe_bind(family: socket.AddressFamily, host: str, port: int) -> None:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
    except OSError as exc:
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise DhtStartError(f"cannot bind UDP {where}: {exc.strerror or exc}") from None


def _infohash(key: bytes) -> Any:
    if len(key) != DHT_KEY_BYTES:
        raise LocalProtocolError(f"a DHT key is {DHT_KEY_BYTES} bytes, not {len(key)}")
    return _odht.InfoHash(key.hex().encode())


def count_peers(node_addrs: Sequence[bytes | str]) -> PeerCounts:
    """IPv4 and IPv6 nodes among OpenDHT node addresses (``1.2.3.4:5``, ``[::1]:5``)."""
    texts = [a.decode(errors="replace") if isinstance(a, bytes) else a for a in node_addrs]
    ipv6 = sum(1 for text in set(texts) if text.startswith("["))
    return PeerCounts(len(set(texts)) - ipv6, ipv6)


class OpenDhtPort:
    """One OpenDHT node carrying out the bridge's DHT operations.

    Start it with the constructor (raises :class:`DhtStartError`), feed it operations with
    :meth:`submit`, stop it with :meth:`close` (idempotent; no OpenDHT thread is left).
    ``on_result`` is called on ``loop``'s thread only.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, bind: DhtBind,
                 bootstrap: Sequence[tuple[str, int]], on_result: ResultCallback,
                 settings: PortSettings | None = None) -> None:
        self.settings = settings or PortSettings()
        if len(bootstrap) > MAX_BOOTSTRAP_NODES:
            raise DhtStartError(f"at most {MAX_BOOTSTRAP_NODES} bootstrap nodes")
        check_bind(bind)
        self._loop = loop
        self._on_result = on_result
        self._bind = bind
        self._ops: dict[int, _Op] = {}
        self._listens: dict[int, _Op] = {}
        self._held: dict[int, _Op] = {}
        self._retired: deque[tuple[float, Any]] = deque()
        self._counts = dict.fromkeys(DhtPortCounter, 0)
        self._closed = False
        self._peer_timer: asyncio.TimerHandle | None = None
        self._peers = PeerCounts(0, 0)
        self._probe: _Op | None = None
        self._runner = _odht.DhtRunner()
        self._runner.run(port=bind.port, ipv4=bind.ipv4 or "", ipv6=bind.ipv6 or "",
                         config=self._dht_config(bool(bootstrap)))
        # getBound takes the lock OpenDHT's thread holds while it runs our callbacks (see
        # sample_peers): read it once now, before any callback of ours exists.
        family = _AF_INET if bind.ipv4 is not None or bind.ipv6 is None else _AF_INET6
        self._bound_port = int(self._runner.getBound(family).getPort())
        for host, port in bootstrap:
            self._runner.bootstrap(host, str(port))
        if self.settings.peers_interval_s is not None:
            self._peer_timer = loop.call_later(self.settings.peers_interval_s, self._sample)

    def _dht_config(self, has_bootstrap: bool) -> Any:
        config = _odht.DhtConfig()
        config.setNetwork(self.settings.network)
        discovery = self.settings.peer_discovery
        if discovery is None:
            discovery = not has_bootstrap
        config.setPeerDiscovery(discovery, discovery)
        if self.settings.node_id is not None:
            config.setNodeId(_infohash(self.settings.node_id))
        return config

    # ------------------------------------------------------------------ facts
    @property
    def counters(self) -> dict[DhtPortCounter, int]:
        """Every counter (drops counted on OpenDHT's thread included once reported)."""
        return dict(self._counts)

    @property
    def closed(self) -> bool:
        return self._closed

    def node_id(self) -> str:
        """The node's id (40 hex digits; public, it is the node's DHT address)."""
        return str(self._runner.getNodeId())

    def bound_port(self) -> int:
        """The UDP port the node listens on (the chosen one when asked for port 0)."""
        return self._bound_port

    def peers(self) -> PeerCounts:
        """Good peers at the last probe (0 and 0 before the first and once closed)."""
        return PeerCounts(0, 0) if self._closed else self._peers

    def sample_peers(self) -> None:
        """Probe the DHT now (unless a probe is out): a get of a random key; the distinct
        nodes that answered it are the good peers, reported as DhtPeers and by peers().

        Why a probe and not OpenDHT's routing-table counts: those are read under the lock
        OpenDHT's thread holds while it runs our callbacks, and the binding keeps the GIL
        while it waits for that lock, a deadlock as soon as a callback is due."""
        if self._closed or self._probe is not None:
            return
        probe = self._probe = _Op(0, _Kind.GET, None)
        probe.timer = self._loop.call_later(self.settings.probe_timeout_s, self._probe_done,
                                            probe, False, ())

        def on_done(ok: bool, nodes: Any) -> None:
            addrs = [entry.getNode().getAddr() for entry in nodes] if ok else []
            self._post(self._probe_done, probe, bool(ok), addrs)

        self._runner.get(_odht.InfoHash.getRandom(), lambda _value: False, on_done)

    # ------------------------------------------------------------------ operations
    def submit(self, op: DhtOp) -> None:
        """Carry out one operation of the bridge; its results come to ``on_result`` later."""
        if self._closed:
            raise LocalProtocolError("submit on a closed DHT port")
        if isinstance(op, DhtCancel):
            self._cancel(op.token)
            return
        if op.token in self._ops or op.token in self._listens:
            raise LocalProtocolError(f"DHT token {op.token} is already in use")
        key = _infohash(op.key)
        if isinstance(op, DhtListen):
            self._listen(op.token, key)
        elif len(self._ops) >= MAX_PENDING_OPS:
            self._count(DhtPortCounter.REFUSED_PENDING_FULL)
            self._loop.call_soon(self._deliver, DhtDone(op.token, False))
        elif isinstance(op, DhtGet):
            self._get(op.token, key)
        else:
            self._put(op, key)

    def _get(self, token: int, key: Any) -> None:
        op = _Op(token, _Kind.GET, key)
        self._ops[token] = op
        self._count(DhtPortCounter.GETS)
        op.timer = self._loop.call_later(self.settings.get_timeout_s, self._timeout, op)
        self._runner.get(key, self._value_callback(op), self._done_callback(op))

    def _put(self, put: DhtPut, key: Any) -> None:
        if len(put.value) > MAX_VALUE_BYTES:
            raise LocalProtocolError(f"a DHT value is at most {MAX_VALUE_BYTES} bytes")
        op = _Op(put.token, _Kind.PUT, key)
        op.value = _odht.Value(put.value)
        op.value.id = value_id(put.value)
        ttl_s = min(max(put.ttl_s, 0), MAX_TTL_S)
        permanent = ttl_s > OPENDHT_VALUE_LIFETIME_S
        if permanent and len(self._held) >= MAX_HELD_PUTS:
            self._count(DhtPortCounter.HELD_PUTS_FULL)
            permanent = False
        self._ops[put.token] = op
        self._count(DhtPortCounter.PUTS)
        op.timer = self._loop.call_later(self.settings.put_timeout_s, self._timeout, op)
        if permanent:
            held = _Op(put.token, _Kind.PUT, key)
            held.value, held.held = op.value, True
            held.timer = self._loop.call_later(ttl_s, self._release, held)
            self._held[id(held)] = held
        self._runner.put(key, op.value, self._done_callback(op), permanent)

    def _listen(self, token: int, key: Any) -> None:
        if len(self._listens) >= MAX_LISTENS:
            self._count(DhtPortCounter.REFUSED_LISTENS_FULL)
            self._loop.call_soon(self._deliver, DhtDone(token, False))
            return
        op = _Op(token, _Kind.LISTEN, key)
        self._listens[token] = op
        self._count(DhtPortCounter.LISTENS)
        callback = self._value_callback(op)
        op.listen_token = self._runner.listen(key, lambda value, expired: (
            True if expired else callback(value)))
        # The binding keeps a listen's callback object in a dict shared by every ListenToken
        # (a class attribute) and cancelListen releases whatever it holds then: remember
        # this listen's own, to put it back before cancelling (see _cancel_listen).
        op.value = op.listen_token._cb["cb"]

    def _cancel(self, token: int) -> None:
        op = self._listens.pop(token, None)
        if op is None:
            self._count(DhtPortCounter.UNKNOWN_CANCELS)
            return
        self._count(DhtPortCounter.CANCELS)
        self._flush(op)
        op.finished = True
        self._cancel_listen(op)

    def _cancel_listen(self, op: _Op) -> None:
        """Cancel a listen in OpenDHT, releasing *its* callback object (not the last
        listen's, as the binding alone would). The object stays referenced here for
        :data:`RETIRED_CALLBACK_S` (OpenDHT's thread may still be about to call it)."""
        op.listen_token._cb["cb"] = op.value
        self._runner.cancelListen(op.listen_token)
        now = self._loop.time()
        self._retired.append((now, op.value))
        while self._retired and (self._retired[0][0] < now - RETIRED_CALLBACK_S
                                 or len(self._retired) > MAX_RETIRED_CALLBACKS):
            self._retired.popleft()

    # ------------------------------------------------------------------ OpenDHT's threads
    def _value_callback(self, op: _Op) -> Callable[[Any], bool]:
        """A value callback for OpenDHT's thread: bound, queue, wake the loop."""
        # A get's values are bounded in total; a listen's by what waits for the loop.
        limit = MAX_VALUES_PER_GET if op.kind is _Kind.GET else None
        backlog = MAX_VALUES_PER_GET if op.kind is _Kind.GET else MAX_LISTEN_BACKLOG

        def on_value(value: Any) -> bool:
            if self._closed or op.finished:
                return False
            op.raw_seen += 1
            if limit is not None and op.raw_seen > limit:
                op.over_limit += 1
                return False
            data = bytes(value.data)
            if len(data) > MAX_VALUE_BYTES:
                op.oversize += 1
            elif len(op.inbox) >= backlog:
                op.over_limit += 1
            else:
                op.inbox.append(data)
            if not op.flush_posted:
                op.flush_posted = True
                self._post(self._flush, op)
            return True

        return on_value

    def _done_callback(self, op: _Op) -> Callable[[bool, Any], None]:
        def on_done(ok: bool, _nodes: Any) -> None:
            self._post(self._finish, op, bool(ok))

        return on_done

    def _post(self, func: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(func, *args)

    # ------------------------------------------------------------------ the loop
    def _deliver(self, result: DhtResult) -> None:
        if not self._closed:
            self._on_result(result)

    def _flush(self, op: _Op) -> None:
        """Hand what OpenDHT's thread queued for ``op`` to the bridge, in bounded batches."""
        op.flush_posted = False
        oversize, over_limit = op.oversize, op.over_limit
        self._count(DhtPortCounter.OVERSIZE_DROPPED, oversize - op.reported[0])
        self._count(DhtPortCounter.OVER_LIMIT_DROPPED, over_limit - op.reported[1])
        op.reported = (oversize, over_limit)
        if op.finished:             # values that raced a cancel or a timeout: not delivered
            op.inbox.clear()
            return
        while op.inbox:
            batch: list[bytes] = []
            while op.inbox and len(batch) < MAX_VALUES_PER_RESULT:
                batch.append(op.inbox.popleft())
            self._count(DhtPortCounter.VALUES_DELIVERED, len(batch))
            self._deliver(DhtValues(op.token, tuple(batch)))

    def _finish(self, op: _Op, ok: bool) -> None:
        if op.held:
            return
        if op.timer is None or self._ops.get(op.token) is not op:
            return                  # timed out before, or the port was closed
        op.timer.cancel()
        op.timer = None
        del self._ops[op.token]
        self._flush(op)
        op.finished = True
        if not ok:
            self._count(DhtPortCounter.GET_FAILED if op.kind is _Kind.GET
                        else DhtPortCounter.PUT_FAILED)
        self._deliver(DhtDone(op.token, ok))

    def _timeout(self, op: _Op) -> None:
        if self._ops.get(op.token) is not op:
            return
        op.timer = None
        del self._ops[op.token]
        self._flush(op)
        op.finished = True
        self._count(DhtPortCounter.GET_TIMEOUTS if op.kind is _Kind.GET
                    else DhtPortCounter.PUT_TIMEOUTS)
        self._deliver(DhtDone(op.token, False))

    def _release(self, held: _Op) -> None:
        """A permanent put's TTL is over: stop re-announcing it."""
        if self._held.pop(id(held), None) is not None and not self._closed:
            self._runner.cancelPut(held.key, held.value)

    def _sample(self) -> None:
        if self._closed or self.settings.peers_interval_s is None:
            return
        interval = self.settings.peers_interval_s
        if not self._peers.good:
            interval = min(interval, self.settings.peers_interval_down_s)
        self._peer_timer = self._loop.call_later(interval, self._sample)
        self.sample_peers()

    def _probe_done(self, probe: _Op, ok: bool, addrs: Sequence[bytes | str]) -> None:
        if self._probe is not probe or self._closed:
            return                  # answered after its timeout, or closed
        if probe.timer is not None:
            probe.timer.cancel()
        self._probe = None
        self._peers = count_peers(addrs) if ok else PeerCounts(0, 0)
        self._deliver(DhtPeers(self._peers.good))

    def _count(self, counter: DhtPortCounter, amount: int = 1) -> None:
        self._counts[counter] += amount

    # ------------------------------------------------------------------ stop
    #
    # OpenDHT confirms a shutdown (its callback) only once every get and put in flight has
    # ended, which against dead peers takes OpenDHT up to ~20 s. Its join() takes the lock
    # OpenDHT's thread holds while it runs our callbacks, and the binding keeps the GIL
    # while it waits: joining while a callback of ours is due or still returning deadlocks.
    # So both ways of stopping wait, with the GIL free, for the shutdown callback (after it
    # no callback of ours is due) plus one more poll interval (so it has returned: the
    # callback only sets a flag, it never releases the GIL itself), at most
    # SHUTDOWN_WAIT_S, then join.
    def _begin_close(self) -> list[bool] | None:
        """Mark the port closed, drop its work and ask OpenDHT to shut down; the returned
        flag turns True when OpenDHT confirms. None if the port was closed already."""
        if self._closed:
            return None
        self._closed = True
        if self._peer_timer is not None:
            self._peer_timer.cancel()
        if self._probe is not None and self._probe.timer is not None:
            self._probe.timer.cancel()
        for op in [*self._ops.values(), *self._held.values()]:
            if op.timer is not None:
                op.timer.cancel()
                op.timer = None
        for op in self._listens.values():
            self._cancel_listen(op)
        self._ops.clear()
        self._listens.clear()
        self._held.clear()
        confirmed = [False]

        def on_stopped() -> None:
            confirmed[0] = True     # nothing more: no call that could release the GIL

        self._runner.shutdown(on_stopped)
        return confirmed

    def _join(self, confirmed: bool) -> None:
        if not confirmed:
            log.warning("OpenDHT did not confirm its shutdown within %.0f s", SHUTDOWN_WAIT_S)
        self._runner.join()
        self._retired.clear()

    def close(self) -> None:
        """Stop the node, blocking the caller until OpenDHT has stopped (no OpenDHT thread
        is left). Pending operations end silently. Safe to call twice. In a running loop
        prefer :meth:`aclose`, which keeps the loop serving meanwhile."""
        confirmed = self._begin_close()
        if confirmed is None:
            return
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while not confirmed[0] and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL_S)
        time.sleep(SHUTDOWN_POLL_S)
        self._join(confirmed[0])

    async def aclose(self) -> None:
        """:meth:`close` that awaits OpenDHT's shutdown instead of blocking the loop."""
        confirmed = self._begin_close()
        if confirmed is None:
            return
        deadline = self._loop.time() + SHUTDOWN_WAIT_S
        while not confirmed[0] and self._loop.time() < deadline:
            await asyncio.sleep(SHUTDOWN_POLL_S)
        await asyncio.sleep(SHUTDOWN_POLL_S)
        self._join(confirmed[0])
