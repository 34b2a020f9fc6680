"""A claim this node holds to be in conflict is not re-flooded (issue 7 item 2): joiners
meet it only through anti-entropy, where neighbours report it as not held."""

from __future__ import annotations

import random

from meshcomm.errors import DecodeError
from meshcomm.location.binding import make_binding
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, decode_frame_untrusted, encode_frame

WALL = 1_800_000_000.0
GENUINE = Identity(bytes(range(1, 33)))
ATTACKER = Identity(bytes(range(2, 34)))
RELAY = Identity(bytes(range(3, 35)))
AOR = "sip:n4@incident.local"


def frame(who: Identity, seq: int) -> tuple[bytes, bytes]:
    binding = make_binding(who, incident=NodeSettings().incident, seq=seq, aor=AOR,
                           contacts=("sip:n4@x.mesh",), issued_at=WALL, lifetime_s=300)
    return encode_frame(binding.envelope, Hop(ttl=8, hops=1, metric=16)), binding.envelope.digest


def reflooded(node: MeshNode, start: float, duration: float) -> list[bytes]:
    """Run the node's timers from ``start`` for ``duration``; digests of what it sent."""
    out: list[bytes] = []
    t = start
    while t < start + duration:
        t += 0.05
        node.on_timer(t)
        for dgram in node.to_send(t):
            try:
                env, _hop = decode_frame_untrusted(dgram.data, NodeSettings().incident)
            except DecodeError:  # media frames: not bindings
                continue
            out.append(env.digest)
    return out


def test_a_conflicting_claim_is_stored_but_not_reflooded() -> None:
    node = MeshNode(RELAY, NodeSettings(), verifier=SignatureVerifier(), rng=random.Random(1),
                    now=0.0, wall_offset_s=WALL)
    genuine, genuine_digest = frame(GENUINE, 1)
    node.receive(genuine, LinkAddr("r|a"), 0.0)
    sent = reflooded(node, 0.0, 100.0)               # hold it past HOLDER_LOCK_S
    assert genuine_digest in sent
    for seq in range(1, 6):                     # the attacker re-claims again and again
        claim, digest = frame(ATTACKER, seq)
        node.receive(claim, LinkAddr("r|b"), 100.0 + seq)
        assert digest not in reflooded(node, 100.0 + seq, 1.0)
    states = {s.binding.key: s.state.value for s in node.table}
    assert states == {GENUINE.public_key: "verified", ATTACKER.public_key: "conflict"}
