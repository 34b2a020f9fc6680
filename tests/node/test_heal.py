"""A returning route or neighbour retries held messages at once (issue 7 item 6): held
messages flow within 2 s of a heal, not after the retry backoff (up to 30 s): beside the
break a NEIGHBOUR_UP/ROUTE_CHANGED triggers the retry, away from it a probe answered after
silence does."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from meshcomm.node.sf_probe import MAX_PROBED_PER_ROUND, ReachProbes
from meshcomm.node.storeforward import HeldState, StoreForwardConfig
from meshcomm.sip.ua_events import IncomingMessage, RequestSucceeded
from meshcomm.types import NodeId
from tests.node.gateway_net import DOMAIN, attach_store_forward, registered
from tests.node.gateway_net import Net as GwNet

from .sf_net import Net, aor

SIP = b"MESSAGE sip:d@incident.test SIP/2.0\r\nContent-Length: 4\r\n\r\nheal"
MSG = b"heal-message-001"
#: The default backoff: a partition long enough to reach its cap.
CONFIG = StoreForwardConfig(poll_interval_s=1.0, retry_initial_s=2.0, retry_max_s=30.0)
HEAL_DEADLINE_S = 2.0
BOB = f"sip:bob@{DOMAIN}"
PARTITION_S = 60.0


def _delivered_after_heal(net: Net, holder: str, cut: tuple[str, str]) -> float:
    """Hold at ``holder`` while ``cut`` is down; heal it; seconds until d's client has it."""
    net.run_until(6.0)
    net.cut(*cut)
    net.run_for(3.0)                                    # the neighbour is gone on both sides
    net.hosts[holder].live_sf.hold(msg_id=MSG, from_aor=aor(holder), to_aor=aor("d"),
                                   sip=SIP, now=net.now)
    net.command(holder)
    net.run_for(PARTITION_S)                            # backoff at its 30 s cap
    assert net.hosts["d"].client == []
    healed_at = net.now
    net.heal(*cut)
    while not net.hosts["d"].client and net.now < healed_at + 40.0:
        net.run_for(0.1)
    assert [m.msg_id for m in net.hosts["d"].client] == [MSG]
    return net.now - healed_at


@pytest.mark.parametrize("seed_offset", [0, 7, 13])
def test_held_by_the_sender_flows_within_2s_of_the_heal(tmp_path: Path,
                                                        seed_offset: int) -> None:
    net = Net(tmp_path, {"o": "handset", "d": "handset"}, config=CONFIG)
    net.now = float(seed_offset)
    net.start("o")
    net.start("d")
    took = _delivered_after_heal(net, "o", ("o", "d"))
    assert took <= HEAL_DEADLINE_S, took
    assert net.hosts["o"].live_sf.counters["sf_heal_retries"] >= 1
    net.run_for(3.0)
    assert [s.state for s in net.hosts["o"].live_sf.outbox()] == [HeldState.DELIVERED]
    net.close()


def test_held_by_a_relay_beside_the_break_flows_within_2s_of_the_heal(tmp_path: Path) -> None:
    net = Net(tmp_path, {"o": "handset", "r": "relay", "d": "handset"},
              links=[("o", "r"), ("r", "d")], config=CONFIG)
    for name in ("o", "r", "d"):
        net.start(name)
    took = _delivered_after_heal(net, "o", ("r", "d"))
    assert net.hosts["r"].live_sf.counters["sf_custody_taken"] == 1
    assert took <= HEAL_DEADLINE_S, took
    net.close()


def test_held_away_from_the_break_flows_within_2s_of_the_heal(tmp_path: Path) -> None:
    """o -- h -- d, all handsets (no custody): the break h-d heals far from the holder o,
    which sees no neighbour or route change; its probes of d notice the heal."""
    net = Net(tmp_path, {"o": "handset", "h": "handset", "d": "handset"},
              links=[("o", "h"), ("h", "d")], config=CONFIG)
    for name in ("o", "h", "d"):
        net.start(name)
    took = _delivered_after_heal(net, "o", ("h", "d"))
    sf = net.hosts["o"].live_sf
    assert took <= HEAL_DEADLINE_S, took
    assert sf.counters["sf_probe_reachable_again"] == 1
    # probes while waiting: about one per probe interval, not one per message and poll
    assert sf.counters["sf_probes_sent"] <= PARTITION_S / CONFIG.probe_interval_s + 5
    net.close()


def _ids(n: int) -> list[NodeId]:
    return [NodeId(bytes([i]) * 32) for i in range(n)]


