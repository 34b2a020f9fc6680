"""Benchmark (root): live time per call of chosen functions in every node of the chain.

    python -m tools.bench.calls [--messages 100] [--gap-s 0.25] [--warmup-s 15]
                                [--functions module:Qual.name,...] [--json]

The meshcomm side of ``tools/bench/hops.py`` seen from inside the processes (issue 13). It
builds a ``chain(5)`` of real ``meshcomm handset`` processes n0..n4 with default settings
and no loss. Each is started with :mod:`tools.bench.calls_site` on its ``PYTHONPATH``,
which wraps each function of ``--functions`` (``module:Qualified.name``) in a
``perf_counter_ns`` timer once its module is loaded. After ``--warmup-s``, n0 sends
``--messages`` 100-byte texts to ``sip:n4@incident.local`` through its control socket,
one every ``--gap-s``.

Printed, for each function and each node: the number of calls and their p50 in
microseconds, over the whole run (start-up and warm-up included, which the counts show).
The default functions are the origin's steps (control request, gateway, seal, send) and a
relay's (receive, signature check, forwarding, the pump around them). Only calls that
look the name up when they are made are timed: a bound method stored before the wrapping
(a socket reader callback, for instance) is not. Each wrapper costs about a microsecond.
``--json`` prints one JSON object instead. Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

from tools.bench.hops import FAR_AOR, N_NODES, HopsError, finish, start_chain
from tools.testbed import chain

#: Seconds for the wrappers' last dump after the messages (they write every 2 s).
DUMP_WAIT_S: Final = 2.5
SITE_DIR: Final = Path(__file__).with_name("calls_site")
DEFAULT_FUNCTIONS: Final = (
    "meshcomm.runtime.control:ControlServer.handle_line",
    "meshcomm.node.core:NodeCore.send_message",
    "meshcomm.node.gateway.core:SipGateway.send_message",
    "meshcomm.node.e2e_sip:SipSealing.seal",
    "meshcomm.node.mesh:MeshNode.send_unicast",
    "meshcomm.node.pump:Pump.radio",
    "meshcomm.node.core:NodeCore.receive",
    "meshcomm.wire.envelope:Envelope.verify",
    "meshcomm.overlay.forwarding:Forwarder._forward",
    "meshcomm.runtime.driver:NodeDriver.transmit",
)


class CallsError(RuntimeError):
    """The bench cannot run (printed, exit status 2)."""


def _log(msg: str) -> None:
    print(f"[calls {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _wrapped_children(functions: Sequence[str], out: Path) -> Iterator[None]:
    """Processes started inside get the timing wrappers (environment restored after)."""
    saved = {key: os.environ.get(key) for key in
             ("PYTHONPATH", "MESHCOMM_CALLS", "MESHCOMM_CALLS_OUT")}
    repo = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SITE_DIR), repo, saved["PYTHONPATH"]) if p)
    os.environ["MESHCOMM_CALLS"] = ",".join(functions)
    os.environ["MESHCOMM_CALLS_OUT"] = str(out)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _node_name(argv: list[str]) -> str | None:
    return argv[argv.index("--name") + 1] if "--name" in argv[:-1] else None


def run(messages: int, gap_s: float, warmup_s: float,
        functions: Sequence[str]) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise CallsError("needs root (network namespaces) and iproute2")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="calls-")))
        out = work / "calls"
        out.mkdir()
        tb = stack.enter_context(chain(N_NODES))
        tb.use_workdir(work)
        with _wrapped_children(functions, out):
            nodes = start_chain(tb, _log)
        _log(f"warm-up {warmup_s} s, then {messages} messages, one every {gap_s} s")
        time.sleep(warmup_s)
        started = time.monotonic()
        for k in range(messages):
            nodes[0].request("send", to=FAR_AOR, text=f"calls {k} ".ljust(100, "x"), wait_s=0.0)
            time.sleep(max(0.0, started + (k + 1) * gap_s - time.monotonic()))
        time.sleep(DUMP_WAIT_S)
        reply = nodes[-1].request("inbox")
        rows = reply if isinstance(reply, list) else reply.get("messages", [])
        per_node: dict[str, dict[str, list[float]]] = {}
        for path in sorted(out.glob("*.json")):
            dump = json.loads(path.read_text())
            name = _node_name(dump["argv"])
            if name is not None:
                per_node[name] = dump["calls"]
        if len(per_node) < N_NODES:
            raise CallsError(f"timings from {len(per_node)} of {N_NODES} nodes "
                             f"(logs in {work})")
        return {"bench": "calls", "messages": messages, "gap_s": gap_s,
                "delivered": sum(1 for r in rows if str(r["text"]).startswith("calls ")),
                "functions": list(functions),
                "nodes": {name: per_node[name] for name in sorted(per_node)}}


def _print(result: dict[str, Any]) -> None:
    names = list(result["nodes"])
    print(f"{result['delivered']}/{result['messages']} delivered; per node: calls, p50 us")
    print(f"{'function':42s}" + "".join(f"{n:>16s}" for n in names))
    for function in result["functions"]:
        label = function.partition(":")[2]
        cells = []
        for name in names:
            got = result["nodes"][name].get(label)
            cells.append(f"{got[0]:6d} {got[1]:8.1f}" if got else f"{'-':>15s}")
        print(f"{label[-42:]:42s}" + "".join(f" {c:>15s}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--gap-s", type=float, default=0.25)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--functions", default=",".join(DEFAULT_FUNCTIONS),
                        help="comma-separated module:Qualified.name")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    functions = [f.strip() for f in args.functions.split(",") if f.strip()]
    if args.messages < 1 or args.gap_s <= 0 or not functions or any(
            ":" not in f for f in functions):
        parser.error("--messages >= 1, --gap-s > 0, --functions as module:Qualified.name")
    return finish("calls", lambda: run(args.messages, args.gap_s, args.warmup_s, functions),
                  args.json, _print, (CallsError, HopsError))


if __name__ == "__main__":
    sys.exit(main())
