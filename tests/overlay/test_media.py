"""Media frames: route-forwarded without signatures, per-hop ARQ, own rate budget."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.overlay.media import (
    MAX_MEDIA_PAYLOAD_BYTES,
    MediaAck,
    MediaFrame,
    decode_media_untrusted,
)
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from meshcomm.wire import codec

STREAM = b"S" * 8


def chain(loss: float, seed: int = 1, nodes: int = 5) -> Simulator:
    return Simulator(sim_config(ScenarioParams(topology="chain", nodes=nodes, loss=loss,
                                               duration_s=60, seed=seed)))


def stream_packets(sim: Simulator, src: str, dst: str, count: int, start: float = 40.0,
                   interval: float = 0.02) -> None:
    for i in range(count):
        def go(s: Simulator, i: int = i) -> None:
            a, b = s.core(src), s.core(dst)
            assert a is not None and b is not None
            a.send_media(b.node_id, STREAM, i.to_bytes(4, "big") + b"\x55" * 160, s.now)
            s.after_command(src)
        sim.call_at(start + i * interval, go)


def test_media_crosses_four_hops_in_order_and_once() -> None:
    sim = chain(loss=0.0)
    stream_packets(sim, "n0", "n4", 100)
    sim.run()
    got = [int.from_bytes(ev.payload[:4], "big") for _, name, ev in sim.media if name == "n4"]
    assert got == list(range(100))
    assert {ev.hops for _, _, ev in sim.media} == {4}
    assert all(ev.origin == sim.core("n0").node_id for _, _, ev in sim.media)  # type: ignore[union-attr]


def test_per_hop_arq_hides_most_of_10pct_link_loss() -> None:
    # 4 hops at 10% loss lose 1 - 0.9**4 = 34% end to end without ARQ; with it, <2%.
    sim = chain(loss=0.1, seed=4)
    stream_packets(sim, "n0", "n4", 500)
    sim.run()
    got = {int.from_bytes(ev.payload[:4], "big") for _, name, ev in sim.media if name == "n4"}
    assert len(got) >= 490
    retrans = sum(sim.core(n).counters["media_retransmits"] for n in sim.node_names())  # type: ignore[union-attr]
    assert retrans > 50


def test_no_route_is_counted_not_flooded() -> None:
    sim = chain(loss=0.0)
    sim.run()
    core = sim.core("n0")
    assert core is not None
    core.send_media(b"\x01" * 32, STREAM, b"x", sim.now)
    assert core.counters["media_no_route"] == 1
    assert core.to_send(sim.now) == []


def test_garbage_media_frames_are_dropped_and_counted() -> None:
    sim = chain(loss=0.0)
    sim.run()
    core = sim.core("n1")
    assert core is not None
    bad = [b"\x96\xc1", b"\x92\x02\xc4\x01x", codec.pack([1, b"x", b"y", b"z", 1, b""]),
           codec.pack([9, b"a" * 8]), b"\x96"]
    for frame in bad:
        core.receive(frame, LinkAddr("n0"), sim.now)
    dropped = sum(v for k, v in core.counters.items() if k.startswith("drop_media"))
    assert dropped == len(bad)


def test_media_has_its_own_rate_budget() -> None:
    sim = chain(loss=0.0)
    sim.run()
    core = sim.core("n1")
    assert core is not None
    n2 = sim.core("n2")
    assert n2 is not None
    frame = codec.pack([1, n2.node_id, b"\x07" * 32, STREAM, 5, b"p"])
    rng = random.Random(1)
    for i in range(3000):
        core.receive(frame[:-1] + bytes([rng.randrange(256)]) if i % 2 else frame,
                     LinkAddr("n0"), sim.now)
    assert core.counters["drop_media_rate_limited"] > 1000
    assert core.counters["drop_rate_limited"] == 0


@given(st.binary(max_size=1300))
def test_any_bytes_give_frame_or_decode_error(data: bytes) -> None:
    try:
        frame = decode_media_untrusted(data)
    except DecodeError:
        return
    assert isinstance(frame, (MediaFrame, MediaAck))


def test_oversized_payload_rejected() -> None:
    frame = codec.pack([1, b"a" * 32, b"b" * 32, STREAM, 3, b"x" * (MAX_MEDIA_PAYLOAD_BYTES + 1)])
    try:
        decode_media_untrusted(frame)
    except DecodeError:
        pass
    else:
        raise AssertionError("oversized media payload accepted")
