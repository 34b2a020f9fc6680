"""Benchmark (root): where a MESSAGE's time and bytes go, hop by hop, on the namespace chain.

    python -m tools.bench.hops [--messages 40] [--gap-s 0.25] [--size 100] [--warmup-s 20]
                               [--floor] [--json]

The meshcomm side of ``tools/bench/airtime.py`` taken apart (issue 13): a ``chain(5)`` of
real ``meshcomm handset`` processes n0..n4 with default settings, no loss. After
``--warmup-s``, ``dumpcap`` captures in every namespace what that node sends on its link
toward n4 (and n2 what it sends back toward n1), while n0 sends ``--messages`` texts of
``--size`` bytes to ``sip:n4@incident.local`` through its control socket (what ``meshcomm
ctl send`` does, not waiting), one every ``--gap-s``. Every capture is a kernel timestamp
of the one machine's wall clock, as are the times this process and n4's inbox take.

A MESSAGE is followed by its envelope signature (the same on every hop: a relay forwards
the origin's envelope); its first copy on each link counts. Printed, p10 / p50 / p90 over
the messages delivered:

* ``origin``: this process hands the request to n0 -> the frame leaves n0;
* ``relay1``..``relay3``: the frame leaves the previous node -> it leaves this one (the
  previous node's ``sendto``, the kernel, the wake-up and this node's work);
* ``destination``: the frame leaves n3 -> n4's inbox ``received_at`` (n4's loop clock at
  the frame's arrival plus the wall-clock offset it took at start: off by up to a few
  tenths of a millisecond, so this stage can come out negative);
* ``total``: request handed to n0 -> ``received_at`` (what airtime.py calls latency).

And the frames on link n1-n2 (both directions) by kind (message type; ``+acks`` when acks
ride on it; ``+key`` when the origin's key is carried), count and IP bytes (UDP payload +
48 for IPv6 and UDP headers), in a window of the same length before the messages (idle)
and during them.

``--floor`` then stops the handsets and sends the same texts, at the same pace, over the
same links through a chain of minimal Python forwarders (:mod:`tools.bench.floor_node`: an
asyncio reader per socket, the origin signs with Ed25519, each relay checks the signature
before it sends on, the far end stamps the arrival): ``floor`` is its p10 / p50 / p90 from
handing the text over to its arrival at n4, and ``above_floor_ms`` meshcomm's total p50
minus the floor's, what meshcomm's own work adds to a message's way across 4 hops.

``--json`` prints one JSON object instead of the tables. Needs root (namespaces) and
``dumpcap`` (Debian ``tshark``).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from meshcomm.errors import DecodeError
from meshcomm.wire.envelope import LINK_ACK_MARKER, MsgType, parse_frame_untrusted
from tools.testbed import Testbed, chain
from tools.testbed.nodes import MeshProcess, wait_until

N_NODES: Final = 5
FAR_AOR: Final = "sip:n4@incident.local"
IP_UDP_HEADER_BYTES: Final = 48
#: Seconds for the capture processes to come up before traffic starts.
CAPTURE_START_S: Final = 1.5
CONVERGE_S: Final = 60.0


class HopsError(RuntimeError):
    """The bench cannot run or a capture failed (printed, exit status 2)."""


def _log(msg: str) -> None:
    print(f"[hops {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def frame_kind(data: bytes) -> str:
    """A captured UDP payload's kind: the message type, ``+acks``, ``+key``."""
    if data[:1] == LINK_ACK_MARKER:
        return "link-ack"
    try:
        frame, hop = parse_frame_untrusted(data)
    except DecodeError:
        return "other"
    return (frame.msg_type.name + ("+acks" if hop.acks else "")
            + ("" if hop.key_elided else "+key"))


def unicast_signature(data: bytes) -> bytes | None:
    """The envelope signature of a UNICAST frame (None for anything else)."""
    if data[:1] == LINK_ACK_MARKER:
        return None
    try:
        frame, _hop = parse_frame_untrusted(data)
    except DecodeError:
        return None
    return frame.signature if frame.msg_type is MsgType.UNICAST else None


