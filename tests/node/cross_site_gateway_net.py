"""The gateway test net (:mod:`tests.node.gateway_net`) cut into two islands joined by an
uplink (issue 10): the chain n0 .. n(k-1) loses its middle link; the two nodes at the cut
are relays with an uplink (a DHT bridge on a shared in-memory DHT model, an uplink mesh)
and reach each other only over "uplink|..." frames. Stock UAs attach as in the chain net."""

from __future__ import annotations

import dataclasses
import random

from meshcomm.dht.api import UPLINK_CAP
from meshcomm.dht.bridge import DhtBridge
from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.records import secret_for
from meshcomm.media.relay import MediaConfig
from meshcomm.node.core import compose
from meshcomm.node.mesh import MeshNode
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import UPLINK_PREFIX, LinkAddr
from tests.node.cross_site_net import BRIDGE
from tests.node.gateway_net import DOMAIN, FAST_OVERLAY, Net

WALL = 1.7e9


class CrossSiteGatewayNet(Net):
    def __init__(self, n_nodes: int, *, media: MediaConfig | None = None,
                 seed: int = 7, loss: float = 0.0) -> None:
        super().__init__(n_nodes, media=media, seed=seed, loss=loss)
        cut = n_nodes // 2
        self.cut.add(frozenset((cut - 1, cut)))
        self.relays = (cut - 1, cut)
        self.model = DhtModel(random.Random(seed), ModelConfig(), now=0.0)
        self.model.add_node("bootstrap")
        for i in self.relays:
            self._uplink(i)

    def _uplink(self, i: int) -> None:
        st = self.stations[i]
        node, gateway = st.node, st.gw
        node.settings = dataclasses.replace(node.settings, caps=(UPLINK_CAP,), role="relay")
        ident = node.identity
        bridge = DhtBridge(ident, node.table, secret_for(node.settings.incident, None), BRIDGE,
                           SignatureVerifier(), random.Random(f"dht{i}"), now=self.now,
                           wall_offset_s=WALL, seq_base=1 << 32)
        uplink = MeshNode(ident, dataclasses.replace(node.settings, overlay=FAST_OVERLAY),
                          verifier=SignatureVerifier(), rng=random.Random(f"up{i}"),
                          now=self.now, seq_base=1 << 32, wall_offset_s=WALL)
        uplink.register(f"sip:{ident.node_id.hex()[:16]}@uplink.invalid", (), self.now)
        st.use(compose(node, gateway_config=gateway.config, rng=random.Random(f"gw{i}"),
                       node_aor=gateway.node_aor, now=self.now, relay=st.relay, dht=bridge,
                       uplink=uplink))
        self.model.add_node(st.name)
        self._register_own(st, f"sip:node{i}@{DOMAIN}", f"sip:node{i}")

    def _broadcast(self, i: int, data: bytes, dst: str | None) -> None:
        if dst is None or not dst.startswith(UPLINK_PREFIX):
            super()._broadcast(i, data, dst)
            return
        far = dst[len(UPLINK_PREFIX):]
        for j in self.relays:
            peer = self.stations[j]
            if j != i and peer.up and (not far or far == peer.name):
                peer.pump.radio(data, LinkAddr(UPLINK_PREFIX + self.stations[i].name),
                                self.now)

    def _exchange(self) -> bool:
        moved = super()._exchange()
        for st in self.stations:
            ops, st.edge.dht_ops = st.edge.dht_ops, []
            for op in ops:
                self.model.submit(st.name, op, self.now)
        while (item := self.model.next_result()) is not None:
            name, result = item
            for st in self.stations:
                if st.name == name and st.up:
                    moved = True
                    st.pump.dht_result(result, self.now)
        return moved

    def _next_time(self) -> float:
        model_t = self.model.next_timer()
        own = super()._next_time()
        return own if model_t is None else min(own, model_t)

    def step(self, limit: float) -> None:
        super().step(limit)
        self.model.on_timer(self.now)
        self._settle()
