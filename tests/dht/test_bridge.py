"""DhtBridge against the in-memory DHT model: islands bridged, refresh, withdrawal, relay
death, two relays, uplink loss, the miss after a put, bounds."""

from __future__ import annotations

import dataclasses

from meshcomm.dht.bridge import NotFound, NotFoundReason, RemoteChanged, Resolved
from meshcomm.dht.counters import DhtCounter
from meshcomm.dht.model import ModelConfig
from meshcomm.dht.port import DhtCancel, DhtDone, DhtListen, DhtPeers, DhtPut
from meshcomm.dht.remote import RemoteState
from meshcomm.dht.uplink import UplinkState
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import BindingExpired, RemoteBindingChanged, UplinkChanged

from .net import CONFIG, Net, Station, identity

AOR = "sip:medic@fire.example"
MEDIC = identity("medic")
UP_AT = 10.0


def _islands(*, seed: int = 1, model: ModelConfig | None = None
             ) -> tuple[Net, Station, Station]:
    net = Net(seed=seed, model=model)
    a, b = net.relay("relay-a"), net.relay("relay-b")
    net.run(UP_AT)
    assert a.bridge.uplink_state is UplinkState.UP and b.bridge.uplink_state is UplinkState.UP
    return net, a, b


def test_publish_in_one_island_resolve_in_the_other() -> None:
    net, a, b = _islands()
    binding = net.register(a, MEDIC, AOR)
    assert a.bridge.published == 1
    answer = net.resolve(b, "SIP:Medic@Fire.Example")
    assert isinstance(answer, Resolved)
    (found,) = answer.bindings
    assert found.binding.envelope.signed_bytes == binding.envelope.signed_bytes
    assert [att.relay for att in found.relays] == [a.identity.node_id]
    assert found.relays[0].addrs == CONFIG.uplink_addrs
    assert b.journal(RemoteBindingChanged)[0].state == RemoteState.REACHABLE
    # a second resolve is answered from the cache, without a DHT get
    gets = b.bridge.counters[DhtCounter.GETS]
    assert isinstance(net.resolve(b, AOR, wait_s=0.0), Resolved)
    assert b.bridge.counters[DhtCounter.GETS] == gets
    assert b.bridge.counters[DhtCounter.RESOLVED_FROM_CACHE] == 1
    retries = b.bridge.counters[DhtCounter.MISS_RETRIES]
    assert isinstance(net.resolve(b, "sip:nobody@fire.example"), NotFound)
    assert b.bridge.counters[DhtCounter.MISS_RETRIES] == retries + 1   # a miss is retried once


def test_refresh_keeps_records_alive_across_several_ttls() -> None:
    net, a, _ = _islands()
    net.register(a, MEDIC, AOR)
    net.run(UP_AT + 6 * CONFIG.record_ttl_s)
    puts = [op for op in a.ops if isinstance(op, DhtPut)]
    assert len(puts) >= 6  # refreshed before each TTL ran out
    late = net.relay("relay-late")
    net.run(net.now + 5)
    answer = net.resolve(late, AOR)
    assert isinstance(answer, Resolved) and answer.bindings[0].reachable
    gaps = [b.ttl_s for b in puts]
    assert all(ttl <= CONFIG.record_ttl_s for ttl in gaps)


def test_withdrawal_reaches_a_watching_reader() -> None:
    net, a, b = _islands()
    net.register(a, MEDIC, AOR)
    assert isinstance(net.resolve(b, AOR), Resolved)
    assert b.bridge.watch(AOR, net.now)
    net.register(a, MEDIC, AOR, lifetime_s=0, hold_s=120)     # de-registration
    net.run(net.now + 5)
    changes = [e for e in b.events if isinstance(e, RemoteChanged)]
    assert changes and changes[-1].bindings == ()
    assert [p.state for p in b.journal(RemoteBindingChanged)][-1] == RemoteState.WITHDRAWN
    fresh = net.relay("relay-c")
    net.run(net.now + 5)
    assert isinstance(net.resolve(fresh, AOR), NotFound)
    b.bridge.unwatch(AOR, net.now)


def test_relay_death_lapses_the_record_then_the_binding_expires() -> None:
    net, a, b = _islands()
    net.register(a, MEDIC, AOR, lifetime_s=400)
    assert isinstance(net.resolve(b, AOR), Resolved)
    b.bridge.watch(AOR, net.now)
    net.kill("relay-a")
    net.run(net.now + CONFIG.record_ttl_s + 5)
    answer = net.resolve(b, AOR)
    assert isinstance(answer, Resolved)                # still known ...
    assert not answer.bindings[0].reachable            # ... but unreachable
    states = [p.state for p in b.journal(RemoteBindingChanged)]
    assert RemoteState.UNREACHABLE in states
    net.run(net.now + 400)
    assert RemoteState.EXPIRED in [p.state for p in b.journal(RemoteBindingChanged)]
    assert isinstance(net.resolve(b, AOR), NotFound)


