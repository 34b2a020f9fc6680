"""Benchmark worker: software time per hop of a SIP MESSAGE, in process (no radio, no sleep).

    python -P tools/bench/e2e_hop.py [--messages 200]     (PYTHONPATH names the checkout)

Run by path with ``-P`` so that ``PYTHONPATH`` alone decides whose ``meshcomm`` and
``tests`` are imported: ``tools/bench/e2e.py --before DIR`` runs it once on DIR's code and
once on this tree's, interleaved in rounds, and compares. Only APIs that exist on both
sides are used (``tests.node.gateway_net.Net``, a chain of whole node cores).

A chain of 5 node cores (``Net(5)``) in virtual time; a UA at node 0 sends MESSAGEs one
at a time to a UA at node 4. Every call into a node core (``receive`` for radio frames,
``receive_sip`` for the UAs' SIP) is timed with ``perf_counter``; per MESSAGE (request,
200 OK, per-hop ACKs, and whatever HELLOs fall in that window) the bench sums the time of
the three relays and of the two gateways. Printed (one JSON object): medians per MESSAGE of
``relay_per_hop_us`` (relays' time / 3), ``origin_us``, ``destination_us`` and the end to
end total ``e2e_us``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from meshcomm.sip.ua_events import RequestFailed, RequestSucceeded
from tests.node.gateway_net import DOMAIN, Net, registered

N_NODES = 5
ALICE_PORT, BOB_PORT = 5070, 5072
#: Virtual time between two MESSAGEs (not timed).
GAP_S = 1.0


def _timed(spent: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0
    return run


def _more(count: Callable[[], int], than: int) -> bool:
    return count() > than


def measure(messages: int) -> dict[str, Any]:
    net = Net(N_NODES)
    net.converge()
    alice = registered(net, 0, ALICE_PORT, "alice")
    registered(net, N_NODES - 1, BOB_PORT, "bob")
    bob = f"sip:bob@{DOMAIN}"
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(bob)))
    spent = [[0.0] for _ in net.stations]
    for st, acc in zip(net.stations, spent, strict=True):
        st.core.receive = _timed(acc, st.core.receive)  # type: ignore[method-assign]
        st.core.receive_sip = _timed(acc, st.core.receive_sip)  # type: ignore[method-assign]
    relay, origin, dest, total = [], [], [], []

    def finals() -> int:
        return sum(1 for e in net.events(0, ALICE_PORT)
                   if isinstance(e, RequestSucceeded | RequestFailed) and e.method == "MESSAGE")

    failures = 0
    for i in range(messages):
        net.run_for(GAP_S)              # the gateway's per-client rate limit refills
        for acc in spent:
            acc[0] = 0.0
        before = finals()
        alice.message(bob, f"bench message {i} " + "x" * 200)
        net.run_until(functools.partial(_more, finals, before), timeout_s=30)
        last = [e for e in net.events(0, ALICE_PORT)
                if isinstance(e, RequestSucceeded | RequestFailed) and e.method == "MESSAGE"][-1]
        if not isinstance(last, RequestSucceeded) or last.status != 200:
            failures += 1
            continue
        times = [acc[0] for acc in spent]
        relay.append(sum(times[1:-1]) / (N_NODES - 2))
        origin.append(times[0])
        dest.append(times[-1])
        total.append(sum(times))
    med = statistics.median
    return {"messages": messages, "failures": failures,
            "relay_per_hop_us": round(med(relay) * 1e6, 1),
            "origin_us": round(med(origin) * 1e6, 1),
            "destination_us": round(med(dest) * 1e6, 1),
            "e2e_us": round(med(total) * 1e6, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.messages)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
