"""Hostile DHT input: junk, forged, other-incident and stale records flooded under the key
of a real AoR are dropped, counted and journaled (rate-limited) at bounded cost, and the
real record still resolves."""

from __future__ import annotations

import dataclasses
import random

from meshcomm.dht.bridge import BridgeConfig, NotFound, Resolved
from meshcomm.dht.counters import DROP_COUNTERS, DhtCounter
from meshcomm.dht.port import MAX_VALUES_PER_RESULT, DhtGet, DhtPut, DhtValues
from meshcomm.dht.records import (
    DhtRecord,
    RecordReject,
    encode_dht_value,
    keys_for,
    make_attachment,
    secret_for,
)
from meshcomm.journal.payloads import DhtValueDropped
from meshcomm.location.binding import Binding, make_binding
from meshcomm.security.identity import Identity

from .helpers import INCIDENT
from .net import CONFIG, SECRET, Net, Station, identity

AOR = "sip:medic@fire.example"
MEDIC = identity("medic")
KEYS = keys_for(SECRET, AOR)
JUNK = 10_000
CRAFTED_EACH = 100      # five kinds: 500 crafted records


class Attacker:
    """An insider with the incident's secret (the worst case) and a DHT node of its own."""

    def __init__(self, net: Net, seed: int = 99) -> None:
        self.net = net
        self.rng = random.Random(seed)
        self.token = 10_000_000
        net.model.add_node("mallory")

    def put(self, value: bytes) -> None:
        self.token += 1
        self.net.model.submit("mallory", DhtPut(self.token, KEYS.dht_key, value, 3600),
                              self.net.now)

    def seal(self, binding: Binding, relay: Identity, *, relay_seq: int = 1) -> bytes:
        wall = self.net.wall
        att = make_attachment(relay, incident=INCIDENT, binding=binding, addrs=(),
                              issued_at=wall, expires_at=wall + 600, seq=relay_seq)
        return encode_dht_value(DhtRecord(binding, att), KEYS, self.rng.randbytes(24))

    def junk(self, count: int) -> None:
        for _ in range(count):
            self.put(self.rng.randbytes(self.rng.randrange(0, 300)))

    def forged_owner(self, count: int) -> None:
        """Bindings in the medic's name with a signature that is not the medic's."""
        for n in range(count):
            real = make_binding(MEDIC, incident=INCIDENT, seq=100 + n, aor=AOR,
                                contacts=("mesh:evil",), issued_at=self.net.wall,
                                lifetime_s=3600)
            env = dataclasses.replace(real.envelope, signature=self.rng.randbytes(64))
            self.put(self.seal(dataclasses.replace(real, envelope=env), identity("mallory")))

    def other_incident(self, count: int) -> None:
        """Half sealed under another incident's secret, half signed for another incident."""
        other = keys_for(secret_for("incident-99", None), AOR)
        for n in range(count):
            who = identity(f"sock-{n}")
            b = make_binding(who, incident="incident-99", seq=1, aor=AOR, contacts=("x",),
                             issued_at=self.net.wall, lifetime_s=3600)
            att = make_attachment(who, incident="incident-99", binding=b, addrs=(),
                                  issued_at=self.net.wall, expires_at=self.net.wall + 600,
                                  seq=1)
            keys = other if n % 2 else KEYS
            self.put(encode_dht_value(DhtRecord(b, att), keys, self.rng.randbytes(24)))

    def forged_attachment(self, real: Binding, relay: Station, count: int) -> None:
        """The real binding, attached in the real relay's name with Mallory's signature."""
        for n in range(count):
            good = make_attachment(relay.identity, incident=INCIDENT, binding=real,
                                   addrs=("203.0.113.66:666",), issued_at=self.net.wall,
                                   expires_at=self.net.wall + 600, seq=10_000 + n)
            forged = dataclasses.replace(good, signature=self.rng.randbytes(64))
            self.put(encode_dht_value(DhtRecord(real, forged), KEYS, self.rng.randbytes(24)))

    def stale(self, old: Binding, relay: Station, count: int) -> None:
        """Replays of the medic's older binding (genuinely signed, genuinely attached)."""
        for n in range(count):
            self.put(self.seal(old, relay.identity, relay_seq=n + 1))


def _flooded(config: BridgeConfig = CONFIG) -> tuple[Net, Station, Station, Binding, Attacker]:
    net = Net(config=config)
    a, b = net.relay("relay-a"), net.relay("relay-b")
    attacker = Attacker(net)
    old = make_binding(MEDIC, incident=INCIDENT, seq=1, aor=AOR, contacts=("mesh:old",),
                       issued_at=net.wall, lifetime_s=3600)
    attacker.junk(JUNK)
    attacker.forged_owner(CRAFTED_EACH)
    attacker.other_incident(CRAFTED_EACH)
    net.run(10.0)
    real = net.register(a, MEDIC, AOR, seq=2)         # published after most of the flood
    net.run(12.0)
    attacker.forged_attachment(real, a, CRAFTED_EACH)
    attacker.stale(old, a, 2 * CRAFTED_EACH)
    net.run(14.0)
    return net, a, b, real, attacker


