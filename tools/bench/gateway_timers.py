"""Benchmark: the SIP gateway's ``next_timer`` with 100 / 1,000 / 10,000 pending proxy
transactions, before and after the deadline heap (gateway/transactions.py), side by side.

    python -m tools.bench.gateway_timers [--sizes 100,1000,10000] [--calls 2000] [--json]

One real :class:`~meshcomm.node.gateway.core.SipGateway` (sans-IO, no sockets) per size:
a registered local client ``bob``, and ``size`` MESSAGEs for him from another node's
gateway (``receive_mesh``), forwarded and not answered yet (each with its no-answer timer
and its retransmission timer toward bob). Per size:

* ``before_us``: one ``next_timer`` as the gateway computed it before the heap, a scan of
  every transaction (``ProxyTx.next_deadline``), every registration and the built-in UA
  (:func:`scan_next_timer`, the old code), timed over the same gateway in the same run;
* ``after_us``: the gateway's ``next_timer`` now; both must give the same instant;
* ``flood_before_ms`` / ``flood_after_ms``: a flood's view, what the node's pump pays:
  ``size`` more MESSAGEs arrive one by one and ``next_timer`` is asked after each
  (only the ``next_timer`` calls are timed; the old scan grows with the square);
* ``heap_work_per_input``: heap entries pushed, popped or looked at per input of that
  flood, ``next_timer`` included (the heap's own counter, ``DeadlineHeap.work``): flat
  whatever the size.

Prints a table, then (or with ``--json`` only) one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshcomm.node.gateway.core import LINGER_S, SipGateway
from meshcomm.node.gateway.types import GatewayConfig, LocalDatagram
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, parse_message_untrusted

DOMAIN = "incident.local"
BOB = ("127.0.0.1", 5090)
#: The far node the MESSAGEs come from (its gateway's Via host is <16 hex>.mesh).
FAR_NODE = hashlib.sha256(b"bench-far-node").digest()
DEFAULT_SIZES = (100, 1000, 10_000)
DEFAULT_CALLS = 2000
#: When the MESSAGEs arrive (the gateway holds nothing but bob's registration by then).
START_S = 10.0


def standalone_gateway(max_pending: int, *, now: float = 0.0) -> SipGateway:
    """A gateway of one node with room for ``max_pending`` pending transactions and the
    local client ``bob`` registered at :data:`BOB` (at ``now``; the REGISTER's transaction
    has lingered out by :data:`START_S`)."""
    node = MeshNode(Identity(hashlib.sha256(b"bench-gateway").digest()), NodeSettings(),
                    verifier=SignatureVerifier(), rng=random.Random(1), now=now)
    gw = SipGateway(node, GatewayConfig(max_pending_transactions=2 * max_pending + 16),
                    rng=random.Random(2), node_aor=f"sip:node@{DOMAIN}", now=now)
    gw.receive_local(register_request("bob", BOB), BOB, now)
    drain(gw, now)
    gw.on_timer(now + LINGER_S)
    return gw


def register_request(user: str, addr: tuple[str, int], *, expires: int = 600,
                     cseq: int = 1) -> bytes:
    """A REGISTER of ``user`` from the local client at ``addr``."""
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {addr[0]}:{addr[1]};branch=z9hG4bKreg{user}.{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r{user}\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{addr[0]}:{addr[1]}>\r\nExpires: {expires}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def mesh_message(index: int, to_user: str = "bob") -> bytes:
    """MESSAGE number ``index`` from a client of :data:`FAR_NODE` to ``to_user``."""
    far = FAR_NODE.hex()[:16]
    body = f"m{index}"
    return (f"MESSAGE sip:{to_user}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {far}.mesh;branch=z9hG4bKfar{index}\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcl{index};received=10.0.0.9\r\n"
            f"Max-Forwards: 69\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{index}\r\n"
            f"To: <sip:{to_user}@{DOMAIN}>\r\nCall-ID: msg-{index}@bench\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def drain(gw: SipGateway, now: float) -> list[SipRequest]:
    """Take the gateway's outputs and events; the requests it sent to bob."""
    sent = [parse_message_untrusted(out.data) for out in gw.to_send(now)
            if isinstance(out, LocalDatagram) and out.dest == BOB]
    while gw.next_event() is not None:
        pass
    return [m for m in sent if isinstance(m, SipRequest)]


