"""Trust records on the overlay: flooding, anti-entropy, enforcement (simulated chains)."""

from __future__ import annotations

import dataclasses

from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.mesh import MeshNode
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import (
    MAX_RECORDS_PER_AUTHORITY,
    TrustKind,
    TrustRecord,
    credential_id,
    make_trust_record,
)
from meshcomm.sim.engine import Action, ActionKind, Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, encode_frame

ROOT = Identity(b"R" * 32)
STRANGER = Identity(b"X" * 32)


def chain(nodes: int = 6, loss: float = 0.0, seed: int = 1, duration_s: float = 60.0,
          absent: frozenset[str] = frozenset(),
          actions: list[Action] | None = None) -> Simulator:
    config = sim_config(ScenarioParams(topology="chain", nodes=nodes, loss=loss,
                                       duration_s=duration_s, seed=seed),
                        absent=absent, actions=actions)
    policy = TrustPolicy(TrustMode.OPEN, frozenset({ROOT.public_key}))
    config.settings = dataclasses.replace(config.settings, trust=policy)
    return Simulator(config)


def node(sim: Simulator, name: str) -> MeshNode:
    core = sim.core(name)
    assert core is not None
    return core


def revoke_at(sim: Simulator, when: float, at: str, victim: str,
              signer: Identity = ROOT) -> list[TrustRecord]:
    made: list[TrustRecord] = []

    def go(s: Simulator) -> None:
        key = node(s, victim).identity.public_key
        record = make_trust_record(signer, incident=node(s, at).settings.incident,
                                   kind=TrustKind.REVOKE_DEVICE, subject=key,
                                   issued_at=int(s.now))
        made.append(record)
        node(s, at).overlay.trust.originate(record, s.now)
        s.after_command(at)
    sim.call_at(when, go)
    return made


def bound_keys(n: MeshNode) -> set[bytes]:
    return {s.binding.key for s in n.table if not s.binding.is_tombstone}


def checkpoint(sim: Simulator, when: float, out: dict[float, dict[str, set[bytes]]]) -> None:
    def go(s: Simulator) -> None:
        out[when] = {name: bound_keys(node(s, name)) for name in s.node_names()
                     if s.core(name) is not None}
    sim.call_at(when, go)


def test_revocation_crosses_a_six_node_chain_and_removes_the_bindings() -> None:
    sim = chain(duration_s=45.0)
    seen: dict[float, dict[str, set[bytes]]] = {}
    checkpoint(sim, 29.0, seen)
    revoke_at(sim, 30.0, "n0", "n5")
    checkpoint(sim, 32.0, seen)
    checkpoint(sim, 44.0, seen)
    sim.run()
    victim = node(sim, "n5").identity.public_key
    assert all(victim in keys for name, keys in seen[29.0].items())     # before: known
    for when in (32.0, 44.0):   # within 2 s and still after refreshes
        assert all(victim not in keys for name, keys in seen[when].items() if name != "n5")
    for name in ("n0", "n1", "n2", "n3", "n4"):
        n = node(sim, name)
        assert n.overlay.trust.store.key_revoked(victim)
        assert n.counters["bindings_revoked"] == 1
    # n5 keeps sending (HELLOs, refreshed bindings): n4 drops them all
    assert node(sim, "n4").counters["drop_revoked"] > 0


def test_revocation_survives_loss_within_ten_seconds() -> None:
    """20% loss on every link of a 6-chain: over 20 seeds, at least 18 have every node rid
    of the revoked binding within 10 s, all within 20 s. (Was: three fixed seeds within
    10 s. The Trickle timers of issue 13 and the wire changes of the same issue draw the
    simulator's random numbers differently; over 20 seeds 1 now takes longer than 10 s
    (14 s), where the code before issue 13 had 6 of 20 over 10 s, one over 40 s.)"""
    within_10 = 0
    for seed in range(1, 21):
        sim = chain(loss=0.2, seed=seed, duration_s=52.0)
        seen: dict[float, dict[str, set[bytes]]] = {}
        revoke_at(sim, 30.0, "n0", "n5")
        checkpoint(sim, 40.0, seen)
        checkpoint(sim, 50.0, seen)
        sim.run()
        victim = node(sim, "n5").identity.public_key
        within_10 += all(victim not in keys for name, keys in seen[40.0].items()
                         if name != "n5")
        assert all(victim not in keys for name, keys in seen[50.0].items() if name != "n5")
    assert within_10 >= 18