def test_flood_under_a_real_key_is_dropped_and_the_real_record_resolves() -> None:
    net, a, b, real, _ = _flooded()
    assert a.bridge.published == 1 and real.seq == 2
    assert net.model.stored(KEYS.dht_key, net.now) >= JUNK + 5 * CRAFTED_EACH
    verified_before = net.verifier.verified
    answer = net.resolve(b, AOR)
    assert isinstance(answer, Resolved), answer
    (found,) = answer.bindings
    assert found.binding.envelope.signed_bytes == real.envelope.signed_bytes
    assert [att.relay for att in found.relays] == [a.identity.node_id]
    assert found.relays[0].addrs == CONFIG.uplink_addrs
    c = b.bridge.counters
    assert c[DhtCounter.DROP_UNDECODABLE] >= JUNK + CRAFTED_EACH // 2
    assert c[DhtCounter.DROP_BAD_SIGNATURE] == CRAFTED_EACH
    assert c[DhtCounter.DROP_WRONG_INCIDENT] == CRAFTED_EACH // 2
    assert c[DhtCounter.DROP_ATTACH_BAD_SIGNATURE] == CRAFTED_EACH
    assert c[DhtCounter.DROP_STALE] == 2 * CRAFTED_EACH
    assert c[DhtCounter.ACCEPTED] == 1
    # bounded work: signatures only for what decrypts and passes the cheap checks
    assert net.verifier.verified - verified_before <= 2 * CRAFTED_EACH + 4
    # the journal: a few entries per reason, not one per value
    drops = b.journal(DhtValueDropped)
    assert 0 < len(drops) <= CONFIG.journal_drops_burst
    assert {d.reason for d in drops} >= {RecordReject.UNDECODABLE, RecordReject.BAD_SIGNATURE,
                                         RecordReject.STALE}
    assert c[DhtCounter.DROP_JOURNAL_SUPPRESSED] > JUNK - CONFIG.journal_drops_burst


def test_the_lookup_budget_bounds_the_work() -> None:
    tight = dataclasses.replace(CONFIG, values_per_lookup=2_000, verifies_per_lookup=50)
    net, _, b, _, _ = _flooded(tight)
    answer = net.resolve(b, AOR)
    assert isinstance(answer, NotFound)        # the real record sat beyond the budget
    c = b.bridge.counters
    assert c[DhtCounter.VALUES] <= 2 * 2_000   # the first get and its one retry
    assert c[DhtCounter.VALUES_OVER_BUDGET] > 0


def test_the_verify_budget_bounds_signature_checks() -> None:
    tight = dataclasses.replace(CONFIG, verifies_per_lookup=20)
    net, _, b, _, _ = _flooded(tight)
    before = net.verifier.verified
    net.resolve(b, AOR)
    assert b.bridge.counters[DhtCounter.VERIFY_OVER_BUDGET] > 0
    assert net.verifier.verified - before <= 2 * 2 * 20   # two signatures per record, 2 gets


def test_a_flooded_watch_is_bounded_by_its_rate() -> None:
    net = Net()
    a, b = net.relay("relay-a"), net.relay("relay-b")
    net.run(10.0)
    net.register(a, MEDIC, AOR)
    assert isinstance(net.resolve(b, AOR), Resolved)
    b.bridge.watch(AOR, net.now)
    net.run(net.now + 1)
    attacker = Attacker(net)
    attacker.junk(5_000)
    start = net.now
    net.run(net.now + 10)
    c = b.bridge.counters
    allowed = CONFIG.watch_values_burst + CONFIG.watch_values_per_s * (net.now - start)
    assert c[DhtCounter.VALUES_OVER_BUDGET] > 0
    assert c[DhtCounter.DROP_UNDECODABLE] <= allowed
    assert isinstance(net.resolve(b, AOR), Resolved)   # still known and reachable


def test_every_reason_has_a_counter() -> None:
    assert set(DROP_COUNTERS) == set(RecordReject)
    assert len(set(DROP_COUNTERS.values())) == len(RecordReject)


def test_values_over_the_result_bound_are_cut() -> None:
    net = Net()
    b = net.relay("relay-b")
    net.run(10.0)
    b.bridge.resolve(AOR, net.now)
    get = b.bridge.next_event()
    assert isinstance(get, DhtGet)
    b.bridge.on_dht(DhtValues(get.token, (b"x" * 50,) * (MAX_VALUES_PER_RESULT + 36)), net.now)
    assert b.bridge.counters[DhtCounter.VALUES_OVER_RESULT] == 36
    assert b.bridge.counters[DhtCounter.DROP_UNDECODABLE] == MAX_VALUES_PER_RESULT
    b.bridge.on_dht(DhtValues(get.token + 1000, (b"y",)), net.now)
    assert b.bridge.counters[DhtCounter.STRAY_RESULTS] == 1
