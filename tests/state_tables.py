"""Helpers for the tests of the Enum transition tables ``(state, input) -> state``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

StateT = TypeVar("StateT", bound=Hashable)
InputT = TypeVar("InputT", bound=Hashable)


def reachable(table: Mapping[tuple[StateT, InputT], StateT], start: StateT) -> set[StateT]:
    """The states ``table`` can reach from ``start`` (``start`` included)."""
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (src, _), dst in table.items():
            if src == state and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen
