"""In-process harness for store-and-forward tests: real MeshNodes, StoreForward cores and
SQLite storage, joined by an in-memory radio (zero delay, chosen links), in virtual time.

Each host plays its runtime: it applies SfPersist events to its storage and reports the
outcome (``persisted``), hands SfDeliver to a "client" (a list) and answers
local_delivery_done, feeds STORE_FORWARD unicasts to the core and the overlay's journal
records to ``on_overlay_record`` (a heal retries at once). Killing a host drops its cores
without a goodbye; starting it again restores the store-and-forward state from its SQLite
file.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from meshcomm.journal.events import JournalRecord
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import (
    HeldState,
    PersistOp,
    SfDeliver,
    SfEvent,
    SfHoldResult,
    SfPersist,
    StoreForward,
    StoreForwardConfig,
)
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Datagram, LinkAddr

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
    node: MeshNode | None = None
    sf: StoreForward | None = None
    storage: SfStorage | None = None
    boots: int = 0
    #: every MESSAGE handed to this host's client, over all boots
    client: list[SfDeliver] = field(default_factory=list)
    journal: list[JournalRecord] = field(default_factory=list)
    #: (state, holder) of every status change of own messages, over all boots
    statuses: list[tuple[str, str]] = field(default_factory=list)
    accept_deliveries: bool = True
    #: False: the "gateway" never answers an SfDeliver
    answer_deliveries: bool = True
    #: Outcomes of this host's holds (durable or not), over all boots
    hold_results: list[SfHoldResult] = field(default_factory=list)

    @property
    def live_sf(self) -> StoreForward:
        assert self.sf is not None, f"{self.name} is not running"
        return self.sf


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
        assert host.node is None
        host.boots += 1
        settings = NodeSettings(incident="sf-test", role=host.role, overlay=FAST_OVERLAY)
        host.node = MeshNode(host.identity, settings, verifier=self.verifier,
                             rng=random.Random(f"{name}:{host.boots}"), now=self.now,
                             seq_base=host.boots << 32)
        host.storage = SfStorage.open(host.db)
        held, delivered, _ = host.storage.load()
        host.sf = StoreForward(host.node, self.config, now=self.now, restored=held,
                               delivered_ids=delivered)
        if register:
            host.node.register(aor(name), (f"sip:{name}@{name}.mesh",), self.now)
        self.pump(host)
        return host

    def kill(self, name: str) -> None:
        host = self.hosts[name]
        host.node = host.sf = None
        if host.storage is not None:
            host.storage.close()
            host.storage = None

    def restart(self, name: str) -> Host:
        self.kill(name)
        return self.start(name)

    def close(self) -> None:
        for name in self.hosts:
            self.kill(name)

    # ------------------------------------------------------------ moving things
    def pump(self, host: Host) -> None:
        """Drain a host's cores: datagrams onto the air, events to their consumers."""
        node, sf = host.node, host.sf
        if node is None or sf is None:
            return
        busy = True
        while busy:
            busy = False
            while (event := node.next_event()) is not None:
                busy = True
                if isinstance(event, UnicastReceived):
                    if event.kind == AppKind.STORE_FORWARD:
                        sf.on_mesh(event, self.now)
                elif isinstance(event, JournalRecord):
                    host.journal.append(event)
                    sf.on_overlay_record(event, self.now)
            while (sf_event := sf.next_event()) is not None:
                busy = True
                self._consume(host, sf, sf_event)
        for dgram in node.to_send(self.now):
            self._queue.append((host.name, dgram))

    def _consume(self, host: Host, sf: StoreForward, event: SfEvent) -> None:
        if isinstance(event, SfPersist):
            assert host.storage is not None
            try:
                host.storage.apply(event)
            except sqlite3.Error:
                sf.persisted([event.msg_id], False, self.now)
                return
            sf.persisted([event.msg_id], True, self.now)
            if event.op is PersistOp.STORE and event.held is not None and event.held.own:
                host.statuses.append((event.held.state.value, event.held.holder))
        elif isinstance(event, SfDeliver):
            if host.accept_deliveries:
                host.client.append(event)
            if host.answer_deliveries:
                sf.local_delivery_done(event.msg_id, host.accept_deliveries, self.now)
        elif isinstance(event, SfHoldResult):
            host.hold_results.append(event)
        else:
            host.journal.append(event)

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
                if (name == src or host.node is None
                        or frozenset((src, name)) not in self.links
                        or (dgram.dst is not None and dgram.dst != name)):
                    continue
                if self.loss and self._loss_rng.random() < self.loss:
                    continue
                host.node.receive(dgram.data, LinkAddr(src), self.now)
                self.pump(host)

    def _next_due(self) -> float | None:
        due: list[float] = []
        for host in self.hosts.values():
            if host.node is None or host.sf is None:
                continue
            due.extend(t for t in (host.node.next_timer(), host.sf.next_timer())
                       if t is not None)
        return min(due, default=None)

    def run_until(self, end: float) -> None:
        self._flush_air()
        while (due := self._next_due()) is not None and due <= end:
            self.now = max(self.now, due)
            for host in self.hosts.values():
                node, sf = host.node, host.sf
                if node is None or sf is None:
                    continue
                node_due, sf_due = node.next_timer(), sf.next_timer()
                if node_due is not None and node_due <= self.now:
                    node.on_timer(self.now)
                if sf_due is not None and sf_due <= self.now:
                    sf.on_timer(self.now)
                self.pump(host)
            self._flush_air()
        self.now = max(self.now, end)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def command(self, name: str) -> None:
        """Flush what a command given to ``name`` directly produced."""
        self.pump(self.hosts[name])
        self._flush_air()


def states(host: Host) -> list[str]:
    """The distinct successive status states of a host's own messages."""
    out: list[str] = []
    for state, _ in host.statuses:
        if not out or out[-1] != state:
            out.append(state)
    return out


__all__ = ["HeldState", "Host", "Net", "aor", "states"]
