"""Per-hop acks by link MAC (issue 13): standalone, piggybacked, carriers, forgeries.

Two overlays are wired back to back (link addresses "a" and "b") and time is stepped by
hand; a test may drop chosen frames on the way.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from meshcomm.location.table import LocationTable, TrustPolicy
from meshcomm.overlay.acks import MAX_OWED_LINKS, LinkKeys
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.core import GossipOverlay
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import (
    LINK_ACK_MARKER,
    MsgType,
    decode_link_ack_untrusted,
    encode_link_ack,
    parse_frame_untrusted,
)
from meshcomm.wire.limits import ACK_ID_LEN, LINK_MAC_LEN

INCIDENT = "default"
REQUEST, RESPONSE = 7, 8
A, B = LinkAddr("a"), LinkAddr("b")
#: A frame on the wire: (time, from, to, bytes)
Sent = tuple[float, str, str, bytes]


def _overlay(seed: int, config: OverlayConfig) -> GossipOverlay:
    verifier = SignatureVerifier()
    table = LocationTable(INCIDENT, TrustPolicy(), verifier)
    return GossipOverlay(Identity(bytes([seed]) * 32), INCIDENT, config, table, verifier,
                         random.Random(seed), now=0.0)


class Pair:
    """Overlays "a" and "b", each the other's only neighbour."""

    def __init__(self, config: OverlayConfig | None = None) -> None:
        config = config or OverlayConfig()
        self.now = 0.0
        self.nodes = {"a": _overlay(1, config), "b": _overlay(2, config)}
        self.sent: list[Sent] = []
        self.delivered: dict[str, list[UnicastReceived]] = {"a": [], "b": []}
        #: drop(time, src, dst, data) -> True to lose that frame
        self.drop: Callable[[float, str, str, bytes], bool] = lambda *_: False
        #: b answers a REQUEST after this long (None: never)
        self.answer_after_s: float | None = None
        self._answers: list[float] = []
        #: a node reads nothing until then (a busy CPU): frames to it wait, in order
        self.busy_until = {"a": 0.0, "b": 0.0}
        self._held: list[tuple[str, str, bytes]] = []
        self.run_until(5.0)                       # HELLOs: each knows the other

    def other(self, name: str) -> str:
        return "b" if name == "a" else "a"

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for name, node in self.nodes.items():
                for dgram in node.to_send(self.now):
                    moved = True
                    dst = self.other(name)
                    self.sent.append((self.now, name, dgram.dst or dst, dgram.data))
                    if dgram.dst in (None, dst) and not self.drop(self.now, name, dst,
                                                                  dgram.data):
                        self._arrive(name, dst, dgram.data)
                while (event := node.next_event()) is not None:
                    if isinstance(event, UnicastReceived):
                        self._delivered(name, event)

    def _arrive(self, src: str, dst: str, data: bytes) -> None:
        if self.now < self.busy_until[dst]:
            self._held.append((src, dst, data))
        else:
            self.nodes[dst].receive(data, LinkAddr(src), self.now)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for src, dst, data in held:
            self._arrive(src, dst, data)

    def _delivered(self, name: str, event: UnicastReceived) -> None:
        self.delivered[name].append(event)
        if name == "b" and event.kind == REQUEST and self.answer_after_s is not None:
            if self.answer_after_s <= 0:
                self.respond()
            else:
                self._answers.append(self.now + self.answer_after_s)

    def respond(self) -> None:
        self.nodes["b"].forwarder.send(self.nodes["a"].node_id, RESPONSE, b"200 OK",
                                       self.now)

    def run_until(self, until: float) -> None:
        self.pump()
        while True:
            times = [t for t in (n.next_timer() for n in self.nodes.values()) if t is not None]
            times += self._answers
            times += [self.busy_until[dst] for _, dst, _ in self._held]
            nxt = min(times, default=None)
            if nxt is None or nxt > until:
                break
            self.now = max(self.now, nxt)
            self._release_held()
            if self._answers and min(self._answers) <= self.now:
                self._answers.remove(min(self._answers))
                self.respond()
            for node in self.nodes.values():
                node.on_timer(self.now)
            self.pump()
        self.now = until

    def request(self, body: bytes = b"MESSAGE") -> bytes:
        env = self.nodes["a"].forwarder.send(self.nodes["b"].node_id, REQUEST, body,
                                             self.now)
        self.pump()
        return env

    def count(self, name: str, counter: str) -> int:
        return self.nodes[name].counters[counter]

    def frames(self, src: str, since: float = 0.0) -> list[bytes]:
        return [data for t, s, _, data in self.sent if s == src and t >= since]