def test_traffic_of_a_revoked_node_is_dropped() -> None:
    sim = chain(duration_s=50.0)
    revoke_at(sim, 30.0, "n0", "n5")

    def send(s: Simulator) -> None:
        node(s, "n5").send_unicast(node(s, "n0").node_id, 7, b"from a lost handset", s.now)
        node(s, "n4").send_unicast(node(s, "n0").node_id, 7, b"from a good one", s.now)
        s.after_command("n5")
        s.after_command("n4")
    sim.call_at(40.0, send)
    sim.run()
    got = [ev.body for _, name, ev in sim.unicasts if name == "n0"]
    assert got == [b"from a good one"]


def test_a_node_that_joins_later_gets_the_revocation_by_anti_entropy() -> None:
    sim = chain(duration_s=60.0, absent=frozenset({"n5"}),
                actions=[Action(40.0, ActionKind.JOIN, ("n5",))])
    revoke_at(sim, 20.0, "n1", "n0")
    sim.run()
    late = node(sim, "n5")
    victim = node(sim, "n0").identity.public_key
    assert late.overlay.trust.store.key_revoked(victim)
    assert victim not in bound_keys(late)
    # it took part in the exchange: pulled, or (Trickle, issue 13) answered a neighbour's
    # digest with its (empty) id list, which the neighbour answers with what it lacks
    assert late.counters["tx_trust_pull"] + late.counters["tx_trust_ids"] >= 1


def test_unauthorised_revocation_is_refused_and_not_flooded() -> None:
    sim = chain(duration_s=40.0)
    records = revoke_at(sim, 30.0, "n0", "n5", signer=STRANGER)

    def replay(s: Simulator) -> None:
        frame = encode_frame(records[0].envelope, Hop(ttl=8))
        for _ in range(50):
            node(s, "n2").receive(frame, LinkAddr("wlan0|[fe80::bad]:1"), s.now)
        s.after_command("n2")
    sim.call_at(31.0, replay)
    sim.run()
    victim = node(sim, "n5").identity.public_key
    for name in sim.node_names():
        n = node(sim, name)
        assert len(n.overlay.trust.store) == 0 and not n.overlay.trust.active
        assert n.counters["tx_trust"] == 0
        assert name == "n5" or victim in bound_keys(n)
    assert node(sim, "n2").counters["drop_trust_unauthorised"] >= 1


def test_no_trust_records_no_change_on_the_wire() -> None:
    """Without trust records, digests carry no trust field (the simulator's trace digests
    stay as they were)."""
    sim = chain(duration_s=20.0)
    sim.run()
    for name in sim.node_names():
        n = node(sim, name)
        assert not n.overlay.trust.active and n.overlay.trust.digest_field() == []
        assert n.counters["tx_trust_ids"] == 0


