"""Typed journal payloads: one frozen dataclass per journal event type.

A core emits ``JournalRecord.of(BindingLearned(aor=..., ...))``: the payload class names
its event type (``TYPE``) and its fields, so a renamed or missing field fails mypy at the
emit site and at every reader instead of silently producing a journal entry a metric no
longer finds. :meth:`JournalPayload.data` is the plain mapping the journal stores and
exports; its keys and value types are exactly what the cores wrote before payloads were
typed, so journals already on disk, ``meshcomm journal verify`` and the export read the
same. A field whose stored key is not a Python name (``from``) says so in its metadata
(``_stored_as``); an optional field that is left out of the stored data when ``None``
says so too (:data:`OMITTED_IF_NONE`).

Only in-process records carry payloads. What is read back from disk is untrusted and stays
a plain mapping (:mod:`.store`, :mod:`.audit`): nothing here parses stored data.

:data:`PAYLOAD_CLASSES` maps every :class:`JournalEventType` to its payload class(es);
``SIP_MESSAGE`` has two, because a message the gateway relayed and a datagram it dropped
before it was a message share no fields but ``dir``, ``peer`` and ``hops``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from meshcomm.journal.events import JournalEventType as J

#: metadata key: the stored key of a field, when it is not the field's name
_KEY: Final = "journal_key"
#: metadata key: leave the field out of the stored data when it is None
_OMIT_NONE: Final = "journal_omit_none"


def _stored_as(key: str) -> dict[str, object]:
    """Field metadata: the field is stored under ``key`` (a keyword such as ``from``)."""
    return {_KEY: key}


#: Field metadata: an optional field (default None) the stored data leaves out when None.
#: (Written as ``field(default=None, metadata=OMITTED_IF_NONE)`` at each field: mypy's
#: dataclass support only sees defaults given through ``field`` itself.)
OMITTED_IF_NONE: Final[Mapping[str, object]] = {_OMIT_NONE: True}


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a payload class is stored, worked out once per class (a core emits many)."""

    keys: tuple[str, ...]                 # stored keys, in field order
    values: Callable[[object], tuple[object, ...]]  # the fields' values, in that order
    #: False when a field may be left out (None) or is a tuple (stored as a list)
    plain: bool
    omit_none: tuple[bool, ...]


_LAYOUTS: dict[type[JournalPayload], _Layout] = {}


def _layout(cls: type[JournalPayload]) -> _Layout:
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    getter = operator.attrgetter(*(f.name for f in fields))
    omit = tuple(bool(f.metadata.get(_OMIT_NONE)) for f in fields)
    layout = _Layout(
        keys=tuple(f.metadata.get(_KEY, f.name) for f in fields),
        values=getter if len(fields) > 1 else (lambda p: (getter(p),)),
        plain=not any(omit) and not any("tuple" in str(f.type) for f in fields),
        omit_none=omit)
    _LAYOUTS[cls] = layout
    return layout


class JournalPayload:
    """Base of every payload class: its event type and its stored form."""

    __slots__ = ()
    TYPE: ClassVar[J]

    def data(self) -> dict[str, object]:
        """The plain mapping the journal stores (tuples as lists, as msgpack reads them)."""
        layout = _LAYOUTS.get(type(self)) or _layout(type(self))
        values = layout.values(self)
        if layout.plain:
            return dict(zip(layout.keys, values, strict=True))
        return {key: _listed(value) if type(value) is tuple else value
                for key, value, omit in zip(layout.keys, values, layout.omit_none, strict=True)
                if value is not None or not omit}


def _listed(value: tuple[object, ...]) -> list[object]:
    """A tuple (of tuples) as lists, as msgpack reads it back (SIP headers are pairs)."""
    return [_listed(item) if type(item) is tuple else item for item in value]


# ---------------------------------------------------------------- node
@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStarted(JournalPayload):
    TYPE: ClassVar[J] = J.NODE_STARTED
    node: str                      # node id, hex
    role: str
    incident: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStopped(JournalPayload):
    TYPE: ClassVar[J] = J.NODE_STOPPED
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFault(JournalPayload):
    """One step of the runtime failed and was contained (``count`` since the last one
    journaled, ``total`` since start)."""

    TYPE: ClassVar[J] = J.NODE_FAULT
    step: str
    error: str                     # the exception's class name
    count: int
    total: int


# ---------------------------------------------------------------- overlay
@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourUp(JournalPayload):
    TYPE: ClassVar[J] = J.NEIGHBOUR_UP
    neighbour: str                 # node id, hex
    addr: str                      # link address
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourDown(JournalPayload):
    TYPE: ClassVar[J] = J.NEIGHBOUR_DOWN
    neighbour: str
    addr: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteChanged(JournalPayload):
    """A route to ``dst`` was learned or changed; all three None: the route was lost."""

    TYPE: ClassVar[J] = J.ROUTE_CHANGED
    dst: str                       # node id, hex
    next_hop: str | None           # node id (hex) of the next hop, else its link address
    hops: int | None
    metric: int | None             # path metric, 1/16 units


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeDropped(JournalPayload):
    """An input was refused (rate-limited per reason and source before it is journaled)."""

    TYPE: ClassVar[J] = J.ENVELOPE_DROPPED
    reason: str
    src: str                       # link address (overlay) or node id hex (store-and-forward)
    #: "store_forward" for a store-and-forward message, else not stored
    kind: str | None = field(default=None, metadata=OMITTED_IF_NONE)


