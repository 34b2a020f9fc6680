"""Origin keys by reference and destination prefixes (issue 13, "short on the wire").

Uses the two-overlay harness of test_acks: "a" sends unicasts to "b"; time stepped by hand.
"""

from __future__ import annotations

import random

from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.keydir import KeyDirectory, LinkOrigins
from meshcomm.security.identity import Identity
from meshcomm.types import LinkAddr, NodeId
from meshcomm.wire.envelope import (
    LINK_ACK_MARKER,
    ORIGIN_SHORT_LEN,
    Hop,
    MsgType,
    encode_frame,
    parse_frame_untrusted,
    seal,
)
from tests.overlay.test_acks import INCIDENT, REQUEST, Pair, _overlay

MALLORY = Identity(b"\x66" * 32)


def _unicasts(frames: list[bytes]) -> list[tuple[bytes, Hop]]:
    out = []
    for data in frames:
        if data[:1] == LINK_ACK_MARKER:
            continue
        frame, hop = parse_frame_untrusted(data)
        if frame.msg_type is MsgType.UNICAST:
            out.append((frame.signature, hop))
    return out


def test_a_link_that_acked_an_origin_gets_its_next_frames_without_the_key() -> None:
    pair = Pair()
    pair.request(b"one")
    pair.run_until(pair.now + 1.0)
    start = pair.now
    digest = pair.request(b"two")
    pair.run_until(pair.now + 1.0)
    ((_sig, hop),) = _unicasts(pair.frames("a", start))
    assert hop.key_elided
    # the envelope id (journals, export) is the origin's, though the key was not carried
    assert pair.delivered["b"][1].env == digest
    assert [e.body for e in pair.delivered["b"]] == [b"one", b"two"]
    assert pair.count("a", "unicast_key_elided") == 1
    assert pair.count("a", "unicast_retransmits") == 0
    assert pair.count("b", "drop_unknown_origin") == 0


def test_a_restarted_receiver_gets_an_elided_frame_after_one_retransmission() -> None:
    pair = Pair()
    pair.request(b"before")
    pair.run_until(pair.now + 1.0)
    # b restarts (same identity, empty tables) and hears nothing from a before a's next
    # frame: a still believes the link holds its key.
    pair.nodes["b"] = _overlay(2, OverlayConfig())
    start = pair.now
    pair.request(b"after")
    pair.run_until(pair.now + 1.0)
    sent = _unicasts(pair.frames("a", start))
    assert [hop.key_elided for _, hop in sent] == [True, False]     # one retransmission
    assert sent[0][0] == sent[1][0]                                   # of the same envelope
    assert pair.count("b", "drop_unknown_origin") == 1
    assert [e.body for e in pair.delivered["b"]] == [b"before", b"after"]
    arrived = [t for t, s, _, d in pair.sent if s == "a" and d[:1] != LINK_ACK_MARKER
               and not parse_frame_untrusted(d)[1].key_elided and t >= start]
    assert arrived and arrived[0] - start < 0.2


def test_a_forged_frame_naming_a_known_short_id_fails_its_signature() -> None:
    pair = Pair()
    pair.request(b"one")
    pair.run_until(pair.now + 1.0)
    a, b = pair.nodes["a"], pair.nodes["b"]
    assert b.keys.key(a.node_id[:ORIGIN_SHORT_LEN]) == a.identity.public_key
    forged = seal(MALLORY, MsgType.UNICAST, INCIDENT, 99,
                  [b.node_id[:8], REQUEST, b"evil", 0, []])
    data = bytearray(encode_frame(forged, Hop(ttl=5, addressed=True, key_elided=True)))
    data[6:6 + ORIGIN_SHORT_LEN] = a.node_id[:ORIGIN_SHORT_LEN]      # a's short id
    before = b.counters["drop_bad_signature"]
    b.receive(bytes(data), LinkAddr("a"), pair.now)
    pair.run_until(pair.now + 1.0)
    assert b.counters["drop_bad_signature"] == before + 1
    assert [e.body for e in pair.delivered["b"]] == [b"one"]
    assert b.keys.key(a.node_id[:ORIGIN_SHORT_LEN]) == a.identity.public_key


