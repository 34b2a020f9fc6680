"""In-memory test net of several islands joined by uplinks (issue 10).

Each node is a whole :class:`~meshcomm.node.core.NodeCore` (overlay, gateway, tunnel; an
uplinked relay also a DHT bridge on a shared in-memory :class:`DhtModel` and an uplink
mesh) driven through the one :class:`~meshcomm.node.pump.Pump` on a
:class:`~tests.node.memory_edge.MemoryEdge`. Radio frames reach the node's island
neighbours, "uplink|..." frames the other uplinked relays while both uplinks are up; each
hop takes ``delay_s`` and may be lost (``loss``, seeded).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcomm.dht.api import UPLINK_CAP
from meshcomm.dht.bridge import BridgeConfig, DhtBridge
from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.records import secret_for
from meshcomm.dht.uplink import UplinkConfig
from meshcomm.location.table import TrustPolicy
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.gateway.types import GatewayConfig, InboxEntry
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import RELAY_CAP, StoreForward, StoreForwardConfig
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import UPLINK_PREFIX, LinkAddr
from tests.node.memory_edge import MemoryEdge

INCIDENT = "incident-x"
WALL = 1_800_000_000.0
DOMAIN = "fire.example"
BRIDGE = BridgeConfig(uplink_addrs=("192.0.2.1:4223",), record_ttl_s=120, resync_s=20.0,
                      uplink=UplinkConfig(min_peers=1, stable_s=1.0, grace_s=5.0))


@dataclass
class Station:
    name: str
    island: str
    core: NodeCore
    edge: MemoryEdge
    pump: Pump
    uplinked: bool
    up: bool = True
    boots: int = 1
    inbox: list[InboxEntry] = field(default_factory=list)

    @property
    def aor(self) -> str:
        return f"sip:{self.name}@{DOMAIN}"


class CrossSiteNet:
    """``islands``: island name -> its node names in a chain (radio links between
    neighbours in the list); ``relays``: the uplinked nodes."""

    def __init__(self, islands: dict[str, list[str]], relays: set[str], *, seed: int = 1,
                 delay_s: float = 0.005, loss: float = 0.0, wan_delay_s: float = 0.05,
                 upstream: dict[str, tuple[str, int]] | None = None,
                 store_forward: bool = False,
                 extra_links: tuple[tuple[str, str], ...] = (),
                 trust: TrustPolicy | None = None, sf_dir: Path | None = None,
                 wan_blocked: tuple[tuple[str, str], ...] = ()) -> None:
        self.now = 0.0
        #: Pairs of uplinked relays that do not hear each other on the WAN (behind NATs
        #: that do not let them punch through): the uplink mesh routes them through
        #: another member.
        self.wan_blocked = {frozenset(pair) for pair in wan_blocked}
        #: Each station's store-and-forward database is ``<sf_dir>/<name>.sf.db`` (real
        #: SQLite, restored by :meth:`restart`); None: held in memory only.
        self.sf_dir = sf_dir
        #: The nodes' trust policy (agency keys that may sign revocations, issue 12.4).
        self.trust = trust or TrustPolicy()
        self.upstream = upstream or {}
        self.store_forward = store_forward or sf_dir is not None
        #: The WAN between the uplinked relays carries frames (False: the uplink is cut;
        #: the relays are also cut off from the DHT).
        self.wan_up = True
        self.rng = random.Random(seed)
        self.delay_s, self.loss, self.wan_delay_s = delay_s, loss, wan_delay_s
        self.model = DhtModel(random.Random(seed + 1), ModelConfig(), now=0.0)
        self.model.add_node("bootstrap")
        self.links: dict[str, set[str]] = {}
        self.stations: dict[str, Station] = {}
        self._queue: list[tuple[float, int, str, bytes, str]] = []
        self._order = itertools.count()
        for island, names in islands.items():
            for i, name in enumerate(names):
                self.links.setdefault(name, set())
                if i:
                    self.links[name].add(names[i - 1])
                    self.links[names[i - 1]].add(name)
                self.stations[name] = self._station(name, island, name in relays)
        for x, y in extra_links:
            self.links[x].add(y)
            self.links[y].add(x)
        for st in self.stations.values():
            st.pump.command(0.0, lambda s=st: s.core.register(s.aor, (f"sip:{s.name}@mesh",),
                                                              0.0))

    def _station(self, name: str, island: str, uplinked: bool, boots: int = 1) -> Station:
        ident = Identity(hashlib.sha256(name.encode()).digest())
        now, seq_base = self.now, boots << 32
        seed = name if boots == 1 else f"{name}:{boots}"      # a restart: a new boot
        caps = (RELAY_CAP, UPLINK_CAP) if uplinked else ()     # as the runtime's relays
        settings = NodeSettings(incident=INCIDENT, role="relay" if uplinked else "handset",
                                caps=caps, trust=self.trust)
        node = MeshNode(ident, settings, verifier=SignatureVerifier(),
                        rng=random.Random(seed), now=now, seq_base=seq_base,
                        wall_offset_s=WALL)
        bridge = uplink = None
        if uplinked:
            bridge = DhtBridge(ident, node.table, secret_for(INCIDENT, None), BRIDGE,
                               SignatureVerifier(), random.Random(name + "-dht"), now=now,
                               wall_offset_s=WALL, seq_base=seq_base)
            # as the runtime's (meshcomm.runtime.uplink_transport): the uplink's own HELLO
            # timing, so a dead member is gone from it in seconds
            up_settings = NodeSettings(incident=INCIDENT, role="relay", trust=self.trust,
                                       overlay=settings.overlay.for_uplink(),
                                       caps=(UPLINK_CAP,))
            uplink = MeshNode(ident, up_settings, verifier=SignatureVerifier(),
                              rng=random.Random(name + "-up"), now=now, seq_base=seq_base,
                              wall_offset_s=WALL, trust=node.overlay.trust.store)
            uplink.register(f"sip:{ident.node_id.hex()[:16]}@uplink.invalid", (), now)
            self.model.add_node(name)
        config = GatewayConfig(upstream=self.upstream.get(name))
        storage = (SfStorage.open(self.sf_dir / f"{name}.sf.db") if self.sf_dir is not None
                   else None)
        held, _, _ = storage.load() if storage is not None else ([], [], [])
        sf = (StoreForward(node, StoreForwardConfig(), now=now, restored=held,
                           delivered_ids=storage.load_delivered() if storage else ())
              if self.store_forward else None)
        core = compose(node, gateway_config=config, sf=sf, rng=random.Random(seed + "-gw"),
                       node_aor=f"sip:{name}@{DOMAIN}", now=now, dht=bridge, uplink=uplink,
                       **self._more_parts(name, ident))
        edge = self._edge(name, ident)
        edge.storage = storage
        return Station(name, island, core, edge, Pump(core, edge), uplinked, boots=boots)

    def restart(self, name: str) -> Station:
        """Stop station ``name`` (its database closed) and start it again from its
        store-and-forward database (a new core, a new boot); it registers again."""
        old = self.stations[name]
        if old.edge.storage is not None:
            old.edge.storage.close()
        st = self.stations[name] = self._station(name, old.island, old.uplinked,
                                                 boots=old.boots + 1)
        st.pump.command(self.now, lambda: st.core.register(st.aor, (f"sip:{name}@mesh",),
                                                           self.now))
        return st

    def _more_parts(self, _name: str, _ident: Identity) -> dict[str, Any]:
        """More keyword arguments of ``compose`` for a station (a subclass adds parts)."""
        return {}

    def _edge(self, _name: str, _ident: Identity) -> MemoryEdge:
        """The memory edge of a station (a subclass may answer more of its events)."""
        return MemoryEdge()

    # ------------------------------------------------------------ the medium
    def _send_all(self) -> None:
        moved = True
        while moved:
            moved = False
            for st in self.stations.values():
                for dgram in st.edge.take_air():
                    moved = True
                    self._carry(st, dgram.data, dgram.dst)
                ops, st.edge.dht_ops = st.edge.dht_ops, []
                for op in ops:
                    self.model.submit(st.name, op, self.now)
                for event in st.edge.take_other():
                    if isinstance(event, InboxEntry):
                        st.inbox.append(event)
            while (item := self.model.next_result()) is not None:
                name, result = item
                target = self.stations.get(name)
                if target is not None and target.up:
                    moved = True
                    target.pump.dht_result(result, self.now)

    def _carry(self, src: Station, data: bytes, dst: str | None) -> None:
        if not src.up:
            return
        if dst is not None and dst.startswith(UPLINK_PREFIX):
            if not self.wan_up:
                return
            far = dst[len(UPLINK_PREFIX):]
            targets = [s for s in self.stations.values() if s.uplinked and s is not src
                       and (not far or s.name == far)
                       and frozenset((src.name, s.name)) not in self.wan_blocked]
            for t in targets:
                self._push(self.wan_delay_s, t.name, data, UPLINK_PREFIX + src.name)
            return
        for name in self.links[src.name]:
            if dst is None or dst == name:
                self._push(self.delay_s, name, data, src.name)

    def _push(self, delay: float, dst: str, data: bytes, src: str) -> None:
        if self.loss and self.rng.random() < self.loss:
            return
        heapq.heappush(self._queue, (self.now + delay, next(self._order), dst, data, src))

    def run(self, until: float) -> None:
        self._send_all()
        while True:
            times = [st.edge.deadline for st in self.stations.values()
                     if st.up and st.edge.deadline is not None]
            times.append(self.model.next_timer())
            if self._queue:
                times.append(self._queue[0][0])
            due = min((t for t in times if t is not None), default=None)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, dst, data, src = heapq.heappop(self._queue)
                st = self.stations[dst]
                if st.up and (not src.startswith(UPLINK_PREFIX)
                              or (self.wan_up and self.stations[src[len(UPLINK_PREFIX):]].up)):
                    st.pump.radio(data, LinkAddr(src), self.now)
            for st in self.stations.values():
                if st.up and st.edge.deadline is not None and st.edge.deadline <= self.now:
                    st.pump.timer(self.now)
            self.model.on_timer(self.now)
            self._send_all()
        self.now = max(self.now, until)

    def cut_wan(self, cut: bool) -> None:
        """Cut (or restore) the uplinks: no uplink frames, and each relay alone in the
        DHT (its peers go, so its uplink goes down after the grace)."""
        self.wan_up = not cut
        relays = [s.name for s in self.stations.values() if s.uplinked]
        if cut:
            self.model.partition([[name] for name in relays] + [["bootstrap"]])
        else:
            self.model.heal()

    def send(self, src: str, dst: str, text: str) -> int:
        st = self.stations[src]
        return st.pump.command(self.now, lambda: st.core.send_message(
            self.stations[dst].aor, text, self.now))