def _link_acks(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[:1] == LINK_ACK_MARKER]


def _unicasts(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[:1] != LINK_ACK_MARKER
            and parse_frame_untrusted(f)[0].msg_type is MsgType.UNICAST]


def test_an_ack_is_a_15_byte_link_frame_sent_after_the_ack_delay() -> None:
    pair = Pair()
    start = pair.now
    pair.request()
    pair.run_until(start + 1.0)
    acks = _link_acks(pair.frames("b", start))
    assert len(acks) == 1 and len(acks[0]) == 1 + ACK_ID_LEN + LINK_MAC_LEN == 15
    sent_at = next(t for t, s, _, d in pair.sent if s == "b" and d == acks[0])
    assert abs(sent_at - start - OverlayConfig().ack_delay_s) < 1e-9
    assert pair.count("a", "unicast_acked") == 1
    assert pair.count("a", "unicast_retransmits") == 0
    assert pair.count("b", "acks_signed") == 0
    assert pair.nodes["a"].forwarder.awaiting_ack == 0


def test_acks_of_several_frames_share_one_frame() -> None:
    pair = Pair()
    start = pair.now
    for i in range(5):
        pair.request(b"m%d" % i)
    pair.run_until(start + 1.0)
    acks = _link_acks(pair.frames("b", start))
    assert len(acks) == 1
    ids, _ = decode_link_ack_untrusted(acks[0])
    assert len(ids) == 5 * ACK_ID_LEN
    assert pair.count("a", "unicast_acked") == 5


def test_the_request_ack_rides_on_the_response_which_needs_no_ack() -> None:
    pair = Pair()
    pair.answer_after_s = 0.0
    start = pair.now
    pair.request()
    pair.run_until(start + 2.0)
    assert _link_acks(pair.frames("a", start) + pair.frames("b", start)) == []
    (response,) = _unicasts(pair.frames("b", start))
    _, hop = parse_frame_untrusted(response)
    assert len(hop.acks) == ACK_ID_LEN and len(hop.mac) == LINK_MAC_LEN
    assert pair.count("b", "unicast_carriers") == 1
    assert pair.count("a", "unicast_acked") == 1
    assert [ev.kind for ev in pair.delivered["a"]] == [RESPONSE]
    # two frames in all: the request and the response
    assert len(_unicasts(pair.frames("a", start) + pair.frames("b", start))) == 2
    assert pair.nodes["b"].forwarder.awaiting_ack == 0


def _lose_first_frame_from(pair: Pair, sender: str) -> list[bytes]:
    """Make the link lose the first envelope frame (not a link ack) ``sender`` sends from
    now on; the list it returns holds that frame once it is lost."""
    lost: list[bytes] = []

    def lose(_t: float, src: str, _dst: str, data: bytes) -> bool:
        if src == sender and not lost and data[:1] != LINK_ACK_MARKER:
            lost.append(data)
            return True
        return False
    pair.drop = lose
    return lost


def test_a_lost_carrier_is_sent_again_when_the_request_comes_again() -> None:
    pair = Pair()
    pair.answer_after_s = 0.0
    lost = _lose_first_frame_from(pair, "b")
    start = pair.now
    pair.request()
    pair.run_until(start + 3.0)
    assert lost
    assert pair.count("a", "unicast_retransmits") == 1
    assert pair.count("b", "unicast_carriers_resent") == 1
    assert [ev.kind for ev in pair.delivered["a"]] == [RESPONSE]      # once
    assert [ev.kind for ev in pair.delivered["b"]] == [REQUEST]       # once
    assert pair.nodes["a"].forwarder.awaiting_ack == 0
    assert _link_acks(pair.frames("b", start)) == []


