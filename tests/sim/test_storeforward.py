"""Issue 4 done-when for store-and-forward, on the whole-node simulator (virtual time, 10%
loss, real gateways, real SQLite stores, the project's UA as each node's softphone).

n0 - n1 - n2 in a chain, n1 a relay. n2's client registers, then n2 dies (its binding
lingers). n0's client sends it a MESSAGE: the gateway gets no answer, hands it to
store-and-forward (202) and the relay n1 takes custody. Then the sender's node n0 is
killed, the relay is restarted from its SQLite store, the destination n2 comes back: the
MESSAGE reaches n2's client exactly once, and the sender's status reads
queued -> held_by relay -> delivered (seen when the sender comes back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import PersistOp
from meshcomm.sim.clients import DOMAIN
from meshcomm.sim.engine import Action, ActionKind, Simulator
from meshcomm.sim.scenario import ScenarioParams, load_scenario, sim_config
from meshcomm.sim.traffic import TrafficEvent, TrafficKind

SEND_AT_S = 14.0


@dataclass(slots=True)
class Run:
    sim: Simulator
    result: dict[str, object]
    checks: dict[str, object] = field(default_factory=dict)

    def statuses(self, name: str) -> list[tuple[str, str]]:
        """The status of every own message as this node persisted it, in order."""
        assert self.sim.persisted is not None
        return [(e.held.state.value, e.held.holder) for _, n, e in self.sim.persisted
                if n == name and e.op is PersistOp.STORE and e.held is not None
                and e.held.own]

    def msg_ids(self, name: str) -> set[bytes]:
        assert self.sim.persisted is not None
        return {e.msg_id for _, n, e in self.sim.persisted
                if n == name and e.held is not None and e.held.own}


def run_done_when(tmp_path: Path, seed: int) -> Run:
    params = ScenarioParams(topology="chain", nodes=3, loss=0.1, duration_s=100, seed=seed,
                            roles={"n1": "relay"})
    actions = [Action(10.0, ActionKind.KILL, ("n2",)),      # the destination dies
               Action(30.0, ActionKind.KILL, ("n0",)),      # the sender's node dies
               Action(35.0, ActionKind.RESTART, ("n1",)),   # the relay restarts
               Action(40.0, ActionKind.JOIN, ("n2",)),      # the destination comes back
               Action(70.0, ActionKind.JOIN, ("n0",))]      # the sender comes back
    message = TrafficEvent(SEND_AT_S, TrafficKind.MESSAGE, "n0", "n2")
    config = sim_config(params, actions=actions, traffic=([message], []))
    config.store_dir = tmp_path
    sim = Simulator(config, keep_journal=True)
    checks: dict[str, object] = {}

    def before_kill(s: Simulator) -> None:
        n0, n1 = s.node_core("n0"), s.node_core("n1")
        assert n0 is not None and n0.sf is not None and n1 is not None and n1.sf is not None
        checks["n0_outbox"] = [(x.state.value, x.holder) for x in n0.sf.outbox()]
        checks["n1_custody"] = [x.msg_id for x in n1.sf.held_for_others()]
    sim.call_at(29.9, before_kill)
    result = sim.run()
    return Run(sim, result, checks)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_held_by_sender_and_relay_delivered_once_after_kill_and_restart(
        tmp_path: Path, seed: int) -> None:
    run = run_done_when(tmp_path, seed)
    sim, checks = run.sim, run.checks
    relay = f"sip:n1@{DOMAIN}"
    (msg_id,) = run.msg_ids("n0")
    assert checks["n0_outbox"] == [("held_by", relay)]
    assert checks["n1_custody"] == [msg_id]
    assert sim.edge("n1").restored == 1              # the relay's copy came from SQLite
    assert sim.incident is not None
    (record,) = sim.incident.stats.messages.values()
    assert record.outcome == 202                     # the sender's client: held
    assert len(record.received_at) == 1              # n2's client got it exactly once
    assert record.received_at[0] > 40.0              # ... after it came back
    assert sim.incident.stats.to_builtin_ua == 0
    n1 = sim.node_core("n1")
    assert n1 is not None and n1.sf is not None and n1.sf.held_for_others() == []
    n1_db, n2_db = sim.edge("n1").db_path, sim.edge("n2").db_path
    assert n1_db is not None and n2_db is not None
    with SfStorage.open(n1_db) as db:
        assert db.load()[0] == []                    # the relay dropped its copy
    with SfStorage.open(n2_db) as db:
        assert db.load()[1] == [msg_id]              # the destination remembers it
    steps: list[tuple[str, str]] = []
    for status in run.statuses("n0"):
        if not steps or steps[-1][0] != status[0]:
            steps.append(status)
    assert [s for s, _ in steps] == ["queued", "held_by", "delivered"]
    assert steps[1][1] == relay and steps[2][1] == f"sip:n2@{DOMAIN}"
    messages = run.result["messages"]
    assert isinstance(messages, dict)
    assert (messages["sent"], messages["delivered"], messages["duplicates"],
            messages["held"]) == (1, 1, 0, 1)


def test_same_seed_same_story(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run_done_when(tmp_path / "a", 5)
    b = run_done_when(tmp_path / "b", 5)
    assert a.statuses("n0") == b.statuses("n0")
    assert a.result["digest"] == b.result["digest"]
    assert a.result["messages"] == b.result["messages"]
    for run in (a, b):
        assert run.sim.incident is not None
        (record,) = run.sim.incident.stats.messages.values()
        assert len(record.received_at) == 1


RELAY_SCENARIO = """
[scenario]
duration_s = 100
seed = 9
loss = 0.1
range = 0.15

