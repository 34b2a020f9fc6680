#!/usr/bin/env python3
"""A hostile radio neighbour for the namespace test beds (root; test and drill use only).

Runs inside a test-bed namespace beside a node (see :meth:`tools.testbed.Testbed.attach`)
and transmits on that namespace's interface to the mesh's link-local multicast group
(:data:`radios.udp.MULTICAST_GROUP_V6`, port :data:`radios.udp.DEFAULT_PORT`), hop limit 1,
so nothing it sends leaves the link. It refuses to run outside a test-bed namespace
(``mctb...`` under /run/netns).

  python -m tools.testbed.inject sybil    --iface to2 [--rate 1000] [--duration 60] [--record F]
  python -m tools.testbed.inject garbage  --iface to2 [--rate 1000] [--duration 20]
  python -m tools.testbed.inject capture  --iface to2 --duration 60 --out F
  python -m tools.testbed.inject replay   --iface to2 --from F [--aor A] [--capture-s S]
  python -m tools.testbed.inject takeover --iface to2 --aor sip:n4@incident.local [--rate 20]

Modes:

* ``sybil``: every datagram is a validly signed BINDING from a fresh Ed25519 key (a new
  AoR ``sip:sybil-<hex>@DOMAIN``), for the node's incident; ``--rate`` keys per second.
* ``garbage``: random bytes, truncated and bit-flipped copies of valid frames (mostly a
  broken signature, so a receiver pays for a verification), and well-formed msgpack of the
  wrong shape.
* ``capture``: listen only; save every binding heard (BINDING frames and the records inside
  anti-entropy RECORDS frames) to ``--out``.
* ``replay``: send captured bindings again (from ``--from`` files and/or ``--capture-s``
  seconds of listening first), cycling through them, with fresh hop fields (TTL full, age
  0: the hop fields are outside the signature). ``--aor`` keeps only that AoR's bindings;
  tombstones are left out unless ``--tombstones``.
* ``takeover``: a key that is not the holder's claims ``--aor`` again and again (a new
  sequence number each time; ``--rotate-keys``: a new key for every claim). Without
  ``--rotate-keys`` the claimant also sends signed HELLOs (reporting the nodes it hears at
  full quality), so it looks like a good neighbour a node can route to. It sends from 16
  open sockets (``--ports``) and counts the UNICAST frames nodes forward to it: traffic for
  the AoR routed toward the attacker (never acknowledged).

Every datagram goes out from a new UDP source port (a new socket per datagram), unless
``--ports N`` rotates over N sockets (takeover: 16 by default). Rate, duration and
``--seed`` (keys, AoRs and garbage are reproducible) are options; it stops by itself after
``--duration`` seconds (or on SIGTERM/SIGINT) and prints one JSON line: mode, sent, send
errors, distinct keys, elapsed seconds and the achieved rate.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.location.binding import binding_from_envelope_untrusted
from meshcomm.security.identity import Identity
from meshcomm.types import SIGNATURE_LEN
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    SHORT_ID_LEN,
    Envelope,
    Hop,
    MsgType,
    decode_frame_untrusted,
    decode_signed_untrusted,
    encode_frame,
    parse_frame_untrusted,
    seal,
)
from radios.udp import DEFAULT_PORT, MULTICAST_GROUP_V6
from tools.testbed.netns import NAME_ROOT, NETNS_DIR

DEFAULT_INCIDENT: Final = "default"
DEFAULT_DOMAIN: Final = "incident.local"
DEFAULT_LIFETIME_S: Final = 300
#: TTL of an injected flood (the overlay's default ``flood_ttl``).
FLOOD_TTL: Final = 16
#: Pacing: frames due are sent in ticks of this length.
TICK_S: Final = 0.005
RECV_BYTES: Final = 65535
#: Garbage: valid frames kept to truncate and mutate, and the longest random datagram.
GARBAGE_TEMPLATES: Final = 64
GARBAGE_MAX_BYTES: Final = 1200
#: Hard caps, so a typo cannot turn a drill into a day-long flood.
MAX_RATE: Final = 20000.0
MAX_DURATION_S: Final = 3600.0
MAX_CAPTURED: Final = 500_000
#: Length prefix of one record in a capture file (then signed bytes, then the signature).
_LEN = struct.Struct(">H")
IPV6_MULTICAST_ALL: Final = 29
#: takeover: source sockets kept open (and read) unless ``--ports`` says otherwise.
TAKEOVER_PORTS: Final = 16
#: takeover: HELLO period of the fake neighbour, and the link quality it reports (0-255).
HELLO_INTERVAL_S: Final = 0.5
MAX_QUALITY: Final = 255


class InjectError(RuntimeError):
    """The injector cannot run as asked (message says why)."""


# -- safety and sockets --------------------------------------------------------------------


def check_test_bed_namespace() -> str:
    """The name of the test-bed namespace this process runs in; InjectError if it is not in
    one (a named namespace under /run/netns made by :mod:`tools.testbed.netns`)."""
    try:
        own = os.stat("/proc/self/ns/net")
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError as exc:
        raise InjectError(f"cannot tell which network namespace this is: {exc}") from exc
    for name in names:
        if not name.startswith(NAME_ROOT):
            continue
        with contextlib.suppress(OSError):
            st = os.stat(NETNS_DIR / name)
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                return name
    raise InjectError("refusing to inject outside a test-bed namespace; run it with "
                      "'ip netns exec NS' inside a test bed (python -m tools.testbed)")


class Sender:
    """Sends datagrams to the mesh group on one interface, from rotating source ports."""

    def __init__(self, iface: str, port: int, pool: int) -> None:
        self.index = socket.if_nametoindex(iface)
        self.dst = (MULTICAST_GROUP_V6, port, 0, self.index)
        self.pool = [self._socket() for _ in range(pool)]
        self.sent = 0
        self.errors = 0
        self.ports: set[int] = set()

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        # Not looped back: a capture or listener beside us hears only what the node sends.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.bind(("::", 0, 0, 0))
        return sock

    def send(self, data: bytes) -> None:
        pooled = bool(self.pool)
        sock = self.pool[self.sent % len(self.pool)] if pooled else self._socket()
        try:
            sock.sendto(data, self.dst)
            self.sent += 1
            if len(self.ports) < MAX_CAPTURED:
                self.ports.add(sock.getsockname()[1])
        except OSError:
            self.errors += 1
        finally:
            if not pooled:
                sock.close()

    def drain(self) -> list[bytes]:
        """Datagrams that arrived on the pooled sockets (unicast to our source ports)."""
        got: list[bytes] = []
        for sock in self.pool:
            with contextlib.suppress(OSError):  # e.g. an ICMP error queued on the socket
                got += _drain(sock)
        return got

    def close(self) -> None:
        for sock in self.pool:
            sock.close()


def listener(iface: str, port: int) -> socket.socket:
    """A socket receiving the mesh group (and unicast to ``port``) on ``iface``."""
    index = socket.if_nametoindex(iface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    sock.bind(("::", port, 0, 0))
    mreq = socket.inet_pton(socket.AF_INET6, MULTICAST_GROUP_V6) + struct.pack("@I", index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    return sock


# -- frames ----------------------------------------------------------------------------------


def fresh_hop_frame(signed: bytes, signature: bytes) -> bytes:
    """A radio frame carrying an existing signed envelope with new hop fields (TTL full,
    age 0): what a replaying attacker sends."""
    return encode_frame(decode_signed_untrusted(signed, signature), Hop(ttl=FLOOD_TTL))


@dataclass
class Forge:
    """Makes validly signed bindings from seeded keys."""

    rng: random.Random
    incident: str
    domain: str
    lifetime_s: int
    keys: int = 0

    def identity(self) -> Identity:
        self.keys += 1
        return Identity(seed=self.rng.randbytes(32))

    def binding(self, identity: Identity, aor: str, seq: int) -> Envelope:
        user = aor.partition(":")[2].partition("@")[0]
        payload = [aor, [f"sip:{user}@127.0.0.1:5060"], float(time.time()),
                   self.lifetime_s, 0, [], None]
        return seal(identity, MsgType.BINDING, self.incident, seq, payload)

    def sybil_frame(self) -> bytes:
        ident = self.identity()
        aor = f"sip:sybil-{ident.node_id[:6].hex()}@{self.domain}"
        return encode_frame(self.binding(ident, aor, 1), Hop(ttl=FLOOD_TTL))


def garbage_frame(rng: random.Random, templates: Sequence[bytes]) -> bytes:
    """One hostile datagram: random, truncated, bit-flipped or mis-shaped."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(1, GARBAGE_MAX_BYTES))
    base = rng.choice(templates)
    if kind == 1:
        return base[:rng.randrange(1, len(base))]
    if kind == 2:
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    shapes: list[object] = [[base, base, base], [b"", b"\x00" * SIGNATURE_LEN, [1, 2]],
                            {"a": 1}, [rng.randbytes(40), rng.randbytes(64), [0, 0, 0, 0]]]
    return codec.pack(rng.choice(shapes))