def test_a_late_response_after_the_standalone_ack_is_acked_itself() -> None:
    pair = Pair()
    pair.answer_after_s = 0.05                    # after the 10 ms ack delay
    start = pair.now
    pair.request()
    pair.run_until(start + 2.0)
    assert len(_link_acks(pair.frames("b", start))) == 1    # the request's
    assert len(_link_acks(pair.frames("a", start))) == 1    # the response's
    assert pair.count("b", "unicast_carriers") == 0
    assert pair.nodes["a"].forwarder.awaiting_ack == 0
    assert pair.nodes["b"].forwarder.awaiting_ack == 0


def test_a_carrier_lost_every_time_fails_like_a_lost_ack() -> None:
    """Every response lost: the request is retried its budget, then given up (scoped
    flood), as when every ack is lost; nothing is delivered twice."""
    pair = Pair()
    pair.answer_after_s = 0.0
    pair.drop = lambda _t, src, _d, data: src == "b" and data[:1] != LINK_ACK_MARKER
    start = pair.now
    pair.request()
    pair.run_until(start + 10.0)
    cfg = OverlayConfig()
    assert pair.count("a", "unicast_retransmits") >= cfg.max_retransmits
    assert pair.count("a", "unicast_next_hop_failed") == 1
    assert [ev.kind for ev in pair.delivered["b"]] == [REQUEST]
    assert pair.delivered["a"] == []


def test_a_forged_ack_is_dropped_and_counted_and_the_frame_retransmitted() -> None:
    pair = Pair()
    pair.drop = lambda _t, src, _d, data: src == "b" and data[:1] == LINK_ACK_MARKER
    env = pair.request()
    node_a = pair.nodes["a"]
    forged = encode_link_ack(env[:ACK_ID_LEN], b"\x00" * LINK_MAC_LEN)
    node_a.receive(forged, B, pair.now)
    node_a.receive(forged, LinkAddr("stranger"), pair.now)     # no link key at all
    assert pair.count("a", "drop_forged_ack") == 2
    assert node_a.forwarder.awaiting_ack == 1
    pair.run_until(pair.now + 0.5)
    assert pair.count("a", "unicast_retransmits") >= 1


def test_an_ack_reflected_to_its_sender_or_replayed_does_nothing() -> None:
    pair = Pair()
    start = pair.now
    pair.request()
    pair.run_until(start + 1.0)
    (ack,) = _link_acks(pair.frames("b", start))
    # b's ack reflected back to b as if a had sent it: the MAC's direction is wrong
    pair.nodes["b"].receive(ack, A, pair.now)
    assert pair.count("b", "drop_forged_ack") == 1
    # replayed to a, later, while another frame waits: it acks only what it named
    pair.drop = lambda _t, src, _d, data: src == "b"
    pair.request(b"second")
    pair.nodes["a"].receive(ack, B, pair.now)
    assert pair.nodes["a"].forwarder.awaiting_ack == 1
    assert pair.count("a", "unicast_acked") == 1
    assert pair.count("a", "drop_forged_ack") == 0


def test_a_flood_of_acks_changes_nothing_and_is_counted() -> None:
    pair = Pair()
    pair.drop = lambda _t, src, _d, data: src == "b"
    pair.request()
    node_a = pair.nodes["a"]
    rng = random.Random(7)
    for i in range(20_000):
        n = rng.randint(0, 20)
        frame = LINK_ACK_MARKER + rng.randbytes(n * ACK_ID_LEN + rng.choice((0, 3, 8)))
        node_a.receive(frame, B if i % 2 else LinkAddr(f"x:{i}"), pair.now + i * 1e-4)
    assert node_a.forwarder.awaiting_ack == 1
    dropped = sum(node_a.counters[c] for c in ("drop_forged_ack", "drop_rate_limited",
                                               "drop_truncated", "drop_oversized",
                                               "drop_malformed"))
    assert dropped == 20_000
    assert node_a.counters["drop_forged_ack"] > 0
    assert len(node_a.acks) == 0 and node_a.acks.carriers == 0


