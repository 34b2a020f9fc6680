"""Departures, MESSAGEs and heals over a lossy 5-node chain of real handsets (issue 7).

Loss is kernel-side (nftables ``numgen random mod 100 < 30 drop`` on every interface's
ingress, :meth:`tools.testbed.Testbed.set_loss_everywhere`), so every receiver loses 30%
of what reaches it, HELLOs, floods, acks and anti-entropy alike. Handsets run with the
default settings.

* ``test_twenty_departures_at_30_percent_loss``: 20 times in a row a NEW handset joins at
  the far end (slot 4; the join itself without loss, to keep CI short), then, at 30% loss,
  departs with SIGTERM; n0, 4 hops away, must stop listing it within 5 s of the signal.
* ``test_300_messages_at_30_percent_loss_delivered_exactly_once``: n0 sends 300 MESSAGEs
  to n4's own AoR through the control socket (what ``meshcomm ctl send`` does), a few at a
  time; n4's inbox (``ctl inbox``, read incrementally: it keeps the last 256) must show
  every one exactly once, also after a quiet watch for late duplicates.
* ``test_held_messages_flow_within_2s_of_heal``: the link n2-n3 is cut (100% loss both
  ways); n0's MESSAGEs to n4 are answered 202 (held); the cut lasts long enough for the
  retry backoff to grow; after the heal every held MESSAGE must reach n4 within 2 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshcomm.runtime.control import ControlError
from tests.envcheck import require_root
from tools.testbed import Testbed, chain
from tools.testbed.nodes import NODE_EXIT_TIMEOUT_S, MeshProcess, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_NODES = 5
FAR = N_NODES - 1
DOMAIN = "incident.local"
LOSS_PERCENT = 30
CONVERGE_S = 45.0
#: A cut neighbour is gone after 3.5x the HELLO interval it announced (Trickle, issue 13:
#: up to 3.5 x Imax = 3.5 x 32 s with the default config), plus a housekeeping period.
NEIGHBOUR_DOWN_S = 3.5 * 32.0 + 10.0
DEPARTURES = 20
#: Joins of the departing handsets happen without loss: at 30% a join over 4 hops takes
#: up to ~24 s (measured), which would make the 20 departures cost CI minutes; the loss is
#: back at LOSS_PERCENT for SETTLE_AT_LOSS_S before each SIGTERM.
JOIN_LOSS_PERCENT = 0
SETTLE_AT_LOSS_S = 1.0
DEPARTURE_LIMIT_S = 5.0
#: A departure not seen within this long is recorded as missing (and fails).
DEPARTURE_WATCH_S = 15.0
MESSAGES = 300
SEND_WORKERS = 8
SEND_WAIT_S = 30.0
#: Held MESSAGEs (202) are delivered by store-and-forward; wait this long for the last one.
DELIVERY_S = 120.0
DUPLICATE_WATCH_S = 10.0
INBOX_POLL_S = 0.3
HEAL_LIMIT_S = 2.0
HEAL_MESSAGES = 3
#: The cut lasts this long after the held answers (retry backoff 2, 4, 8, 16 s...).
PARTITION_HOLD_S = 20.0
HEAL_WATCH_S = 40.0
HEAL_POLL_S = 0.1


def _start_chain(tb: Testbed, tmp_path: Path, loss: int) -> list[MeshProcess]:
    tb.use_workdir(tmp_path)
    if loss:
        tb.set_loss_everywhere(loss)
    nodes = [tb.start_node(i, name=f"n{i}", wait=False) for i in range(N_NODES)]
    far = f"sip:n{FAR}@{DOMAIN}"
    ok = wait_until(lambda: all(len(n.who_aors() or ()) == N_NODES for n in nodes)
                    and _hops(nodes[0], far) == FAR, CONVERGE_S, poll_s=0.2)
    assert ok is not None, tb.describe()
    return nodes


def _hops(node: MeshProcess, aor: str) -> object:
    for entry in node.who() or ():
        if entry.get("aor") == aor:
            return entry.get("hops")
    return None


class Inbox:
    """Reads a node's inbox incrementally (``since``) in a thread; counts texts."""

    def __init__(self, node: MeshProcess, poll_s: float = INBOX_POLL_S) -> None:
        self.node = node
        self.poll_s = poll_s
        self.counts: Counter[str] = Counter()
        #: text -> the node's wall-clock time of its first delivery
        self.first_seen: dict[str, float] = {}
        self._since = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        try:
            rows = self.node.request("inbox", since=self._since)
        except ControlError:
            return
        with self._lock:
            for row in rows:
                self._since = max(self._since, int(row["seq"]))
                text = str(row["text"])
                self.counts[text] += 1
                self.first_seen.setdefault(text, float(row["received_at"]))

    def count(self, text: str) -> int:
        with self._lock:
            return self.counts[text]

    @contextmanager
    def running(self) -> Iterator[Inbox]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.poll()


