"""Anti-entropy on tables as large as the bound allows, and the agency policy keeping an
uncredentialed flood out of every table (issue 7 item 1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import DIGEST_BUCKETS, TrustMode, TrustPolicy
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.admission import Admission
from meshcomm.overlay.antientropy import read_summary_untrusted
from meshcomm.overlay.config import OverlayConfig
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, MsgType, encode_frame, seal

from .hostile import ATTACKER_HOST, DOMAIN, INCIDENT, sybil_frames, sybil_key

RECORDS = 3000


def records(count: int) -> list[Binding]:
    return [make_binding(sybil_key(n), incident=INCIDENT, seq=1, aor=f"sip:r{n}@{DOMAIN}",
                         contacts=("sip:r@10.1.1.1",), issued_at=1.0, lifetime_s=3600)
            for n in range(count)]


def test_anti_entropy_converges_on_thousands_of_records_under_loss() -> None:
    """n0 learns 3,000 records at once (as a relay that was elsewhere); its neighbour n1
    has none of them. 20% loss each way; summaries page through buckets of ~190."""
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=2, loss=0.2,
                                              duration_s=200, seed=4)))
    batch = records(RECORDS)
    converged: list[float] = []

    def preload(s: Simulator) -> None:
        core = s.core("n0")
        assert core is not None
        for b in batch:
            core.table.offer(b, s.now, s.now)

    def check(s: Simulator) -> None:
        a, b = s.core("n0"), s.core("n1")
        assert a is not None and b is not None
        if not converged and a.table.bucket_hashes() == b.table.bucket_hashes():
            converged.append(s.now)

    sim.call_at(5.0, preload)
    for second in range(6, 200):
        sim.call_at(float(second), check)
    sim.run()
    a, b = sim.core("n0"), sim.core("n1")
    assert a is not None and b is not None
    assert len(b.table) == len(a.table) == RECORDS + 2
    # Paced by admission (burst + rate per neighbour), not by the summary size:
    floor_s = (RECORDS - OverlayConfig().admit_neighbour_burst) / \
        OverlayConfig().admit_neighbour_per_s
    assert converged and converged[0] - 5.0 <= 1.5 * floor_s + 10, converged
    assert b.counters["ae_learned"] >= RECORDS  # (plus n0's own, if its flood was lost)


# ------------------------------------------------------------------ agency
AGENCY = Identity(b"agency".ljust(32, b"."))
NEIGHBOUR = Identity(b"neighbour".ljust(32, b"."))


def agency_node() -> MeshNode:
    settings = NodeSettings(incident=INCIDENT,
                            trust=TrustPolicy(TrustMode.AGENCY, frozenset({AGENCY.public_key})))
    return MeshNode(Identity(b"relay".ljust(32, b".")), settings, verifier=SignatureVerifier(),
                    rng=random.Random(1), now=0.0)


def records_frame(bindings: list[Binding], seq: int) -> bytes:
    items = [[b.envelope.signed_bytes, b.envelope.signature, 0, -1, -1, b"", 500]
             for b in bindings]
    return encode_frame(seal(NEIGHBOUR, MsgType.RECORDS, INCIDENT, seq, items), Hop())


def test_under_agency_an_uncredentialed_flood_enters_no_table() -> None:
    node = agency_node()
    o = node.overlay
    seen_before = len(o._seen)
    for i, frame in enumerate(sybil_frames(2000)):
        node.receive(frame, LinkAddr(f"{ATTACKER_HOST}:{i}"), 1.0 + i / 1000)
    batch = records(64)
    for i in range(0, 64, 8):
        node.receive(records_frame(batch[i:i + 8], 1 + i), LinkAddr("wlan0|[fe80::2]:9"), 4.0)
    assert len(node.table) == 0
    assert len(o._seen) == seen_before  # not even the duplicate cache
    assert len(o.routes) == 0 and len(o._pending_floods) == 0
    assert node.counters["tx_binding"] == 0
    assert node.counters["drop_no_credential"] >= 64 + 500
    # a credentialed binding from the same stranger still gets in
    cred = issue_credential(AGENCY, aor_pattern=f"sip:*@{DOMAIN}", role="medic",
                            device_key=sybil_key(7).public_key, issued_at=0,
                            expires_at=10**9).to_bytes()
    good = make_binding(sybil_key(7), incident=INCIDENT, seq=9, aor=f"sip:medic@{DOMAIN}",
                        contacts=("sip:m@10.1.1.1",), issued_at=1.0, lifetime_s=3600,
                        credential=cred)
    node.receive(encode_frame(good.envelope, Hop(ttl=8)), LinkAddr(f"{ATTACKER_HOST}:1"),
                 100.0)
    assert [s.binding.key for s in node.table] == [good.key]


def test_new_identity_budgets_per_host_and_global() -> None:
    cfg = OverlayConfig(admit_stranger_per_s=1.0, admit_stranger_burst=2,
                        admit_neighbour_per_s=10.0, admit_neighbour_burst=5,
                        admit_global_per_s=10.0, admit_global_burst=6)
    admission = Admission(cfg, lambda host: host == "nb")
    taken = 0
    while admission.may_admit("stranger", 0.0):
        admission.admitted("stranger", 0.0)
        taken += 1
    assert taken == 2 and admission.budget("stranger", 0.0) == 0
    while admission.may_admit("nb", 0.0):
        admission.admitted("nb", 0.0)
        taken += 1
    assert taken == 6  # the global budget (6) ends the neighbour's (5) early
    assert not admission.may_admit("other", 0.0)
    assert admission.may_admit("nb", 0.2)  # refilled at the global 10/s
    assert admission.budget("stranger", 1.0) == 1  # a stranger's share refills at 1/s


# ------------------------------------------------------------------ summary pages
payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64) | st.binary(max_size=10)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=6), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_summary_page_decoder_returns_a_page_or_raises_decode_error(payload: object) -> None:
    try:
        buckets, entries, lo, hi = read_summary_untrusted(payload)
    except DecodeError:
        return
    assert all(0 <= b < DIGEST_BUCKETS for b in buckets)
    assert all((not lo or rid >= lo) and (not hi or rid < hi) for rid in entries)


def test_a_ranged_summary_page_must_hold_its_range_and_one_bucket() -> None:
    rid = b"\x05" * 8
    assert read_summary_untrusted([[5], [[rid, 1]], b"", b""])[1] == {rid: 1}
    assert read_summary_untrusted([[5], [[rid, 1]], b"\x05", b"\x06"])[1] == {rid: 1}
    with pytest.raises(DecodeError):
        read_summary_untrusted([[5], [[rid, 1]], b"\x06", b""])  # entry below the page's range
    with pytest.raises(DecodeError):
        read_summary_untrusted([[5, 6], [], b"\x01", b""])  # a range spans one bucket only
