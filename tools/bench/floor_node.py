"""One node of the latency floor that ``tools/bench/hops.py --floor`` measures (issue 13).

The least a Python mesh can do per hop under meshcomm's trust rule: an asyncio loop with a
reader on one UDP socket (as meshcomm's radios have), the origin signing each message with
Ed25519 and every relay checking that signature before it forwards (ARCHITECTURE.md:
"checked at every hop before it is stored or forwarded"). No routing, no acks, no SIP, no
sealing: what is left of a hop is the kernel, the wake-up, the loop and the check.

    python floor_node.py src|relay|sink --next ADDR%IFACE|-

``src`` reads one text per line on stdin and sends it signed (64-byte signature, then the
text) to ``--next``; ``relay`` checks each datagram's signature and sends it on (a bad one
is dropped); ``sink`` prints ``{"text": ..., "t": time.time()}`` per datagram as it is read,
before any check (as meshcomm's inbox stamps ``received_at`` at the frame's arrival). Every
role prints ``{"ready": true}`` once its socket is bound. The key is fixed: this measures
cost, not security.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Final

import nacl.exceptions
import nacl.signing

PORT: Final = 47113
SIGNATURE_BYTES: Final = 64
MAX_DATAGRAM_BYTES: Final = 2048
_KEY: Final = nacl.signing.SigningKey(bytes(32))
_VERIFY_KEY: Final = bytes(_KEY.verify_key)


def _address(spec: str) -> tuple[str, int, int, int]:
    host, _, iface = spec.partition("%")
    return host, PORT, 0, socket.if_nametoindex(iface)


def run(role: str, next_hop: str) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::", PORT))
    sock.setblocking(False)
    dst = _address(next_hop) if next_hop != "-" else None
    loop = asyncio.new_event_loop()

    def readable() -> None:
        while True:
            try:
                data = sock.recv(MAX_DATAGRAM_BYTES)
            except BlockingIOError:
                return
            if role == "sink":
                print(json.dumps({"text": data[SIGNATURE_BYTES:].decode(errors="replace"),
                                  "t": time.time()}), flush=True)
                continue
            try:
                nacl.signing.VerifyKey(_VERIFY_KEY).verify(data[SIGNATURE_BYTES:],
                                                           data[:SIGNATURE_BYTES])
            except nacl.exceptions.BadSignatureError:
                continue
            assert dst is not None
            sock.sendto(data, dst)

    def command() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.stop()
            return
        text = line.rstrip("\n").encode()
        assert dst is not None
        sock.sendto(_KEY.sign(text).signature + text, dst)

    if role == "src":
        loop.add_reader(sys.stdin.fileno(), command)
    else:
        loop.add_reader(sock.fileno(), readable)
    print(json.dumps({"ready": True}), flush=True)
    loop.run_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("src", "relay", "sink"))
    parser.add_argument("--next", default="-", help="ADDR%%IFACE of the next node, or -")
    args = parser.parse_args(argv)
    if (args.role == "sink") != (args.next == "-"):
        parser.error("src and relay need --next; a sink has none")
    run(args.role, args.next)
    return 0


if __name__ == "__main__":
    sys.exit(main())
