"""Application kinds of mesh unicast messages (the ``kind`` of a UNICAST envelope)."""

from __future__ import annotations

from enum import IntEnum


class AppKind(IntEnum):
    SIP = 1              # a SIP request or response, bytes as on the wire
    STORE_FORWARD = 2    # the store-and-forward custody protocol
    MEDIA_CONTROL = 3    # media session set-up between gateways (if needed)
