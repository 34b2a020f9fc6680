"""The one loop timer an edge arms for its sans-IO core's ``next_timer()``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class OneTimer:
    """Keeps at most one ``loop.call_at`` armed, re-arming only when the time changes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def armed_at(self) -> float | None:
        """Loop time the timer is armed for (None: not armed)."""
        return self._at if self._handle is not None else None

    def arm(self, when: float | None) -> None:
        if when == self._at and self._handle is not None:
            return
        self.cancel()
        self._at = when
        if when is not None:
            self._handle = self._loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self._callback()