[[node]]
name = "medic-1"
x = 0.0
y = 0.0

[[node]]
name = "engine-7"
role = "relay"
x = 0.1
y = 0.0

[[node]]
name = "sar-2"
x = 0.2
y = 0.0

[[event]]
at_s = 10
action = "kill"
nodes = ["sar-2"]

[[traffic]]
kind = "message"
from = "medic-1"
to = "sar-2"
at_s = 14

[[event]]
at_s = 30
action = "kill"
nodes = ["medic-1"]

[[event]]
at_s = 35
action = "restart"
nodes = ["engine-7"]

[[event]]
at_s = 40
action = "join"
nodes = ["sar-2"]
"""


def test_a_scenario_file_kills_the_relay_holding_a_message_and_it_arrives_once(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY_SCENARIO, encoding="utf-8")
    config = load_scenario(path)
    assert config.topology.neighbours("medic-1").keys() == {"engine-7"}
    sim = Simulator(config)
    custody: list[int] = []
    sim.call_at(34.9, lambda s: custody.append(len(
        s.node_core("engine-7").sf.held_for_others())))  # type: ignore[union-attr]
    result = sim.run()
    assert custody == [1]                            # the relay held it when it was killed
    assert sim.edge("engine-7").restored == 1
    messages = result["messages"]
    assert isinstance(messages, dict)
    assert (messages["sent"], messages["delivered"], messages["duplicates"],
            messages["held"]) == (1, 1, 0, 1)


def test_a_message_still_held_when_the_run_ends_is_reported_pending(tmp_path: Path) -> None:
    """The destination never comes back: the MESSAGE is held (202) and still held by the
    sender's node when the run ends: reported as pending at the end, neither delivered nor
    failed (a run that ends before a retry must not make an accepted message look lost)."""
    params = ScenarioParams(topology="chain", nodes=3, loss=0.0, duration_s=40, seed=1)
    message = TrafficEvent(SEND_AT_S, TrafficKind.MESSAGE, "n0", "n2")
    config = sim_config(params, actions=[Action(10.0, ActionKind.KILL, ("n2",))],
                        traffic=([message], []))
    config.store_dir = tmp_path
    sim = Simulator(config)
    messages = sim.run()["messages"]
    assert isinstance(messages, dict)
    assert (messages["sent"], messages["held"], messages["delivered"], messages["failed"],
            messages["pending_at_end"]) == (1, 1, 0, 0, 1)
    n0 = sim.node_core("n0")
    assert n0 is not None and n0.sf is not None
    assert [x.state.value for x in n0.sf.outbox()] == ["queued"]