def _send(node: MeshProcess, to: str, text: str) -> dict[str, Any]:
    try:
        result = node.request("send", to=to, text=text, wait_s=SEND_WAIT_S,
                              timeout_s=SEND_WAIT_S + 10)
    except ControlError as exc:
        return {"status": f"control error: {exc}"}
    return result if isinstance(result, dict) else {"status": repr(result)}


# ------------------------------------------------------------------ departures


def _depart(tb: Testbed, k: int) -> tuple[float | None, float | None]:
    """Join handset ``dep<k>`` in slot 4 (at JOIN_LOSS_PERCENT), then at LOSS_PERCENT
    SIGTERM it; (join s, departure s)."""
    name = f"dep{k}"
    aor = f"sip:{name}@{DOMAIN}"
    observer = tb.node(0)
    tb.set_loss_everywhere(JOIN_LOSS_PERCENT)
    t0 = time.monotonic()
    node = tb.start_node(FAR, name=name, data_dir=tb.workdir / name, wait=False)
    joined = wait_until(lambda: aor in (observer.who_aors() or ()), CONVERGE_S, poll_s=0.1)
    if joined is None:
        return None, None
    join_s = time.monotonic() - t0
    tb.set_loss_everywhere(LOSS_PERCENT)
    time.sleep(SETTLE_AT_LOSS_S)
    assert node.proc is not None
    os.killpg(node.proc.pid, signal.SIGTERM)
    t1 = time.monotonic()
    gone = wait_until(lambda: aor not in (observer.who_aors() or {aor}), DEPARTURE_WATCH_S,
                      poll_s=0.05)
    depart_s = None if gone is None else time.monotonic() - t1
    try:  # one SIGTERM only: a second one could cut the departure short
        code = node.proc.wait(timeout=NODE_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = tb.stop_node(FAR, signal.SIGKILL)
    assert code == 0, node.log_tail()
    return join_s, depart_s


def test_twenty_departures_at_30_percent_loss(tmp_path: Path) -> None:
    require_root()
    t0 = time.monotonic()
    with chain(N_NODES) as tb:
        _start_chain(tb, tmp_path, LOSS_PERCENT)
        assert tb.stop_node(FAR) == 0
        results = [_depart(tb, k) for k in range(1, DEPARTURES + 1)]
        describe = tb.describe()
    departs = [d for _j, d in results]
    print(f"\n{DEPARTURES} departures at {LOSS_PERCENT}% loss ({time.monotonic() - t0:.0f} s): "
          f"joins {[None if j is None else round(j, 2) for j, _d in results]} s; "
          f"withdrawn at n0 after {[None if d is None else round(d, 2) for d in departs]} s")
    assert all(j is not None for j, _d in results), describe
    late = [(k + 1, d) for k, d in enumerate(departs) if d is None or d > DEPARTURE_LIMIT_S]
    assert not late, f"departures not seen at n0 within {DEPARTURE_LIMIT_S} s: {late}"


# ------------------------------------------------------------------ 300 MESSAGEs


@pytest.mark.timeout(600)
def test_300_messages_at_30_percent_loss_delivered_exactly_once(tmp_path: Path) -> None:
    require_root()
    run = f"{time.monotonic_ns():x}"
    texts = [f"msg {i} of {run}" for i in range(MESSAGES)]
    to = f"sip:n{FAR}@{DOMAIN}"
    t0 = time.monotonic()
    with chain(N_NODES) as tb:
        nodes = _start_chain(tb, tmp_path, LOSS_PERCENT)
        with Inbox(nodes[FAR]).running() as inbox, ThreadPoolExecutor(SEND_WORKERS) as pool:
            outcomes = list(pool.map(lambda text: _send(nodes[0], to, text), texts))
            sent_s = time.monotonic() - t0
            wait_until(lambda: all(inbox.count(t) for t in texts), DELIVERY_S, poll_s=0.5)
            delivered_s = time.monotonic() - t0
            time.sleep(DUPLICATE_WATCH_S)
        describe = tb.describe()
    statuses = Counter(str(o.get("status")) for o in outcomes)
    counts = Counter(inbox.count(t) for t in texts)
    print(f"\n{MESSAGES} MESSAGEs over {FAR} hops at {LOSS_PERCENT}% loss: send outcomes "
          f"{dict(statuses)} after {sent_s:.1f} s; delivered counts {dict(counts)} "
          f"(copies: messages) after {delivered_s:.1f} s; test took "
          f"{time.monotonic() - t0:.0f} s")
    missing = [t for t in texts if inbox.count(t) == 0]
    twice = [(t, inbox.count(t)) for t in texts if inbox.count(t) > 1]
    assert not twice, f"delivered more than once: {twice}"
    assert not missing, f"never delivered: {missing[:10]}... ({len(missing)})\n{describe}"


# ------------------------------------------------------------------ heal


def _cut(tb: Testbed, percent: int) -> None:
    tb.set_loss(2, tb.iface(2, 3), percent)
    tb.set_loss(3, tb.iface(3, 2), percent)


def _neighbours(node: MeshProcess) -> set[str]:
    return {str(n["node_id"]) for n in node.status()["neighbours"]}


@pytest.mark.timeout(400)
def test_held_messages_flow_within_2s_of_heal(tmp_path: Path) -> None:
    require_root()
    run = f"{time.monotonic_ns():x}"
    texts = [f"held {i} of {run}" for i in range(HEAL_MESSAGES)]
    to = f"sip:n{FAR}@{DOMAIN}"
    with chain(N_NODES) as tb:
        nodes = _start_chain(tb, tmp_path, 0)
        n3 = nodes[3].status()["node_id"]
        _cut(tb, 100)
        down = wait_until(lambda: n3 not in _neighbours(nodes[2]), NEIGHBOUR_DOWN_S,
                          poll_s=0.5)
        assert down is not None, tb.describe()
        with Inbox(nodes[FAR], HEAL_POLL_S).running() as inbox, \
                ThreadPoolExecutor(HEAL_MESSAGES) as pool:
            outcomes = list(pool.map(lambda text: _send(nodes[0], to, text), texts))
            assert [o.get("status") for o in outcomes] == ["held"] * HEAL_MESSAGES, outcomes
            time.sleep(PARTITION_HOLD_S)
            assert not any(inbox.count(t) for t in texts), "delivered across the cut"
            _cut(tb, 0)
            healed_at = time.time()  # the inbox stamps deliveries with the wall clock
            wait_until(lambda: all(inbox.count(t) for t in texts), HEAL_WATCH_S, poll_s=0.05)
        describe = tb.describe()
    after = [round(inbox.first_seen[t] - healed_at, 2) if t in inbox.first_seen else None
             for t in texts]
    print(f"\nheld MESSAGEs reached n4 after the heal: {after} s (cut held "
          f"{PARTITION_HOLD_S:.0f} s after the 202 answers)")
    assert all(a is not None for a in after), f"never delivered after the heal\n{describe}"
    assert max(a for a in after if a is not None) <= HEAL_LIMIT_S, after
    assert all(inbox.count(t) == 1 for t in texts), dict(inbox.counts)
