"""A call's media across a lossy 4-hop simulated chain: 10 s of 20-ms PCMU RTP each way.

Whole nodes in the simulator (gateway, store-and-forward, media relay, driven by the one
pump) on a 5-node chain, 10% loss per link. n0's simulated client calls n4's through the
real gateways (INVITE with a PCMU-only SDP offer, 200 with the answer, ACK; both gateways'
media hooks rewrite the SDP and key the call), then each client sends 500 RTP packets of
sine-wave PCMU to its gateway's call port; the node's relay carries them across the mesh as
authenticated MEDIA frames to the far relay, which hands them to the far client. The caller
hangs up (BYE). Loss and the delay the mesh adds are measured in virtual time, from the
client's send to the far client's receipt.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaRelay
from meshcomm.media.session import ClientPacket
from meshcomm.sim.clients import (
    CLIENT_ADDR,
    CLIENT_FIRST_RTP_PORT,
    CallRecord,
    ClientMedia,
    Direction,
)
from meshcomm.sim.engine import Simulator
from meshcomm.sim.metrics import SimCounter
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.sim.traffic import TrafficEvent, TrafficKind
from meshcomm.sip.sdp import AudioCodec, AudioPolicy
from tests.media.helpers import rtp_packet

log = logging.getLogger(__name__)

START_S = 40.0            # the call is placed then (routes are laid by then)
PACKETS = 500             # 10 s of 20-ms packets
#: The caller hangs up this long after the call is established: after the last of the
#: 500 packets each way (the callee starts when the ACK reaches it), before the run ends.
CALL_S = 11.5
DURATION_S = START_S + CALL_S + 8.0
CALLER, CALLEE = "n0", "n4"
SENDER = {Direction.FORWARD: CALLER, Direction.BACKWARD: CALLEE}
RECEIVER = {Direction.FORWARD: CALLEE, Direction.BACKWARD: CALLER}
FREQ_HZ = {Direction.FORWARD: 440.0, Direction.BACKWARD: 660.0}
#: Each client's RTP port (its first call takes the first port).
CLIENT_RTP = (CLIENT_ADDR[0], CLIENT_FIRST_RTP_PORT)


def ssrc(call: CallRecord, direction: Direction) -> int:
    """The SSRC the simulated client counts a call's frames by (its module docstring)."""
    return 2 * call.key + direction.value


@dataclass
class Leg:
    """One direction of the call: what its client sent and what the far client got."""

    direction: Direction
    #: seq -> virtual time the sending client sent it
    sent_at: dict[int, float] = field(default_factory=dict)
    #: (seq, virtual time, packet) of every copy the far client received, in receipt order
    received: list[tuple[int, float, ClientPacket]] = field(default_factory=list)
    ssrc: int | None = None

    def first_copies(self) -> dict[int, tuple[float, bytes]]:
        out: dict[int, tuple[float, bytes]] = {}
        for seq, when, packet in self.received:
            out.setdefault(seq, (when, packet.data))
        return out


@dataclass
class CallTrace:
    """The per-packet record the test's media hooks keep."""

    legs: dict[Direction, Leg] = field(
        default_factory=lambda: {d: Leg(d) for d in Direction})

    def source(self, call: CallRecord, direction: Direction, seq: int,
               now: float) -> bytes | None:
        if seq > PACKETS:
            return None                                  # silence until the BYE
        leg = self.legs[direction]
        leg.ssrc = ssrc(call, direction)
        leg.sent_at[seq] = now
        return rtp_packet(seq, leg.ssrc, FREQ_HZ[direction])

    def tap(self, client: str, packet: ClientPacket, now: float) -> None:
        direction = Direction.FORWARD if client == CALLEE else Direction.BACKWARD
        seq = struct.unpack_from("!H", packet.data, 2)[0]
        self.legs[direction].received.append((seq, now, packet))


