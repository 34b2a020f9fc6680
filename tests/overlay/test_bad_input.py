"""Bad input reaching the overlay is dropped, counted and journaled, never a crash."""

from __future__ import annotations

import random

import pytest

from meshcomm.journal.events import JournalEventType as J
from meshcomm.location.binding import make_binding
from meshcomm.location.holder import UNSETTLED_MAX_S
from meshcomm.security.identity import Identity
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, MsgType, encode_frame, seal
from meshcomm.wire.limits import MAX_DATAGRAM_BYTES


def settled_pair() -> Simulator:
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=2, duration_s=8,
                                              seed=1)), keep_journal=True)
    sim.run()
    return sim


def inject(sim: Simulator, frame: bytes, to: str = "n1", src: str = "n0") -> None:
    core = sim.core(to)
    assert core is not None
    core.receive(frame, LinkAddr(src), sim.now)
    sim.after_command(to)


def dropped(sim: Simulator, reason: str, node: str = "n1") -> bool:
    assert sim.journal is not None
    return any(rec.type is J.ENVELOPE_DROPPED and rec.data.get("reason") == reason
               for _, rec in sim.journal.get(node, []))


def counter(sim: Simulator, name: str, node: str = "n1") -> int:
    core = sim.core(node)
    assert core is not None
    return core.counters[name]


MALLORY = Identity(b"m" * 32)


def binding_frame(identity: Identity, *, aor: str, seq: int, incident: str = "default",
                  issued_at: float = 1000.0) -> bytes:
    b = make_binding(identity, incident=incident, seq=seq, aor=aor, contacts=("sip:x@y",),
                     issued_at=issued_at, lifetime_s=300)
    return encode_frame(b.envelope, Hop(ttl=4))


def test_forged_signature_dropped_counted_journaled() -> None:
    sim = settled_pair()
    frame = bytearray(binding_frame(MALLORY, aor="sip:mallory@incident.local", seq=1))
    frame[-20] ^= 0x01  # inside the signed bytes or signature: either way it no longer verifies
    before = len(sim.core("n1").table)  # type: ignore[union-attr]
    inject(sim, bytes(frame))
    assert len(sim.core("n1").table) == before  # type: ignore[union-attr]
    assert counter(sim, "drop_bad_signature") + counter(sim, "drop_malformed") == 1
    assert dropped(sim, "bad_signature") or dropped(sim, "malformed")


def test_claim_on_an_aor_another_key_holds_is_a_conflict() -> None:
    # The claim arrives at 8 s; n1 has held n0's claim only a few seconds (not locked), so
    # the AoR is contested until n0's report (anti-entropy) or the grace settles it.
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=2,
                                              duration_s=8 + UNSETTLED_MAX_S + 1, seed=1)),
                    keep_journal=True)
    sim.call_at(8.0, lambda s: inject(s, binding_frame(MALLORY, aor="sip:n0@incident.local",
                                                       seq=1)))
    sim.run()
    core = sim.core("n1")
    assert core is not None
    states = {(e.aor, e.node_id): e.state for e in core.overlay.who(sim.now)}
    assert states[("sip:n0@incident.local", MALLORY.node_id.hex())] == "conflict"
    holder = sim.core("n0").node_id.hex()  # type: ignore[union-attr]
    assert states[("sip:n0@incident.local", holder)] == "verified"
    assert sim.journal is not None
    assert any(r.type is J.BINDING_CONFLICT for _, r in sim.journal["n1"])
    assert [b.binding.node_id for b in core.table.lookup("sip:n0@incident.local")] == [
        bytes.fromhex(holder)]


def test_replayed_older_sequence_is_dropped() -> None:
    sim = settled_pair()
    inject(sim, binding_frame(MALLORY, aor="sip:m@incident.local", seq=5))
    inject(sim, binding_frame(MALLORY, aor="sip:m@incident.local", seq=3))
    assert counter(sim, "drop_replayed_old_seq") == 1
    assert dropped(sim, "replayed_old_seq")
    stored = sim.core("n1").table.lookup("sip:m@incident.local")  # type: ignore[union-attr]
    assert [s.binding.seq for s in stored] == [5]


def test_binding_from_another_incident_is_dropped() -> None:
    sim = settled_pair()
    inject(sim, binding_frame(MALLORY, aor="sip:m@incident.local", seq=1, incident="other"))
    assert counter(sim, "drop_wrong_incident") == 1
    assert dropped(sim, "wrong_incident")


def test_far_future_binding_is_rejected() -> None:
    sim = settled_pair()
    inject(sim, binding_frame(MALLORY, aor="sip:m@incident.local", seq=1, issued_at=1e10))
    assert counter(sim, "drop_future_dated") == 1
    assert dropped(sim, "future_dated")


_GOOD = encode_frame(seal(Identity(b"\x07" * 32), MsgType.HELLO, "default", 1,
                         [1, "handset", []]), Hop(ttl=5))
#: the hop part's ttl (after flags, type, incident tag, key, 1-byte seq, signature)
_TTL_AT = 2 + 4 + 32 + 1 + 64
_TTL_TOO_HIGH = _GOOD[:_TTL_AT] + b"\xff" + _GOOD[_TTL_AT + 1:]


@pytest.mark.parametrize("frame,reason", [
    (b"", "truncated"),
    (b"\xc1garbage", "truncated"),         # a link ack frame, too short (issue 13)
    (b"\xc1" + b"g" * 16, "malformed"),    # ... whose ids are no multiple of 6 bytes
    (b"\xe1\x63" + b"g" * 100, "unknown_type"),   # (wire v2: flags, then message type 99)
    (_TTL_TOO_HIGH, "malformed"),
    (_GOOD + b"\x00", "trailing"),
    (b"\x94\xc1" + b"g" * 100, "unknown_type"),  # (a msgpack array: v1 frames)
    (b"\x93\xc4\x01a", "truncated"),
    (b"\x00" * (MAX_DATAGRAM_BYTES + 1), "oversized"),
])
def test_garbage_truncated_oversized(frame: bytes, reason: str) -> None:
    sim = settled_pair()
    inject(sim, frame)
    assert counter(sim, f"drop_{reason}") == 1
    assert dropped(sim, reason)


def test_every_prefix_and_random_bytes_never_crash() -> None:
    sim = settled_pair()
    good = binding_frame(MALLORY, aor="sip:m@incident.local", seq=9)
    for i in range(len(good)):
        inject(sim, good[:i])
    rng = random.Random(1)
    for _ in range(300):
        inject(sim, rng.randbytes(rng.randrange(1, 300)))
    assert sim.core("n1") is not None


def test_replayed_hello_is_dropped() -> None:
    sim = settled_pair()
    n0 = sim.core("n0")
    assert n0 is not None
    hello = seal(n0.identity, MsgType.HELLO, "default", 1, [1, "handset", []])
    inject(sim, encode_frame(hello))
    assert counter(sim, "drop_replayed") == 1


def test_noisy_neighbour_is_rate_limited_and_others_still_served() -> None:
    sim = settled_pair()
    junk = b"\xc1" * 10
    for _ in range(2000):
        inject(sim, junk, src="n9")
    assert counter(sim, "drop_rate_limited") > 1000
    # the journal is protected too: drops of one (reason, source) are journaled ~1/s
    assert counter(sim, "drop_journal_suppressed") > 1000
    inject(sim, binding_frame(MALLORY, aor="sip:late@incident.local", seq=1))
    assert sim.core("n1").table.lookup("sip:late@incident.local")  # type: ignore[union-attr]