# ---------------------------------------------------------------- bindings
@dataclass(frozen=True, slots=True, kw_only=True)
class _BindingRef(JournalPayload):
    aor: str
    node: str                      # the binding's node id, hex
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindingChange(_BindingRef):
    state: str                     # BindingState value
    lifetime_s: int
    via: str                       # link address it came from, "" if announced here
    record: bytes                  # record id


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingLearned(_BindingChange):
    TYPE: ClassVar[J] = J.BINDING_LEARNED


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingUpdated(_BindingChange):
    TYPE: ClassVar[J] = J.BINDING_UPDATED


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingExpired(_BindingRef):
    TYPE: ClassVar[J] = J.BINDING_EXPIRED
    tombstone: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingConflict(_BindingRef):
    TYPE: ClassVar[J] = J.BINDING_CONFLICT


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRejected(_BindingRef):
    TYPE: ClassVar[J] = J.BINDING_REJECTED
    reason: str
    via: str


# ---------------------------------------------------------------- SIP gateway
@dataclass(frozen=True, slots=True, kw_only=True)
class SipMessageSeen(JournalPayload):
    """A SIP message the gateway received, relayed or generated (body as SHA-256 unless
    kept).

    ``start`` (the start line), ``headers`` ((name, value) pairs in message order, as the
    gateway received or sent them: canonical names, Content-Length included) and the body
    rebuild the message (``start CRLF name: value CRLF ... CRLF body``). A header set too
    large for one journal entry keeps its first headers and counts the rest in
    ``headers_truncated``. ``env``: hex id of the overlay envelope that carried it across
    the mesh (to-mesh / from-mesh; the same on both nodes). The gateway always sets
    ``start`` and ``headers``; they are optional only for records built elsewhere.
    """

    TYPE: ClassVar[J] = J.SIP_MESSAGE
    direction: str = field(metadata=_stored_as("dir"))     # Direction value
    method: str
    status: int | None                    # None for a request (stored as None)
    call_id: str
    cseq: int
    from_aor: str = field(metadata=_stored_as("from"))
    to_aor: str = field(metadata=_stored_as("to"))
    peer: str
    hops: int
    body: bytes | None = field(default=None, metadata=OMITTED_IF_NONE)
    body_sha256: str | None = field(default=None, metadata=OMITTED_IF_NONE)
    note: str | None = field(default=None, metadata=OMITTED_IF_NONE)
    start: str | None = field(default=None, metadata=OMITTED_IF_NONE)
    headers: tuple[tuple[str, str], ...] | None = field(default=None,
                                                       metadata=OMITTED_IF_NONE)
    body_len: int | None = field(default=None, metadata=OMITTED_IF_NONE)   # bytes, if any
    headers_truncated: int | None = field(default=None, metadata=OMITTED_IF_NONE)
    env: str | None = field(default=None, metadata=OMITTED_IF_NONE)     # envelope id, hex


@dataclass(frozen=True, slots=True, kw_only=True)
class SipMessageDropped(JournalPayload):
    """A datagram the gateway dropped (undecodable, oversized, not routable)."""

    TYPE: ClassVar[J] = J.SIP_MESSAGE
    direction: str = field(default="dropped", metadata=_stored_as("dir"))  # Direction.DROPPED
    reason: str
    peer: str
    size: int                      # bytes
    hops: int


# ---------------------------------------------------------------- store-and-forward
@dataclass(frozen=True, slots=True, kw_only=True)
class _SfParcel(JournalPayload):
    msg_id: str                    # hex
    from_aor: str = field(metadata=_stored_as("from"))
    to_aor: str = field(metadata=_stored_as("to"))
    origin: str  # node id, hex


