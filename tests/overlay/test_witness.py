"""Checkpoint witnesses (issue 11): a node's signed journal checkpoint rides on its HELLOs
(when it changed, else every n-th), neighbours check the signature with the key that
signed the HELLO and journal ``journal.witnessed`` -- once per moved head, at most once per
interval per node, in a bounded table a flood of identities cannot take over."""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.chain import JournalChain, checkpoint_message
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import JournalWitnessed
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.witness import (
    CHECKPOINT_EVERY_HELLOS,
    CHECKPOINT_FIELD_BYTES,
    WITNESS_ADMIT_BURST,
    WITNESS_INTERVAL_S,
    CheckpointBeacon,
    Heard,
    SignedCheckpoint,
    WitnessTable,
    decode_checkpoint_untrusted,
    decode_hello_untrusted,
    decode_sent_wall_untrusted,
)
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, MsgType, encode_frame, parse_frame_untrusted, seal

HEAD = hashlib.sha256(b"head").digest()
SIG = bytes(range(64))


# ------------------------------------------------------------------ wire
def test_a_checkpoint_field_round_trips_and_old_hellos_still_decode() -> None:
    cp = SignedCheckpoint(7, HEAD, SIG)
    assert decode_checkpoint_untrusted(cp.wire_value()) == cp
    assert len(msgpack.packb(cp.wire_value())) <= CHECKPOINT_FIELD_BYTES
    base, found = decode_hello_untrusted([3, "relay", [[b"abcd", 200]]])
    assert base == [3, "relay", [[b"abcd", 200]]] and found is None
    base, found = decode_hello_untrusted([3, "relay", [], cp.wire_value()])
    assert base == [3, "relay", []] and found == cp
    with_wall = cp.wire_value(1_800_000_000.25)
    assert decode_checkpoint_untrusted(with_wall) == cp
    assert decode_sent_wall_untrusted(with_wall) == 1_800_000_000.25
    assert decode_sent_wall_untrusted(cp.wire_value()) is None
    assert len(msgpack.packb(with_wall)) <= CHECKPOINT_FIELD_BYTES


@pytest.mark.parametrize("value", [
    None, b"", "x", 5, {}, [],
    [7, HEAD],                                   # truncated
    [7, HEAD, SIG[:63]], [7, HEAD[:31], SIG],    # short fields
    [7, HEAD, SIG, b""],                         # an extra item that is no wall clock
    [7, HEAD, SIG, -1.0], [7, HEAD, SIG, float("nan")], [7, HEAD, SIG, 2.0 ** 41],
    [7, HEAD, SIG, 1.0, 2.0],                    # five items
    [7, HEAD + b"\x00", SIG], [7, HEAD, SIG + b"\x00"],   # oversize fields
    [0, HEAD, SIG], [-1, HEAD, SIG], [2**63, HEAD, SIG], [2**64 + 1, HEAD, SIG],
    [True, HEAD, SIG], [7.0, HEAD, SIG], ["7", HEAD, SIG], [7, HEAD.hex(), SIG],
])
def test_a_bad_checkpoint_field_is_a_decode_error(value: object) -> None:
    with pytest.raises(DecodeError):
        decode_checkpoint_untrusted(value)
    with pytest.raises(DecodeError):
        decode_hello_untrusted([1, "handset", [], value])


@pytest.mark.parametrize("payload", [None, [], [1, "h"], [1, "h", [], [7, HEAD, SIG], 0],
                                     [1, "h", [], [7, HEAD, SIG]] + [0] * 1000, b"\x94"])
def test_a_hello_of_the_wrong_shape_is_a_decode_error(payload: object) -> None:
    with pytest.raises(DecodeError):
        decode_hello_untrusted(payload)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=8) | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def _decodes_or_refuses(value: object) -> None:
    """Only DecodeError escapes; what decodes is a valid checkpoint / HELLO."""
    try:
        cp = decode_checkpoint_untrusted(value)
    except DecodeError:
        pass
    else:
        assert isinstance(cp, SignedCheckpoint) and cp.wire_value() == list(value)[:3]  # type: ignore[call-overload]
    try:
        base, found = decode_hello_untrusted(value)
    except DecodeError:
        return
    assert len(base) == 3 and (found is None or isinstance(found, SignedCheckpoint))


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_value_decodes_to_a_checkpoint_or_a_decode_error(value: object) -> None:
    _decodes_or_refuses(value)
    _decodes_or_refuses([1, "handset", [], value])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_in_the_field_slot_decode_or_fail_cleanly(data: bytes) -> None:
    try:
        value = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.exceptions.UnpackException):
        return                  # not msgpack at all: the envelope decoder refuses it
    _decodes_or_refuses([1, "handset", [], value])


