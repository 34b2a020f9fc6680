"""One Reticulum + LXMF node of ``tools/bench/airtime.py`` (run with the benchmark's own venv).

This file runs under the Python of the benchmark's Reticulum venv (``rns`` and ``lxmf`` from
PyPI), never meshcomm's: it imports nothing of meshcomm.

    python airtime_rns_node.py keygen DIR N
        write N fresh identities DIR/id0..id<N-1>; print one JSON line: the LXMF delivery
        destination hash (hex) of each.
    python airtime_rns_node.py run --config DIR --identity FILE --name NAME
                                   [--transport] [--target HEX] [--method direct|opportunistic]
        an rnsd-style node: its own Reticulum instance (``share_instance = No``) with one
        AutoInterface on every interface of its namespace, transport enabled with
        ``--transport`` (the middle nodes), and an LXMF router with one delivery identity
        (announced once at start, as a client does when it comes up).

Events go to stdout as JSON lines, each with ``t`` = ``time.time()`` of this machine's clock
(Reticulum's own log goes to stderr): ``{"ev": "ready"}``; ``{"ev": "announced"}``; with
``--target``: ``{"ev": "reachable"}`` once a path to the target and its identity are known
(polled every 20 ms; a path request every 1 s while unknown, as an LXMF client asks
before sending: a transport node that knows the path answers it, Reticulum forwards none
for unknown paths); ``{"ev": "recv", "text": ...}`` for every LXMF message the delivery
callback gets. Commands come on stdin as JSON lines:
``{"send": TEXT}`` sends one LXMF message with content TEXT (empty title) to the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REACHABLE_POLL_S = 0.02
PATH_REQUEST_EVERY_S = 1.0
#: The start announce goes nowhere while the AutoInterface has no peers yet (nodes of a cold
#: mesh come up together), so a node announces again this long after its peer count last
#: grew: what a client that announces when it comes up among neighbours sends. Nothing
#: periodic follows (idle traffic is Reticulum's own unless --announce-s is given).
REANNOUNCE_AFTER_PEER_S = 1.0
PEER_POLL_S = 0.1
LOG_LEVEL = int(os.environ.get("AIRTIME_RNS_LOGLEVEL", "2"))  # 2: RNS.LOG_ERROR

CONFIG = """[reticulum]
  enable_transport = {transport}
  share_instance = No
  panic_on_interface_error = No

[logging]
  loglevel = {loglevel}

[interfaces]
  [[Default Interface]]
    type = AutoInterface
    enabled = yes
