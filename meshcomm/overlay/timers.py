"""Timer kinds of the overlay's single timer heap."""

from __future__ import annotations

from enum import Enum


class TimerKind(Enum):
    HELLO = "hello"
    DIGEST = "digest"
    REBROADCAST = "rebroadcast"
    RETRANSMIT = "retransmit"
    HOUSEKEEPING = "housekeeping"
    MEDIA_RETRANSMIT = "media_retransmit"
    TOMBSTONE_RESEND = "tombstone_resend"
    TRUST_REBROADCAST = "trust_rebroadcast"
    TRUST_NOTICE = "trust_notice"
    ACK_FLUSH = "ack_flush"
