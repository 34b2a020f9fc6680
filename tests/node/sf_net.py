"""In-process test net for store-and-forward: real MeshNodes, StoreForward cores and SQLite
storage, joined by an in-memory radio (zero delay, chosen links), in virtual time.

Each host is a node without a gateway -- ``NodeCore(node, sf=sf)`` -- driven through the
one :class:`~meshcomm.node.pump.Pump` on a :class:`~tests.node.memory_edge.MemoryEdge`
that writes its ``SfPersist`` batches to the host's SQLite file: the routing between the
overlay and store-and-forward (unicasts, a heal's journal records) and the
persist-before-transmit order are the core's and the pump's. The net puts the edges'
datagrams on the radio and plays the missing gateway: a delivery (``SfDeliver``) goes to
the host's "client" (a list) and is answered through the pump. Killing a host drops its
core without a goodbye; starting it again restores the store-and-forward state from its
SQLite file.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from meshcomm.journal.events import JournalRecord
from meshcomm.node.core import NodeCore
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import (
    HeldState,
    PersistOp,
    SfDeliver,
    SfHoldResult,
    StoreForward,
    StoreForwardConfig,
)
from meshcomm.overlay.config import OverlayConfig
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Datagram, LinkAddr
from tests.node.memory_edge import MemoryEdge

DOMAIN = "incident.test"
FAST_OVERLAY = OverlayConfig(hello_interval_s=0.5, neighbour_timeout_s=2.0,
                             anti_entropy_interval_s=1.0)
SF_CONFIG = StoreForwardConfig(poll_interval_s=0.5, retry_initial_s=1.0, retry_max_s=4.0,
                               offer_interval_s=1.0)
#: Bound on datagrams moved in one instant (a loop here would be a protocol bug).
MAX_DATAGRAMS_PER_INSTANT = 100_000


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@dataclass(slots=True)
class Host:
    name: str
    role: str
    db: Path
    identity: Identity
    #: The edge the host's cores run on, kept over all boots (its journal with it).
    edge: MemoryEdge = field(default_factory=MemoryEdge)
    core: NodeCore | None = None
    pump: Pump | None = None
    boots: int = 0
    #: every MESSAGE handed to this host's client, over all boots
    client: list[SfDeliver] = field(default_factory=list)
    #: (state, holder) of every status change of own messages, over all boots
    statuses: list[tuple[str, str]] = field(default_factory=list)
    accept_deliveries: bool = True
    #: False: the "gateway" never answers an SfDeliver
    answer_deliveries: bool = True
    #: Outcomes of this host's holds (durable or not), over all boots
    hold_results: list[SfHoldResult] = field(default_factory=list)

    @property
    def node(self) -> MeshNode | None:
        return self.core.node if self.core is not None else None

    @property
    def sf(self) -> StoreForward | None:
        return self.core.sf if self.core is not None else None

    @property
    def live_sf(self) -> StoreForward:
        assert self.sf is not None, f"{self.name} is not running"
        return self.sf

    @property
    def storage(self) -> SfStorage | None:
        return self.edge.storage

    @property
    def journal(self) -> list[JournalRecord]:
        """Journal records of the overlay and store-and-forward, over all boots."""
        return self.edge.journal


class Net:
    def __init__(self, tmp_path: Path, roles: dict[str, str],
                 links: list[tuple[str, str]] | None = None,
                 config: StoreForwardConfig = SF_CONFIG, loss: float = 0.0,
                 seed: int = 0) -> None:
        self.now = 0.0
        #: each datagram is lost on each link with this probability (seeded)
        self.loss = loss
        self._loss_rng = random.Random(seed)
        self.config = config
        self.verifier = SignatureVerifier()
        self.hosts = {
            name: Host(name, role, tmp_path / f"{name}.sf.db",
                       Identity(hashlib.sha256(f"sf-harness:{name}".encode()).digest()))
            for name, role in roles.items()}
        pairs = links if links is not None else [
            (a, b) for a in roles for b in roles if a < b]
        self.links = {frozenset(p) for p in pairs}
        self._queue: list[tuple[str, Datagram]] = []

    # ------------------------------------------------------------ lifecycle
    def start(self, name: str, register: bool = True) -> Host:
        host = self.hosts[name]
        assert host.core is None
        host.boots += 1
        settings = NodeSettings(incident="sf-test", role=host.role, overlay=FAST_OVERLAY)
        node = MeshNode(host.identity, settings, verifier=self.verifier,
                        rng=random.Random(f"{name}:{host.boots}"), now=self.now,
                        seq_base=host.boots << 32)
        storage = host.edge.storage = SfStorage.open(host.db)
        held, delivered, _ = storage.load()
        sf = StoreForward(node, self.config, now=self.now, restored=held,
                          delivered_ids=delivered)
        core = host.core = NodeCore(node, sf=sf)
        pump = host.pump = Pump(core, host.edge)
        if register:
            pump.command(self.now, lambda: core.register(
                aor(name), (f"sip:{name}@{name}.mesh",), self.now))
        else:
            pump.run(self.now)
        self._take(host)
        return host

    def kill(self, name: str) -> None:
        host = self.hosts[name]
        host.core = host.pump = None
        if host.edge.storage is not None:
            host.edge.storage.close()
            host.edge.storage = None

    def restart(self, name: str) -> Host:
        self.kill(name)
        return self.start(name)

    def close(self) -> None:
        for name in self.hosts:
            self.kill(name)

    # ------------------------------------------------------------ moving things
    def _take(self, host: Host) -> None:
        """After a host's pump ran: its datagrams onto the air, its deliveries to its
        client (answered through the pump, as a gateway would), its statuses noted."""
        while True:
            self._queue += [(host.name, dgram) for dgram in host.edge.take_air()]
            host.statuses += [(e.held.state.value, e.held.holder)
                              for e in host.edge.take_stored()
                              if e.op is PersistOp.STORE and e.held is not None and e.held.own]
            answers: list[bytes] = []
            for event in host.edge.take_other():
                if isinstance(event, SfDeliver):
                    if host.accept_deliveries:
                        host.client.append(event)
                    if host.answer_deliveries:
                        answers.append(event.msg_id)
                elif isinstance(event, SfHoldResult):
                    host.hold_results.append(event)
            if not answers:
                return
            self._answer(host, answers, host.accept_deliveries)

    def _answer(self, host: Host, msg_ids: list[bytes], ok: bool) -> None:
        core, pump, now = host.core, host.pump, self.now
        assert core is not None and core.sf is not None and pump is not None
        sf = core.sf

        def answer() -> None:
            for msg_id in msg_ids:
                sf.local_delivery_done(msg_id, ok, now)
            core.settle(now)
        pump.command(now, answer)

    def cut(self, a: str, b: str) -> None:
        """The radio link a-b fails (a partition when it was the only path)."""
        self.links.discard(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.links.add(frozenset((a, b)))

    def _flush_air(self) -> None:
        moved = 0
        while self._queue:
            src, dgram = self._queue.pop(0)
            moved += 1
            assert moved < MAX_DATAGRAMS_PER_INSTANT
            for name, host in self.hosts.items():
                if (name == src or host.pump is None
                        or frozenset((src, name)) not in self.links
                        or (dgram.dst is not None and dgram.dst != name)):
                    continue
                if self.loss and self._loss_rng.random() < self.loss:
                    continue
                host.pump.radio(dgram.data, LinkAddr(src), self.now)
                self._take(host)

    def _next_due(self) -> float | None:
        due = [host.edge.deadline for host in self.hosts.values()
               if host.pump is not None and host.edge.deadline is not None]
        return min(due, default=None)

    def run_until(self, end: float) -> None:
        for host in self.hosts.values():        # what a test gave a core directly
            if host.pump is not None:
                host.pump.run(self.now)
                self._take(host)
        self._flush_air()
        while (due := self._next_due()) is not None and due <= end:
            self.now = max(self.now, due)
            for host in self.hosts.values():
                deadline = host.edge.deadline
                if host.pump is not None and deadline is not None and deadline <= self.now:
                    host.pump.timer(self.now)
                    self._take(host)
            self._flush_air()
        self.now = max(self.now, end)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def command(self, name: str) -> None:
        """Flush what a command given to ``name``'s cores directly produced."""
        host = self.hosts[name]
        core, now = host.core, self.now
        assert core is not None and host.pump is not None
        host.pump.command(now, lambda: core.settle(now))
        self._take(host)
        self._flush_air()


def states(host: Host) -> list[str]:
    """The distinct successive status states of a host's own messages."""
    out: list[str] = []
    for state, _ in host.statuses:
        if not out or out[-1] != state:
            out.append(state)
    return out


__all__ = ["HeldState", "Host", "Net", "aor", "states"]
