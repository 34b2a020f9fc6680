"""The store-and-forward core's values (:mod:`meshcomm.node.storeforward`): the states
of a held message and their transitions, what it holds, and the events it emits for the
gateway (:class:`SfDeliver`, :class:`SfHoldResult`) and the runtime's store
(:class:`SfPersist`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshcomm.node.sf_delivered import LOCAL_ORIGIN
from meshcomm.node.storeforward_wire import Parcel


class HeldState(StrEnum):
    QUEUED = "queued"          # held by this node only
    HELD_BY = "held_by"        # a relay took custody (the origin keeps its copy too)
    DELIVERED = "delivered"    # the destination node signed a receipt
    EXPIRED = "expired"        # dropped undelivered (too old, or evicted when full)


#: Status transitions of a message seen from its origin node (docs/gateway-design.md,
#: "Store-and-forward"): custody accepted by a relay, a valid receipt, expiry.
class SfInput(StrEnum):
    ACCEPTED = "accepted"
    RECEIPT = "receipt"
    EXPIRY = "expiry"


TRANSITIONS: dict[tuple[HeldState, SfInput], HeldState] = {
    (HeldState.QUEUED, SfInput.ACCEPTED): HeldState.HELD_BY,
    (HeldState.QUEUED, SfInput.RECEIPT): HeldState.DELIVERED,
    (HeldState.QUEUED, SfInput.EXPIRY): HeldState.EXPIRED,
    (HeldState.HELD_BY, SfInput.ACCEPTED): HeldState.HELD_BY,
    (HeldState.HELD_BY, SfInput.RECEIPT): HeldState.DELIVERED,
    (HeldState.HELD_BY, SfInput.EXPIRY): HeldState.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A message this node holds: its own client's (``own``) or in custody for another."""

    parcel: Parcel
    own: bool
    state: HeldState
    holder: str

    @property
    def msg_id(self) -> bytes:
        return self.parcel.msg_id

    def status(self) -> HeldStatus:
        return HeldStatus(self.parcel.msg_id, self.parcel.to_aor, self.state, self.holder,
                          self.parcel.created_wall_s)


@dataclass(frozen=True, slots=True)
class HeldStatus:
    """Where a message is: ``holder`` is a relay's AoR (or node hex), or the destination."""

    msg_id: bytes
    to_aor: str
    state: HeldState
    holder: str
    created: float


@dataclass(frozen=True, slots=True)
class SfDeliver:
    """Deliver ``sip`` to the local client (or inbox) of ``to_aor``; answer with
    :meth:`StoreForward.local_delivery_done`. ``sip`` was signed by the origin node but
    its content is untrusted: parse it with the SIP ``_untrusted`` parser."""

    msg_id: bytes
    sip: bytes
    to_aor: str = ""
    from_aor: str = ""


@dataclass(frozen=True, slots=True)
class SfHoldResult:
    """Whether a :meth:`StoreForward.hold` is durable (``durable``) or was dropped because
    its write failed; emitted once per hold after :meth:`StoreForward.persisted`."""

    msg_id: bytes
    durable: bool


class PersistOp(StrEnum):
    STORE = "store"            # insert or replace ``held``
    REMOVE = "remove"          # forget the held message ``msg_id``
    DELIVERED = "delivered"    # remember ``msg_id`` as delivered here (at ``wall_s``)
    FORGET = "forget"          # forget the delivered id ``msg_id``


@dataclass(frozen=True, slots=True)
class SfPersist:
    op: PersistOp
    msg_id: bytes
    held: HeldMessage | None = None
    wall_s: float = 0.0
    #: DELIVERED: the node the request came from (fair eviction of the delivered log).
    origin: bytes = LOCAL_ORIGIN
