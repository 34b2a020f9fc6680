"""SipNode: a MeshNode and its SipGateway composed behind one driving API (sans-IO).

The runtime's node driver and the in-memory tests drive this one object::

    sip_node.receive(frame, link_addr, now)          # radio frames (MeshNode)
    sip_node.receive_sip(data, client_addr, now)     # SIP from a local client
    sip_node.to_send(now)   -> radio Datagrams
    sip_node.take_sip(now)  -> LocalDatagrams for local clients
    sip_node.next_timer(); sip_node.on_timer(now); sip_node.next_event()

Mesh SIP traffic of the gateway goes through ``MeshNode.send_unicast(kind=AppKind.SIP)``;
``UnicastReceived`` events of kind SIP are handed to the gateway; every other event (journal
records of both, other unicast kinds, gateway results) comes out of ``next_event``.

With a store-and-forward core (``sf``, also the gateway's ``holder``), unicasts of kind
STORE_FORWARD go to ``sf.on_mesh``, its ``SfDeliver`` to ``gateway.deliver_stored``, its
timer joins the one ``next_timer``, and its ``SfPersist`` and journal records come out of
``next_event``: the runtime must apply each ``SfPersist`` to its ``SfStorage`` before it
transmits what ``to_send`` returns (a receipt must not leave before the delivered id is on
disk), and report the outcome with :meth:`SipNode.persisted` (a held MESSAGE is answered
202 only once its hold is on disk, 500 if the write failed). The overlay's NEIGHBOUR_UP and
ROUTE_CHANGED records also go to ``sf.on_overlay_record`` (a heal retries held messages
at once), and :meth:`SipNode.hold_pending` hands the gateway's pending MESSAGEs to
store-and-forward when the node stops.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.events import JournalRecord
from meshcomm.node.gateway.core import GatewayEvent, SipGateway
from meshcomm.node.gateway.types import Address, LocalDatagram, MeshSip
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.storeforward import SfDeliver, SfEvent, SfHoldResult, StoreForward
from meshcomm.overlay.core import OverlayEvent
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.types import Datagram, LinkAddr

log = logging.getLogger(__name__)

#: Rounds of gateway <-> mesh exchange per input before yielding (they settle in one or two).
MAX_SETTLE_ROUNDS = 32

SipNodeEvent = OverlayEvent | GatewayEvent | SfEvent


class SipNode:
    """See the module docstring."""

    def __init__(self, node: MeshNode, gateway: SipGateway,
                 sf: StoreForward | None = None) -> None:
        if sf is not None and gateway.holder is not sf:
            raise LocalProtocolError("the store-and-forward core must be the gateway's holder")
        self.node = node
        self.gateway = gateway
        self.sf = sf
        self._local: list[LocalDatagram] = []
        self._events: deque[SipNodeEvent] = deque()
        self.counters = gateway.counters

    # ------------------------------------------------------------ inputs
    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        self.node.receive(data, src, now)
        self._settle(now)

    def receive_sip(self, data: bytes, src: Address, now: float) -> None:
        self.gateway.receive_local(data, src, now)
        self._settle(now)

    def on_timer(self, now: float) -> None:
        self.node.on_timer(now)
        self.gateway.on_timer(now)
        if self.sf is not None:
            self.sf.on_timer(now)
        self._settle(now)

    def settle(self, now: float) -> None:
        """Move queued work between the gateway and the node (after a command)."""
        self._settle(now)

    def persisted(self, msg_ids: Iterable[bytes], ok: bool, now: float) -> None:
        """The runtime applied (``ok``) or failed to apply the ``SfPersist`` events of
        these ids; answers of holds waiting for it are queued (drain the outputs again)."""
        if self.sf is not None:
            self.sf.persisted(msg_ids, ok, now)
            self._settle(now)

    def hold_pending(self, now: float) -> int:
        """Stopping: hand every MESSAGE still waiting for a far node to store-and-forward
        (see SipGateway.hold_pending); the runtime then persists and reports as usual."""
        handed = self.gateway.hold_pending(now)
        self._settle(now)
        return handed

    # ------------------------------------------------------------ outputs
    # Every input (receive, receive_sip, on_timer) and settle() after a command already
    # moved all queued work between the parts, so the outputs only drain: no settling on
    # the per-frame pump path, and nothing new (a receipt) can appear between the driver
    # persisting store-and-forward state and transmitting.
    def to_send(self, now: float) -> list[Datagram]:
        return self.node.to_send(now)

    def take_sip(self, now: float) -> list[LocalDatagram]:
        out, self._local = self._local, []
        return out

    def next_timer(self) -> float | None:
        sf_t = self.sf.next_timer() if self.sf is not None else None
        times = [t for t in (self.node.next_timer(), self.gateway.next_timer(), sf_t)
                 if t is not None]
        return min(times, default=None)

    def next_event(self) -> SipNodeEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------ glue
    def _settle(self, now: float) -> None:
        for _ in range(MAX_SETTLE_ROUNDS):
            moved = False
            for item in self.gateway.to_send(now):
                moved = True
                if isinstance(item, MeshSip):
                    self._send_mesh(item, now)
                else:
                    self._local.append(item)
            while (event := self.node.next_event()) is not None:
                if isinstance(event, UnicastReceived) and event.kind == AppKind.SIP:
                    moved = True
                    self.gateway.receive_mesh(event.origin, event.body, event.hops, now)
                elif (isinstance(event, UnicastReceived) and event.kind == AppKind.STORE_FORWARD
                      and self.sf is not None):
                    moved = True
                    self.sf.on_mesh(event, now)
                else:
                    if isinstance(event, JournalRecord) and self.sf is not None:
                        self.sf.on_overlay_record(event, now)
                    self._events.append(event)
            while (gw_event := self.gateway.next_event()) is not None:
                self._events.append(gw_event)
            moved = self._drain_sf(now) or moved
            if not moved:
                return

    def _drain_sf(self, now: float) -> bool:
        """Hand store-and-forward deliveries to the gateway; queue its other events."""
        if self.sf is None:
            return False
        moved = False
        while (sf_event := self.sf.next_event()) is not None:
            if isinstance(sf_event, SfDeliver):
                moved = True
                self.gateway.deliver_stored(sf_event.msg_id, sf_event.sip, now)
            elif isinstance(sf_event, SfHoldResult):
                moved = True
                self.gateway.hold_done(sf_event.msg_id, sf_event.durable, now)
            else:
                self._events.append(sf_event)
        return moved

    def _send_mesh(self, item: MeshSip, now: float) -> None:
        try:
            self.node.send_unicast(item.dst, AppKind.SIP, item.body, now)
        except LocalProtocolError as exc:
            self.gateway.counters["mesh_send_errors"] += 1
            log.warning("SIP message to %s not sent: %s", item.dst[:8].hex(), exc)