@dataclass(frozen=True, slots=True, kw_only=True)
class SfHeld(_SfParcel):
    """A message held for an absent responder (``state`` a HeldState value or
    ``not_held``; ``reason`` and ``own`` only where the state says why)."""

    TYPE: ClassVar[J] = J.SF_HELD
    state: str
    reason: str | None = field(default=None, metadata=OMITTED_IF_NONE)
    own: bool | None = field(default=None, metadata=OMITTED_IF_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SfCustody(_SfParcel):
    TYPE: ClassVar[J] = J.SF_CUSTODY
    taken: bool
    holder: str  # node id, hex


@dataclass(frozen=True, slots=True, kw_only=True)
class SfDelivered(_SfParcel):
    TYPE: ClassVar[J] = J.SF_DELIVERED
    requesters: tuple[str, ...]  # node ids, hex (stored as a list)


@dataclass(frozen=True, slots=True, kw_only=True)
class SfReceipt(_SfParcel):
    TYPE: ClassVar[J] = J.SF_RECEIPT
    dest: str  # node id, hex
    own: bool
    delivered_wall_s: float


# ---------------------------------------------------------------- journal
@dataclass(frozen=True, slots=True, kw_only=True)
class JournalCheckpoint(JournalPayload):
    """A signed checkpoint over the chain head (written by :mod:`.chain` and :mod:`.store`
    with the keys CHECKPOINT_HEAD_SEQ, CHECKPOINT_HEAD_HASH, CHECKPOINT_SIGNATURE)."""

    TYPE: ClassVar[J] = J.CHECKPOINT
    head_seq: int
    head_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalWitnessed(JournalPayload):
    """This node heard ``node``'s signed journal checkpoint (in a HELLO) and checked its
    signature: ``node``'s journal had entry hash ``head`` at ``seq``. Journaled when the
    head moved, at most once per interval per node (:mod:`meshcomm.overlay.witness`)."""

    TYPE: ClassVar[J] = J.WITNESSED
    node: str                      # full node id, hex
    seq: int                       # the checkpoint's head_seq
    head: str                      # its head_hash, hex (64 chars)
    sig: str                       # its signature, hex, as the checkpoint entry stores it
    #: ``node``'s wall clock when it sealed the HELLO (this record's own stamp is when we
    #: heard it): a send/receipt pair for the export's clock estimate
    sent_wall: float | None = field(default=None, metadata=OMITTED_IF_NONE)


# ---------------------------------------------------------------- DHT bridge
@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkChanged(JournalPayload):
    """The uplink state machine (:mod:`meshcomm.dht.uplink`) changed state (UplinkState
    values); ``suppressed``: grace flaps not journaled since the last entry."""

    TYPE: ClassVar[J] = J.UPLINK_CHANGED
    state: str
    previous: str
    peers: int                     # good DHT peers in the sample that caused it
    suppressed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DhtValueDropped(JournalPayload):
    """A value read from the DHT under ``aor``'s key was dropped (rate-limited per reason
    and AoR; ``suppressed``: drops only counted since the last entry)."""

    TYPE: ClassVar[J] = J.DHT_DROPPED
    reason: str                    # RecordReject value
    aor: str
    suppressed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteBindingChanged(JournalPayload):
    """A binding learned from the DHT: ``state`` reachable (a relay attaches it),
    unreachable (every attachment lapsed), withdrawn (a tombstone) or expired."""

    TYPE: ClassVar[J] = J.DHT_REMOTE
    aor: str
    node: str                      # the binding's node id, hex
    seq: int
    state: str                     # RemoteState value
    relays: tuple[str, ...]        # node ids (hex) of the relays attaching it


# ---------------------------------------------------------------- upstream SIP registrar
@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamChanged(JournalPayload):
    """The upstream SIP registrar (``[upstream]``, :mod:`meshcomm.node.upstream`) became
    reachable or unreachable (UpstreamState values); ``registered``: AoRs registered there
    at that moment; ``error``: the last failure ("" when none)."""

    TYPE: ClassVar[J] = J.UPSTREAM_CHANGED
    state: str
    previous: str
    registered: int
    error: str


# ---------------------------------------------------------------- trust records
@dataclass(frozen=True, slots=True, kw_only=True)
class TrustChanged(JournalPayload):
    """A trust record (a revocation or an agency-key addition, :mod:`meshcomm.security.
    revocation`) was stored: its ``kind``, ``subject`` (a key or credential id, hex),
    ``signer`` key, ``record`` id, the link it came from ("" if issued here), how many
    bindings it ``removed`` and how many records are ``held`` now."""

    TYPE: ClassVar[J] = J.TRUST_CHANGED
    kind: str
    subject: str
    signer: str
    record: str
    via: str
    removed: int
    held: int


def _registry(*classes: type[JournalPayload]) -> Mapping[J, tuple[type[JournalPayload], ...]]:
    out: dict[J, tuple[type[JournalPayload], ...]] = {}
    for cls in classes:
        out[cls.TYPE] = (*out.get(cls.TYPE, ()), cls)
    return out


#: Every journal event type -> its payload class(es) (a test checks none is missing).
PAYLOAD_CLASSES: Final[Mapping[J, tuple[type[JournalPayload], ...]]] = _registry(
    NodeStarted, NodeStopped, NodeFault, NeighbourUp, NeighbourDown, RouteChanged,
    EnvelopeDropped, BindingLearned, BindingUpdated, BindingExpired, BindingConflict,
    BindingRejected, SipMessageSeen, SipMessageDropped, SfHeld, SfCustody, SfDelivered,
    SfReceipt, JournalCheckpoint, JournalWitnessed, UplinkChanged, DhtValueDropped,
    RemoteBindingChanged, UpstreamChanged, TrustChanged)
