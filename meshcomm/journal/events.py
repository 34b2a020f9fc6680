"""Typed journal events: what the sans-IO protocol cores emit for the journal.

A core never writes the journal itself and never reads a clock: it emits a
:class:`JournalRecord` built from a typed payload (``JournalRecord.of(NeighbourUp(...))``,
one payload class per event type in :mod:`meshcomm.journal.payloads`); the record carries
the payload (``record.payload``, for readers in the process: ``isinstance`` and attributes)
and its plain stored form (``record.data``, for the journal store, the trace digest and the
export). The node driver stamps it with monotonic and
wall-clock time and appends it to the node's :class:`~meshcomm.journal.store.JournalStore`
(or, in the simulator, to an in-memory :class:`~meshcomm.journal.chain.MemoryJournal`).

``data`` values must be msgpack-able plain values: ``str``, ``int``, ``float``, ``bytes``,
``bool``, ``None``, lists/tuples of those and ``str``-keyed dicts of those (see
:mod:`meshcomm.journal.codec` for the exact limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshcomm.journal.payloads import JournalPayload


class JournalEventType(StrEnum):
    """Event types of the node journal. The value is what is stored and exported."""

    NODE_STARTED = "node.started"
    NODE_STOPPED = "node.stopped"
    NODE_FAULT = "node.fault"        # one step of the runtime failed and was contained
    NEIGHBOUR_UP = "neighbour.up"
    NEIGHBOUR_DOWN = "neighbour.down"
    BINDING_LEARNED = "binding.learned"
    BINDING_UPDATED = "binding.updated"
    BINDING_EXPIRED = "binding.expired"
    BINDING_CONFLICT = "binding.conflict"
    BINDING_REJECTED = "binding.rejected"
    ENVELOPE_DROPPED = "envelope.dropped"
    ROUTE_CHANGED = "route.changed"
    SIP_MESSAGE = "sip.message"
    SF_HELD = "sf.held"              # a message is held for an absent responder
    SF_CUSTODY = "sf.custody"        # a relay took (or refused) custody of a message
    SF_DELIVERED = "sf.delivered"    # a held message reached its destination's client
    SF_RECEIPT = "sf.receipt"        # a signed delivery receipt was accepted
    CHECKPOINT = "journal.checkpoint"
    WITNESSED = "journal.witnessed"  # another node's signed checkpoint was heard and checked
    UPLINK_CHANGED = "uplink.changed"    # the DHT uplink went up, into grace, or down
    DHT_DROPPED = "dht.dropped"          # a value read from the DHT failed decode/verification
    DHT_REMOTE = "dht.remote"            # a binding learned from the DHT changed reachability
    UPSTREAM_CHANGED = "upstream.changed"  # the upstream SIP registrar became (un)reachable
    TRUST_CHANGED = "trust.changed"  # a revocation or agency-key addition was stored


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal event as a sans-IO core emits it: no timestamps, no node id.

    Cores build it with :meth:`of`. A record made directly from a type and a mapping
    carries no payload: that is the storage path's (data normalised for the store, tests
    of the store) and never what a core emits. Equality is by type and data.
    """

    type: JournalEventType
    data: Mapping[str, object]
    payload: JournalPayload | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, payload: JournalPayload) -> JournalRecord:
        """The record of ``payload``: its type, its stored data, the payload itself."""
        return cls(payload.TYPE, payload.data(), payload)