def test_a_flood_of_unknown_short_ids_costs_no_signature_check_and_no_table_growth() -> None:
    pair = Pair(OverlayConfig(rate_limit_fps=1e9, rate_burst=10**9))
    b = pair.nodes["b"]
    rng = random.Random(5)
    template = seal(MALLORY, MsgType.UNICAST, INCIDENT, 1, [b.node_id[:8], REQUEST, b"x", 0, []])
    held, checked = len(b.keys), b.verifier.verified
    n = 5000
    for _ in range(n):
        data = bytearray(encode_frame(template, Hop(ttl=5, addressed=True, key_elided=True)))
        data[6:6 + ORIGIN_SHORT_LEN] = rng.randbytes(ORIGIN_SHORT_LEN)
        b.receive(bytes(data), LinkAddr("a"), pair.now)
    assert b.counters["drop_unknown_origin"] == n
    assert (len(b.keys), b.verifier.verified) == (held, checked)
    assert b.to_send(pair.now) == []                 # nothing acknowledged, nothing sent


def test_an_ambiguous_short_id_needs_the_full_key() -> None:
    pair = Pair()
    pair.request(b"one")
    pair.run_until(pair.now + 1.0)
    a, b = pair.nodes["a"], pair.nodes["b"]
    # (a real clash costs a 2^64 key search: the test names a second key's id by hand)
    b.keys.learn(MALLORY.public_key, NodeId(a.node_id[:ORIGIN_SHORT_LEN] + bytes(24)))
    assert b.keys.ambiguous(a.node_id[:ORIGIN_SHORT_LEN]) and b.keys.clashes == 1
    pair.request(b"two")
    pair.run_until(pair.now + 1.0)
    assert b.counters["drop_ambiguous_origin"] == 1
    assert [e.body for e in pair.delivered["b"]] == [b"one", b"two"]   # the retransmission
    assert b.keys.ambiguous(a.node_id[:ORIGIN_SHORT_LEN])              # stays ambiguous


def test_an_ambiguous_destination_prefix_is_never_forwarded() -> None:
    pair = Pair()
    a, b = pair.nodes["a"], pair.nodes["b"]
    far = NodeId(b"\x42" * 32)
    b.keys.learn(b"\x01" * 32, far)
    b.keys.learn(b"\x02" * 32, NodeId(far[:8] + b"\x00" * 24))
    start = pair.now
    a.forwarder.send(far, REQUEST, b"for whom?", pair.now)   # no route at a: scoped flood
    pair.run_until(pair.now + 1.0)
    assert b.counters["drop_ambiguous_dst"] == 1
    assert _unicasts(pair.frames("b", start)) == []
    # an unknown prefix is flooded on as before (no route: scoped flood)
    a.forwarder.send(NodeId(b"\x43" * 32), REQUEST, b"unknown", pair.now)
    pair.run_until(pair.now + 1.0)
    assert len(_unicasts(pair.frames("b", start))) == 1
    assert b.counters["unicast_scoped_flood"] == 1


def test_the_key_directory_is_bounded_and_learns_only_what_it_is_given() -> None:
    keys = KeyDirectory(max_entries=4)
    ids = [Identity(bytes([i]) * 32) for i in range(1, 11)]
    for ident in ids:
        keys.learn(ident.public_key)
    assert len(keys) == 4
    assert keys.key(ids[0].node_id[:8]) is None                       # evicted
    assert keys.key(ids[-1].node_id[:8]) == ids[-1].public_key
    assert keys.node(ids[-1].node_id[:8]) == ids[-1].node_id
    keys.learn(ids[-1].public_key)                                    # again: no clash
    assert keys.clashes == 0 and not keys.ambiguous(ids[-1].node_id[:8])


