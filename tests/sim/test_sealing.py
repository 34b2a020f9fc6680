"""The simulator builds every node core as the runtime does, end-to-end sealing included
(issue 12.5), with or without uplinks: in a run of islands bridged by uplinks, a MESSAGE's
text is in no frame on the radio or the WAN, in no database, journal or store write of a
node other than its two ends, and every whole node carries the runtime's parts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from meshcomm.node.e2e_sip import E2eCounter, is_sealed
from meshcomm.node.mesh import Datagram
from meshcomm.sim.clients import MESSAGE_PREFIX
from meshcomm.sim.engine import SimConfig, Simulator
from meshcomm.sim.topology import LinkSpec, hub, island_names, islands
from meshcomm.sim.traffic import TrafficEvent, TrafficKind, TrafficPlan
from meshcomm.sim.uplinks import MeasuredTunnel, UplinkSpec

PREFIX = MESSAGE_PREFIX.encode()


def uplinked(store_dir: Path | None, *, uplinks: bool = True) -> SimConfig:
    """2 islands x 5 nodes, hubs relaying (custody) and uplinked; b's uplink is down from
    40 s to 80 s. 8 pairs of handsets across the islands (both ways) exchange a MESSAGE
    live at 20..27 s, then 16 more at 45..60 s that find no way across: each is held by its
    origin, sealed there to its peer's node, given to the island's relay for custody, and
    leaves when the uplink is back. No MESSAGE starts or ends at a hub."""
    topo = islands(2, 5, LinkSpec(0.0, 0.002), random.Random(1))
    names = island_names(2, 5)
    hubs = [hub(topo, island) for island in names]
    ends = [[n for n in island if n not in hubs] for island in names]
    pairs = [(ends[p % 2][p // 2], ends[1 - p % 2][(p // 2 + 1) % 4]) for p in range(8)]
    events = [TrafficEvent(20.0 + i if i < 8 else 37.0 + i, TrafficKind.MESSAGE,
                           *pairs[i % 8]) for i in range(24)]
    return SimConfig(topology=topo, duration_s=150.0, seed=7,
                     traffic=TrafficPlan(events=tuple(events)),
                     roles=dict.fromkeys(hubs, "relay"), store_dir=store_dir,
                     uplinks=(UplinkSpec(tuple(hubs), delay_s=0.05, down=((40.0, 80.0),)),)
                     if uplinks else ())


def tap_frames(sim: Simulator) -> list[bytes]:
    """Every datagram any node puts on a radio link or the WAN (what a listener records)."""
    frames: list[bytes] = []
    for name in sim.node_names():
        edge = sim.edge(name)

        def tapped(dgram: Datagram, send: Callable[[Datagram], None] = edge.transmit) -> None:
            frames.append(dgram.data)
            send(dgram)
        edge.transmit = tapped
    return frames


def node_counters(sim: Simulator) -> Counter[str]:
    out: Counter[str] = Counter()
    for name in sim.node_names():
        core = sim.node_core(name)
        if core is not None:
            out.update(core.node.counters)
    return out


def test_an_uplinked_run_carries_and_holds_messages_only_sealed(tmp_path: Path) -> None:
    sim = Simulator(uplinked(tmp_path), keep_journal=True)
    frames = tap_frames(sim)
    result = sim.run()
    c = result["uplinks"]["cross_site_messages"]
    assert c["sent"] == 24 and c["delivered_once"] == 24 and c["duplicates"] == 0, c
    assert c["held"] == 16                             # those waited for b's uplink
    counters = node_counters(sim)
    # the 8 live MESSAGEs and their answers went sealed, the 16 held ones as sealed parcels
    assert counters[E2eCounter.SEALED] >= 16 and counters[E2eCounter.OPENED] >= 16, counters
    assert counters[E2eCounter.PARCEL_SEALED] == 16, counters
    assert counters[E2eCounter.OPEN_FAILED] == counters[E2eCounter.NO_KEY] == 0
    assert len(frames) > 1000 and sum(1 for f in frames if PREFIX in f) == 0
    assert sim.incident is not None
    ends = {(r.src, r.dst) for r in sim.incident.stats.messages.values()}
    endpoints = {n for pair in ends for n in pair}
    carriers = [n for n in sim.node_names() if n not in endpoints]
    assert carriers == list(sim.config.uplinks[0].nodes)    # the uplinked custody relays
    # The relays took custody of sealed parcels only, and nothing of the text reached
    # their databases (with WAL), journals or store writes.
    assert sim.persisted is not None and sim.journal is not None
    # (the grep finds the text where it is: the origins' own clear copies of their held
    # MESSAGEs, kept until sealed)
    assert {n for _t, n, e in sim.persisted if MESSAGE_PREFIX in repr(e)} <= endpoints
    assert [n for _t, n, e in sim.persisted if MESSAGE_PREFIX in repr(e)]
    custody = [e for _t, n, e in sim.persisted if n in carriers and e.held is not None]
    assert custody and all(is_sealed(e.held.parcel.sip) for e in custody if e.held)
    assert not [(n, e) for _t, n, e in sim.persisted
                if n in carriers and MESSAGE_PREFIX in repr(e)]
    assert not [n for n in carriers
                if any(MESSAGE_PREFIX in repr(r) for _t, r in sim.journal.get(n, []))]
    stores = sorted(tmp_path.iterdir())
    assert {f.name.split(".")[0] for f in stores} >= set(carriers)
    assert not [f.name for f in stores
                if f.name.split(".")[0] in carriers and PREFIX in f.read_bytes()]


def test_every_whole_node_is_built_with_the_runtimes_parts() -> None:
    """Uplinked or not, each node core seals (its store-and-forward and tunnel share the
    sealing part, which also reads an uplinked relay's uplink mesh bindings)."""
    for with_uplinks in (True, False):
        config = uplinked(None, uplinks=with_uplinks)
        config.duration_s = 12.0
        sim = Simulator(config)
        sim.run()
        for name in sim.node_names():
            core = sim.node_core(name)
            assert core is not None and core.gateway is not None and core.sf is not None
            e2e = core.e2e
            assert e2e is not None, name
            assert core.sf.e2e is e2e and core.tunnel is not None
            assert core.tunnel.learn_key == e2e.learn
            uplinked_relay = sim.wan is not None and sim.wan.is_member(name)
            assert isinstance(core.tunnel, MeasuredTunnel) is with_uplinks
            assert (core.dht is not None) is uplinked_relay
            assert (core.uplink is not None) is uplinked_relay
            assert core.tunnel.dht is core.dht and core.tunnel.uplink is core.uplink
            tables = [core.node.table] + ([core.uplink.table] if core.uplink else [])
            assert e2e.tables == tables