def test_probes_are_bounded_per_round_and_fair() -> None:
    probes = ReachProbes(interval_s=1.0)
    many = _ids(20)
    first = probes.due(many, 0.0)
    assert len(first) == MAX_PROBED_PER_ROUND
    assert probes.due(many, 0.5) == []                  # the round's budget is spent
    assert probes.next_due() == 1.0
    second = probes.due(many, 1.0)
    assert len(second) == MAX_PROBED_PER_ROUND
    assert not {d for d, _ in first} & {d for d, _ in second}   # the others' turn
    assert probes.due(many[:2], 2.0) and len(probes) == 2        # forgotten when not wanted


def test_an_answer_after_silence_means_reachable_again() -> None:
    probes = ReachProbes(interval_s=1.0)
    (dst,) = _ids(1)
    ((_, n1),) = probes.due([dst], 0.0)
    assert probes.answered(dst, n1)                     # first answer: reachable
    assert not probes.answered(dst, n1)                 # a replayed answer: nothing
    ((_, n2),) = probes.due([dst], 1.0)
    assert not probes.answered(dst, n2)                 # still reachable: no news
    ((_, n3),) = probes.due([dst], 2.0)                 # unanswered (partition) ...
    ((_, n4),) = probes.due([dst], 3.0)
    assert not probes.answered(dst, n3)                 # a stale nonce does not count
    assert probes.answered(dst, n4)                     # ... then answered: heal


def test_urgent_probes_only_for_awaited_nodes_and_not_in_a_burst() -> None:
    probes = ReachProbes(interval_s=1.0)
    waited, other = _ids(2)
    assert probes.urgent(other, 0.0) is None            # nothing waits for it
    probes.due([waited], 0.0)
    assert probes.urgent(waited, 0.1) is None           # probed just now
    nonce = probes.urgent(waited, 0.3)
    assert nonce is not None and probes.urgent(waited, 0.4) is None
    assert probes.answered(waited, nonce)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sip_message_held_across_a_partition_of_a_4_hop_chain_flows_within_2s(
        tmp_path: Path, seed: int) -> None:
    """End to end through the gateways: alice (n0) -> bob (n4) while the middle link
    n2-n3 is down (10% loss elsewhere); the MESSAGE is answered 202 and held; 90 s later
    the link heals and bob's client has it within 2 s, once."""
    net = GwNet(5, loss=0.1, seed=seed)
    for i in range(5):
        attach_store_forward(net, i, StoreForwardConfig(), tmp_path / f"n{i}.sf.sqlite")
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 4, 5074, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)), timeout_s=60)
    net.cut.add(frozenset((2, 3)))
    net.run_for(10.0)
    alice.message(BOB, "across the partition")
    net.run_until(lambda: [e.status for e in net.events(0, 5070)
                           if isinstance(e, RequestSucceeded) and e.method == "MESSAGE"] == [202],
                  timeout_s=30)
    net.run_for(PARTITION_S + 30.0)

    def got() -> list[bytes]:
        return [e.body for e in net.events(4, 5074) if isinstance(e, IncomingMessage)]
    assert got() == []
    net.cut.clear()
    took = net.run_until(lambda: bool(got()), timeout_s=40)
    assert took <= HEAL_DEADLINE_S, took
    net.run_for(5.0)
    assert got() == [b"across the partition"]


def test_lossy_chain_heal_reinstates_the_route_and_flows_within_2s(tmp_path: Path) -> None:
    """4 hops at 30% loss per link, the middle link cut for a minute: the node beside the
    break dropped (suspended) its route when unicast over it failed; hearing the next hop
    again reinstates it, so the held message crosses soon after the heal, not when a flood
    or anti-entropy teaches the route again (median 1.1 s over these seeds; without the
    reinstatement 2.6 s, worst 8.2 s)."""
    names = ["o", "a", "b", "c", "d"]
    took: list[float] = []
    for seed in range(12):
        (tmp_path / str(seed)).mkdir()
        net = Net(tmp_path / str(seed), {n: "handset" for n in names},
                  links=list(pairwise(names)), config=CONFIG, loss=0.3,
                  seed=seed)
        for name in names:
            net.start(name)
        net.run_until(10.0)
        net.cut("b", "c")
        net.run_for(10.0)
        net.hosts["o"].live_sf.hold(msg_id=MSG, from_aor=aor("o"), to_aor=aor("d"), sip=SIP,
                                    now=net.now)
        net.command("o")
        net.run_for(PARTITION_S)
        assert net.hosts["d"].client == []
        healed_at = net.now
        net.heal("b", "c")
        while not net.hosts["d"].client and net.now < healed_at + 40.0:
            net.run_for(0.1)
        assert [m.msg_id for m in net.hosts["d"].client] == [MSG]
        took.append(net.now - healed_at)
        net.close()
    took.sort()
    assert took[len(took) // 2] <= 1.5, took
    assert sum(t <= HEAL_DEADLINE_S for t in took) >= 10, took
    assert took[-1] <= 5.0, took
