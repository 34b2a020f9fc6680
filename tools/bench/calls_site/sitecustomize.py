"""Timing wrappers for ``tools/bench/calls.py``: active only in a process started with
``MESHCOMM_CALLS`` set (``module:Qualified.name`` entries, comma-separated) and
``MESHCOMM_CALLS_OUT`` (a directory).

A background thread wraps each named function once its module is imported (it retries
every 0.5 s), and every 2 s, and at exit, writes ``<pid>.json`` there:
``{"argv": [...], "calls": {name: [count, p50_us, mean_us]}}``. A wrapper records
``perf_counter_ns`` around the call, exceptions included. Only calls that look the name up
when they are made are timed (a bound method stored before the wrapping is not).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_TARGETS = [t for t in os.environ.get("MESHCOMM_CALLS", "").split(",") if t]
_OUT = os.environ.get("MESHCOMM_CALLS_OUT", "")
_SPENT: dict[str, list[int]] = {}


def _wrap(owner: Any, attr: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, attr)
    spent = _SPENT.setdefault(label, [])
    clock = time.perf_counter_ns

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(clock() - start)

    setattr(owner, attr, timed)


def _install(pending: list[str]) -> list[str]:
    """Wrap what can be wrapped now; the targets still waiting for their module."""
    left = []
    for target in pending:
        module_name, _, qualname = target.partition(":")
        if module_name not in sys.modules:
            left.append(target)
            continue
        owner: Any = importlib.import_module(module_name)
        *path, attr = qualname.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            _wrap(owner, attr, qualname)
        except AttributeError:
            print(f"calls: {target} not found", file=sys.stderr)
    return left


def _dump() -> None:
    calls = {}
    for label, values in list(_SPENT.items()):
        seen = list(values)
        if seen:
            calls[label] = [len(seen), round(statistics.median(seen) / 1e3, 1),
                            round(sum(seen) / len(seen) / 1e3, 1)]
    path = os.path.join(_OUT, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as out:
        json.dump({"argv": sys.argv, "calls": calls}, out)
    os.replace(path + ".tmp", path)


def _run() -> None:
    pending = list(_TARGETS)
    last_dump = time.monotonic()
    while True:
        time.sleep(0.5)
        if pending:
            pending = _install(pending)
        if time.monotonic() - last_dump >= 2.0:
            last_dump = time.monotonic()
            _dump()


if _TARGETS and _OUT:
    threading.Thread(target=_run, name="calls-timer", daemon=True).start()
    atexit.register(_dump)
