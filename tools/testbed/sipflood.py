"""A SIP MESSAGE flood from many UDP sockets, for load-shedding tests (its own process, so
the measuring client does not share a CPU-bound interpreter with it).

    python -m tools.testbed.sipflood --to sip:ghost@incident.local --sources 100 \\
        --rate 500 --seconds 20 [--gateway 127.0.0.1:5060]

Run it inside the namespace of the node whose gateway it floods (loopback only: it refuses
any other gateway address). Prints one JSON line: datagrams ``sent``, final ``answers``
by status, and ``no_retry_after`` (503s without Retry-After). Bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import selectors
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Final

from tools.testbed.sipclient import DOMAIN, build, parse

MAX_SOURCES: Final = 1000
MAX_RATE_PER_S: Final = 5000
MAX_SECONDS: Final = 120.0
#: After the last datagram, answers are read for this long.
DRAIN_S: Final = 1.0


def _message(aor: str, port: int, n: int) -> bytes:
    return build(f"MESSAGE {aor} SIP/2.0", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKfl{n};rport"),
        ("Max-Forwards", "70"), ("From", f"<sip:flood{port}@{DOMAIN}>;tag=f{n}"),
        ("To", f"<{aor}>"), ("Call-ID", f"flood-{n}-{port}@x"), ("CSeq", "1 MESSAGE"),
        ("Content-Type", "text/plain")], "flood")


def flood(gateway: tuple[str, int], aor: str, sources: int, rate: float,
          seconds: float) -> dict[str, object]:
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    answers: Counter[int] = Counter()
    no_retry_after = sent = 0
    start = time.monotonic()
    end = start + seconds
    try:
        while (now := time.monotonic()) < end + DRAIN_S:
            due = int((min(now, end) - start) * rate)
            while sent < due:
                sock = socks[sent % sources]
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(_message(aor, sock.getsockname()[1], sent), gateway)
                sent += 1
            for key, _ in sel.select(timeout=0.005):
                while True:
                    try:
                        reply = parse(key.fileobj.recv(65535))  # type: ignore[union-attr]
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    if reply.status is not None and reply.status >= 200:
                        answers[reply.status] += 1
                        if reply.status == 503 and not reply.get("retry-after"):
                            no_retry_after += 1
    finally:
        for sock in socks:
            sel.unregister(sock)
            sock.close()
    return {"sent": sent, "answers": {str(k): v for k, v in sorted(answers.items())},
            "no_retry_after": no_retry_after}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipflood", description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="AoR the MESSAGEs are sent to")
    parser.add_argument("--gateway", default="127.0.0.1:5060")
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500.0, help="MESSAGEs per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    host, _, port = args.gateway.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        parser.error("the gateway must be a loopback address")
    if not (1 <= args.sources <= MAX_SOURCES and 0 < args.rate <= MAX_RATE_PER_S
            and 0 < args.seconds <= MAX_SECONDS):
        parser.error(f"sources 1..{MAX_SOURCES}, rate <= {MAX_RATE_PER_S}, "
                     f"seconds <= {MAX_SECONDS}")
    result = flood((host, int(port)), args.to, args.sources, args.rate, args.seconds)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
