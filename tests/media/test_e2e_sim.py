"""A call's media across a lossy 4-hop simulated chain: 10 s of 20-ms PCMU RTP each way.

Two real MeshNodes at the ends of a 5-node chain (10% loss per link) in the simulator, a
MediaRelay at each end; the clients' SDP passes both gateways' hooks, then each client
sends 500 RTP packets (sine-wave PCMU) that cross the mesh as authenticated MEDIA frames.
Loss and the delay the mesh adds are measured in virtual time.
"""

from __future__ import annotations

import functools
import logging
import random
import struct
from dataclasses import dataclass, field

from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaRelay, SequentialPortAllocator
from meshcomm.node.mesh import MeshNode
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from tests.media.helpers import PACKET_INTERVAL_S, client_sdp, rtp_packet, set_up_call

log = logging.getLogger(__name__)

CALL = "sim-call@mesh"
START_S = 40.0            # routes are laid by then
PACKETS = 500             # 10 s of 20-ms packets
CLIENT_ADDR = {"n0": ("127.0.0.1", 40000), "n4": ("127.0.0.1", 50000)}
SSRC = {"n0": 0xA0A0A0A0, "n4": 0xB0B0B0B0}
FREQ_HZ = {"n0": 440.0, "n4": 660.0}


@dataclass
class Leg:
    name: str
    relay: MediaRelay
    sent_at: dict[int, float] = field(default_factory=dict)
    #: seq -> (arrival time, packet) of what this end's client received
    received: dict[int, tuple[float, bytes]] = field(default_factory=dict)


def core(sim: Simulator, name: str) -> MeshNode:
    node = sim.core(name)
    assert isinstance(node, MeshNode)
    return node


def run_call(seed: int, loss: float) -> tuple[dict[str, Leg], Simulator]:
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=5, loss=loss,
                                              duration_s=START_S + 12, seed=seed)))
    legs: dict[str, Leg] = {}

    def set_up(s: Simulator) -> None:
        for name, port in (("n0", 30000), ("n4", 31000)):
            relay = MediaRelay(core(s, name).identity,
                               SequentialPortAllocator("127.0.0.1", port, port + 100),
                               random.Random(seed))
            legs[name] = Leg(name, relay)
        set_up_call(legs["n0"].relay, legs["n4"].relay, CALL, client_sdp(*CLIENT_ADDR["n0"]),
                    client_sdp(*CLIENT_ADDR["n4"]), s.now)

    def speak(s: Simulator, seq: int) -> None:
        for src, dst in (("n0", "n4"), ("n4", "n0")):
            leg = legs[src]
            out = leg.relay.from_client(CALL, 0, Channel.RTP,
                                        rtp_packet(seq, SSRC[src], FREQ_HZ[src]), s.now)
            assert out is not None and out.dst_node == core(s, dst).node_id
            leg.sent_at[seq] = s.now
            core(s, src).send_media(out.dst_node, out.stream, out.payload, s.now)
            s.after_command(src)

    sim.call_at(START_S - 0.5, set_up)
    for seq in range(PACKETS):
        sim.call_at(START_S + seq * PACKET_INTERVAL_S, functools.partial(speak, seq=seq))
    sim.run()
    for when, name, event in sim.media:
        leg = legs[name]
        pkt = leg.relay.from_mesh(event.origin, event.stream, event.payload, when)
        assert pkt is not None and pkt.dst == CLIENT_ADDR[name] and pkt.via is Channel.RTP
        seq = struct.unpack("!H", pkt.data[2:4])[0]
        assert seq not in leg.received                       # exactly once
        leg.received[seq] = (when, pkt.data)
    return legs, sim


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_ten_seconds_of_rtp_each_way_over_four_lossy_hops() -> None:
    legs, sim = run_call(seed=5, loss=0.1)
    for src, dst in (("n0", "n4"), ("n4", "n0")):
        sender, receiver = legs[src], legs[dst]
        assert len(sender.sent_at) == PACKETS
        for seq, (_, data) in receiver.received.items():          # audio bit-exact
            assert data == rtp_packet(seq, SSRC[src], FREQ_HZ[src])
        delays = [when - sender.sent_at[seq] for seq, (when, _) in receiver.received.items()]
        loss = 1 - len(receiver.received) / PACKETS
        p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
        log.info("%s->%s over 4 hops at 10%% link loss: loss %.1f%%, added delay p50 %.1f ms "
                 "p95 %.1f ms max %.1f ms", src, dst, 100 * loss, 1000 * p50, 1000 * p95,
                 1000 * max(delays))
        assert loss <= 0.03
        assert p95 <= 0.15
        counters = receiver.relay.sessions[CALL].counters
        assert sum(v for k, v in counters.items() if k.startswith("drop_")) == 0
    retransmits = sum(core(sim, n).counters["media_retransmits"] for n in sim.node_names())
    assert retransmits > 0                                   # the loss was real


def test_lossless_chain_delivers_every_packet_in_order() -> None:
    legs, _ = run_call(seed=2, loss=0.0)
    for name in ("n0", "n4"):
        received = legs[name].received
        assert sorted(received) == list(range(PACKETS))
        arrival = [received[seq][0] for seq in range(PACKETS)]
        assert arrival == sorted(arrival)
