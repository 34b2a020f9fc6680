"""Issue 7 item 3, on the wire: the hop ``age`` is outside the signature, so a relay can
forge it; a binding flooded with a forged age of 0 must not live past what its origin
signed (issue time + lifetime, plus the clock tolerance), nor come back once that is over."""

from __future__ import annotations

import random

from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, make_binding
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, encode_frame

WALL = 1_800_000_000.0
HANDSET = Identity(bytes(range(40, 72)))
RELAY = Identity(bytes(range(80, 112)))
AOR = "sip:medic@fire.example"


def relay_at(wall: float) -> MeshNode:
    return MeshNode(RELAY, NodeSettings(), verifier=SignatureVerifier(),
                    rng=random.Random(3), now=0.0, wall_offset_s=wall)


def old_binding_frame(issued_at: float, lifetime_s: int = 300) -> bytes:
    binding = make_binding(HANDSET, incident=NodeSettings().incident, seq=7, aor=AOR,
                           contacts=("sip:medic@x.mesh",), issued_at=issued_at,
                           lifetime_s=lifetime_s)
    return encode_frame(binding.envelope, Hop(ttl=8, hops=3, metric=100, age_ms=0))


def test_forged_age_zero_is_capped_by_the_signed_end() -> None:
    relay = relay_at(WALL)
    # Signed for 300 s, 200 s longer ago than the tolerance allows for a slow signer clock;
    # the relay before us claims it is brand new.
    relay.receive(old_binding_frame(WALL - CLOCK_SKEW_TOLERANCE_S - 200), LinkAddr("liar"), 0.0)
    found = relay.table.lookup(AOR)
    assert found, "still within the tolerance: accepted"
    assert found[0].expires_at == 100.0  # what is left of the signed end, not 300 s
    relay.on_timer(found[0].expires_at)
    assert relay.table.lookup(AOR) == []


def test_forged_age_zero_on_a_long_expired_binding_is_refused() -> None:
    relay = relay_at(WALL)
    relay.receive(old_binding_frame(WALL - CLOCK_SKEW_TOLERANCE_S - 3600), LinkAddr("liar"), 0.0)
    assert relay.table.lookup(AOR) == []
    assert relay.counters["drop_expired"] == 1
    assert not [d for d in relay.to_send(0.1) if b"medic" in d.data]  # not re-flooded
