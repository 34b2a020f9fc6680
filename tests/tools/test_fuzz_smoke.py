"""Every fuzz target of tools/fuzz keeps working: its entry function runs over its seed
corpus and a few hundred deterministic mutants without raising (a raise is a contract
breach: an exception other than DecodeError from a decoder, or any exception from a
receive-style entry point). Coverage-guided runs are manual (tools/fuzz/README.md)."""

from __future__ import annotations

import pytest

from tools.fuzz.mutate import mutants
from tools.fuzz.targets import TARGETS

MUTANTS_PER_TARGET = 300


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_seeds_and_mutants(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, f"{name} has no seeds"
    for data in seeds:
        target.entry(data)
    for data in mutants(seeds, MUTANTS_PER_TARGET, seed=len(name)):
        target.entry(data)


def test_mutants_are_deterministic_and_differ_from_seeds() -> None:
    seeds = [b"INVITE sip:a@b SIP/2.0\r\n\r\n", b"\x93\x01\x02\x03"]
    first = list(mutants(seeds, 50, seed=3))
    assert first == list(mutants(seeds, 50, seed=3))
    assert sum(m not in seeds for m in first) > 40

