"""The simulator's edge of one node: what a simulated node runs on.

Each simulated node is a :class:`~meshcomm.node.core.NodeCore` driven by the one
:class:`~meshcomm.node.pump.Pump`; this is its :class:`~meshcomm.node.pump.Edge`:

* ``transmit`` puts a frame on the simulated medium (loss, delay, airtime, partitions);
* ``arm`` keeps the node's one timer in the simulator's event heap (a re-arm for the same
  deadline pushes nothing; a changed deadline invalidates the old heap entry by generation);
* ``record`` feeds the trace digest, the convergence metrics and the kept journal;
* ``store`` applies store-and-forward batches to the node slot's real
  :class:`~meshcomm.node.storage.SfStorage` file, which outlives a kill: a restarted node
  restores its store-and-forward core from it, as the runtime does at start;
* ``to_client`` / ``to_client_media`` hand SIP and media to the node's simulated SIP
  client (:mod:`meshcomm.sim.clients`); ``other`` collects unicasts and media frames that a
  node without the parts for them passes out (tests of the overlay read them).

The edge never calls the pump or the core (that would re-enter the pump): what a client
answers goes back to the node through a heap event of the simulator.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from meshcomm.dht.port import DhtOp
from meshcomm.journal.events import JournalRecord
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.session import ClientPacket
from meshcomm.node.gateway.types import InboxEntry, LocalDatagram
from meshcomm.node.mesh import MeshNode
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import SfPersist, StoreForward, StoreForwardConfig
from meshcomm.node.tunnel import UplinkPeers
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.media import MediaReceived
from meshcomm.sim.metrics import SimCounter
from meshcomm.sim.uplinks import WanCounter
from meshcomm.types import Datagram

if TYPE_CHECKING:
    from meshcomm.sim.clients import SimClient
    from meshcomm.sim.engine import Simulator

#: Store-and-forward database file of a node slot, in the run's directory.
SF_FILE_SUFFIX = ".sf.db"
#: A node whose timer is re-armed for the current instant this many times in a row without
#: virtual time moving is spinning (a part's deadline that its on_timer never clears): the
#: run stops with :class:`SimStalled` instead of hanging.
MAX_SAME_INSTANT_ARMS = 100_000


class SimStalled(RuntimeError):
    """A node's timer keeps firing at one virtual instant (see MAX_SAME_INSTANT_ARMS)."""


class SimEdge:
    """The edge of one node slot (kept across kills and restarts of the node)."""

    def __init__(self, sim: Simulator, name: str) -> None:
        self.sim = sim
        self.name = name
        #: generation of the slot's timer in the heap; older heap entries are stale
        self.timer_gen = 0
        self.armed_at: float | None = None
        #: the store-and-forward database (open while the node runs with one)
        self.storage: SfStorage | None = None
        self.db_path: Path | None = None
        #: held messages restored from the database, over all (re)starts of the node
        self.restored = 0
        self.store_errors = 0
        #: the node's simulated SIP client (whole-node runs)
        self.client: SimClient | None = None
        #: re-arms for the current instant in a row (the stall guard) and that instant
        self._spins = 0
        self._spin_at: float | None = None
        self.max_same_instant_arms = MAX_SAME_INSTANT_ARMS
        #: Edge.transmit and Edge.record run for every frame: bound to the simulator once
        #: (a C-level partial, no Python frame of the edge's own in the hot path)
        self.transmit: Callable[[Datagram], None] = partial(sim.transmit_from, name)
        self.record: Callable[[JournalRecord], None] = partial(sim.record_from, name)

    # ------------------------------------------------------------ store-and-forward
    def open_store_forward(self, directory: Path, node: MeshNode, config: StoreForwardConfig,
                           now: float) -> StoreForward:
        """Open the slot's database and restore the core from it (the runtime's
        ``open_store_forward``): what the node held before a kill is held again."""
        self.close_storage()
        self.db_path = directory / f"{self.name}{SF_FILE_SUFFIX}"
        storage = SfStorage.open(self.db_path)
        try:
            held, _delivered, _statuses = storage.load()
            sf = StoreForward(node, config, now=now, restored=held,
                              delivered_ids=storage.load_delivered())
        except BaseException:
            storage.close()
            raise
        self.storage = storage
        self.restored += len(held)
        return sf

    def close_storage(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    # ------------------------------------------------------------ the Edge
    # (transmit and record: the partials bound in __init__)
    def store(self, batch: list[SfPersist]) -> bool:
        sim = self.sim
        if sim.persisted is not None:
            sim.persisted.extend((sim.now, self.name, event) for event in batch)
        if self.storage is None:
            return True
        try:
            self.storage.apply_all(batch)
        except sqlite3.Error:
            self.store_errors += 1
            return False
        return True

    def store_freshness(self, updates: FreshnessUpdates) -> bool:
        return True          # the simulated nodes keep their freshness memory in RAM

    def to_client(self, dgram: LocalDatagram) -> None:
        client = self.client
        if client is not None:
            client.from_gateway(dgram, self.sim.now)
        else:
            self.sim.counters[SimCounter.SIP_TO_ABSENT_CLIENT] += 1

    def to_client_media(self, packet: ClientPacket) -> None:
        client = self.client
        if client is not None:
            client.from_gateway_media(packet, self.sim.now)
        else:
            self.sim.counters[SimCounter.MEDIA_TO_ABSENT_CLIENT] += 1

    def dht(self, op: DhtOp) -> None:
        """A DHT operation of the node's bridge: into the run's DHT model (an uplinked
        relay's; a run without uplinks has no bridge, so none arrives: counted)."""
        wan = self.sim.wan
        if wan is None:
            self.sim.counters[SimCounter.DHT_OPS_DROPPED] += 1
        else:
            wan.submit(self.name, op)

    def other(self, event: object) -> None:
        sim = self.sim
        if isinstance(event, UnicastReceived):
            sim.unicasts.append((sim.now, self.name, event))
        elif isinstance(event, MediaReceived):
            sim.media.append((sim.now, self.name, event))
        else:
            if isinstance(event, UplinkPeers) and sim.wan is not None:
                sim.wan.counters[WanCounter.UPLINK_PEERS_EVENTS] += 1   # a full-mesh WAN
            if isinstance(event, InboxEntry) and sim.incident is not None:
                sim.incident.stats.to_node_inbox(event.body)
            if sim.other_events is not None:
                sim.other_events.append((sim.now, self.name, event))

    def arm(self, deadline: float | None) -> None:
        if deadline is not None and deadline <= self.sim.now:
            self._spin_guard()
        if deadline == self.armed_at:
            return
        self.timer_gen += 1
        self.armed_at = deadline
        if deadline is not None:
            self.sim.push_timer(self.name, deadline, self.timer_gen)

    def _spin_guard(self) -> None:
        now = self.sim.now
        if self._spin_at != now:
            self._spin_at, self._spins = now, 0
        self._spins += 1
        if self._spins > self.max_same_instant_arms:
            core = self.sim.node_core(self.name)
            timed = (() if core is None else
                     (core.node, core.gateway, core.sf, core.relay, core.dht, core.uplink,
                      core.tunnel))
            parts = [f"{type(p).__name__}={p.next_timer()!r}" for p in timed if p is not None]
            raise SimStalled(f"node {self.name}: timer due at {now!r} re-armed "
                             f"{self._spins} times without time moving ({', '.join(parts)})")

    def disarm(self) -> None:
        """The node stopped: its pending heap timer goes stale."""
        self.arm(None)
