"""The hostile-node injector's frames (tools/testbed/inject.py), without namespaces: what it
sends must be what the tests say it is (valid signatures, fresh keys, replays that keep the
signed part, garbage that real decoders refuse)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meshcomm.errors import DecodeError
from meshcomm.location.binding import binding_from_envelope_untrusted, make_binding
from meshcomm.security.identity import Identity, verify_signature
from meshcomm.wire.envelope import (
    SIGNATURE_DOMAIN,
    Hop,
    MsgType,
    decode_frame_untrusted,
    encode_frame,
    seal,
)
from tools.testbed import inject


def _forge(seed: int = 1) -> inject.Forge:
    return inject.Forge(random.Random(seed), "default", "incident.local", 300)


def test_sybil_frames_are_valid_bindings_from_fresh_keys() -> None:
    forge = _forge()
    frames = [forge.sybil_frame() for _ in range(50)]
    keys = set()
    for frame in frames:
        env, hop = decode_frame_untrusted(frame, "default")
        assert env.msg_type is MsgType.BINDING and env.incident == "default"
        assert verify_signature(env.origin_key, SIGNATURE_DOMAIN + env.signed_bytes,
                                env.signature)
        binding = binding_from_envelope_untrusted(env)
        assert binding.aor.startswith("sip:sybil-") and binding.lifetime_s == 300
        assert hop.ttl == inject.FLOOD_TTL and hop.age_ms == 0
        keys.add(env.origin_key)
    assert len(keys) == 50 == forge.keys
    again = _forge()
    assert decode_frame_untrusted(again.sybil_frame(), "default")[0].origin_key == \
        decode_frame_untrusted(frames[0], "default")[0].origin_key  # seeded: reproducible keys


def test_takeover_claims_the_aor_with_rising_seq_or_new_keys() -> None:
    aor = "sip:n4@incident.local"
    same = inject.Claimant(_forge(), aor, rotate=False)
    envs = [decode_frame_untrusted(same.frame(), "default")[0] for _ in range(3)]
    assert [e.seq for e in envs] == [1, 2, 3]
    assert len({e.origin_key for e in envs}) == 1
    assert all(binding_from_envelope_untrusted(e).aor == aor for e in envs)
    rotating = inject.Claimant(_forge(2), aor, rotate=True)
    assert len({decode_frame_untrusted(rotating.frame(), "default")[0].origin_key
                for _ in range(3)}) == 3


def test_replay_keeps_the_signed_part_and_resets_the_hop_fields(tmp_path: Path) -> None:
    ident = Identity(seed=bytes(range(32)))
    live = make_binding(ident, incident="default", seq=5, aor="sip:a@incident.local",
                        contacts=("sip:a@x",), issued_at=1.0, lifetime_s=60)
    dead = make_binding(ident, incident="default", seq=6, aor="sip:a@incident.local",
                        contacts=(), issued_at=2.0, lifetime_s=0, hold_s=60)
    other = make_binding(ident, incident="default", seq=1, aor="sip:b@incident.local",
                         contacts=(), issued_at=1.0, lifetime_s=60)
    heard = encode_frame(live.envelope, Hop(ttl=3, hops=5, metric=80, age_ms=59_000))
    capture = inject.Capture()
    for frame in (heard, heard, encode_frame(dead.envelope), encode_frame(other.envelope),
                  b"\x00garbage"):
        capture.add_frame(frame)
    path = tmp_path / "cap.bin"
    assert inject.write_records(path, capture.records.values()) == 3
    records = inject.read_records(path)
    chosen = inject.keep_for_replay(records, "sip:A@incident.local", tombstones=False)
    assert len(chosen) == 1
    env, hop = decode_frame_untrusted(inject.fresh_hop_frame(*chosen[0]), "default")
    assert env.signed_bytes == live.envelope.signed_bytes
    assert env.signature == live.envelope.signature
    assert (hop.ttl, hop.hops, hop.age_ms) == (inject.FLOOD_TTL, 0, 0)
    assert len(inject.keep_for_replay(records, None, tombstones=True)) == 3


def test_garbage_is_refused_by_the_frame_decoder_or_the_signature() -> None:
    forge = _forge()
    templates = [forge.sybil_frame() for _ in range(4)]
    template_signed = {decode_frame_untrusted(t, "default")[0].signed_bytes for t in templates}
    rng = random.Random(3)
    refused = 0
    for _ in range(400):
        frame = inject.garbage_frame(rng, templates)
        try:
            env, _hop = decode_frame_untrusted(frame, "default")
        except DecodeError:
            refused += 1
            continue
        if verify_signature(env.origin_key, SIGNATURE_DOMAIN + env.signed_bytes,
                            env.signature):
            # A flip in the hop fields leaves an envelope already sent: a duplicate.
            assert env.signed_bytes in template_signed
        else:
            refused += 1
    assert refused >= 300


def test_refuses_to_run_outside_a_test_bed_namespace() -> None:
    with pytest.raises(inject.InjectError, match="outside a test-bed namespace"):
        inject.check_test_bed_namespace()
    assert inject.main(["sybil", "--iface", "lo", "--duration", "0.1"]) == 2


def test_takeover_counts_unicasts_routed_to_the_claimant() -> None:
    claimant = inject.Claimant(_forge(), "sip:n0@incident.local", rotate=False)
    claimant.frame()
    assert claimant.identity is not None
    routed = inject.RoutedToUs()
    sender = Identity(seed=bytes(32))
    to_us = encode_frame(seal(sender, MsgType.UNICAST, "default", 1, [b"x"]),
                         Hop(ttl=8, addressed=True))
    flooded = encode_frame(seal(sender, MsgType.UNICAST, "default", 2, [b"x"]), Hop(ttl=8))
    for frame in (to_us, to_us, flooded, b"\x00junk"):
        routed(frame)
    assert (routed.frames, len(routed.envelopes)) == (2, 1)


def test_takeover_claimant_says_hello_reporting_the_nodes_it_hears() -> None:
    claimant = inject.Claimant(_forge(), "sip:n0@incident.local", rotate=False)
    fake = inject.FakeNeighbour(claimant)
    assert fake.due(0.0) is None  # no key before the first claim
    first_claim = decode_frame_untrusted(claimant.frame(), "default")[0]
    node = Identity(seed=bytes(range(1, 33)))
    fake.hear(encode_frame(seal(node, MsgType.HELLO, "default", 9, [1, "relay", []])), 1.0)
    hello, _hop = decode_frame_untrusted(fake.due(1.0) or b"", "default")
    assert fake.due(1.1) is None  # one per HELLO_INTERVAL_S
    assert hello.msg_type is MsgType.HELLO and hello.origin_key == first_claim.origin_key
    assert hello.seq > first_claim.seq
    assert verify_signature(hello.origin_key, SIGNATURE_DOMAIN + hello.signed_bytes,
                            hello.signature)
    assert hello.payload == [1, "handset", [[node.node_id[:4], 255]]]
    assert decode_frame_untrusted(claimant.frame(), "default")[0].seq > hello.seq