def forward_messages(gw: SipGateway, first: int, count: int, now: float, *,
                     after_each: Callable[[], object] = lambda: None) -> list[SipRequest]:
    """``count`` MESSAGEs from the mesh for bob, forwarded to him (pending until he
    answers); ``after_each`` runs after each input (what the pump does: next_timer)."""
    requests: list[SipRequest] = []
    for index in range(first, first + count):
        gw.receive_mesh(FAR_NODE, mesh_message(index), 1, now)
        requests += drain(gw, now)
        after_each()
    return requests


def answer(gw: SipGateway, requests: Sequence[SipRequest], status: int, now: float) -> None:
    """bob answers each forwarded request with ``status``."""
    for request in requests:
        gw.receive_local(build_response(request, status, to_tag="b").serialize(), BOB, now)
        drain(gw, now)


def scan_next_timer(gw: SipGateway) -> float | None:
    """``SipGateway.next_timer`` as it was before the deadline heap: a scan of every
    transaction, every registration and the built-in UA, on every call."""
    times = [t for tx in gw.txs.by_server.values() if (t := tx.next_deadline()) is not None]
    times += [reg.expires_at for reg in gw.registrar._regs.values()]
    ua_t = gw.builtin.ua.next_timer()
    if ua_t is not None:
        times.append(ua_t)
    return min(times, default=None)


@dataclass(frozen=True, slots=True)
class SizeResult:
    size: int
    before_us: float
    after_us: float
    flood_before_ms: float
    flood_after_ms: float
    heap_work_per_input: float
    heap_size: int


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def _flood_ms(size: int, timer: Callable[[SipGateway], object]) -> tuple[float, SipGateway]:
    """``size`` MESSAGEs arrive one by one; ``timer(gw)`` after each (only it is timed)."""
    gw = standalone_gateway(size)
    spent = [0.0]

    def timed() -> None:
        start = time.perf_counter()
        timer(gw)
        spent[0] += time.perf_counter() - start
    forward_messages(gw, 0, size, START_S, after_each=timed)
    return spent[0] * 1e3, gw


def measure(size: int, calls: int) -> SizeResult:
    gw = standalone_gateway(size)
    forward_messages(gw, 0, size, START_S)
    if gw.status()["pending_transactions"] != size:
        raise RuntimeError(f"{size} transactions expected pending: {gw.status()}")
    if gw.next_timer() != scan_next_timer(gw):
        raise RuntimeError("the heap and the scan disagree")
    scan_calls = max(10, calls * 100 // size)
    before = _per_call_us(lambda: scan_next_timer(gw), scan_calls)
    after = _per_call_us(gw.next_timer, calls)
    flood_before, _ = _flood_ms(size, scan_next_timer)
    flood_after, flooded = _flood_ms(size, SipGateway.next_timer)
    heap = flooded.txs.timers
    return SizeResult(size, before, after, flood_before, flood_after,
                      heap.work / size, heap.heap_size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--json", action="store_true", help="only the JSON object")
    args = parser.parse_args(argv)
    results = [measure(int(size), args.calls) for size in args.sizes.split(",")]
    if not args.json:
        print(f"{'pending':>8} {'scan us':>10} {'heap us':>9} {'ratio':>8} "
              f"{'flood scan ms':>14} {'flood heap ms':>14} {'work/input':>10} {'heap':>6}")
        for r in results:
            print(f"{r.size:>8} {r.before_us:>10.2f} {r.after_us:>9.3f} "
                  f"{r.before_us / r.after_us:>7.0f}x {r.flood_before_ms:>14.1f} "
                  f"{r.flood_after_ms:>14.2f} {r.heap_work_per_input:>10.2f} {r.heap_size:>6}")
    print(json.dumps({"bench": "gateway_next_timer",
                      "sizes": [{"pending": r.size, "before_us": round(r.before_us, 3),
                                 "after_us": round(r.after_us, 3),
                                 "flood_before_ms": round(r.flood_before_ms, 2),
                                 "flood_after_ms": round(r.flood_after_ms, 2),
                                 "heap_work_per_input": round(r.heap_work_per_input, 2),
                                 "heap_size": r.heap_size} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
