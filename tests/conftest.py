"""Suite-wide test policy.

Under ``CI=true`` a skipped test is a failure: tests that need root, network namespaces or
Debian packages must run in CI. Use :func:`tests.envcheck.require` rather than
``pytest.skip`` so the reason is uniform.

Property tests (hypothesis) run without a per-example deadline: the machines are shared and
noisy (a timing belongs in a benchmark, not a test); ``max_examples`` bounds their work.

A hard watchdog backs pytest-timeout: its signal method cannot interrupt a test stuck in
native code (an OpenDHT join holding the GIL), which once hung a CI run until CI's own limit.
If a test (setup and teardown included) outlives its timeout by :data:`WATCHDOG_GRACE_S`,
every thread's stack is printed and the run exits at once, failed.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from typing import TextIO

import pytest
from hypothesis import settings

settings.register_profile("meshcomm", deadline=None)
settings.load_profile("meshcomm")


#: How much longer than its pytest-timeout a test may run before the watchdog ends the run.
WATCHDOG_GRACE_S = 120.0


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 300)


_watchdog_out: list[TextIO] = []


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr for the watchdog: while a test runs, pytest's fd
    capture points fd 2 at a file that is lost when the watchdog ends the process."""
    # pytest suspends its capture once the initial conftests are loaded, so fd 2 is the
    # real stderr here (resuming the capture from here would break pytest's own output)
    _watchdog_out.append(os.fdopen(os.dup(2), "w"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    out = _watchdog_out[0] if _watchdog_out else sys.stderr
    faulthandler.dump_traceback_later(_timeout_of(item) + WATCHDOG_GRACE_S, exit=True,
                                      file=out)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(
            f"CI=true: {len(skipped)} test(s) skipped; in CI every test must run", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
