"""The media relay's counters, one Enum (the value is the name the status output, the
``MediaCallEnded`` event and the tests read).

Per-reason and per-channel counters are reached through explicit tables next to the
reasons: :data:`meshcomm.media.session.DROP_COUNTERS` (a packet's
:class:`~meshcomm.media.session.DropReason`), :data:`~meshcomm.media.session.TO_MESH_COUNTERS`
and :data:`~meshcomm.media.session.TO_CLIENT_COUNTERS` (its channel), and
:data:`meshcomm.media.relay.CALL_END_COUNTERS` (a call's
:class:`~meshcomm.media.relay.EndReason`); a test checks each table covers its Enum.
"""

from __future__ import annotations

from enum import StrEnum


class MediaCounter(StrEnum):
    """Every counter of the media relay and its per-call sessions."""

    # per call session: packets in and out
    CLIENT_IN = "client_in"
    MESH_IN = "mesh_in"
    RTP_TO_MESH = "rtp_to_mesh"
    RTCP_TO_MESH = "rtcp_to_mesh"
    RTP_TO_CLIENT = "rtp_to_client"
    RTCP_TO_CLIENT = "rtcp_to_client"
    # per call session: packets dropped, one per DropReason
    DROP_MALFORMED = "drop_malformed"
    DROP_TRUNCATED = "drop_truncated"
    DROP_OVERSIZE = "drop_oversize"
    DROP_BAD_TAG = "drop_bad_tag"
    DROP_REPLAY = "drop_replay"
    DROP_TOO_OLD = "drop_too_old"
    DROP_NOT_RTP = "drop_not_rtp"
    DROP_NOT_READY = "drop_not_ready"
    DROP_NO_CLIENT = "drop_no_client"
    DROP_UNKNOWN_STREAM = "drop_unknown_stream"
    DROP_COUNTER_EXHAUSTED = "drop_counter_exhausted"
    # the relay
    DROP_NO_SESSION = "drop_no_session"
    SDP_TO_MESH = "sdp_to_mesh"
    SDP_TO_CLIENT = "sdp_to_client"
    CALLS_KEYED = "calls_keyed"
    CALLS_REFUSED = "calls_refused"
    CALLS_STARTED = "calls_started"
    CALLS_ENDED_HANGUP = "calls_ended_hangup"
    CALLS_ENDED_IDLE = "calls_ended_idle"
    OFFERS_REFUSED = "offers_refused"
    PORTS_EXHAUSTED = "ports_exhausted"
