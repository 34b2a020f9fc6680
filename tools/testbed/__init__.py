"""Network-namespace test beds for integration tests and benchmarks (see netns.py)."""

from tools.testbed.netns import (
    Testbed,
    TestbedError,
    chain,
    cleanup,
    grid,
    in_netns,
    list_namespaces,
    shared,
    star,
)

__all__ = [
    "Testbed",
    "TestbedError",
    "chain",
    "cleanup",
    "grid",
    "in_netns",
    "list_namespaces",
    "shared",
    "star",
]
