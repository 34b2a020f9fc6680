"""The DHT bridge as a part of the node core (issue 10 on issue 9's core): two relays in
two islands, each a NodeCore with a DhtBridge driven through the one Pump; the bridges'
operations leave through ``Edge.dht`` into the in-memory DHT model and its results come
back through ``Pump.dht_result``. A relay's own registration is published from the
overlay's journal record (the core's OVERLAY_RECORD route) and resolves in the other
island; without a bridge the record route is the edge's alone."""

from __future__ import annotations

import hashlib
import random

import pytest

from meshcomm.dht.bridge import BridgeConfig, DhtBridge, NotFound, Resolved
from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.port import DhtPeers
from meshcomm.dht.records import secret_for
from meshcomm.dht.uplink import UplinkConfig, UplinkState
from meshcomm.errors import LocalProtocolError
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from tests.node.memory_edge import MemoryEdge

INCIDENT = "incident-dht"
WALL = 1_800_000_000.0
SECRET = secret_for(INCIDENT, b"a secret of sixteen bytes or more")
CONFIG = BridgeConfig(uplink_addrs=("192.0.2.1:4222",), record_ttl_s=60, resync_s=20.0,
                      uplink=UplinkConfig(min_peers=1, stable_s=2.0, grace_s=10.0))


class Relay:
    def __init__(self, name: str, model: DhtModel) -> None:
        ident = Identity(hashlib.sha256(name.encode()).digest())
        self.name = name
        self.aor = f"sip:{name}@fire.example"
        node = MeshNode(ident, NodeSettings(incident=INCIDENT, role="relay"),
                        verifier=SignatureVerifier(), rng=random.Random(name), now=0.0,
                        seq_base=1 << 32, wall_offset_s=WALL)
        bridge = DhtBridge(ident, node.table, SECRET, CONFIG, SignatureVerifier(),
                           random.Random(name + "-dht"), now=0.0, wall_offset_s=WALL,
                           seq_base=1 << 32)
        self.core = compose(node, now=0.0, dht=bridge)
        self.edge = MemoryEdge()
        self.pump = Pump(self.core, self.edge)
        model.add_node(name)


class Incident:
    def __init__(self) -> None:
        self.now = 0.0
        self.model = DhtModel(random.Random(7), ModelConfig(), now=0.0)
        self.model.add_node("bootstrap")
        self.relays = {n: Relay(n, self.model) for n in ("relay-a", "relay-b")}

    def _carry(self) -> None:
        """DHT operations the edges took go into the model; its results come back through
        each node's pump."""
        moved = True
        while moved:
            moved = False
            for relay in self.relays.values():
                ops, relay.edge.dht_ops = relay.edge.dht_ops, []
                for op in ops:
                    self.model.submit(relay.name, op, self.now)
            while (item := self.model.next_result()) is not None:
                name, result = item
                relay = self.relays.get(name)       # a standalone DHT node has no core
                if relay is not None:
                    moved = True
                    relay.pump.dht_result(result, self.now)

    def run(self, until: float) -> None:
        self._carry()
        while True:
            times = [r.edge.deadline for r in self.relays.values()]
            times.append(self.model.next_timer())
            due = min((t for t in times if t is not None), default=None)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            for relay in self.relays.values():
                if relay.edge.deadline is not None and relay.edge.deadline <= self.now:
                    relay.pump.timer(self.now)
            self.model.on_timer(self.now)
            self._carry()
        self.now = until


def test_a_relays_registration_is_published_and_resolves_in_the_other_island() -> None:
    net = Incident()
    a, b = net.relays["relay-a"], net.relays["relay-b"]
    for relay in (a, b):
        relay.pump.command(net.now, lambda r=relay: r.core.register(
            r.aor, (f"sip:{r.name}@mesh",), net.now))
    net.run(10.0)
    for relay in (a, b):
        assert relay.core.dht is not None
        assert relay.core.dht.uplink_state is UplinkState.UP
        assert relay.core.dht.published == 1           # its own binding, from the journal
    bridge = b.core.dht
    assert bridge is not None
    token = b.pump.command(net.now, lambda: bridge.resolve(a.aor, net.now))
    net.run(net.now + 15.0)
    answers = [e for e in b.edge.events
               if isinstance(e, Resolved | NotFound) and e.token == token]
    assert len(answers) == 1 and isinstance(answers[0], Resolved), answers
    (found,) = answers[0].bindings
    assert found.binding.aor == a.aor
    assert [att.relay for att in found.relays] == [a.core.node_id]
    # The overlay's journal records still reach the edge (the route goes on to it).
    assert any(type(r.payload).__name__ == "BindingLearned" for r in a.edge.journal)


def test_without_a_bridge_dht_input_is_refused_and_records_go_to_the_edge() -> None:
    node = MeshNode(Identity(b"x" * 32), NodeSettings(incident=INCIDENT),
                    verifier=SignatureVerifier(), rng=random.Random(1), now=0.0)
    core = NodeCore(node)
    edge = MemoryEdge()
    pump = Pump(core, edge)
    pump.command(0.0, lambda: core.register("sip:x@fire.example", ("sip:x@mesh",), 0.0))
    assert edge.dht_ops == [] and edge.journal
    with pytest.raises(LocalProtocolError):
        core.receive_dht(DhtPeers(good=3), 0.0)


def test_new_uplink_addresses_are_published_again_and_bad_ones_refused() -> None:
    net = Incident()
    a, b = net.relays["relay-a"], net.relays["relay-b"]
    a.pump.command(net.now, lambda: a.core.register(a.aor, ("sip:a@mesh",), net.now))
    net.run(10.0)
    bridge_a, bridge_b = a.core.dht, b.core.dht
    assert bridge_a is not None and bridge_b is not None
    mapped = "203.0.113.9:40001"                     # what a NAT maps relay a to
    with pytest.raises(ValueError):
        bridge_a.set_uplink_addrs(("not an address",), net.now)
    a.pump.command(net.now, lambda: bridge_a.set_uplink_addrs(
        ("192.0.2.1:4222", mapped), net.now))
    net.run(net.now + 10.0)                          # put again within republish_spread_s
    token = b.pump.command(net.now, lambda: bridge_b.resolve(a.aor, net.now))
    net.run(net.now + 15.0)
    (answer,) = [e for e in b.edge.events
                 if isinstance(e, Resolved | NotFound) and e.token == token]
    assert isinstance(answer, Resolved)
    (found,) = answer.bindings
    assert [att.addrs for att in found.relays] == [("192.0.2.1:4222", mapped)]
