"""Bridges of several islands' relays against the in-memory DHT model, in virtual time."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import TypeVar

from meshcomm.dht.bridge import BridgeConfig, BridgeEvent, DhtBridge, NotFound, Resolved
from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.port import DhtCancel, DhtGet, DhtListen, DhtPut
from meshcomm.dht.records import secret_for
from meshcomm.dht.uplink import UplinkConfig
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import BindingLearned, BindingUpdated, JournalPayload
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import LocationTable, MergeOutcome, TrustPolicy
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier

from .helpers import INCIDENT, WALL

P = TypeVar("P", bound=JournalPayload)
SECRET = secret_for(INCIDENT, b"the incident's configured secret")
FAST_UPLINK = UplinkConfig(min_peers=1, stable_s=3.0, grace_s=10.0)
CONFIG = BridgeConfig(uplink_addrs=("192.0.2.1:4222",), record_ttl_s=60, resync_s=20.0,
                      uplink=FAST_UPLINK)


def identity(name: str) -> Identity:
    return Identity(hashlib.sha256(name.encode()).digest())


@dataclass
class Station:
    name: str
    identity: Identity
    table: LocationTable
    bridge: DhtBridge
    events: list[BridgeEvent] = field(default_factory=list)
    ops: list[object] = field(default_factory=list)
    alive: bool = True

    def answers(self, token: int) -> list[Resolved | NotFound]:
        return [e for e in self.events
                if isinstance(e, Resolved | NotFound) and e.token == token]

    def journal(self, kind: type[P]) -> list[P]:
        return [e.payload for e in self.events
                if isinstance(e, JournalRecord) and isinstance(e.payload, kind)]


class Net:
    def __init__(self, *, seed: int = 1, model: ModelConfig | None = None,
                 config: BridgeConfig = CONFIG, standalone: int = 2) -> None:
        self.now = 0.0
        self.config = config
        self.model = DhtModel(random.Random(seed), model or ModelConfig(), now=0.0)
        self.stations: dict[str, Station] = {}
        self.verifier = SignatureVerifier()
        self._seqs: dict[tuple[str, bytes], int] = {}
        for n in range(standalone):
            self.model.add_node(f"dht{n}")

    @property
    def wall(self) -> float:
        return WALL + self.now

    def relay(self, name: str, config: BridgeConfig | None = None) -> Station:
        ident = identity(name)
        table = LocationTable(INCIDENT, TrustPolicy(), SignatureVerifier())
        bridge = DhtBridge(ident, table, SECRET, config or self.config, self.verifier,
                           random.Random(name), now=self.now, wall_offset_s=WALL)
        self.model.add_node(name)
        station = Station(name, ident, table, bridge)
        self.stations[name] = station
        return station

    def register(self, station: Station, who: Identity, aor: str, *, lifetime_s: int = 3600,
                 hold_s: int = 0, seq: int | None = None) -> Binding:
        """``who`` registers in ``station``'s island (the relay's table learns it)."""
        key = (aor, who.public_key)
        seq = seq if seq is not None else self._seqs.get(key, 0) + 1
        self._seqs[key] = max(seq, self._seqs.get(key, 0))
        binding = make_binding(who, incident=INCIDENT, seq=seq, aor=aor,
                               contacts=(f"mesh:{who.node_id[:4].hex()}",),
                               issued_at=self.wall, lifetime_s=lifetime_s, hold_s=hold_s)
        self.learn(station, binding)
        return binding

    def learn(self, station: Station, binding: Binding) -> None:
        result = station.table.offer(binding, self.now, self.wall)
        assert result.changed, result
        kind = BindingLearned if result.outcome is MergeOutcome.NEW else BindingUpdated
        assert result.stored is not None
        station.bridge.on_overlay_record(JournalRecord.of(kind(
            aor=binding.aor, node=binding.node_id.hex(), seq=binding.seq,
            state=result.stored.state.value, lifetime_s=binding.lifetime_s, via="",
            record=binding.record_id)), self.now)
        self.pump()

    def kill(self, name: str) -> None:
        self.stations[name].alive = False
        self.model.kill(name)

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for station in self.stations.values():
                while station.alive and (event := station.bridge.next_event()) is not None:
                    moved = True
                    if isinstance(event, DhtPut | DhtGet | DhtListen | DhtCancel):
                        station.ops.append(event)
                        self.model.submit(station.name, event, self.now)
                    else:
                        station.events.append(event)
            while (item := self.model.next_result()) is not None:
                node, result = item
                target = self.stations.get(node)
                if target is not None and target.alive:
                    moved = True
                    target.bridge.on_dht(result, self.now)

    def run(self, until: float) -> None:
        self.pump()
        while True:
            times = [s.bridge.next_timer() for s in self.stations.values() if s.alive]
            times.append(self.model.next_timer())
            due = min((t for t in times if t is not None), default=None)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            for station in self.stations.values():
                when = station.bridge.next_timer()
                if station.alive and when is not None and when <= self.now:
                    station.bridge.on_timer(self.now)
            self.model.on_timer(self.now)
            self.pump()
        self.now = until

    def resolve(self, station: Station, aor: str, wait_s: float = 15.0) -> Resolved | NotFound:
        token = station.bridge.resolve(aor, self.now)
        self.run(self.now + wait_s)
        answers = station.answers(token)
        assert len(answers) == 1, answers
        return answers[0]
