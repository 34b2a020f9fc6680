"""MemoryEdge: the :class:`~meshcomm.node.pump.Edge` of one in-memory test node.

The test nets (``gateway_net``, ``sf_net``) drive each node's
:class:`~meshcomm.node.core.NodeCore` through the one :class:`~meshcomm.node.pump.Pump`
with one of these as its edge, so no test moves items between a node's parts. The edge
does only what an edge does, in memory:

* ``transmit`` / ``to_client``: the datagrams and the local clients' SIP wait here until
  the net takes them (:meth:`take_air`, :meth:`take_local`) and puts them on its medium or
  hands them to its clients;
* ``store``: a store-and-forward batch goes to the node's SQLite :attr:`storage` in one
  transaction (False when the write failed, as in the runtime); without a storage it is
  taken as written; ``store_freshness``: taken as written (a node without a freshness file);
* ``record`` / ``to_client_media`` / ``other``: kept in :attr:`journal`, :attr:`to_clients`
  and :attr:`events` (what the tests assert on); ``other`` events also wait for the net
  (:meth:`take_other`: a store-and-forward delivery for a node without a gateway);
* ``arm``: the deadline is remembered (:attr:`deadline`); the net's clock fires it.
"""

from __future__ import annotations

import sqlite3

from meshcomm.dht.port import DhtOp
from meshcomm.journal.events import JournalRecord
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.session import ClientPacket
from meshcomm.node.gateway.types import LocalDatagram
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import SfPersist
from meshcomm.types import Datagram


class MemoryEdge:
    """See the module docstring. One per test node, kept across its restarts."""

    def __init__(self, storage: SfStorage | None = None) -> None:
        #: The store-and-forward database (None: writes are taken as done).
        self.storage = storage
        #: The one timer, as the pump last armed it.
        self.deadline: float | None = None
        #: Every journal record, in order.
        self.journal: list[JournalRecord] = []
        #: Every other event and every ``SfPersist`` handed to :meth:`store`, in order.
        self.events: list[object] = []
        #: Media the node's relay sent to its local clients.
        self.to_clients: list[ClientPacket] = []
        self._air: list[Datagram] = []
        self._local: list[LocalDatagram] = []
        self._other: list[object] = []
        #: The DHT bridge's operations (a node with a bridge), in order.
        self.dht_ops: list[DhtOp] = []
        self._stored: list[SfPersist] = []

    # ------------------------------------------------------------ the Edge
    def transmit(self, dgram: Datagram) -> None:
        self._air.append(dgram)

    def store(self, batch: list[SfPersist]) -> bool:
        self.events.extend(batch)
        if self.storage is not None:
            try:
                self.storage.apply_all(batch)
            except sqlite3.Error:
                return False
        self._stored.extend(batch)
        return True

    def store_freshness(self, updates: FreshnessUpdates) -> bool:
        return True

    def record(self, record: JournalRecord) -> None:
        self.journal.append(record)

    def to_client(self, dgram: LocalDatagram) -> None:
        self._local.append(dgram)

    def to_client_media(self, packet: ClientPacket) -> None:
        self.to_clients.append(packet)

    def dht(self, op: DhtOp) -> None:
        self.dht_ops.append(op)

    def other(self, event: object) -> None:
        self.events.append(event)
        self._other.append(event)

    def arm(self, deadline: float | None) -> None:
        self.deadline = deadline

    # ------------------------------------------------------------ for the net
    def take_air(self) -> list[Datagram]:
        """Datagrams transmitted since the last call."""
        out, self._air = self._air, []
        return out

    def take_local(self) -> list[LocalDatagram]:
        """SIP for local clients since the last call."""
        out, self._local = self._local, []
        return out

    def take_other(self) -> list[object]:
        """Other events since the last call."""
        out, self._other = self._other, []
        return out

    def take_stored(self) -> list[SfPersist]:
        """``SfPersist`` events written (durably) since the last call."""
        out, self._stored = self._stored, []
        return out
