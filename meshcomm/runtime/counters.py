"""The runtime's counters, one Enum per part (the value is the name the status output,
the control API's JSON and the tests read; a StrEnum member is that string)."""

from __future__ import annotations

from enum import StrEnum


class RuntimeCounter(StrEnum):
    """The node driver's own counters, and the failures it contained."""

    CONTAINED_FAULTS = "contained_faults"
    CONTAINED_JOURNAL_ERRORS = "contained_journal_errors"
    TX_ERRORS = "tx_errors"
    TX_UNKNOWN_RADIO = "tx_unknown_radio"
    SF_PERSIST_ERRORS = "sf_persist_errors"
    FRESHNESS_PERSIST_ERRORS = "freshness_persist_errors"
    JOURNAL_RECORDS_NORMALISED = "journal_records_normalised"
    JOURNAL_FLUSH_ERRORS = "journal_flush_errors"
    DHT_OPS_WITHOUT_PORT = "dht_ops_without_port"


class SipSocketCounter(StrEnum):
    """The SIP gateway's sockets (UDP and TCP); every one is reported from the start."""

    UDP_RX = "udp_rx"
    UDP_TX = "udp_tx"
    UDP_ERRORS = "udp_errors"
    UDP_OVERSIZE = "udp_oversize"
    TCP_RX = "tcp_rx"
    TCP_TX = "tcp_tx"
    TCP_FRAMING_ERRORS = "tcp_framing_errors"
    TCP_REFUSED = "tcp_refused"
    TCP_CLOSED_PEER = "tcp_closed_peer"
    TCP_ACCEPT_ERRORS = "tcp_accept_errors"
    TCP_IDLE_CLOSED = "tcp_idle_closed"
    TCP_IDLE_KEPT = "tcp_idle_kept"          # idle, kept open: a live registration's
    TCP_HANDLER_ERRORS = "tcp_handler_errors"
    UDP_BATCHES = "udp_batches"
    UDP_LARGEST_BATCH = "udp_largest_batch"
    UDP_SEND_DROPPED = "udp_send_dropped"


class ControlCounter(StrEnum):
    """The control socket; every one is reported from the start."""

    REQUESTS = "requests"
    BAD_REQUESTS = "bad_requests"
    ERRORS = "errors"
    REFUSED_CONNECTIONS = "refused_connections"


class MediaPortCounter(StrEnum):
    """The call ports (UDP sockets) of the media relay."""

    PORTS_EXHAUSTED = "ports_exhausted"
    RX_ERRORS = "rx_errors"
    TX_NO_PORT = "tx_no_port"
    TX_ERRORS = "tx_errors"