def test_mutual_aid_agency_added_by_a_signed_update_lets_its_handsets_register() -> None:
    aid = Identity(b"A" * 32)
    sim = chain(duration_s=50.0)
    sim.config.settings = dataclasses.replace(
        sim.config.settings, trust=TrustPolicy(TrustMode.AGENCY, frozenset({ROOT.public_key})))
    aor = "sip:crew1@aid.example"
    seen: dict[float, list[bool]] = {}

    def arrive(s: Simulator) -> None:
        crew = node(s, "n5")     # started with its own agency's key in its profile
        crew.overlay.trust.store.set_roots(frozenset({ROOT.public_key, aid.public_key}))
        crew.overlay.trust.enforce(s.now)
        crew.credential = issue_credential(
            aid, aor_pattern="sip:*@aid.example", role="firefighter",
            device_key=crew.identity.public_key, issued_at=0, expires_at=10**7).to_bytes()
        crew.register(aor, ("sip:crew1@10.0.0.5",), s.now)
        s.after_command("n5")

    def look(when: float) -> None:
        def go(s: Simulator) -> None:
            seen[when] = [bool(node(s, f"n{i}").table.lookup(aor)) for i in range(5)]
        sim.call_at(when, go)

    def add(s: Simulator) -> None:
        record = make_trust_record(ROOT, incident=node(s, "n0").settings.incident,
                                   kind=TrustKind.ADD_AGENCY, subject=aid.public_key,
                                   issued_at=int(s.now))
        assert node(s, "n0").overlay.trust.originate(record, s.now) is None
        s.after_command("n0")

    sim.call_at(20.0, arrive)
    look(29.0)
    sim.call_at(30.0, add)
    look(40.0)
    sim.run()
    assert seen[29.0] == [False] * 5           # an unknown agency's handset: refused
    assert seen[40.0] == [True] * 5            # everywhere within 10 s of the update
    for i in range(6):
        assert aid.public_key in node(sim, f"n{i}").table.policy.agency_keys


def test_a_flood_of_valid_records_from_one_agency_key_is_bounded() -> None:
    """An agency key (captured, or buggy tooling) signs 400 revocations of random keys: each
    node stores its per-authority quota, the same records everywhere, and sends each
    stored record at most about twice (its flood, and an answer to a pull that came while
    the flood waited for its assessment delay)."""
    sim = chain(nodes=3, duration_s=40.0)
    records = [make_trust_record(ROOT, incident="default", kind=TrustKind.REVOKE_DEVICE,
                                 subject=n.to_bytes(32, "big"), issued_at=10)
               for n in range(400)]

    def flood(s: Simulator) -> None:
        n0 = node(s, "n0")
        for record in records:
            n0.receive(encode_frame(record.envelope, Hop(ttl=8)),
                       LinkAddr("wlan0|[fe80::bad]:1"), s.now)
        s.after_command("n0")
    sim.call_at(25.0, flood)
    sim.run()
    for name in sim.node_names():
        n = node(sim, name)
        assert len(n.overlay.trust.store) == MAX_RECORDS_PER_AUTHORITY
        assert n.counters["tx_trust"] <= 2 * MAX_RECORDS_PER_AUTHORITY
        assert n.overlay.trust.store.ids() == node(sim, "n0").overlay.trust.store.ids()
    assert node(sim, "n0").counters["drop_trust_quota"] == 400 - MAX_RECORDS_PER_AUTHORITY


def test_a_revoked_credential_drops_its_bindings_and_a_new_one_registers_again() -> None:
    sim = chain(duration_s=60.0)
    sim.config.settings = dataclasses.replace(
        sim.config.settings, trust=TrustPolicy(TrustMode.AGENCY, frozenset({ROOT.public_key})))
    aor = "sip:medic4@fire.example"
    seen: dict[float, list[bool]] = {}
    creds: list[bytes] = []

    def enroll(s: Simulator) -> None:
        crew = node(s, "n5")
        creds.append(issue_credential(
            ROOT, aor_pattern="sip:*@fire.example", role="medic",
            device_key=crew.identity.public_key, issued_at=len(creds),
            expires_at=10**7).to_bytes())
        crew.credential = creds[-1]
        crew.register(aor, ("sip:medic4@10.0.0.5",), s.now)
        s.after_command("n5")

    def look(when: float) -> None:
        def go(s: Simulator) -> None:
            seen[when] = [bool(node(s, f"n{i}").table.lookup(aor)) for i in range(5)]
        sim.call_at(when, go)

    def revoke(s: Simulator) -> None:
        record = make_trust_record(ROOT, incident=node(s, "n0").settings.incident,
                                   kind=TrustKind.REVOKE_CREDENTIAL,
                                   subject=credential_id(creds[0]), issued_at=int(s.now))
        assert node(s, "n0").overlay.trust.originate(record, s.now) is None
        s.after_command("n0")

    sim.call_at(20.0, enroll)
    look(29.0)
    sim.call_at(30.0, revoke)
    look(35.0)
    sim.call_at(40.0, enroll)        # re-enrolled: same device key, a new credential
    look(50.0)
    sim.run()
    assert seen[29.0] == [True] * 5
    assert seen[35.0] == [False] * 5
    assert seen[50.0] == [True] * 5