def test_a_checkpoint_of_impossible_values_is_refused_at_the_source() -> None:
    for args in ((0, HEAD, SIG), (1, HEAD[:5], SIG), (1, HEAD, SIG[:5]), (True, HEAD, SIG)):
        with pytest.raises(LocalProtocolError):
            SignedCheckpoint(*args)   # type: ignore[arg-type]


# ------------------------------------------------------------------ beacon
def test_the_checkpoint_rides_when_it_changed_and_on_every_nth_hello() -> None:
    beacon = CheckpointBeacon()
    assert [beacon.for_hello() for _ in range(3)] == [None] * 3     # nothing to say yet
    first = SignedCheckpoint(5, HEAD, SIG)
    beacon.set(first)
    carried = [beacon.for_hello() for _ in range(3 * CHECKPOINT_EVERY_HELLOS)]
    assert [i for i, c in enumerate(carried) if c is not None] == [
        0, CHECKPOINT_EVERY_HELLOS, 2 * CHECKPOINT_EVERY_HELLOS]
    second = SignedCheckpoint(9, HEAD[::-1], SIG)
    beacon.set(second)
    assert beacon.for_hello() == second                          # at once when it changed
    assert beacon.for_hello() is None


# ------------------------------------------------------------------ table
def test_the_table_journals_moved_heads_at_most_once_per_interval() -> None:
    table = WitnessTable(0.0, interval_s=60.0)
    node, a, b = b"n" * 32, SignedCheckpoint(5, HEAD, SIG), SignedCheckpoint(9, HEAD[::-1], SIG)
    assert table.offer(node, a, 0.0) is Heard.JOURNAL
    table.witnessed(node, a, 0.0)
    assert table.offer(node, a, 1.0) is Heard.UNCHANGED
    assert table.offer(node, b, 30.0) is Heard.TOO_SOON
    assert table.offer(node, b, 60.0) is Heard.JOURNAL
    table.witnessed(node, b, 60.0)
    assert table.offer(node, a, 200.0) is Heard.JOURNAL      # moved back (a fork?): again


def test_a_flood_of_identities_cannot_push_out_neighbours_heard_regularly() -> None:
    """Sybils are admitted at WITNESS_ADMIT_PER_S; an honest neighbour heard every 20 s
    keeps its place, the table stays bounded, and the journal grows at the admission rate."""
    table = WitnessTable(0.0, max_nodes=64)
    honest = [bytes([1, i]) * 16 for i in range(8)]
    cp = SignedCheckpoint(5, HEAD, SIG)
    for node in honest:
        table.witnessed(node, cp, 0.0)
    journaled = 0
    now = 0.0
    for i in range(20_000):                     # 100 fresh identities a second for 200 s
        now = i / 100.0
        sybil = i.to_bytes(32, "big")
        if table.offer(sybil, cp, now) is Heard.JOURNAL:
            table.witnessed(sybil, cp, now)
            journaled += 1
        if i % 2_000 == 0:                      # every 20 s each honest node says hello
            for node in honest:
                assert table.offer(node, cp, now) is Heard.UNCHANGED
    assert len(table) <= 64
    assert journaled <= WITNESS_ADMIT_BURST + now * 1.0 + 1
    for node in honest:
        assert table.offer(node, cp, now) is Heard.UNCHANGED     # still remembered


# ------------------------------------------------------------------ two nodes
#: Fixed HELLOs (Trickle off): these tests count the 1-in-N cadence of the checkpoint over
#: HELLOs; with Trickle a quiet pair sends few HELLOs (see tests/overlay/test_trickle.py).
FAST = OverlayConfig(hello_interval_s=1.0, neighbour_timeout_s=3.5, trickle=False)