def test_two_relays_both_attach_and_one_survives() -> None:
    net = Net()
    a1, a2, b = net.relay("relay-a1"), net.relay("relay-a2"), net.relay("relay-b")
    net.run(UP_AT)
    binding = net.register(a1, MEDIC, AOR)
    net.learn(a2, binding)                      # the island's gossip: both tables hold it
    net.run(net.now + 1)
    answer = net.resolve(b, AOR)
    assert isinstance(answer, Resolved)
    assert {att.relay for att in answer.bindings[0].relays} == {
        a1.identity.node_id, a2.identity.node_id}
    net.kill("relay-a1")
    net.run(net.now + 2 * CONFIG.record_ttl_s)
    answer = net.resolve(b, AOR)
    assert isinstance(answer, Resolved)
    assert [att.relay for att in answer.bindings[0].relays] == [a2.identity.node_id]


def test_uplink_down_stops_publishing_and_up_republishes() -> None:
    net, a, b = _islands()
    net.register(a, MEDIC, AOR)
    net.model.partition([{"relay-a"}])
    net.run(net.now + 30)
    assert a.bridge.uplink_state is UplinkState.DOWN
    states = [p.state for p in a.journal(UplinkChanged)]
    assert states[-2:] == ["grace", "down"]
    puts = len([op for op in a.ops if isinstance(op, DhtPut)])
    net.run(net.now + 3 * CONFIG.record_ttl_s)
    assert len([op for op in a.ops if isinstance(op, DhtPut)]) == puts   # nothing put
    answer = net.resolve(a, "sip:elsewhere@fire.example", wait_s=0.0)
    assert isinstance(answer, NotFound) and answer.reason is NotFoundReason.UPLINK_DOWN
    assert isinstance(net.resolve(b, AOR), NotFound)    # its records lapsed
    net.model.heal()
    net.run(net.now + 15)
    assert a.journal(UplinkChanged)[-1].state == "up"
    assert len([op for op in a.ops if isinstance(op, DhtPut)]) > puts    # republished
    net.run(net.now + 20)                                # past b's negative cache
    assert isinstance(net.resolve(b, AOR), Resolved)


def test_a_get_right_after_its_put_misses_and_the_retry_finds_it() -> None:
    net, a, b = _islands(model=ModelConfig(miss_after_put=1.0, propagate_s=1.0))
    net.register(a, MEDIC, AOR)
    net.run(net.now + 0.5)   # the put has landed, not yet visible
    answer = net.resolve(b, AOR)
    assert isinstance(answer, Resolved)
    assert b.bridge.counters[DhtCounter.MISS_RETRIES] == 1


def test_bounded_cache_lookups_and_watches() -> None:
    config = dataclasses.replace(CONFIG, max_cached_aors=4, max_lookups=2, max_watches=1)
    net = Net(config=config)
    a, b = net.relay("relay-a"), net.relay("relay-b")
    net.run(UP_AT)
    for n in range(10):
        net.register(a, identity(f"h{n}"), f"sip:h{n}@fire.example")
    for n in range(10):
        assert isinstance(net.resolve(b, f"sip:h{n}@fire.example"), Resolved)
    assert len(b.bridge.remote) <= 4
    assert b.bridge.remote.evicted >= 6
    tokens = [b.bridge.resolve(f"sip:x{n}@fire.example", net.now) for n in range(3)]
    net.run(net.now + 15)
    busy = b.answers(tokens[2])
    assert isinstance(busy[0], NotFound) and busy[0].reason is NotFoundReason.BUSY
    assert b.bridge.watch("sip:h1@fire.example", net.now)
    assert not b.bridge.watch("sip:h2@fire.example", net.now)
    assert b.bridge.counters[DhtCounter.WATCHES_REFUSED] == 1


def test_same_seed_same_operations() -> None:
    def trace(seed: int) -> list[object]:
        net, a, b = _islands(seed=seed, model=ModelConfig(loss=0.1, jitter_s=0.05))
        net.register(a, MEDIC, AOR)
        net.resolve(b, AOR)
        net.run(net.now + 200)
        return [*a.ops, *b.ops, *b.events]
    assert trace(7) == trace(7)


def test_nothing_is_put_before_the_uplink_is_up() -> None:
    net = Net()
    a = net.relay("relay-a")
    net.register(a, MEDIC, AOR)
    assert a.bridge.status().state == "down" and a.bridge.published == 1
    assert not [op for op in a.ops if isinstance(op, DhtPut)]
    net.run(UP_AT)
    assert len([op for op in a.ops if isinstance(op, DhtPut)]) == 1
    status = a.bridge.status()
    assert status.state == "up" and status.dht_peers == 2 and status.private


def test_expired_bindings_are_no_longer_refreshed() -> None:
    net, a, _ = _islands()
    binding = net.register(a, MEDIC, AOR, lifetime_s=3600)
    a.table.expire(net.now + 10_000)          # the island's table drops it
    a.bridge.on_overlay_record(JournalRecord.of(BindingExpired(
        aor=AOR, node=binding.node_id.hex(), seq=binding.seq, tombstone=False)), net.now)
    assert a.bridge.published == 0
    puts = len(a.ops)
    net.run(net.now + 3 * CONFIG.record_ttl_s)
    assert not [op for op in a.ops[puts:] if isinstance(op, DhtPut)]