def test_owed_acks_are_bounded_per_node() -> None:
    pair = Pair()
    node_b = pair.nodes["b"]
    key = pair.nodes["a"].identity.public_key
    for i in range(MAX_OWED_LINKS + 50):
        node_b.acks.owe(LinkAddr(f"n{i}"), key, bytes(ACK_ID_LEN), pair.now, at_once=False)
    assert len(node_b.acks) == MAX_OWED_LINKS
    assert node_b.counters["ack_ids_standalone"] == 50      # beyond the bound: at once
    pair.run_until(pair.now + 1.0)
    assert len(node_b.acks) == 0


def test_without_a_link_key_the_ack_is_a_signed_envelope() -> None:
    """b has not heard a's HELLO (here: forgot it): it acks with a signed envelope,
    which a accepts as before."""
    pair = Pair(dataclasses.replace(OverlayConfig(), hello_interval_s=50.0,
                                    neighbour_timeout_s=100.0))
    node_b = pair.nodes["b"]
    nb = node_b.neighbours.get(A)
    assert nb is not None
    node_b.neighbours.remove(nb)
    pair.request()
    pair.run_until(pair.now + 1.0)
    assert pair.count("b", "acks_signed") == 1
    assert pair.count("a", "unicast_acked") == 1


def test_link_keys_agree_per_direction_and_incident_only() -> None:
    ids = b"\x01" * ACK_ID_LEN
    one, two, three = (Identity(bytes([i]) * 32) for i in (1, 2, 3))
    k1, k2, k3 = (LinkKeys(i, INCIDENT) for i in (one, two, three))
    mac = k1.mac_out(two.public_key, ids)
    assert mac is not None and len(mac) == LINK_MAC_LEN
    assert k2.check_in(one.public_key, ids, mac)
    assert not k2.check_in(one.public_key, b"\x02" * ACK_ID_LEN, mac)
    assert not k1.check_in(two.public_key, ids, mac)          # reflected
    assert not k3.check_in(one.public_key, ids, mac)          # another node
    other = LinkKeys(two, "other-incident")
    assert not other.check_in(one.public_key, ids, mac)
    assert not k1.usable(b"\x00" * 32) or k1.mac_out(b"\x00" * 32, ids) is not None
    assert not k1.usable(b"\xff" * 32)                      # not a curve point
    assert not k1.usable(one.public_key)                    # no link to oneself
    assert k1.usable(two.public_key)


def _repair_after_a_busy_start(clean_frame_between: bool) -> float:
    """b's CPU is busy for 1.5 s when a's first frame on the link arrives; later a frame
    from a is lost once: how long until its retransmission."""
    cfg = OverlayConfig()
    pair = Pair()
    start = pair.now
    pair.busy_until["b"] = start + 1.5
    pair.request(b"first")
    pair.run_until(start + 2.0)
    assert pair.count("a", "unicast_acked") == 1
    if clean_frame_between:
        pair.request(b"clean")
        pair.run_until(start + 2.5)
    else:
        pair.run_until(start + 2.0 + cfg.rto_window_s + 0.1)
    lost = _lose_first_frame_from(pair, "a")
    pair.request(b"lost once")
    pair.run_until(pair.now + 1.0)
    assert pair.count("a", "unicast_acked") == 2 + clean_frame_between
    # (the retransmission carries the origin's key, the first copy may name it by short
    # id: the same envelope is recognised by its signature)
    sig = parse_frame_untrusted(lost[0])[0].signature
    first, again = (t for t, s, _, d in pair.sent if s == "a" and d[:1] != LINK_ACK_MARKER
                    and parse_frame_untrusted(d)[0].signature == sig)
    return again - first


@pytest.mark.parametrize("clean_frame_between", [True, False])
def test_a_busy_cpu_at_the_first_frame_does_not_slow_later_repairs(
        clean_frame_between: bool) -> None:
    """The CI failure (480 on a call): b's CPU was busy when a's first frame on the link
    arrived, its ack came 1.5 s late, and that one round trip held the link's timeout at
    seconds for minutes. Now the next frame acked without loss brings the timeout back
    to milliseconds; if none comes, after the round-trip window (5 s) it is at most the
    initial one (plus the ack delay): a frame lost then costs milliseconds, or 160 ms."""
    cfg = OverlayConfig()
    limit = 0.05 if clean_frame_between else cfg.ack_timeout_s + cfg.ack_delay_s
    assert _repair_after_a_busy_start(clean_frame_between) <= limit + 1e-9
