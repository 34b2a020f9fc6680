"""Issue 4 done-when for store-and-forward, in the simulator (virtual time, 10% loss):
the destination is absent, the MESSAGE is held by the sender's node and by a relay, the
sender's node is killed, the relay is restarted from its SQLite file, the destination
joins: the message is delivered exactly once and the sender's status reads
queued -> held by relay -> delivered (seen when the sender comes back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshcomm.journal.events import JournalRecord
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import (
    PersistOp,
    SfDeliver,
    SfPersist,
    StoreForward,
    StoreForwardConfig,
)
from meshcomm.sim.engine import DOMAIN, Action, ActionKind, Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config

#: How often the store-and-forward "runtime" of each simulated node runs (virtual s).
TICK_S = 0.1
SIP = b"MESSAGE sip:n2@incident.local SIP/2.0\r\nContent-Length: 2\r\n\r\nhi"
MSG = b"sim-message-0001"


@dataclass(slots=True)
class _Slot:
    db: Path
    core: MeshNode | None = None
    sf: StoreForward | None = None
    storage: SfStorage | None = None
    started_at: float = 0.0
    client: list[SfDeliver] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    restored: int = 0


class SfRuntime:
    """Runs a StoreForward beside every simulated MeshNode, restoring it from SQLite
    whenever the simulator (re)starts the node."""

    def __init__(self, sim: Simulator, tmp_path: Path, config: StoreForwardConfig) -> None:
        self.sim = sim
        self.config = config
        self.slots = {n: _Slot(tmp_path / f"{n}.sf.db") for n in sim.node_names()}
        self._seen = 0
        #: observations taken during the run
        self.checks: dict[str, object] = {}
        sim.call_at(0.0, self.tick)

    def sync(self) -> None:
        """Follow the simulator's node (re)starts and kills."""
        for name, slot in self.slots.items():
            self._sync(name, slot)

    def tick(self, sim: Simulator) -> None:
        self.sync()
        for when, name, event in sim.unicasts[self._seen:]:
            slot = self.slots[name]
            if (event.kind == AppKind.STORE_FORWARD and slot.sf is not None
                    and when >= slot.started_at):
                slot.sf.on_mesh(event, sim.now)
        self._seen = len(sim.unicasts)
        for name, slot in self.slots.items():
            if slot.sf is None:
                continue
            due = slot.sf.next_timer()
            if due is not None and due <= sim.now:
                slot.sf.on_timer(sim.now)
            self._drain(slot, slot.sf)
            sim.after_command(name)
        sim.call_at(sim.now + TICK_S, self.tick)

    def _sync(self, name: str, slot: _Slot) -> None:
        core = self.sim.core(name)
        if core is slot.core:
            return
        if slot.storage is not None:
            slot.storage.close()
        slot.core, slot.sf, slot.storage = None, None, None
        if core is None:
            return
        assert isinstance(core, MeshNode)
        slot.core, slot.started_at = core, self.sim.now
        slot.storage = SfStorage.open(slot.db)
        held, delivered, _ = slot.storage.load()
        slot.restored += len(held)
        slot.sf = StoreForward(core, self.config, now=self.sim.now, restored=held,
                               delivered_ids=delivered)

    def _drain(self, slot: _Slot, sf: StoreForward) -> None:
        while (event := sf.next_event()) is not None:
            if isinstance(event, SfPersist):
                assert slot.storage is not None
                slot.storage.apply(event)
                if event.op is PersistOp.STORE and event.held is not None and event.held.own:
                    slot.statuses.append((event.held.state.value, event.held.holder))
            elif isinstance(event, SfDeliver):
                slot.client.append(event)
                sf.local_delivery_done(event.msg_id, True, self.sim.now)
            else:
                assert isinstance(event, JournalRecord)

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.storage is not None:
                slot.storage.close()


def _hold(runtime: SfRuntime) -> None:
    def go(sim: Simulator) -> None:
        runtime.sync()
        sf = runtime.slots["n0"].sf
        assert sf is not None
        sf.hold(msg_id=MSG, from_aor=f"sip:n0@{DOMAIN}", to_aor=f"sip:n2@{DOMAIN}", sip=SIP,
                now=sim.now)
        sim.after_command("n0")
    runtime.sim.call_at(8.0, go)


def run_done_when(tmp_path: Path, seed: int) -> SfRuntime:
    params = ScenarioParams(topology="chain", nodes=3, loss=0.1, duration_s=90, seed=seed,
                            roles={"n1": "relay"})
    actions = [Action(15.0, ActionKind.KILL, ("n0",)),      # the sender's node dies
               Action(20.0, ActionKind.RESTART, ("n1",)),   # the relay restarts
               Action(25.0, ActionKind.JOIN, ("n2",)),      # the destination joins
               Action(60.0, ActionKind.JOIN, ("n0",))]      # the sender comes back
    sim = Simulator(sim_config(params, actions=actions, absent=frozenset({"n2"})))
    runtime = SfRuntime(sim, tmp_path, StoreForwardConfig(poll_interval_s=0.5))
    _hold(runtime)
    checks = runtime.checks

    def before_kill(s: Simulator) -> None:
        n0, n1 = runtime.slots["n0"].sf, runtime.slots["n1"].sf
        assert n0 is not None and n1 is not None
        checks["n0_outbox"] = [(x.state.value, x.holder) for x in n0.outbox()]
        checks["n1_custody"] = [x.msg_id for x in n1.held_for_others()]
    sim.call_at(14.9, before_kill)
    sim.run()
    runtime.close()
    return runtime


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_held_by_sender_and_relay_delivered_once_after_kill_and_restart(
        tmp_path: Path, seed: int) -> None:
    runtime = run_done_when(tmp_path, seed)
    n0, n1, n2 = (runtime.slots[n] for n in ("n0", "n1", "n2"))
    checks = runtime.checks
    relay = f"sip:n1@{DOMAIN}"
    assert checks["n0_outbox"] == [("held_by", relay)]
    assert checks["n1_custody"] == [MSG]
    assert n1.restored == 1                          # the relay's copy came from SQLite
    assert [(m.msg_id, m.sip) for m in n2.client] == [(MSG, SIP)]   # exactly once
    assert n1.sf is not None and n1.sf.held_for_others() == []
    with SfStorage.open(n1.db) as db:
        assert db.load()[0] == []                    # the relay dropped its copy
    with SfStorage.open(n2.db) as db:
        assert db.load()[1] == [MSG]                 # the destination remembers it
    steps: list[tuple[str, str]] = []
    for status in n0.statuses:
        if not steps or steps[-1][0] != status[0]:
            steps.append(status)
    assert [s for s, _ in steps] == ["queued", "held_by", "delivered"]
    assert steps[1][1] == relay and steps[2][1] == f"sip:n2@{DOMAIN}"


def test_same_seed_same_story(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run_done_when(tmp_path / "a", 5)
    b = run_done_when(tmp_path / "b", 5)
    assert a.slots["n0"].statuses == b.slots["n0"].statuses
    assert [m.msg_id for m in a.slots["n2"].client] == [MSG]
    assert [m.msg_id for m in b.slots["n2"].client] == [MSG]