def test_the_revoked_node_learns_it_even_when_its_neighbour_got_the_record_by_anti_entropy(
) -> None:
    """A record reaching a node by anti-entropy (TTL 1) is not flooded on, and a revoked
    node's digest answers and pulls are dropped: the neighbour that cuts it off tells it
    (found with six real processes: n5 never learned, its gateway kept sending). Over 20
    seeds at 10% loss, n5 knows within 2.5 s of n4 (the notice is repeated: one copy lost
    must not wait for n5's next Trickle HELLO)."""
    for seed in range(1, 21):
        sim = chain(loss=0.1, seed=seed, duration_s=46.0)
        first: dict[str, float] = {}

        def look(s: Simulator, first: dict[str, float] = first) -> None:
            if "n4" not in first and node(s, "n4").overlay.trust.active:
                first["n4"] = s.now
            if "n5" not in first and node(s, "n5").overlay.trust.own_refusal() == "revoked":
                first["n5"] = s.now
        for k in range(29 * 8, 45 * 8):
            sim.call_at(k / 8, look)
        revoke_at(sim, 30.0, "n0", "n5")
        sim.run()
        assert first["n4"] > 30.0 and first["n5"] - first["n4"] <= 2.5, (seed, first)
        assert node(sim, "n4").counters["trust_revocation_notices"] >= 1


def test_notices_to_revoked_senders_are_rate_limited_in_all() -> None:
    """Frames of a revoked key replayed from thousands of spoofed addresses: each host is
    told at most once per NOTICE_INTERVAL_S, and all of them together within the global
    bucket, so a replay cannot turn a node into a record flooder."""
    from meshcomm.overlay.trustsync import NOTICE_BURST, NOTICE_INTERVAL_S
    from meshcomm.wire.envelope import MsgType
    sim = chain(duration_s=32.0)
    revoke_at(sim, 30.0, "n0", "n5")
    sim.run()
    n4, n5 = node(sim, "n4"), node(sim, "n5")
    env = n5.overlay.seal(MsgType.HELLO, [])
    trust = n4.overlay.trust
    before = n4.counters["tx_trust"]
    now = sim.now + 10.0
    for i in range(5000):
        assert trust.refuses_frame(env, LinkAddr(f"wlan0|10.9.{i // 250}.{i % 250}:5060"), now)
    sent = n4.counters["tx_trust"] - before
    assert 1 <= sent <= NOTICE_BURST
    assert n4.counters["trust_revocation_notices_limited"] >= 5000 - NOTICE_BURST
    # one host, again and again: once per interval
    host = LinkAddr("wlan0|10.8.0.1:5060")
    told = n4.counters["trust_revocation_notices"]
    for k in range(100):
        trust.refuses_frame(env, host, now + 60.0 + k * 0.01)
    assert n4.counters["trust_revocation_notices"] - told == 1
    trust.refuses_frame(env, host, now + 60.0 + NOTICE_INTERVAL_S + 0.01)
    assert n4.counters["trust_revocation_notices"] - told == 2
