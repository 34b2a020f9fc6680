"""Environment requirements for tests: skip locally, fail under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip the calling test when ``condition`` is false; under CI=true fail instead."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true requires: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0 and shutil.which("ip") is not None,
            "needs root and iproute2 (network namespaces)")


def require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"needs {name} (Debian package {package})")
    assert path is not None
    return path