# -- capture files ----------------------------------------------------------------------------


def bindings_in_frame(data: bytes, incident: str = DEFAULT_INCIDENT
                      ) -> Iterator[tuple[bytes, bytes]]:
    """(signed bytes, signature) of every binding a radio frame of ``incident`` carries: a
    BINDING frame itself, or the records inside an anti-entropy RECORDS frame."""
    try:
        env, _hop = decode_frame_untrusted(data, incident)
    except DecodeError:
        return
    if env.msg_type is MsgType.BINDING:
        yield env.signed_bytes, env.signature
        return
    if env.msg_type is not MsgType.RECORDS or not isinstance(env.payload, list):
        return
    for item in env.payload:
        if (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], bytes)
                and isinstance(item[1], bytes) and len(item[1]) == SIGNATURE_LEN):
            yield item[0], item[1]


def write_records(path: Path, records: Iterable[tuple[bytes, bytes]]) -> int:
    count = 0
    with path.open("wb") as out:
        for signed, signature in records:
            out.write(_LEN.pack(len(signed)) + signed + signature)
            count += 1
    return count


def read_records(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos + _LEN.size <= len(data) and len(out) < MAX_CAPTURED:
        (size,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        signed, signature = data[pos:pos + size], data[pos + size:pos + size + SIGNATURE_LEN]
        pos += size + SIGNATURE_LEN
        if len(signature) == SIGNATURE_LEN:
            out.append((signed, signature))
    return out


@dataclass
class Capture:
    """Distinct bindings heard, in the order first heard."""

    records: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    frames: int = 0

    def add_frame(self, data: bytes) -> None:
        self.frames += 1
        for signed, signature in bindings_in_frame(data):
            if len(self.records) < MAX_CAPTURED:
                self.records.setdefault(signature, (signed, signature))

    def listen(self, sock: socket.socket, until: float, stop: Callable[[], bool]) -> None:
        while not stop() and time.monotonic() < until:
            sock.settimeout(max(0.01, min(0.2, until - time.monotonic())))
            try:
                data, _addr = sock.recvfrom(RECV_BYTES)
            except TimeoutError:
                continue
            self.add_frame(data)


def keep_for_replay(records: Sequence[tuple[bytes, bytes]], aor: str | None,
                    tombstones: bool) -> list[tuple[bytes, bytes]]:
    """The captured bindings to replay: well-formed, of ``aor`` if given, live unless
    ``tombstones``."""
    out = []
    for signed, signature in records:
        try:
            binding = binding_from_envelope_untrusted(decode_signed_untrusted(signed, signature))
        except DecodeError:
            continue
        if aor is not None and binding.aor.lower() != aor.lower():
            continue
        if binding.is_tombstone and not tombstones:
            continue
        out.append((signed, signature))
    return out


# -- the run loop ---------------------------------------------------------------------------


class Stopper:
    """Set by SIGTERM/SIGINT, so the run ends cleanly and still prints its summary."""

    def __init__(self) -> None:
        self.stopped = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


def paced(sender: Sender, make: Callable[[], bytes], rate: float, duration_s: float,
          stop: Callable[[], bool], tick: Callable[[], None] | None = None) -> float:
    """Send ``make()`` frames at ``rate`` per second for ``duration_s``; elapsed seconds.
    ``tick`` is called once per pacing tick."""
    start = time.monotonic()
    end = start + duration_s
    while not stop():
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate) + 1 - sender.sent - sender.errors
        for _ in range(max(0, due)):
            sender.send(make())
        if tick is not None:
            tick()
        time.sleep(TICK_S)
    return time.monotonic() - start


def _summary(mode: str, sender: Sender | None, elapsed_s: float,
             **extra: object) -> dict[str, object]:
    sent = sender.sent if sender else 0
    return {"mode": mode, "sent": sent, "errors": sender.errors if sender else 0,
            "source_ports": len(sender.ports) if sender else 0,
            "elapsed_s": round(elapsed_s, 3),
            "rate": round(sent / elapsed_s, 1) if elapsed_s > 0 else 0.0, **extra}


def run_sybil(args: argparse.Namespace, stop: Stopper) -> dict[str, object]:
    forge = Forge(random.Random(args.seed), args.incident, args.domain, args.lifetime)
    recorded: list[bytes] = []

    def make() -> bytes:
        frame = forge.sybil_frame()
        if args.record is not None and len(recorded) < MAX_CAPTURED:
            recorded.append(frame)
        return frame

    sender = Sender(args.iface, args.port, args.ports)
    try:
        elapsed = paced(sender, make, args.rate, args.duration, stop)
    finally:
        sender.close()
    if args.record is not None:
        write_records(args.record, (b for f in recorded for b in bindings_in_frame(f)))
    return _summary("sybil", sender, elapsed, keys=forge.keys)


def run_garbage(args: argparse.Namespace, stop: Stopper) -> dict[str, object]:
    rng = random.Random(args.seed)
    forge = Forge(random.Random(rng.random()), args.incident, args.domain, args.lifetime)
    templates = [forge.sybil_frame() for _ in range(GARBAGE_TEMPLATES)]
    sender = Sender(args.iface, args.port, args.ports)
    try:
        elapsed = paced(sender, lambda: garbage_frame(rng, templates), args.rate,
                        args.duration, stop)
    finally:
        sender.close()
    return _summary("garbage", sender, elapsed)


def run_capture(args: argparse.Namespace, stop: Stopper) -> dict[str, object]:
    capture = Capture()
    start = time.monotonic()
    with listener(args.iface, args.port) as sock:
        capture.listen(sock, start + args.duration, stop)
    written = write_records(args.out, list(capture.records.values()))
    return _summary("capture", None, time.monotonic() - start, frames_heard=capture.frames,
                    bindings=written)


def run_replay(args: argparse.Namespace, stop: Stopper) -> dict[str, object]:
    records: list[tuple[bytes, bytes]] = []
    for path in args.sources:
        records += read_records(path)
    if args.capture_s > 0:
        capture = Capture()
        with listener(args.iface, args.port) as sock:
            capture.listen(sock, time.monotonic() + args.capture_s, stop)
        records += list(capture.records.values())
    chosen = keep_for_replay(records, args.aor, args.tombstones)
    if not chosen:
        return _summary("replay", None, 0.0, captured=len(records), replayable=0)
    frames = [fresh_hop_frame(s, sig) for s, sig in chosen]
    cycle = itertools.cycle(frames)
    sender = Sender(args.iface, args.port, args.ports)
    try:
        elapsed = paced(sender, lambda: next(cycle), args.rate, args.duration, stop)
    finally:
        sender.close()
    return _summary("replay", sender, elapsed, captured=len(records), replayable=len(frames))


@dataclass
class Claimant:
    """Claims one AoR with a key that is not its holder's: a new sequence number per claim,
    or (``rotate``) a new key per claim."""

    forge: Forge
    aor: str
    rotate: bool
    identity: Identity | None = None
    seq: int = 0

    def frame(self) -> bytes:
        if self.identity is None or self.rotate:
            self.identity, self.seq = self.forge.identity(), 0
        self.seq += 1
        envelope = self.forge.binding(self.identity, self.aor, self.seq)
        return encode_frame(envelope, Hop(ttl=FLOOD_TTL))


@dataclass
class FakeNeighbour:
    """Makes the (non-rotating) claimant look like a node beside us: signed HELLOs every
    HELLO_INTERVAL_S reporting every node heard in a HELLO at full quality, so neighbours
    count it as a good link and route to it."""

    claimant: Claimant
    heard: dict[bytes, float] = field(default_factory=dict)
    hello_no: int = 0
    next_at: float = 0.0

    def hear(self, data: bytes, now: float) -> None:
        try:
            env, _hop = parse_frame_untrusted(data)
        except DecodeError:
            return
        own = self.claimant.identity
        if (env.msg_type is MsgType.HELLO and env.origin
                and (own is None or env.origin != own.node_id)):
            self.heard.pop(env.origin[:SHORT_ID_LEN], None)
            self.heard[env.origin[:SHORT_ID_LEN]] = now
            while len(self.heard) > limits.MAX_HELLO_NEIGHBOURS:
                del self.heard[next(iter(self.heard))]

    def due(self, now: float) -> bytes | None:
        ident = self.claimant.identity
        if ident is None or self.claimant.rotate or now < self.next_at:
            return None
        self.next_at = now + HELLO_INTERVAL_S
        self.hello_no += 1
        self.claimant.seq += 1
        report = [[short, MAX_QUALITY] for short in self.heard]
        env = seal(ident, MsgType.HELLO, self.claimant.forge.incident, self.claimant.seq,
                   [self.hello_no, "handset", report])
        return encode_frame(env, Hop())


@dataclass
class RoutedToUs:
    """UNICAST frames a node forwarded to the claimant (addressed to it as next hop: they
    came to its own sockets as UDP unicast): traffic for the AoR routed toward the
    attacker. Never acknowledged."""

    frames: int = 0
    envelopes: set[bytes] = field(default_factory=set)
    #: who sent them: origin node id (hex, short) -> envelopes
    origins: dict[str, int] = field(default_factory=dict)

    def __call__(self, data: bytes) -> None:
        try:
            env, hop = parse_frame_untrusted(data)
        except DecodeError:
            return
        if env.msg_type is MsgType.UNICAST and hop.addressed:
            self.frames += 1
            # (an envelope is told apart by its signature: its key may be elided)
            if len(self.envelopes) < MAX_CAPTURED and env.signature not in self.envelopes:
                self.envelopes.add(env.signature)
                origin = env.short_origin[:SHORT_ID_LEN].hex()
                self.origins[origin] = self.origins.get(origin, 0) + 1


def _drain(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data, _addr = sock.recvfrom(RECV_BYTES, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        yield data


def run_takeover(args: argparse.Namespace, stop: Stopper) -> dict[str, object]:
    forge = Forge(random.Random(args.seed), args.incident, args.domain, args.lifetime)
    claimant = Claimant(forge, args.aor, args.rotate_keys)
    routed = RoutedToUs()
    fake = FakeNeighbour(claimant)

    def make() -> bytes:
        return claimant.frame()

    # Open sockets (not one per datagram), so what is routed to our source ports arrives;
    # HELLOs go out from the first, the address neighbours will route to.
    sender = Sender(args.iface, args.port, args.ports or TAKEOVER_PORTS)
    with listener(args.iface, args.port) as mesh:
        def tick() -> None:
            now = time.monotonic()
            for data in sender.drain():
                routed(data)
            for data in _drain(mesh):
                fake.hear(data, now)
            hello = fake.due(now)
            if hello is not None:
                sender.pool[0].sendto(hello, sender.dst)

        try:
            elapsed = paced(sender, make, args.rate, args.duration, stop, tick)
        finally:
            sender.close()
    return _summary("takeover", sender, elapsed, keys=forge.keys, aor=args.aor,
                    hellos=fake.hello_no, neighbours_heard=len(fake.heard),
                    unicast_frames_to_us=routed.frames,
                    unicast_envelopes_to_us=len(routed.envelopes),
                    unicast_origins=routed.origins)


MODES: Final[dict[str, Callable[[argparse.Namespace, Stopper], dict[str, object]]]] = {
    "sybil": run_sybil, "garbage": run_garbage, "capture": run_capture,
    "replay": run_replay, "takeover": run_takeover,
}


# -- command line ---------------------------------------------------------------------------


def _bounded(kind: type[float] | type[int], lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.testbed.inject", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--iface", required=True, help="interface of this namespace to send on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the mesh's UDP port")
    p.add_argument("--rate", type=_bounded(float, 0.1, MAX_RATE), default=1000.0,
                   help="datagrams (sybil: new keys) per second (default %(default)s)")
    p.add_argument("--duration", type=_bounded(float, 0.0, MAX_DURATION_S), default=10.0,
                   help="seconds to run, then stop (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ports", type=_bounded(int, 0, 4096), default=0,
                   help="rotate over this many sockets (0: a new socket per datagram)")
    p.add_argument("--incident", default=DEFAULT_INCIDENT)
    p.add_argument("--domain", default=DEFAULT_DOMAIN)
    p.add_argument("--lifetime", type=_bounded(int, 1, limits.MAX_LIFETIME_S),
                   default=DEFAULT_LIFETIME_S, help="lifetime_s of forged bindings")
    p.add_argument("--record", type=Path, help="sybil: save the bindings sent (for replay)")
    p.add_argument("--out", type=Path, help="capture: file to write")
    p.add_argument("--from", dest="sources", type=Path, action="append", default=[],
                   help="replay: a capture/record file (repeatable)")
    p.add_argument("--capture-s", type=_bounded(float, 0.0, MAX_DURATION_S), default=0.0,
                   help="replay: listen this long first and replay what was heard too")
    p.add_argument("--aor", help="takeover: the AoR to claim; replay: only this AoR")
    p.add_argument("--tombstones", action="store_true", help="replay: tombstones too")
    p.add_argument("--rotate-keys", action="store_true", help="takeover: a new key per claim")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.mode == "takeover" and not args.aor:
        raise InjectError("takeover needs --aor")
    if args.mode == "capture" and args.out is None:
        raise InjectError("capture needs --out")
    if args.mode == "replay" and not args.sources and args.capture_s <= 0:
        raise InjectError("replay needs --from FILE or --capture-s SECONDS")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _check_args(args)
        check_test_bed_namespace()
        summary = MODES[args.mode](args, Stopper())
    except (InjectError, OSError) as exc:
        print(f"inject: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