class Capture:
    """``dumpcap`` in one namespace on one interface, frames sent from one address."""

    def __init__(self, tb: Testbed, node: int, peer: int, path: Path) -> None:
        iface = tb.iface(node, peer)
        source = tb.link_local(node, iface)
        self.path, self.where = path, f"node {node} {iface}"
        self.errors = path.with_suffix(".err")
        with self.errors.open("wb") as err:
            self.proc = tb.popen(node, ["dumpcap", "-q", "-i", iface, "-f",
                                        f"udp and src host {source}", "-w", str(path)],
                                 stdout=subprocess.DEVNULL, stderr=err)

    def stop(self) -> list[tuple[float, bytes]]:
        """Stop; the (wall time, UDP payload) of every frame captured, in order."""
        if self.proc.poll() is not None:        # it never ran: say why
            raise HopsError(f"dumpcap on {self.where} exited: "
                               f"{self.errors.read_text(errors='replace').strip()}")
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if not self.path.exists():
            raise HopsError(f"dumpcap on {self.where} wrote no capture")
        out = subprocess.run(["tshark", "-r", str(self.path), "-T", "fields",
                              "-e", "frame.time_epoch", "-e", "udp.payload"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        rows = []
        for line in out.splitlines():
            when, _, payload = line.partition("\t")
            rows.append((float(when), bytes.fromhex(payload.replace(":", ""))))
        return rows


def _table(frames: list[tuple[float, bytes]]) -> dict[str, list[int]]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for _, data in frames:
        kind = frame_kind(data)
        counts[kind] += 1
        sizes[kind] += len(data) + IP_UDP_HEADER_BYTES
    return {kind: [counts[kind], sizes[kind]] for kind in sorted(counts)}


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return {"n": n, "p10_ms": round(1000 * ordered[n // 10], 3),
            "p50_ms": round(1000 * statistics.median(ordered), 3),
            "p90_ms": round(1000 * ordered[min(n - 1, 9 * n // 10)], 3)}


def _link_window(tb: Testbed, work: Path, name: str) -> list[Capture]:
    return [Capture(tb, 1, 2, work / f"{name}-12.pcapng"),
            Capture(tb, 2, 1, work / f"{name}-21.pcapng")]


def measure(tb: Testbed, nodes: list[MeshProcess], work: Path, messages: int, gap_s: float,
            size: int) -> dict[str, Any]:
    window_s = messages * gap_s + 2.0
    _log(f"idle window of {window_s:.1f} s on link n1-n2")
    idle = _link_window(tb, work, "idle")
    time.sleep(CAPTURE_START_S + window_s)
    idle_frames = [f for cap in idle for f in cap.stop()]
    hops = [Capture(tb, i, i + 1, work / f"hop{i}.pcapng") for i in range(N_NODES - 1)]
    back = Capture(tb, 2, 1, work / "back-21.pcapng")
    time.sleep(CAPTURE_START_S)
    _log(f"{messages} messages, one every {gap_s} s")
    handed: list[tuple[float, str]] = []
    started = time.monotonic()
    for k in range(messages):
        text = f"hops {k} ".ljust(size, "x")
        handed.append((time.time(), text))
        nodes[0].request("send", to=FAR_AOR, text=text, wait_s=0.0)
        time.sleep(max(0.0, started + (k + 1) * gap_s - time.monotonic()))
    time.sleep(2.0)
    captured = [cap.stop() for cap in hops]
    msg_frames = captured[1] + back.stop()
    reply = nodes[-1].request("inbox")
    rows = reply if isinstance(reply, list) else reply.get("messages", [])
    received = {str(r["text"]): float(r["received_at"]) for r in rows}
    # each link: signature -> first time seen; n0's link gives the messages' order
    first: list[dict[bytes, float]] = []
    for frames in captured:
        seen: dict[bytes, float] = {}
        for when, data in frames:
            sig = unicast_signature(data)
            if sig is not None and sig not in seen:
                seen[sig] = when
        first.append(seen)
    outbound = sorted(first[0].items(), key=lambda item: item[1])
    # n0 sends the 200 OKs' acks on carriers of later MESSAGEs, never other unicasts: the
    # k-th new signature n0 sends toward n4 is the k-th MESSAGE
    stages: dict[str, list[float]] = {s: [] for s in
                                      ("origin", "relay1", "relay2", "relay3", "destination",
                                       "total")}
    for (handed_at, text), (sig, left0) in zip(handed, outbound, strict=False):
        times = [left0, *(seen.get(sig) for seen in first[1:])]
        got = received.get(text)
        if got is None or any(t is None for t in times):
            continue
        t = [float(x) for x in times if x is not None]
        stages["origin"].append(t[0] - handed_at)
        for j in range(1, N_NODES - 1):
            stages[f"relay{j}"].append(t[j] - t[j - 1])
        stages["destination"].append(got - t[-1])
        stages["total"].append(got - handed_at)
    return {"bench": "hops", "nodes": N_NODES, "messages": messages, "gap_s": gap_s,
            "size": size, "delivered": sum(1 for _, text in handed if text in received),
            "stages": {name: _spread(v) for name, v in stages.items() if v},
            "window_s": window_s,
            "link_n1_n2": {"idle": _table(idle_frames), "messages": _table(msg_frames)}}


FLOOR_NODE: Final = Path(__file__).with_name("floor_node.py")
FLOOR_READY_S: Final = 10.0


def floor(tb: Testbed, messages: int, gap_s: float, size: int) -> dict[str, float]:
    """The same texts through a chain of :mod:`tools.bench.floor_node` forwarders; the
    spread of handed-over -> arrived at n4 (raises HopsError if one never arrives)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(N_NODES):
            role = "src" if i == 0 else "sink" if i == N_NODES - 1 else "relay"
            nxt = "-"
            if i < N_NODES - 1:
                nxt = f"{tb.link_local(i + 1, tb.iface(i + 1, i))}%{tb.iface(i, i + 1)}"
            procs.append(tb.popen(i, [sys.executable, str(FLOOR_NODE), role, "--next", nxt],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in procs:
            assert proc.stdout is not None
            if not _ready(proc, FLOOR_READY_S):
                raise HopsError("a floor node did not come up")
        src, sink = procs[0], procs[-1]
        assert src.stdin is not None and sink.stdout is not None
        handed: dict[str, float] = {}
        started = time.monotonic()
        for k in range(messages):
            text = f"floor {k} ".ljust(size, "x")
            handed[text] = time.time()
            src.stdin.write(text.encode() + b"\n")
            src.stdin.flush()
            time.sleep(max(0.0, started + (k + 1) * gap_s - time.monotonic()))
        time.sleep(1.0)
        for proc in procs:
            proc.kill()
        arrived: dict[str, float] = {}
        for line in sink.stdout.read().splitlines():
            row = json.loads(line)
            arrived.setdefault(row["text"], row["t"])
        lost = [text for text in handed if text not in arrived]
        if lost:
            raise HopsError(f"{len(lost)} of {messages} texts never crossed the floor chain")
        return _spread([arrived[text] - at for text, at in handed.items()])
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _ready(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once ``proc`` printed its ready line within ``timeout_s``."""
    assert proc.stdout is not None
    ready = select.select([proc.stdout], [], [], timeout_s)[0]
    return bool(ready) and b"ready" in proc.stdout.readline()


def start_chain(tb: Testbed, log: Callable[[str], None]) -> list[MeshProcess]:
    """Handsets n0..n4 started on the chain, once n0 knows n4 (HopsError if it does not
    within CONVERGE_S)."""
    nodes = [tb.start_node(i, name=f"n{i}", wait=False) for i in range(N_NODES)]
    log("chain of 5 handsets started; waiting for n0 to know n4")
    if wait_until(lambda: FAR_AOR in (nodes[0].who_aors() or set()), CONVERGE_S) is None:
        raise HopsError(f"n0 did not learn {FAR_AOR} within {CONVERGE_S} s")
    return nodes


def run(messages: int, gap_s: float, size: int, warmup_s: float,
        with_floor: bool = False) -> dict[str, Any]:
    missing = [tool for tool in ("ip", "dumpcap", "tshark") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        raise HopsError("needs root (network namespaces), iproute2 and tshark's dumpcap"
                        + (f"; missing: {', '.join(missing)}" if missing else ""))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hops-")))
        tb = stack.enter_context(chain(N_NODES))
        tb.use_workdir(work)
        nodes = start_chain(tb, _log)
        _log(f"warm-up {warmup_s} s")
        time.sleep(warmup_s)
        result = measure(tb, nodes, work, messages, gap_s, size)
        if with_floor:
            for i in range(N_NODES):
                tb.stop_node(i)
            _log(f"floor: {messages} texts through minimal forwarders on the same links")
            result["floor"] = floor(tb, messages, gap_s, size)
            result["above_floor_ms"] = round(result["stages"]["total"]["p50_ms"]
                                             - result["floor"]["p50_ms"], 3)
        return result


def _print(result: dict[str, Any]) -> None:
    print(f"{result['delivered']}/{result['messages']} delivered, one every "
          f"{result['gap_s']} s, {result['size']}-byte texts, 4 hops")
    print(f"{'stage':12s} {'p10 ms':>8s} {'p50 ms':>8s} {'p90 ms':>8s}")
    rows = list(result["stages"].items())
    if "floor" in result:
        rows.append(("floor", result["floor"]))
    for name, s in rows:
        print(f"{name:12s} {s['p10_ms']:8.3f} {s['p50_ms']:8.3f} {s['p90_ms']:8.3f}")
    if "floor" in result:
        print(f"meshcomm's total p50 above the floor: {result['above_floor_ms']:.3f} ms")
    print(f"\nlink n1-n2, both directions, windows of {result['window_s']:.1f} s "
          "(count, IP bytes, average)")
    tables = result["link_n1_n2"]
    for kind in sorted(set(tables["idle"]) | set(tables["messages"])):
        cells = []
        for window in ("idle", "messages"):
            count, total = tables[window].get(kind, [0, 0])
            cells.append(f"{count:4d} {total:7d} B {total / count if count else 0:6.1f}")
        print(f"{kind:20s} idle {cells[0]}   messages {cells[1]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--gap-s", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--warmup-s", type=float, default=20.0)
    parser.add_argument("--floor", action="store_true",
                        help="also time minimal signed forwarders on the same links")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.gap_s <= 0 or not 16 <= args.size <= 1000:
        parser.error("--messages >= 1, --gap-s > 0, --size in 16..1000")
    return finish("hops", lambda: run(args.messages, args.gap_s, args.size, args.warmup_s,
                                      args.floor), args.json, _print, (HopsError,))


def finish(name: str, bench: Callable[[], dict[str, Any]], as_json: bool,
           printer: Callable[[dict[str, Any]], None],
           errors: tuple[type[Exception], ...]) -> int:
    """Run ``bench`` and print its result (one JSON object, or ``printer``'s table): the
    exit status, 2 when it could not run (one of ``errors``, printed on stderr)."""
    try:
        result = bench()
    except errors as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result))
    else:
        printer(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
