"""Store-and-forward beyond the island (issues 10 and 12): a mixin of
:class:`meshcomm.node.storeforward.StoreForward`.

A held MESSAGE whose To AoR has no binding in the island may live in another island. With
:attr:`RemoteDelivery.remote_delivery` set (the node core sets it when the node can reach
other islands, and :attr:`RemoteDelivery.far` to its tunnel), every holder looks the AoR
up across sites (:class:`~meshcomm.node.sf_resolve.FarAors`: ``ResolveAor`` out,
:meth:`RemoteDelivery.resolved` in, per-AoR backoff) and

* **sealed parcels** (the norm: sealed to the destination node, issue 12) travel as a
  ``DELIVER`` through the tunnel (``Tunnel.send``, kind STORE_FORWARD) to the node the
  resolution named; that node opens the parcel, delivers it once and answers with a
  receipt through the tunnel; a holder accepts a receipt from a node it resolved for the
  AoR (or one bound to it in the island). Relays carry nothing they can read.
* **parcels in clear** exist only at their origin (it saw no binding of the AoR when it
  held the message, and the node seals: relays refuse them, and they are neither offered
  nor sent): as soon as a resolution names a node whose key the node knows (the answer
  carries it), the origin seals the parcel to it (persisted, replacing the clear one),
  then offers custody and delivers as for any sealed parcel. While none does, it keeps
  the message and keeps asking; when the last answer leaves the way to an upstream proxy
  open (nothing found; the island relay named itself), the MESSAGE is handed back to the
  node's gateway (:class:`SfRemoteTry`), which resolves and forwards it as a client's:
  sealed hop by hop to the node it finds, or to the upstream proxy. A 2xx (through
  :meth:`RemoteDelivery.remote_delivery_done`) settles it; the far gateway delivers once
  per message id.
* a node that does not seal (no ``e2e``: test harnesses) hands clear parcels to its
  gateway on its backoff as before.

:meth:`RemoteDelivery.remote_reachable` (the uplink came up, or a resolution succeeded
after one failed) asks every AoR again and tries every message at once, so messages held
while the uplink was down leave as soon as it returns.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

from meshcomm.node.e2e_sip import SipSealing, is_sealed
from meshcomm.node.gateway.types import ResolveAor
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.sf_counters import SfCounter
from meshcomm.node.sf_resolve import FarAors
from meshcomm.node.storeforward_wire import (
    Parcel,
    Receipt,
    SfMsgType,
    encode_message,
    make_parcel,
)
from meshcomm.node.tunnel import UPSTREAM_STATUSES
from meshcomm.node.tunnel_wire import ResolveStatus
from meshcomm.types import NodeId

if TYPE_CHECKING:
    from meshcomm.node.storeforward import StoreForwardConfig, _Entry

#: Holder label of a message delivered beyond the island by the gateway.
REMOTE_HOLDER = "remote"
#: Tries with the gateway at once (more wait for the next poll: the gateway keeps room for
#: other traffic), and how long a try may stay unanswered before another may start.
MAX_REMOTE_IN_FLIGHT = 32
REMOTE_TRY_TIMEOUT_S = 30.0
#: Wake-ups closer together than this are one (news of the uplink comes in bursts).
REMOTE_WAKE_GAP_S = 1.0
#: Nodes beyond the island a message was sent to, remembered per message (their
#: receipts are accepted).
MAX_FAR_NODES_PER_MESSAGE: Final = 4


@dataclass(frozen=True, slots=True)
class SfRemoteTry:
    """Send held ``sip`` (``msg_id``) beyond the island through the gateway; answer with
    ``StoreForward.remote_delivery_done``."""

    msg_id: bytes
    sip: bytes


class FarPath(Protocol):
    """What store-and-forward needs of the node's tunnel (:class:`meshcomm.node.tunnel.
    Tunnel`)."""

    def route(self, dst: bytes, now: float) -> object | None: ...

    def send(self, dst: bytes, kind: int, body: bytes, now: float) -> bytes | None: ...


class RemoteDelivery:
    """Mixin: needs the store-and-forward core's node, entries, counters, config, events,
    timer, sealing and its ``_is_active`` / ``_delivered_remotely`` / ``_store``."""

    node: MeshNode
    e2e: SipSealing | None
    _entries: dict[bytes, _Entry]
    counters: Counter[str]
    config: StoreForwardConfig
    _events: deque[Any]
    _tick_at: float

    def __init__(self) -> None:
        #: Set by the node core when the node can reach other islands (a tunnel part).
        self.remote_delivery = False
        #: The node's tunnel (set by the node core): DELIVERs and receipts to nodes of
        #: other islands go through it.
        self.far: FarPath | None = None
        #: Tries handed to the gateway and not answered yet: message id -> when.
        self._remote_in_flight: dict[bytes, float] = {}
        self._woken_at = float("-inf")
        self._far_aors = FarAors()

    def _is_active(self, entry: _Entry) -> bool:
        raise NotImplementedError

    def _delivered_remotely(self, entry: _Entry, now: float) -> None:
        raise NotImplementedError

    def _store(self, entry: _Entry) -> None:
        """Persist ``entry`` as it is now."""
        raise NotImplementedError

    # ------------------------------------------------------------ sealing
    def _carriable(self, parcel: Parcel) -> bool:
        """Whether ``parcel`` may leave this node (offered, delivered elsewhere): sealed,
        or the node does not seal at all."""
        return self.e2e is None or is_sealed(parcel.sip)

    def _seal_from_tables(self, entry: _Entry, now: float) -> None:
        """An own parcel in clear: sealed once a binding of its To AoR is in the tables."""
        parcel = entry.held.parcel
        if self.e2e is None or is_sealed(parcel.sip):
            return
        key = self.e2e.parcel_key(parcel.to_aor)
        if key is not None:
            self._reseal(entry, key, now)

    def _reseal(self, entry: _Entry, key: bytes, now: float) -> bool:
        """Seal the clear parcel of own ``entry`` to node key ``key`` (signed again, the
        creation time kept) and persist it in place of the clear one; offers and
        deliveries go at once. False if it could not be sealed."""
        assert self.e2e is not None
        p = entry.held.parcel
        sealed = self.e2e.seal_parcel(p.sip, key, now)
        if sealed is None:
            return False
        parcel = make_parcel(self.node.identity, incident=p.incident, msg_id=p.msg_id,
                             from_aor=p.from_aor, to_aor=p.to_aor,
                             created_wall_s=p.created_wall_s, sip=sealed)
        entry.held = replace(entry.held, parcel=parcel)
        entry.next_offer = entry.next_try = now
        entry.backoff_s = self.config.retry_initial_s
        self.counters[SfCounter.RESEALED] += 1
        self._store(entry)
        return True

    # ------------------------------------------------------------ beyond the island
    def _try_remote(self, entry: _Entry, now: float) -> None:
        """A held message whose To AoR has no binding in the island (see the module
        docstring); called on every poll, tries only when ``entry.next_try`` is due."""
        parcel = entry.held.parcel
        if not is_sealed(parcel.sip) and self.e2e is None:
            if now >= entry.next_try:
                self._via_gateway(entry, now)
            return
        node = self._far_node(parcel.to_aor, now)
        if not is_sealed(parcel.sip):           # an own parcel (custody is sealed)
            key = self.e2e.key_of(node) if node is not None and self.e2e else None
            if key is None or not self._reseal(entry, key, now):
                if now >= entry.next_try and self._far_aors.may_go_upstream(parcel.to_aor):
                    self._via_gateway(entry, now)
                return
        if node is None or now < entry.next_try or self.far is None:
            return
        entry.last_try = now
        entry.next_try = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, self.config.retry_max_s)
        entry.far_nodes = (*(n for n in entry.far_nodes if n != node),
                           node)[-MAX_FAR_NODES_PER_MESSAGE:]
        self.counters[SfCounter.FAR_DELIVERIES] += 1
        p = entry.held.parcel
        self.far.send(node, AppKind.STORE_FORWARD,
                      encode_message(SfMsgType.DELIVER, p.signed, p.signature), now)

    def _far_node(self, aor: str, now: float) -> NodeId | None:
        """The node beyond the island holding ``aor`` (one the tunnel has a route to),
        asking for it when due; None while none is known."""
        request_id = self._far_aors.want(aor, now)
        if request_id is not None:
            self.counters[SfCounter.RESOLVES] += 1
            self._events.append(ResolveAor(request_id, aor))
        node = self._far_aors.node(aor)
        if node is None or self.far is None or self.far.route(node, now) is None:
            return None
        return node

    def owns_resolution(self, request_id: int) -> bool:
        """Whether the tunnel's answer ``request_id`` is to a question of ours."""
        return self._far_aors.owns(request_id)

    def resolved(self, request_id: int, node: bytes | None, status: ResolveStatus,
                 now: float) -> None:
        """The tunnel's answer to our ``ResolveAor`` ``request_id``: a node it found (and
        routes to), or why not. Messages for a newly found node are tried at once."""
        routed = (node is not None and status is ResolveStatus.FOUND and self.far is not None
                  and self.far.route(node, now) is not None)
        usable = NodeId(node) if routed and node is not None else None
        if usable is None:
            self.counters[SfCounter.RESOLVES_FAILED] += 1
        upstream = status in UPSTREAM_STATUSES or (status is ResolveStatus.FOUND and not routed)
        aor = self._far_aors.answered(request_id, usable, upstream, now,
                                      beyond_down=status is ResolveStatus.UPLINK_DOWN,
                                      unreachable=status is ResolveStatus.UNREACHABLE)
        self._wake_for_far(now)
        if aor is None:
            return
        for entry in self._entries.values():
            if self._is_active(entry) and entry.held.parcel.to_aor.lower() == aor:
                entry.next_try = now
                entry.backoff_s = self.config.retry_initial_s
        self._tick_at = min(self._tick_at, now)

    def _wake_for_far(self, now: float) -> None:
        """Poll when the next AoR may be asked again, not at a later poll (one already
        due waits for the next poll: asking may be what holds it back)."""
        due = self._far_aors.next_due(after=now)
        if due is not None:
            self._tick_at = min(self._tick_at, due)

    def _receipt_signer_ok(self, entry: _Entry, receipt: Receipt) -> bool:
        """A receipt's signer holds a usable binding of the To AoR in the island, or is a
        node beyond it that a resolution named for the AoR."""
        to_aor = entry.held.parcel.to_aor
        if any(s.binding.key == receipt.dest_key for s in self.node.table.lookup(to_aor)):
            return True
        return receipt.dest in entry.far_nodes or receipt.dest == self._far_aors.node(to_aor)

    def _send_far(self, dst: NodeId, body: bytes, now: float) -> bool:
        """Send ``body`` to ``dst`` through the tunnel when it is in another island
        (True: sent, or dropped there as too large)."""
        return (self.far is not None
                and self.far.send(dst, AppKind.STORE_FORWARD, body, now) is not None)

    def _prune_far(self) -> None:
        """Forget the resolution state of AoRs no active message waits for."""
        self._far_aors.retain({e.held.parcel.to_aor.lower() for e in self._entries.values()
                               if self._is_active(e) and not e.bound_nodes})

    # ------------------------------------------------------------ through the gateway
    def _via_gateway(self, entry: _Entry, now: float) -> None:
        msg_id = entry.held.msg_id
        started = self._remote_in_flight.get(msg_id)
        if started is not None and now - started < REMOTE_TRY_TIMEOUT_S:
            return                          # the last try is still out: its answer decides
        for old in [m for m, t in self._remote_in_flight.items()
                    if now - t >= REMOTE_TRY_TIMEOUT_S]:
            del self._remote_in_flight[old]
        if len(self._remote_in_flight) >= MAX_REMOTE_IN_FLIGHT:
            self.counters[SfCounter.REMOTE_DEFERRED] += 1
            return                          # its next_try stays due: the next poll
        self._remote_in_flight[msg_id] = now
        entry.last_try = now
        entry.next_try = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, self.config.retry_max_s)
        self.counters[SfCounter.REMOTE_TRIES] += 1
        self._events.append(SfRemoteTry(entry.held.msg_id, entry.held.parcel.sip))

    def remote_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None:
        """The gateway's verdict on an :class:`SfRemoteTry` (see the module docstring)."""
        self._remote_in_flight.pop(msg_id, None)
        entry = self._entries.get(msg_id)
        if entry is None or not self._is_active(entry):
            return
        if not ok:
            self.counters[SfCounter.REMOTE_FAILED] += 1
            return
        self.counters[SfCounter.REMOTE_DELIVERED] += 1
        self._delivered_remotely(entry, now)

    def remote_reachable(self, now: float) -> None:
        """Other islands became reachable: every message waiting for a destination
        beyond the island is tried at once (and every AoR asked again)."""
        if not self.remote_delivery or now - self._woken_at < REMOTE_WAKE_GAP_S:
            return
        self._woken_at = now
        # Tries started while nothing went through may hang on for a while: new ones go
        # now (an older try's late answer only counts; the far end delivers once).
        self._remote_in_flight.clear()
        self._far_aors.wake(now)
        for entry in self._entries.values():
            if self._is_active(entry) and not entry.bound_nodes:
                entry.next_try = now
                entry.backoff_s = self.config.retry_initial_s
                self.counters[SfCounter.REMOTE_WAKEUPS] += 1
        self._tick_at = min(self._tick_at, now)
