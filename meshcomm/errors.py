"""The one small exception tree of meshcomm.

* :class:`DecodeError` -- bytes from the network (or a file) could not be decoded. Every
  ``*_untrusted`` function raises this and nothing else.
* :class:`LocalProtocolError` -- our own caller misused an API (a bug on this side).
* :class:`ConfigError` -- a configuration file or flag is invalid; names the key path.
* :class:`TrustError` -- a record decoded fine but fails signature or policy checks.

The ``reason`` text of :class:`DecodeError` and :class:`TrustError` is read into a
layer's reason Enum (a :class:`ReasonEnum`) where it names a counter or a journal entry.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Self

#: The value of every ReasonEnum's catch-all member ``OTHER``.
OTHER_REASON: Final = "other"


class ReasonEnum(StrEnum):
    """A reason Enum with a member ``OTHER`` (:data:`OTHER_REASON`) for any text no other
    member names: :meth:`of` reads a lower layer's ``reason`` text."""

    @classmethod
    def of(cls, text: str) -> Self:
        """The member for ``text``; OTHER for text no member names."""
        try:
            return cls(text)
        except ValueError:
            return cls(OTHER_REASON)


class MeshcommError(Exception):
    """Base of every exception meshcomm raises on purpose."""


class DecodeError(MeshcommError):
    """Untrusted input could not be decoded.

    ``status_hint`` is the SIP status code a user agent should answer with when the input
    was a SIP request (400 unless a more specific code applies); other decoders leave it
    at 400 and callers ignore it. ``reason`` is a short machine-readable drop reason used
    for counters and the journal.
    """

    def __init__(self, message: str, *, status_hint: int = 400, reason: str = "malformed"):
        super().__init__(message)
        self.status_hint = status_hint
        self.reason = reason


class LocalProtocolError(MeshcommError):
    """The local caller used an API in a way its contract forbids."""


class ConfigError(MeshcommError):
    """A configuration value is invalid. ``key_path`` names it (``overlay.hello_interval_s``)."""

    def __init__(self, key_path: str, message: str):
        super().__init__(f"{key_path}: {message}" if key_path else message)
        self.key_path = key_path


class TrustError(MeshcommError):
    """A record is well-formed but not acceptable: bad signature, credential or policy."""

    def __init__(self, message: str, *, reason: str = "untrusted"):
        super().__init__(message)
        self.reason = reason
