"""User-space link impairment (this kernel has no netem).

``Impairment`` describes loss, delay, jitter and duplication; ``ImpairedRadio`` wraps any
driver and applies it on the RECEIVE path, so every receiver of one broadcast loses, delays
and duplicates independently, as on a shared radio channel. Randomness comes from an
injected, seeded ``random.Random``.

CLI form: ``"loss=0.1,delay=15ms,jitter=5ms,dup=0.01"`` (see :func:`parse_impairment`).
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

from meshcomm.errors import ConfigError
from radios.base import Radio

#: Config key path used in ConfigError for impairment strings.
IMPAIR_KEY_PATH = "impairment"
#: Upper bound for delay and jitter: anything larger is a typo, not a radio.
MAX_DELAY_S = 60.0

_TIME_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True, slots=True)
class Impairment:
    """Per-receiver link impairment. Probabilities are in [0, 1]; times in seconds."""

    loss: float = 0
    delay_s: float = 0
    jitter_s: float = 0
    duplicate: float = 0

    def __post_init__(self) -> None:
        for key, value in (("loss", self.loss), ("dup", self.duplicate)):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError(f"{IMPAIR_KEY_PATH}.{key}", f"must be in [0, 1], got {value}")
        for key, value in (("delay", self.delay_s), ("jitter", self.jitter_s)):
            if not (math.isfinite(value) and 0 <= value <= MAX_DELAY_S):
                raise ConfigError(
                    f"{IMPAIR_KEY_PATH}.{key}", f"must be in [0, {MAX_DELAY_S}] s, got {value}"
                )

    @property
    def is_null(self) -> bool:
        return self.loss == 0 and self.delay_s == 0 and self.jitter_s == 0 and self.duplicate == 0


def _parse_probability(key: str, text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(
            f"{IMPAIR_KEY_PATH}.{key}", f"{text!r} is not a probability (0.1 or 10%)"
        ) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ConfigError(f"{IMPAIR_KEY_PATH}.{key}", f"{text!r} is not in [0, 1]")
    return value


def _parse_duration_s(key: str, text: str) -> float:
    number, factor = text, 1.0
    for unit in ("us", "ms", "s"):  # longest suffixes first
        if text.endswith(unit):
            number, factor = text[: -len(unit)], _TIME_UNITS_S[unit]
            break
    try:
        value = float(number) * factor
    except ValueError:
        raise ConfigError(
            f"{IMPAIR_KEY_PATH}.{key}", f"{text!r} is not a duration (15ms, 0.2s, 500us)"
        ) from None
    if not (math.isfinite(value) and 0 <= value <= MAX_DELAY_S):
        raise ConfigError(f"{IMPAIR_KEY_PATH}.{key}", f"{text!r} is not in [0, {MAX_DELAY_S}] s")
    return value


_FIELDS = {"loss": "loss", "delay": "delay_s", "jitter": "jitter_s", "dup": "duplicate"}
_PARSERS = {
    "loss": _parse_probability,
    "dup": _parse_probability,
    "delay": _parse_duration_s,
    "jitter": _parse_duration_s,
}


def parse_impairment(spec: str) -> Impairment:
    """Parse ``"loss=0.1,delay=15ms,jitter=5ms,dup=0.01"``; any subset, any order.

    An empty string means no impairment. ConfigError names the bad part.
    """
    values: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            if spec.strip():
                raise ConfigError(IMPAIR_KEY_PATH, f"empty part in {spec!r}")
            continue
        key, sep, text = (s.strip() for s in part.partition("="))
        if not sep or not text:
            raise ConfigError(IMPAIR_KEY_PATH, f"{part!r}: expected KEY=VALUE")
        if key not in _FIELDS:
            raise ConfigError(
                f"{IMPAIR_KEY_PATH}.{key}", f"{part!r}: unknown key; expected one of "
                + ", ".join(_FIELDS)
            )
        if _FIELDS[key] in values:
            raise ConfigError(f"{IMPAIR_KEY_PATH}.{key}", f"{part!r}: given twice")
        values[_FIELDS[key]] = _PARSERS[key](key, text)
    return Impairment(**values)


class ImpairedRadio(Radio):
    """Wraps ``inner`` and impairs what it receives. Sending is passed through unchanged.

    Shares ``inner.counters`` and adds ``dropped_impair_loss`` and ``impair_duplicated``.
    """

    def __init__(self, inner: Radio, impairment: Impairment, rng: random.Random) -> None:
        super().__init__(inner.name, inner.mtu_bytes)
        self.inner = inner
        self.impairment = impairment
        self.counters = inner.counters
        self.counters.setdefault("dropped_impair_loss", 0)
        self.counters.setdefault("impair_duplicated", 0)
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        inner.set_receiver(self._on_inner_receive)

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    @property
    def pending_deliveries(self) -> int:
        """Received copies still held back by delay/jitter."""
        return len(self._pending)

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.inner.open()
        self.mtu_bytes = self.inner.mtu_bytes

    def send(self, data: bytes, dst: str | None) -> None:
        self.inner.send(data, dst)

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self.inner.close()

    def _on_inner_receive(self, data: bytes, src_addr: str) -> None:
        # inner.deliver() already counted rx; undo it so that rx counts what the layer
        # above gets (each delivered copy is counted again by self.deliver()).
        self.counters["rx"] -= 1
        self.counters["rx_bytes"] -= len(data)
        imp = self.impairment
        if imp.loss and self._rng.random() < imp.loss:
            self.counters["dropped_impair_loss"] += 1
            return
        copies = 1
        if imp.duplicate and self._rng.random() < imp.duplicate:
            copies = 2
            self.counters["impair_duplicated"] += 1
        for _ in range(copies):
            delay_s = imp.delay_s
            if imp.jitter_s:
                delay_s = max(0.0, delay_s + self._rng.uniform(-imp.jitter_s, imp.jitter_s))
            if delay_s <= 0 or self._loop is None:
                self.deliver(data, src_addr)
            else:
                self._schedule(delay_s, data, src_addr)

    def _schedule(self, delay_s: float, data: bytes, src_addr: str) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._pending.discard(handle)
            self.deliver(data, src_addr)

        handle = self._loop.call_later(delay_s, fire)
        self._pending.add(handle)
