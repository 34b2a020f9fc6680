"""Journal collection, sans-IO: whole node cores (overlay + collect part) joined by an
in-memory radio in virtual time, each driven through the one Pump on a MemoryEdge. The
test net plays the edge's IO: a JournalRead is answered from the host's journal rows (as
SQLite returns them), CollectRows are appended to the collector's copies.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from meshcomm.journal.chain import JournalChain
from meshcomm.journal.events import JournalEventType as J
from meshcomm.node.collect import (
    ChainBroken,
    Collect,
    CollectConfig,
    CollectCounter,
    Collector,
    CollectRows,
    DeviceProgress,
    DeviceState,
    check_rows,
)
from meshcomm.node.collect_serve import (
    MAX_SERVED,
    REFUSAL_REASON,
    JournalRead,
    ServeConfig,
    ServeCounter,
)
from meshcomm.node.collect_wire import (
    CHUNK_TARGET_BYTES,
    ChunkStatus,
    JournalChunk,
    JournalPull,
    WireRow,
    compress_rows,
    decode_pull_untrusted,
    encode_chunk,
    row_to_wire,
)
from meshcomm.node.core import NodeCore
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Datagram, LinkAddr, NodeId
from tests.node.memory_edge import MemoryEdge

FAST = OverlayConfig(hello_interval_s=0.5, neighbour_timeout_s=2.0, anti_entropy_interval_s=1.0)
MAX_DGRAMS = 200_000


def ident(name: str) -> Identity:
    return Identity(hashlib.sha256(f"collect-test:{name}".encode()).digest())


def journal_rows(identity: Identity, count: int, seed: int = 0,
                 big_every: int = 0) -> list[tuple[object, ...]]:
    """``count`` rows of a real chain as SQLite returns them (text_factory=bytes)."""
    rng = random.Random(seed)
    chain = JournalChain(identity.node_id)
    rows: list[tuple[object, ...]] = []
    for i in range(count):
        data: dict[str, object] = {"i": i, "peer": f"{rng.randrange(1 << 30):x}.mesh",
                                   "note": "x" * rng.randrange(40)}
        if big_every and i % big_every == big_every - 1:
            data["body"] = rng.randbytes(30_000)       # incompressible: sent in parts
        if i % 50 == 49:
            entry, blob = chain.append_encoded(J.CHECKPOINT, chain.checkpoint_data(
                identity.sign), 100.0 + i, 1.7e9 + i)
        else:
            entry, blob = chain.append_encoded(J.SIP_MESSAGE, data, 100.0 + i, 1.7e9 + i)
        rows.append((entry.seq, entry.mono_s, entry.wall_s, entry.node_id,
                     entry.type.encode(), blob, entry.prev_hash, entry.entry_hash))
    return rows


def raw_bytes(rows: list[tuple[object, ...]]) -> int:
    """What the rows take uncompressed: their data plus ~120 bytes of other columns."""
    return sum(len(r[5]) + 120 for r in rows if isinstance(r[5], bytes))


@dataclass(slots=True)
class Host:
    name: str
    identity: Identity
    rows: list[tuple[object, ...]]
    core: NodeCore
    pump: Pump
    edge: MemoryEdge
    #: the collector's copies: node id -> rows appended, in order
    copies: dict[bytes, list[WireRow]] = field(default_factory=dict)
    keys: dict[bytes, bytes] = field(default_factory=dict)
    disk_full: bool = False
    #: JournalReads answered (for the flood test)
    reads: int = 0


class Net:
    def __init__(self, names: list[str], rows: dict[str, list[tuple[object, ...]]],
                 serve: Callable[[str], ServeConfig], credential: bytes = b"",
                 links: list[tuple[str, str]] | None = None, loss: float = 0.0) -> None:
        self.now = 0.0
        #: each datagram is lost on each link with this probability (seeded)
        self.loss = loss
        self._loss_rng = random.Random(7)
        self.verifier = SignatureVerifier()
        self.hosts: dict[str, Host] = {}
        for name in names:
            identity = ident(name)
            node = MeshNode(identity, NodeSettings(incident="collect", overlay=FAST),
                            verifier=self.verifier, rng=random.Random(name), now=0.0)
            collect = Collect(node, CollectConfig(serve=serve(name), credential=credential))
            core = NodeCore(node, collect=collect)
            edge = MemoryEdge()
            self.hosts[name] = Host(name, identity, rows.get(name, []), core,
                                    Pump(core, edge), edge)
        pairs = links if links is not None else list(itertools.pairwise(names))
        self.links = {frozenset(p) for p in pairs}
        self._air: list[tuple[str, Datagram]] = []
        for host in self.hosts.values():
            core = host.core
            self._register(host)
            self._take(host)

    @staticmethod
    def _register(host: Host) -> None:
        """A binding floods: every node learns a route to ``host``."""
        core = host.core
        aor = f"sip:{core.node_id[:4].hex()}@collect.test"
        host.pump.command(0.0, lambda: core.register(aor, (), 0.0))

    def node_id(self, name: str) -> NodeId:
        return self.hosts[name].identity.node_id

    def _take(self, host: Host) -> None:
        while True:
            self._air += [(host.name, d) for d in host.edge.take_air()]
            others = host.edge.take_other()
            if not others:
                return
            for event in others:
                if isinstance(event, JournalRead):
                    self._read(host, event)
                elif isinstance(event, CollectRows):
                    self._store(host, event)

    def _read(self, host: Host, event: JournalRead) -> None:
        rows = [r for r in host.rows if isinstance(r[0], int) and r[0] >= event.from_seq]
        head = len(host.rows)
        host.reads += 1
        self._input(host, lambda c: c.rows_read(event.read_id, rows[:event.max_rows], head,
                                                True, self.now))

    def _store(self, host: Host, event: CollectRows) -> None:
        if host.disk_full:
            self._input(host, lambda c: c.stored(event.node, False,
                                                 "no space left on device", self.now))
            return
        host.copies.setdefault(event.node, []).extend(event.rows)
        host.keys[event.node] = event.public_key
        self._input(host, lambda c: c.stored(event.node, True, "", self.now))

    def _input(self, host: Host, fn: Callable[[Collect], object]) -> None:
        host.pump.command(self.now, lambda: host.core.collect_input(fn, self.now))

    def start_collect(self, name: str, targets: dict[NodeId, tuple[int, bytes] | None]
                      ) -> None:
        host = self.hosts[name]
        self._input(host, lambda c: c.start(targets, self.now))
        self._take(host)

    def _flush(self) -> None:
        moved = 0
        while self._air:
            src, dgram = self._air.pop(0)
            moved += 1
            assert moved < MAX_DGRAMS
            for name, host in self.hosts.items():
                if name == src or frozenset((src, name)) not in self.links:
                    continue
                if dgram.dst is not None and dgram.dst != name:
                    continue
                if self.loss and self._loss_rng.random() < self.loss:
                    continue
                host.pump.radio(dgram.data, LinkAddr(src), self.now)
                self._take(host)

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        self._flush()
        while True:
            due = min((h.edge.deadline for h in self.hosts.values()
                       if h.edge.deadline is not None), default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for host in self.hosts.values():
                if host.edge.deadline is not None and host.edge.deadline <= self.now:
                    host.pump.timer(self.now)
                    self._take(host)
            self._flush()
        self.now = end

    def progress(self, name: str) -> dict[bytes, DeviceProgress]:
        collect = self.hosts[name].core.collect
        assert collect is not None
        return {p.node: p for p in collect.collector.progress()}


def _serve_to(collector: str) -> Callable[[str], ServeConfig]:
    return lambda _name: ServeConfig(collectors=frozenset({ident(collector).node_id}))


def _chain_net(rows: dict[str, list[tuple[object, ...]]], **kw: object) -> Net:
    net = Net(["a", "b", "c"], rows, _serve_to("a"), **kw)  # type: ignore[arg-type]
    net.run_for(6.0)                 # HELLOs: routes a-b-c
    return net


def test_three_node_chain_collects_every_row_verbatim_and_resumes() -> None:
    rows = {"b": journal_rows(ident("b"), 700, seed=1), "c": journal_rows(ident("c"), 400)}
    net = _chain_net(rows)
    b, c = net.node_id("b"), net.node_id("c")
    reachable = net.hosts["a"].core.collect.reachable(net.now)  # type: ignore[union-attr]
    assert set(reachable) == {b, c}
    net.start_collect("a", {b: None, c: None})
    net.run_for(60.0)
    prog = net.progress("a")
    assert {prog[b].state, prog[c].state} == {DeviceState.COMPLETE}
    a = net.hosts["a"]
    assert a.copies[b] == [tuple(row_to_wire(r)) for r in rows["b"]]
    assert a.copies[c] == [tuple(row_to_wire(r)) for r in rows["c"]]
    assert a.keys[c] == ident("c").public_key
    raw = raw_bytes(rows["b"])
    assert prog[b].wire_bytes < raw / 2, (prog[b].wire_bytes, raw)
    # b wrote 300 more entries: a second run pulls only those
    rows["b"][:] = journal_rows(ident("b"), 1000, seed=1)
    net.hosts["b"].rows = rows["b"]
    head = (700, a.copies[b][-1][7])
    net.start_collect("a", {b: head})
    net.run_for(60.0)
    prog = net.progress("a")
    assert prog[b].state is DeviceState.COMPLETE and prog[b].rows == 300
    assert a.copies[b] == [tuple(row_to_wire(r)) for r in rows["b"]]


def test_a_chain_with_ten_percent_loss_is_collected_verbatim() -> None:
    rows = {"b": journal_rows(ident("b"), 600, seed=4), "c": journal_rows(ident("c"), 600)}
    net = Net(["a", "b", "c"], rows, _serve_to("a"), loss=0.1)
    net.run_for(10.0)
    b, c = net.node_id("b"), net.node_id("c")
    net.start_collect("a", {b: None, c: None})
    net.run_for(300.0)
    prog = net.progress("a")
    assert {prog[b].state, prog[c].state} == {DeviceState.COMPLETE}, prog
    for name, node in (("b", b), ("c", c)):
        assert net.hosts["a"].copies[node] == [tuple(row_to_wire(r)) for r in rows[name]]


def test_collection_yields_while_live_unicasts_wait_for_acks() -> None:
    """Ten live unicasts wait for their per-hop ACKs (the link is down for a moment): no
    pull leaves until the backlog is back at the threshold; then the collection runs."""
    net = Net(["a", "b"], {"b": journal_rows(ident("b"), 100)}, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    a = net.hosts["a"]
    net.links.discard(frozenset(("a", "b")))
    for i in range(10):
        a.pump.command(net.now, lambda i=i: a.core.node.send_unicast(  # type: ignore[misc]
            b, AppKind.SIP, f"live {i}".encode(), net.now))
    assert a.core.node.overlay.forwarder.awaiting_ack == 10
    net.start_collect("a", {b: None})
    net.run_for(0.1)
    collect = a.core.collect
    assert collect is not None
    assert collect.counters[CollectCounter.PULLS_SENT] == 0
    assert collect.counters[CollectCounter.HELD_BACK] > 0
    net.links.add(frozenset(("a", "b")))
    net.run_for(30.0)
    assert net.progress("a")[b].state is DeviceState.COMPLETE


def test_collection_interrupted_then_resumed_from_what_was_stored() -> None:
    rows = {"b": journal_rows(ident("b"), 900, seed=3)}
    net = Net(["a", "b"], rows, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    net.start_collect("a", {b: None})
    net.run_for(0.05)                     # a few chunks, then the command post dies
    got = list(net.hosts["a"].copies.get(b, []))
    assert 0 < len(got) < 900
    net.hosts["a"].core.collect.cancel()  # type: ignore[union-attr]
    net.start_collect("a", {b: (len(got), got[-1][7])})
    net.run_for(60.0)
    assert net.progress("a")[b].state is DeviceState.COMPLETE
    assert net.hosts["a"].copies[b] == [tuple(row_to_wire(r)) for r in rows["b"]]


def test_large_rows_travel_in_parts() -> None:
    rows = {"b": journal_rows(ident("b"), 30, big_every=7)}
    net = Net(["a", "b"], rows, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    net.start_collect("a", {b: None})
    net.run_for(60.0)
    assert net.progress("a")[b].state is DeviceState.COMPLETE
    assert net.hosts["a"].copies[b] == [tuple(row_to_wire(r)) for r in rows["b"]]


def test_a_late_duplicate_of_an_earlier_part_is_dropped_not_assembled() -> None:
    b = ident("b")
    rows = journal_rows(b, 1, big_every=1)
    rows_z = compress_rows([row_to_wire(rows[0])])
    total = len(rows_z)
    assert total > 2 * CHUNK_TARGET_BYTES
    node = MeshNode(ident("a"), NodeSettings(incident="collect", overlay=FAST),
                    verifier=SignatureVerifier(), rng=random.Random(1), now=0.0)
    pulls: list[JournalPull] = []
    events: deque[object] = deque()
    collector = Collector(node, CollectConfig(), Counter(), events,
                          lambda _d, _k, body, _n: pulls.append(decode_pull_untrusted(body)))

    def part(offset: int) -> UnicastReceived:
        chunk = JournalChunk(ChunkStatus.OK, 1, rows_z[offset:offset + CHUNK_TARGET_BYTES], 1,
                             True, total, 1, offset)
        return UnicastReceived(b.node_id, b.public_key, AppKind.JOURNAL_CHUNK,
                               encode_chunk(chunk), 1, 0)

    collector.start({b.node_id: None}, 0.0)
    collector.send_due(0.0, True)
    offset = 0
    while offset < total:
        assert pulls[-1].part_offset == offset and (offset == 0 or pulls[-1].max_rows == 1)
        collector.on_chunk(part(offset), 1.0)
        if offset:
            collector.on_chunk(part(0), 1.0)        # a late duplicate of the first part
        offset = min(total, offset + CHUNK_TARGET_BYTES)
        collector.send_due(1.0, True)
    assert collector.counters[CollectCounter.DROP_UNEXPECTED] >= 1
    stored = [e for e in events if isinstance(e, CollectRows)]
    assert len(stored) == 1 and stored[0].rows == (tuple(row_to_wire(rows[0])),)


def test_unauthorised_collector_is_refused_counted_and_journaled() -> None:
    rows = {"b": journal_rows(ident("b"), 50)}
    net = Net(["a", "b"], rows, _serve_to("someone-else"))
    net.run_for(6.0)
    b = net.node_id("b")
    net.start_collect("a", {b: None})
    net.run_for(20.0)
    prog = net.progress("a")[b]
    assert prog.state is DeviceState.REFUSED and "not an authorised" in prog.error
    assert net.hosts["a"].copies == {}
    served = net.hosts["b"].core.collect
    assert served is not None and served.counters[ServeCounter.REFUSED] >= 1
    assert net.hosts["b"].reads == 0
    dropped = [r for r in net.hosts["b"].edge.journal if r.type is J.ENVELOPE_DROPPED
               and r.data.get("reason") == REFUSAL_REASON]
    assert dropped and dropped[0].data["src"] == net.node_id("a").hex()


def test_agency_credential_with_command_role_authorises() -> None:
    agency = ident("agency")
    cred = issue_credential(agency, aor_pattern="sip:*@x", role="command",
                            device_key=ident("a").public_key, issued_at=0,
                            expires_at=1 << 34).to_bytes()
    medic = issue_credential(agency, aor_pattern="sip:*@x", role="medic",
                             device_key=ident("a").public_key, issued_at=0,
                             expires_at=1 << 34).to_bytes()
    keys = frozenset({agency.public_key})
    for credential, state in ((cred, DeviceState.COMPLETE), (medic, DeviceState.REFUSED)):
        net = Net(["a", "b"], {"b": journal_rows(ident("b"), 20)},
                  lambda _n: ServeConfig(agency_keys=keys), credential=credential)
        net.run_for(6.0)
        b = net.node_id("b")
        net.start_collect("a", {b: None})
        net.run_for(20.0)
        assert net.progress("a")[b].state is state


def test_a_chunk_that_does_not_chain_on_is_refused_and_named() -> None:
    rows = {"b": journal_rows(ident("b"), 100, seed=1)}
    net = Net(["a", "b"], rows, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    forged = journal_rows(ident("b"), 100, seed=2)    # another history, same key
    forged_hash = forged[59][7]
    assert isinstance(forged_hash, bytes)
    net.start_collect("a", {b: (60, forged_hash)})
    net.run_for(20.0)
    prog = net.progress("a")[b]
    assert prog.state is DeviceState.FAILED
    assert "refused at entry 61" in prog.error and "fork" in prog.error
    assert b not in net.hosts["a"].copies


def test_a_journal_shorter_than_the_copy_is_named() -> None:
    rows = {"b": journal_rows(ident("b"), 30)}
    net = Net(["a", "b"], rows, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    longer = journal_rows(ident("b"), 80)
    last = longer[79][7]
    assert isinstance(last, bytes)
    net.start_collect("a", {b: (80, last)})
    net.run_for(20.0)
    prog = net.progress("a")[b]
    assert prog.state is DeviceState.FAILED
    assert "ends at entry 30, the copy holds up to 80" in prog.error


def test_a_resuming_collector_learns_it_is_refused() -> None:
    net = Net(["a", "b"], {"b": journal_rows(ident("b"), 30)}, _serve_to("nobody"))
    net.run_for(6.0)
    b = net.node_id("b")
    head = journal_rows(ident("b"), 10)[9][7]
    assert isinstance(head, bytes)
    net.start_collect("a", {b: (10, head)})
    net.run_for(5.0)
    assert net.progress("a")[b].state is DeviceState.REFUSED


def test_full_disk_fails_the_device_with_the_edge_error() -> None:
    net = Net(["a", "b"], {"b": journal_rows(ident("b"), 10)}, _serve_to("a"))
    net.run_for(6.0)
    net.hosts["a"].disk_full = True
    b = net.node_id("b")
    net.start_collect("a", {b: None})
    net.run_for(20.0)
    prog = net.progress("a")[b]
    assert (prog.state, prog.error) == (DeviceState.FAILED, "no space left on device")


def test_unreachable_device_fails_after_tries() -> None:
    net = Net(["a", "b"], {}, _serve_to("a"))
    net.run_for(6.0)
    ghost = NodeId(hashlib.sha256(b"ghost").digest())
    net.start_collect("a", {ghost: None})
    net.run_for(120.0)
    prog = net.progress("a")[ghost]
    assert prog.state is DeviceState.FAILED and "no answer" in prog.error


def test_flood_of_pulls_from_many_unauthorised_keys_stays_bounded() -> None:
    """Forty strangers pull b as fast as they can: each is refused; b reads nothing,
    answers REFUSED within its global budget, journals within its budget; a's (the
    authorised) collection still completes."""
    names = ["a", "b"] + [f"s{i}" for i in range(40)]
    rows = {"b": journal_rows(ident("b"), 200)}
    net = Net(names, rows, _serve_to("a"), links=[("a", "b")] + [("b", n) for n in names[2:]])
    net.run_for(6.0)
    b = net.node_id("b")
    for name in names[2:]:
        net.start_collect(name, {b: None})
    net.start_collect("a", {b: None})
    for _ in range(20):                      # strangers keep pulling
        for name in names[2:]:
            net.hosts[name].core.collect.cancel()   # type: ignore[union-attr]
            net.start_collect(name, {b: None})
        net.run_for(1.0)
    served = net.hosts["b"].core.collect
    assert served is not None
    assert net.progress("a")[b].state is DeviceState.COMPLETE
    assert served.counters[ServeCounter.REFUSED] >= 40 * 20
    dropped = [r for r in net.hosts["b"].edge.journal if r.type is J.ENVELOPE_DROPPED
               and r.data.get("reason") == REFUSAL_REASON]
    assert len(dropped) <= 5 + 0.5 * 30
    assert served.server.serving <= MAX_SERVED
    assert all(net.hosts[n].copies == {} for n in names[2:])


def test_many_authorised_collectors_share_the_slots_fairly() -> None:
    names = ["b"] + [f"c{i}" for i in range(MAX_SERVED + 4)]
    rows = {"b": journal_rows(ident("b"), 300)}
    collectors = frozenset(ident(n).node_id for n in names[1:])
    net = Net(names, rows, lambda _n: ServeConfig(collectors=collectors),
              links=[("b", n) for n in names[1:]])
    net.run_for(6.0)
    b = net.node_id("b")
    for name in names[1:]:
        net.start_collect(name, {b: None})
    net.run_for(120.0)
    states = {net.progress(n)[b].state for n in names[1:]}
    assert states == {DeviceState.COMPLETE}
    served = net.hosts["b"].core.collect
    assert served is not None and served.counters[ServeCounter.BUSY] > 0


def test_check_rows_names_edits_gaps_and_foreign_rows() -> None:
    rows = [row_to_wire(r) for r in journal_rows(ident("b"), 10)]
    wire = [tuple(r) for r in rows]
    node = ident("b").node_id
    assert check_rows(wire, node, None) == (10, wire[-1][7])  # type: ignore[arg-type]
    edited = list(wire[4])
    edited[1] = 555.0
    cases = [([*wire[:4], tuple(edited), *wire[5:]], 5, "edited"),
             (wire[:3] + wire[4:], 4, "missing"),
             (wire, 1, "another node")]
    for bad, seq, words in cases:
        with pytest.raises(ChainBroken) as info:
            check_rows(bad, node if words != "another node" else b"x" * 32, None)  # type: ignore[arg-type]
        assert info.value.seq == seq and words in str(info.value)


def test_compression_figures() -> None:
    """Bytes on the wire per 1000 rows of realistic journal data (printed for the note)."""
    rows = journal_rows(ident("b"), 1000, seed=9)
    raw = raw_bytes(rows)
    net = Net(["a", "b"], {"b": rows}, _serve_to("a"))
    net.run_for(6.0)
    b = net.node_id("b")
    net.start_collect("a", {b: None})
    net.run_for(120.0)
    prog = net.progress("a")[b]
    assert prog.state is DeviceState.COMPLETE
    collect = net.hosts["a"].core.collect
    assert collect is not None
    print(f"1000 rows: {raw} raw bytes, {prog.wire_bytes} on the wire "
          f"({raw / prog.wire_bytes:.1f}x), {collect.counters[CollectCounter.CHUNKS]} chunks")
    assert zlib.compress(b"x")      # zlib present