class Pair:
    """Two whole MeshNodes that hear each other (time stepped by hand)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.ids = [Identity(hashlib.sha256(f"witness-{i}".encode()).digest())
                    for i in range(2)]
        self.nodes = [MeshNode(ident, NodeSettings(overlay=FAST), verifier=SignatureVerifier(),
                               rng=random.Random(i), now=0.0)
                      for i, ident in enumerate(self.ids)]
        self.records: list[list[JournalRecord]] = [[], []]
        self.hello_sizes: list[int] = []

    def run_until(self, until: float) -> None:
        while True:
            due = [t for n in self.nodes if (t := n.next_timer()) is not None]
            if not due or min(due) > until:
                break
            self.now = max(self.now, min(due))
            for n in self.nodes:
                t = n.next_timer()
                if t is not None and t <= self.now:
                    n.on_timer(self.now)
            self._exchange()
        self.now = until

    def _exchange(self) -> None:
        moved = True
        while moved:
            moved = False
            for i, node in enumerate(self.nodes):
                for dgram in node.to_send(self.now):
                    moved = True
                    if parse_frame_untrusted(dgram.data)[0].msg_type is MsgType.HELLO and i == 1:
                        self.hello_sizes.append(len(dgram.data))
                    self.nodes[1 - i].receive(dgram.data, LinkAddr(f"n{i}"), self.now)
            for i, node in enumerate(self.nodes):
                while (event := node.next_event()) is not None:
                    if isinstance(event, JournalRecord):
                        self.records[i].append(event)

    def witnessed(self, i: int = 0) -> list[dict[str, object]]:
        return [dict(r.data) for r in self.records[i] if r.type is J.WITNESSED]

    def checkpoint_of(self, i: int, entries: int) -> tuple[int, bytes, bytes]:
        """A real journal chain of node ``i`` with ``entries`` entries, and its checkpoint."""
        chain = JournalChain(self.ids[i].node_id)
        for n in range(entries):
            chain.append(J.NODE_STARTED, {"n": n}, float(n), float(n))
        data = chain.checkpoint_data(self.ids[i].sign)
        return (int(data["head_seq"]), bytes(data["head_hash"]),   # type: ignore[call-overload]
                bytes(data["signature"]))                           # type: ignore[arg-type]


def test_a_neighbours_checkpoint_is_witnessed_once_per_moved_head() -> None:
    pair = Pair()
    pair.run_until(5.0)
    assert pair.witnessed() == []                  # no checkpoint, none sent
    bare = max(pair.hello_sizes)
    seq, head, sig = pair.checkpoint_of(1, 4)
    pair.nodes[1].journal_checkpointed(seq, head, sig)
    pair.run_until(40.0)
    (heard,) = pair.witnessed()
    sent_wall = heard.pop("sent_wall")     # node 1's clock when it sealed that HELLO
    assert heard == {"node": pair.ids[1].node_id.hex(), "seq": 4, "head": head.hex(),
                     "sig": sig.hex()}
    assert isinstance(sent_wall, float) and 5.0 <= sent_wall <= 40.0
    assert checkpoint_message(pair.ids[1].node_id, 4, head)       # what sig covers
    record = next(r for r in pair.records[0] if r.type is J.WITNESSED)
    assert isinstance(record.payload, JournalWitnessed)
    counters = pair.nodes[0].counters
    assert counters["witness_journaled"] == 1 and counters["witness_unchanged"] >= 2
    carried = pair.nodes[1].counters["tx_hello_checkpoint"]
    hellos = pair.nodes[1].counters["tx_hello"]
    assert 3 <= carried <= hellos // CHECKPOINT_EVERY_HELLOS + 2      # airtime: 1 in N
    assert max(pair.hello_sizes) - bare <= CHECKPOINT_FIELD_BYTES + 2
    # a new checkpoint within the interval waits; after it, it is journaled
    seq2, head2, sig2 = pair.checkpoint_of(1, 9)
    pair.nodes[1].journal_checkpointed(seq2, head2, sig2)
    pair.run_until(41.5)
    assert len(pair.witnessed()) == 1 and counters["witness_too_soon"] == 1
    pair.run_until(5.0 + WITNESS_INTERVAL_S + 30.0)
    assert [w["seq"] for w in pair.witnessed()] == [4, 9]
    assert pair.witnessed()[1]["head"] == head2.hex()


def test_a_checkpoint_signed_by_another_key_is_not_witnessed() -> None:
    pair = Pair()
    pair.run_until(3.0)
    mallory = Identity(b"m" * 32)
    head = hashlib.sha256(b"forged").digest()
    forged = mallory.sign(checkpoint_message(pair.ids[1].node_id, 4, head))
    pair.nodes[1].journal_checkpointed(4, head, forged)   # n1 relays a checkpoint it did not sign
    pair.run_until(10.0)
    assert pair.witnessed() == []
    assert pair.nodes[0].counters["witness_bad_signature"] >= 1
    assert pair.nodes[0].counters["witness_journaled"] == 0


def test_an_old_hello_without_the_field_is_still_a_neighbour_and_no_witness() -> None:
    pair = Pair()
    old = Identity(b"o" * 32)
    env = seal(old, MsgType.HELLO, "default", 1, [1, "handset", []])
    pair.nodes[0].receive(encode_frame(env, Hop()), LinkAddr("old"), 0.5)
    assert old.node_id in pair.nodes[0].overlay.neighbours.by_id
    assert pair.nodes[0].counters["drop_malformed"] == 0
    bad = seal(old, MsgType.HELLO, "default", 2, [2, "handset", [], [4, HEAD]])
    pair.nodes[0].receive(encode_frame(bad, Hop()), LinkAddr("old"), 0.6)
    assert pair.nodes[0].counters["drop_malformed"] == 1


def test_the_witness_interval_is_a_validated_setting() -> None:
    assert OverlayConfig().witness_interval_s == WITNESS_INTERVAL_S
    assert ("witness_interval_s", "must be in [0, 86400]") in OverlayConfig(
        witness_interval_s=-1.0).validate()
    assert OverlayConfig(witness_interval_s=0.0).validate() == []