def test_short_lived_binding_is_put_once_for_its_life() -> None:
    net, a, _ = _islands()
    net.register(a, MEDIC, AOR, lifetime_s=40)    # shorter than one record TTL
    net.run(net.now + 35)
    puts = [op for op in a.ops if isinstance(op, DhtPut)]
    assert len(puts) == 1 and puts[0].ttl_s <= 40


def test_uplink_flaps_are_journaled_with_a_bound() -> None:
    net, a, _ = _islands()
    for n in range(60):
        a.bridge.on_dht(DhtPeers(0 if n % 2 == 0 else 3), net.now + n)
    net.now += 60
    entries = a.journal(UplinkChanged)
    flaps = [e for e in entries if {e.state, e.previous} == {"up", "grace"}]
    assert len(flaps) <= 12
    assert a.bridge.counters[DhtCounter.UPLINK_JOURNAL_SUPPRESSED] >= 60 - 12
    assert a.bridge.uplink_state in (UplinkState.UP, UplinkState.GRACE)


def test_watch_is_reference_counted_and_listens_again_after_down() -> None:
    net, a, b = _islands()
    net.register(a, MEDIC, AOR)
    net.run(net.now + 1)
    assert b.bridge.watch(AOR, net.now) and b.bridge.watch(AOR, net.now)
    net.pump()
    assert len([op for op in b.ops if isinstance(op, DhtListen)]) == 1
    b.bridge.unwatch(AOR, net.now)
    net.pump()
    assert not [op for op in b.ops if isinstance(op, DhtCancel)]
    net.run(net.now + 1)
    assert any(isinstance(e, RemoteChanged) and e.bindings for e in b.events)  # listen news
    net.model.partition([{"relay-b"}])
    net.run(net.now + 20)
    assert [op for op in b.ops if isinstance(op, DhtCancel)]     # down: listen cancelled
    answer = net.resolve(b, AOR, wait_s=0.0)
    assert isinstance(answer, Resolved) and not answer.bindings[0].reachable
    net.model.heal()
    net.run(net.now + 10)
    assert len([op for op in b.ops if isinstance(op, DhtListen)]) == 2
    b.bridge.unwatch(AOR, net.now)
    net.pump()
    assert len([op for op in b.ops if isinstance(op, DhtCancel)]) == 2


def test_a_watcher_hears_news_not_refreshes() -> None:
    net, a, b = _islands()
    net.register(a, MEDIC, AOR)
    net.run(net.now + 1)
    b.bridge.watch(AOR, net.now)
    net.run(net.now + 1)
    news = [e for e in b.events if isinstance(e, RemoteChanged)]
    assert len(news) == 1 and news[0].bindings[0].reachable
    net.run(net.now + 4 * CONFIG.record_ttl_s)        # a refreshes 6-7 times
    assert len([e for e in b.events if isinstance(e, RemoteChanged)]) == 1
    assert b.bridge.counters[DhtCounter.ACCEPTED] >= 5   # the refreshes were merged
    again = net.register(a, MEDIC, AOR)                # re-registration, a new sequence: news
    net.run(net.now + 1)
    news = [e for e in b.events if isinstance(e, RemoteChanged)]
    assert len(news) == 2 and news[-1].bindings[0].binding.seq == again.seq == 2
    net.register(a, identity("medic-2"), AOR)          # another key: a conflict in the
    net.run(net.now + 1)                               # island (open policy), not published
    assert len([e for e in b.events if isinstance(e, RemoteChanged)]) == 2


def test_a_listen_the_port_ended_is_started_again() -> None:
    config = dataclasses.replace(CONFIG, publish=False)
    net = Net(config=config)
    b = net.relay("relay-b")
    net.run(UP_AT)
    assert b.bridge.watch(AOR, net.now)
    net.pump()
    listen = next(op for op in b.ops if isinstance(op, DhtListen))
    b.bridge.on_dht(DhtDone(listen.token, False), net.now)   # refused by the port
    net.run(net.now + config.resync_s + 1)
    listens = [op for op in b.ops if isinstance(op, DhtListen)]
    assert len(listens) == 2 and listens[1].token != listen.token
    assert b.bridge.published == 0


def test_a_record_is_put_again_early_once_after_the_uplink_comes_up() -> None:
    net, a, _ = _islands()
    net.register(a, MEDIC, AOR)                       # lives longer than a record TTL
    start = net.now
    net.run(start + a.bridge.config.early_reput_s + 5)
    puts = [op for op in a.ops if isinstance(op, DhtPut)]
    # The first put, then one early (a young DHT may have placed it far from its key's
    # neighbours), then only the regular refreshes.
    assert len(puts) == 2
    # The next is the regular refresh, a refresh_fraction of the TTL after the early one
    # (30 s + 0.6 x 60 s +/- 10%: 62-70 s), and there is no second early one.
    net.run(start + 60.0)
    assert len([op for op in a.ops if isinstance(op, DhtPut)]) == 2
    net.run(start + 75.0)
    assert len([op for op in a.ops if isinstance(op, DhtPut)]) == 3
