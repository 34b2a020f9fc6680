"""Journal collection across sites (sans-IO): a command post in island A collects the
journal of a device in island B, the pulls and chunks travelling as tunnel items (the
post's island relay, the uplink mesh, the far relay), once cross-site traffic has taught
the post a remote route to the device.
"""

from __future__ import annotations

import hashlib
from typing import Any

from meshcomm.node.collect import CollectConfig, CollectRows, DeviceState
from meshcomm.node.collect_serve import JournalRead, ServeConfig
from meshcomm.node.collect_wire import WireRow, row_to_wire
from meshcomm.node.core import NodeCore
from meshcomm.node.tunnel import TunnelCounter
from meshcomm.security.identity import Identity
from meshcomm.types import NodeId
from tests.node.cross_site_net import CrossSiteNet, Station
from tests.node.memory_edge import MemoryEdge
from tests.node.test_collect import journal_rows


class CollectEdge(MemoryEdge):
    """A MemoryEdge that keeps the collection events for the net (not for the harness's
    own ``take_other``)."""

    def __init__(self) -> None:
        super().__init__()
        self.collect_events: list[object] = []

    def other(self, event: object) -> None:
        if isinstance(event, JournalRead | CollectRows):
            self.collect_events.append(event)
        else:
            super().other(event)


class CollectingNet(CrossSiteNet):
    """CrossSiteNet whose nodes run the collection part: ``post`` is authorised by every
    node, and every node's journal is ``rows[name]``."""

    post = "a1"

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.rows: dict[str, list[tuple[object, ...]]] = {}
        self.copies: dict[bytes, list[WireRow]] = {}
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _more_parts(self, name: str, ident: Identity) -> dict[str, Any]:
        post_id = Identity(hashlib.sha256(self.post.encode()).digest()).node_id
        self.rows[name] = journal_rows(ident, 400, seed=len(name) + ord(name[0]))
        return {"collect": CollectConfig(ServeConfig(collectors=frozenset({post_id})))}

    def _edge(self, _name: str, _ident: Identity) -> CollectEdge:
        return CollectEdge()

    def _send_all(self) -> None:
        while True:
            super()._send_all()
            if not self._serve_collect():
                return

    def _serve_collect(self) -> bool:
        moved = False
        for st in self.stations.values():
            edge = st.edge
            assert isinstance(edge, CollectEdge)
            events, edge.collect_events = edge.collect_events, []
            for event in events:
                moved = True
                self._answer(st, event)
        return moved

    def _answer(self, st: Station, event: object) -> None:
        core, now = st.core, self.now
        if isinstance(event, JournalRead):
            rows = [r for r in self.rows[st.name]
                    if isinstance(r[0], int) and r[0] >= event.from_seq][:event.max_rows]
            head = len(self.rows[st.name])
            st.pump.command(now, lambda: core.collect_input(
                lambda c: c.rows_read(event.read_id, rows, head, True, now), now))
        elif isinstance(event, CollectRows):
            self.copies.setdefault(event.node, []).extend(event.rows)
            st.pump.command(now, lambda: core.collect_input(
                lambda c: c.stored(event.node, True, "", now), now))


def _collect(net: CollectingNet, station: str) -> NodeCore:
    core = net.stations[station].core
    assert core.collect is not None
    return core


def test_a_device_of_another_island_is_collected_through_the_tunnel() -> None:
    net = CollectingNet({"A": ["a1", "ra"], "B": ["rb", "b1"]}, {"ra", "rb"})
    net.run(15.0)                                  # islands converge, uplinks up
    net.send("a1", "b1", "hello across")           # teaches a1 a remote route to b1
    net.run(25.0)
    post = _collect(net, "a1")
    b1 = NodeId(net.stations["b1"].core.node_id)
    assert post.collect is not None
    assert b1 in post.collect.reachable(net.now)
    pump = net.stations["a1"].pump
    pump.command(net.now, lambda: post.collect_input(lambda c: c.start({b1: None}, net.now),
                                                     net.now))
    net.run(net.now + 60.0)
    progress = {p.node: p for p in post.collect.collector.progress()}
    assert progress[b1].state is DeviceState.COMPLETE, progress[b1]
    assert net.copies[b1] == [tuple(row_to_wire(r)) for r in net.rows["b1"]]
    far = net.stations["b1"].core.tunnel
    assert far is not None and far.counters[TunnelCounter.DELIVERED] > 1