def relay(sim: Simulator, name: str) -> MediaRelay:
    core = sim.node_core(name)
    assert core is not None and core.relay is not None
    return core.relay


def run_call(seed: int, loss: float) -> tuple[CallTrace, Simulator, dict[str, object]]:
    call = TrafficEvent(START_S, TrafficKind.CALL, CALLER, CALLEE, CALL_S)
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=5, loss=loss,
                                              duration_s=DURATION_S, seed=seed,
                                              gateways=True),
                               traffic=([call], [])))
    trace = CallTrace()
    assert sim.incident is not None
    sim.incident.client_media = ClientMedia(policy=AudioPolicy(codecs=(AudioCodec.PCMU,)),
                                            source=trace.source, tap=trace.tap)
    result = sim.run()
    stats = sim.incident.stats
    assert stats.skipped == 0 and stats.stray_frames == 0
    assert list(stats.calls) == [0]
    record = stats.calls[0]
    assert record.established_at is not None and record.answered
    assert record.bye_status == 200                  # the BYE reached the callee's client
    assert sim.counters[SimCounter.MEDIA_WITHOUT_SESSION] == 0
    for name in (CALLER, CALLEE):
        counters = relay(sim, name).counters
        assert counters["calls_keyed"] == 1 and counters["calls_started"] == 1
        assert counters["calls_ended_hangup"] == 1 and not relay(sim, name).sessions
        assert counters["sdp_to_mesh"] == 1 and counters["sdp_to_client"] == 1
        assert sum(v for k, v in counters.items() if k.startswith("drop_")) == 0
    return trace, sim, result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_ten_seconds_of_rtp_each_way_over_four_lossy_hops() -> None:
    trace, sim, result = run_call(seed=5, loss=0.1)
    for direction, leg in trace.legs.items():
        assert sorted(leg.sent_at) == list(range(1, PACKETS + 1))
        assert leg.ssrc is not None
        assert all(p.dst == CLIENT_RTP and p.via is Channel.RTP for _, _, p in leg.received)
        received = leg.first_copies()
        assert len(received) == len(leg.received)                # exactly once
        for seq, (_, data) in received.items():                    # audio bit-exact
            assert data == rtp_packet(seq, leg.ssrc, FREQ_HZ[direction])
        delays = [when - leg.sent_at[seq] for seq, (when, _) in received.items()]
        loss = 1 - len(received) / PACKETS
        p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
        log.info("%s->%s over 4 hops at 10%% link loss: loss %.1f%%, added delay p50 %.1f ms "
                 "p95 %.1f ms max %.1f ms", SENDER[direction], RECEIVER[direction],
                 100 * loss, 1000 * p50, 1000 * p95, 1000 * max(delays))
        assert loss <= 0.03
        assert p95 <= 0.15
    calls = result["calls"]
    assert isinstance(calls, dict)
    assert calls["established"] == calls["media_both_ways"] == 1
    assert calls["media_frames_sent"] == 2 * PACKETS
    assert calls["media_frames_received"] == sum(len(leg.received)
                                                 for leg in trace.legs.values())
    assert media_retransmits(sim) > 0                        # the loss was real


def media_retransmits(sim: Simulator) -> int:
    total = 0
    for name in sim.node_names():
        node = sim.core(name)
        assert node is not None
        total += node.counters["media_retransmits"]
    return total


def test_lossless_chain_delivers_every_packet_in_order() -> None:
    trace, sim, _ = run_call(seed=2, loss=0.0)
    for direction, leg in trace.legs.items():
        assert leg.ssrc is not None
        # every packet, once, in order (the tap sees them in virtual-time order), bit-exact
        assert [seq for seq, _, _ in leg.received] == list(range(1, PACKETS + 1))
        assert all(p.data == rtp_packet(seq, leg.ssrc, FREQ_HZ[direction])
                   for seq, _, p in leg.received)
    assert media_retransmits(sim) == 0