def test_link_origins_are_bounded_and_forgotten_with_the_neighbour() -> None:
    links = LinkOrigins(per_link=3, max_links=2)
    origins = [NodeId(bytes([i]) * 32) for i in range(5)]
    for origin in origins:
        links.acked(LinkAddr("x"), origin)
    assert [links.holds(LinkAddr("x"), o) for o in origins] == [False, False, True, True, True]
    links.acked(LinkAddr("y"), origins[0])
    links.acked(LinkAddr("z"), origins[0])                            # evicts link x
    assert not links.holds(LinkAddr("x"), origins[4])
    links.forget(LinkAddr("y"))
    assert not links.holds(LinkAddr("y"), origins[0]) and links.holds(LinkAddr("z"), origins[0])


def test_a_unicast_payload_leaves_out_empty_trailing_fields() -> None:
    pair = Pair()
    a, b = pair.nodes["a"], pair.nodes["b"]
    start = pair.now
    a.forwarder.send(b.node_id, REQUEST, b"plain", pair.now)
    a.forwarder.send(b.node_id, REQUEST, b"media", pair.now, best_effort=True)
    a.forwarder.send(b.node_id, REQUEST, b"x" * 1000, pair.now)         # two fragments
    pair.run_until(pair.now + 1.0)
    shapes = [len(parse_frame_untrusted(d)[0].payload) for d in pair.frames("a", start)
              if d[:1] != LINK_ACK_MARKER
              and parse_frame_untrusted(d)[0].msg_type is MsgType.UNICAST]
    assert sorted(set(shapes)) == [3, 4, 5]
    assert sorted(e.body for e in pair.delivered["b"]) == [b"media", b"plain", b"x" * 1000]
    for bad in ([b.node_id[:8], REQUEST], [b.node_id, REQUEST, b""],
                [b.node_id[:8], REQUEST, b"", 0, [], 0]):
        env = seal(MALLORY, MsgType.UNICAST, INCIDENT, 7, bad)
        before = b.counters["drop_malformed"] + b.counters["drop_oversized"]
        b.receive(encode_frame(env, Hop(ttl=5, addressed=True)), LinkAddr("a"), pair.now)
        assert b.counters["drop_malformed"] + b.counters["drop_oversized"] == before + 1


def test_a_carrier_names_its_origin_short_and_one_that_cannot_be_named_is_sent_again() -> None:
    """The response carrying the request's ack leaves its key out on its first copy. A
    receiver without the key drops it with its acks, retransmits the request, and gets
    the carrier again with the key: delivered once, nothing lost."""
    pair = Pair()
    pair.answer_after_s = 0.0
    start = pair.now
    pair.request(b"one")
    pair.run_until(start + 2.0)
    ((_sig, hop),) = _unicasts(pair.frames("b", start))
    assert hop.acks and hop.key_elided
    assert pair.count("a", "unicast_acked") == 1 and pair.count("a", "drop_unknown_origin") == 0
    a = pair.nodes["a"]
    a.keys = KeyDirectory()             # a lost b's key (no HELLO of b heard since)
    start = pair.now
    pair.request(b"two")
    pair.run_until(start + 3.0)
    sent = _unicasts(pair.frames("b", start))
    assert [h.key_elided for _, h in sent] == [True, False]
    assert sent[0][0] == sent[1][0]                         # the same envelope, again
    assert pair.count("a", "drop_unknown_origin") == 1
    assert pair.count("a", "unicast_retransmits") == 1
    assert pair.count("b", "unicast_carriers_resent") == 1
    assert [e.body for e in pair.delivered["a"]] == [b"200 OK", b"200 OK"]
    assert [e.body for e in pair.delivered["b"]] == [b"one", b"two"]
    assert a.forwarder.awaiting_ack == 0
