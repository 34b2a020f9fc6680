"""The naive-flooding baseline: every node rebroadcasts every new binding once, at once.

No HELLO beacons, no suppression, no anti-entropy. Used by ``meshcomm sim --baseline
flood`` and the gossip benchmark to show what the overlay's mechanisms buy.
"""

from __future__ import annotations

import random

from meshcomm.location.binding import binding_from_envelope_untrusted
from meshcomm.location.table import LocationTable
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.core import FrameDecoder, GossipOverlay
from meshcomm.overlay.counters import TxTag
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustStore
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Envelope, Hop, parse_frame_untrusted


class NaiveFloodOverlay(GossipOverlay):
    def __init__(self, identity: Identity, incident: str, config: OverlayConfig,
                 table: LocationTable, verifier: SignatureVerifier, rng: random.Random, *,
                 now: float, role: str = "handset", seq_base: int = 0,
                 wall_offset_s: float = 0.0,
                 frame_decoder: FrameDecoder = parse_frame_untrusted,
                 trust: TrustStore | None = None) -> None:
        super().__init__(identity, incident, config, table, verifier, rng, now=now, role=role,
                         seq_base=seq_base, wall_offset_s=wall_offset_s,
                         frame_decoder=frame_decoder, trust=trust)
        self._timers.clear()  # no beacons, no digests, no housekeeping

    def _on_binding(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        if not self.verified_first_copy(env, src, now):
            return
        binding = binding_from_envelope_untrusted(env)
        self.offer_binding(binding, now, hop.age_ms / 1000.0, src)
        if hop.ttl > 1:
            self.transmit(env, Hop(ttl=hop.ttl - 1, hops=hop.hops + 1, age_ms=hop.age_ms),
                          None, TxTag.BINDING)


class NaiveFloodNode(MeshNode):
    def __init__(self, identity: Identity, settings: NodeSettings, *,
                 verifier: SignatureVerifier, rng: random.Random, now: float,
                 frame_decoder: FrameDecoder = parse_frame_untrusted) -> None:
        super().__init__(identity, settings, verifier=verifier, rng=rng, now=now,
                         overlay_class=NaiveFloodOverlay, frame_decoder=frame_decoder)
