"""Suite-wide test policy.

Under ``CI=true`` a skipped test is a failure: tests that need root, network namespaces or
Debian packages must run in CI. Use :func:`tests.envcheck.require` rather than
``pytest.skip`` so the reason is uniform.

Property tests (hypothesis) run without a per-example deadline: the machines are shared and
noisy (a timing belongs in a benchmark, not a test); ``max_examples`` bounds their work.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("meshcomm", deadline=None)
settings.load_profile("meshcomm")


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