"""

_out_lock = threading.Lock()
#: The events' stream: the original stdout. Reticulum logs to stdout, so fd 1 is pointed at
#: stderr before Reticulum starts (see :func:`main`).
_events: list[Any] = []


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"ev": event, "t": time.time(), **fields})
    with _out_lock:
        _events[0].write(line + "\n")
        _events[0].flush()


def keygen(directory: Path, count: int) -> None:
    import RNS  # type: ignore[import-not-found]

    directory.mkdir(parents=True, exist_ok=True)
    hashes = []
    for i in range(count):
        identity = RNS.Identity()
        identity.to_file(str(directory / f"id{i}"))
        hashes.append(RNS.Destination.hash(identity, "lxmf", "delivery").hex())
    emit("keys", hashes=hashes)


class Node:
    """The running node: Reticulum, the LXMF router, the command reader."""

    def __init__(self, args: argparse.Namespace) -> None:
        import LXMF  # type: ignore[import-not-found]
        import RNS

        self.rns, self.lxmf = RNS, LXMF
        config = Path(args.config)
        config.mkdir(parents=True, exist_ok=True)
        (config / "config").write_text(CONFIG.format(
            transport="Yes" if args.transport else "No", loglevel=LOG_LEVEL))
        self.reticulum = RNS.Reticulum(configdir=str(config), loglevel=LOG_LEVEL)
        identity = RNS.Identity.from_file(args.identity)
        self.router = LXMF.LXMRouter(identity=identity, storagepath=str(config / "lxmf"))
        self.source = self.router.register_delivery_identity(identity, display_name=args.name)
        self.router.register_delivery_callback(self.delivered)
        self.target = bytes.fromhex(args.target) if args.target else None
        self.method = (LXMF.LXMessage.OPPORTUNISTIC if args.method == "opportunistic"
                       else LXMF.LXMessage.DIRECT)

    def delivered(self, message: Any) -> None:
        emit("recv", text=message.content.decode("utf-8", "replace"))

    def watch_target(self) -> None:
        assert self.target is not None
        next_request = time.monotonic() + PATH_REQUEST_EVERY_S
        while not (self.rns.Transport.has_path(self.target)
                   and self.rns.Identity.recall(self.target) is not None):
            if time.monotonic() >= next_request:
                self.rns.Transport.request_path(self.target)
                next_request += PATH_REQUEST_EVERY_S
            time.sleep(REACHABLE_POLL_S)
        emit("reachable")

    def send(self, text: str) -> None:
        if self.target is None:
            emit("error", what="send without --target")
            return
        identity = self.rns.Identity.recall(self.target)
        if identity is None:
            emit("error", what="send before the target is known")
            return
        destination = self.rns.Destination(identity, self.rns.Destination.OUT,
                                           self.rns.Destination.SINGLE, "lxmf", "delivery")
        message = self.lxmf.LXMessage(destination, self.source, text, "",
                                      desired_method=self.method)
        self.router.handle_outbound(message)

    def peer_count(self) -> int:
        return sum(len(getattr(i, "peers", ())) for i in self.rns.Transport.interfaces
                   if type(i).__name__ == "AutoInterface")

    def announcer(self, every_s: float) -> None:
        """Announce again after the peer count grew (see REANNOUNCE_AFTER_PEER_S), and every
        ``every_s`` seconds when it is positive."""
        known, grew_at = self.peer_count(), None
        next_periodic = time.monotonic() + every_s if every_s > 0 else None
        while True:
            time.sleep(PEER_POLL_S)
            now, count = time.monotonic(), self.peer_count()
            if count > known:
                known, grew_at = count, now
            due = grew_at is not None and now - grew_at >= REANNOUNCE_AFTER_PEER_S
            if next_periodic is not None and now >= next_periodic:
                due, next_periodic = True, now + every_s
            if due:
                grew_at = None
                self.router.announce(self.source.hash)
                emit("announced", peers=count)
            known = min(known, count)

    def serve(self, announce_s: float) -> None:
        self.router.announce(self.source.hash)
        emit("ready", peers=self.peer_count())
        threading.Thread(target=self.announcer, args=(announce_s,), daemon=True).start()
        if self.target is not None:
            threading.Thread(target=self.watch_target, daemon=True).start()
        for line in sys.stdin:
            try:
                command = json.loads(line)
            except ValueError:
                emit("error", what="bad command line")
                continue
            if isinstance(command, dict) and isinstance(command.get("send"), str):
                self.send(command["send"])
        # stdin closed: the benchmark is gone; end without Reticulum's slow exit handlers
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="airtime_rns_node")
    sub = parser.add_subparsers(dest="mode", required=True)
    gen = sub.add_parser("keygen")
    gen.add_argument("dir", type=Path)
    gen.add_argument("count", type=int)
    run = sub.add_parser("run")
    run.add_argument("--config", required=True)
    run.add_argument("--identity", required=True)
    run.add_argument("--name", required=True)
    run.add_argument("--transport", action="store_true")
    run.add_argument("--target", default=None)
    run.add_argument("--method", choices=("direct", "opportunistic"), default="direct")
    run.add_argument("--announce-s", type=float, default=0.0)
    args = parser.parse_args()
    _events.append(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)
    if args.mode == "keygen":
        keygen(args.dir, args.count)
    else:
        Node(args).serve(args.announce_s)


if __name__ == "__main__":
    main()
