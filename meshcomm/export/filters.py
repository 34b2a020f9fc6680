"""Which merged events the export writes, and what of them (issue 11, sans-IO).

Filters apply to the outputs only: every journal is still verified whole and every
send/receipt pair still ties the clocks, so a filtered export has the same corrected
times and verdicts as a full one. All given filters must hold (values given for one
filter repeatedly are alternatives):

* ``from_s`` / ``to_s``: the event's corrected time is within [from, to] (both ends
  included), on the reference device's clock;
* ``aors``: the event's data names one of the AoRs under ``from``, ``to`` or ``aor``
  (compared as ``scheme:user@host`` with scheme and host in lower case; ``alice@x``
  stands for ``sip:alice@x``);
* ``call_ids``: the event's ``call_id`` is one of them (exactly: Call-IDs are
  case-sensitive);
* ``types``: the event's type is one of them.

Message bodies: a journal keeps a body (``body``, bytes) only where its node's profile
said so; the export writes it only when asked (``include_bodies``), else the ``body`` key
is removed from every event (``body_sha256`` and ``body_len`` stay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from meshcomm.errors import MeshcommError

#: The data key of a kept message body.
BODY_KEY: Final = "body"
#: Data keys that name an AoR.
AOR_KEYS: Final = ("from", "to", "aor")
#: Most values one filter option may list.
MAX_FILTER_VALUES: Final = 1_000
#: Longest value of a filter option (an AoR, a Call-ID, an event type).
MAX_FILTER_VALUE_CHARS: Final = 1_024
#: Times accepted by --from/--to: Unix seconds within this range.
MIN_TIME_S: Final = 0.0
MAX_TIME_S: Final = 253_402_300_799.0          # 9999-12-31T23:59:59Z


class FilterError(MeshcommError):
    """A filter option's value cannot be used (its text says which and why)."""


def parse_time(text: str) -> float:
    """Unix seconds from ``text``: a number of seconds, or an ISO 8601 date and time
    (without an offset it is UTC). FilterError otherwise."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(f"{text!r} is neither Unix seconds nor an ISO 8601 time "
                              "(e.g. 2026-12-06T14:30:00Z)") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        seconds = stamp.timestamp()
    if not math.isfinite(seconds) or not MIN_TIME_S <= seconds <= MAX_TIME_S:
        raise FilterError(f"{text!r} is out of range")
    return seconds


def aor_key(text: str) -> str:
    """An AoR as compared: ``scheme:user@host``, scheme and host in lower case, a
    missing scheme taken as ``sip``."""
    value = text.strip().strip("<>")
    scheme, colon, rest = value.partition(":")
    if not colon or "@" in scheme:
        scheme, rest = "sip", value
    user, at, host = rest.rpartition("@")
    return f"{scheme.lower()}:{user}{at}{host.lower()}"


def _values(name: str, values: Iterable[str]) -> frozenset[str]:
    listed = list(values)
    if len(listed) > MAX_FILTER_VALUES:
        raise FilterError(f"{name}: at most {MAX_FILTER_VALUES} values")
    for value in listed:
        if not value or len(value) > MAX_FILTER_VALUE_CHARS:
            raise FilterError(f"{name}: a value must be 1..{MAX_FILTER_VALUE_CHARS} "
                              "characters")
    return frozenset(listed)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """See the module docstring; the default keeps everything."""

    from_s: float | None = None
    to_s: float | None = None
    aors: frozenset[str] = frozenset()
    call_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, from_s: float | None = None, to_s: float | None = None,
           aors: Iterable[str] = (), call_ids: Iterable[str] = (),
           types: Iterable[str] = ()) -> EventFilter:
        """A filter from option values (FilterError for values it cannot use)."""
        if from_s is not None and to_s is not None and from_s > to_s:
            raise FilterError("--from is after --to")
        return cls(from_s, to_s, frozenset(aor_key(a) for a in _values("--aor", aors)),
                   _values("--call-id", call_ids), _values("--type", types))

    @property
    def everything(self) -> bool:
        """True when nothing is filtered out."""
        return (self.from_s is None and self.to_s is None and not self.aors
                and not self.call_ids and not self.types)

    def keeps(self, type_name: str, corrected_s: float, data: Mapping[str, object]) -> bool:
        """Whether the event is written."""
        if self.types and type_name not in self.types:
            return False
        if self.from_s is not None and corrected_s < self.from_s:
            return False
        if self.to_s is not None and corrected_s > self.to_s:
            return False
        if self.call_ids:
            call_id = data.get("call_id")
            if not isinstance(call_id, str) or call_id not in self.call_ids:
                return False
        return not self.aors or self._names_aor(data)

    def _names_aor(self, data: Mapping[str, object]) -> bool:
        for key in AOR_KEYS:
            value = data.get(key)
            if isinstance(value, str) and aor_key(value) in self.aors:
                return True
        return False

    def as_json(self) -> dict[str, object]:
        return {"from_s": self.from_s, "to_s": self.to_s, "aor": sorted(self.aors),
                "call_id": sorted(self.call_ids), "type": sorted(self.types)}


def without_body(data: Mapping[str, object]) -> Mapping[str, object]:
    """``data`` without a kept message body (the same object when it has none)."""
    if BODY_KEY not in data:
        return data
    return {key: value for key, value in data.items() if key != BODY_KEY}
