"""The remote view: the merge rule, relay bounds, lapse and expiry, claim room, LRU."""

from __future__ import annotations

from meshcomm.dht.records import DhtRecord, RecordReject
from meshcomm.dht.remote import MergeOutcome, RemoteState, RemoteView
from meshcomm.location.freshness import FreshEntry, Standing

from .helpers import AOR, RELAY_A, RELAY_B, WALL, attach, binding
from .net import identity

NOW = 100.0


def view(**kw: int) -> RemoteView:
    return RemoteView(max_aors=kw.get("aors", 8), max_claims=kw.get("claims", 4),
                      max_relays=kw.get("relays", 2))


def merge(v: RemoteView, rec: DhtRecord, now: float = NOW, *, known: bool = False
          ) -> object:
    remembered = (FreshEntry(rec.binding.record_id, rec.binding.seq, WALL, WALL + 1e6,
                             Standing.TRANSIENT) if known else None)
    return v.merge(AOR, rec, now, WALL + now - NOW, credentialed=False,
                   remembered=remembered)[0]


def test_highest_sequence_wins_whatever_the_order() -> None:
    v = view()
    new, old = binding(seq=2), binding(seq=1)
    assert merge(v, DhtRecord(new, attach(new))) is MergeOutcome.CHANGED
    assert merge(v, DhtRecord(old, attach(old, seq=9))) is RecordReject.STALE
    (only,) = v.view(AOR)
    assert only.binding.seq == 2
    v2 = view()
    merge(v2, DhtRecord(old, attach(old)))
    merge(v2, DhtRecord(new, attach(new, RELAY_B)))
    (only,) = v2.view(AOR)
    assert only.binding.seq == 2
    assert [a.relay_key for a in only.relays] == [RELAY_B.public_key]  # old attachment gone


def test_relays_are_bounded_and_refreshed() -> None:
    v = view(relays=2)
    b = binding()
    relays = [RELAY_A, RELAY_B, identity("relay-c")]
    for n, relay in enumerate(relays):
        outcome = merge(v, DhtRecord(b, attach(b, relay, ttl_s=100.0 + n)))
        assert outcome is MergeOutcome.CHANGED   # a later-lapsing one displaces the soonest
    assert len(v.view(AOR)[0].relays) == 2
    assert merge(v, DhtRecord(b, attach(b, RELAY_A, ttl_s=50.0))) is RecordReject.RELAYS_FULL
    again = DhtRecord(b, attach(b, RELAY_B, seq=1, ttl_s=101.0))
    assert merge(v, again) is MergeOutcome.DUPLICATE
    assert merge(v, DhtRecord(b, attach(b, RELAY_B, seq=2, ttl_s=300.0))) is \
        MergeOutcome.REFRESHED


def test_lapse_then_expiry() -> None:
    v = view()
    b = binding(lifetime_s=500)
    v.merge(AOR, DhtRecord(b, attach(b, ttl_s=60.0)), NOW, WALL, credentialed=False,
            remembered=None)
    assert v.next_timer() == NOW + 60.0
    changes = v.on_timer(NOW + 60.0)
    assert [c.state for c in changes] == [RemoteState.UNREACHABLE]
    (known,) = v.view(AOR)
    assert not known.reachable
    changes = v.on_timer(NOW + 500.0)
    assert [c.state for c in changes] == [RemoteState.EXPIRED]
    assert v.view(AOR) == () and len(v) == 0


def test_a_flood_of_fresh_keys_cannot_push_out_a_known_key() -> None:
    v = view(claims=4)
    for n in range(4):
        stranger = binding(identity(f"sock-{n}"))
        assert merge(v, DhtRecord(stranger, attach(stranger))) is MergeOutcome.CHANGED
    late = binding(identity("sock-late"))
    assert merge(v, DhtRecord(late, attach(late))) is RecordReject.CLAIMS_FULL
    real = binding()
    assert merge(v, DhtRecord(real, attach(real)), known=True) is MergeOutcome.CHANGED
    assert real.key in {c.binding.key for c in v.view(AOR)}
    assert len(v.view(AOR)) == 4


def test_lru_spares_pinned_aors() -> None:
    pinned = {"sip:a0@x"}
    v = RemoteView(max_aors=3, max_claims=4, max_relays=2, pinned=lambda a: a in pinned)
    for n in range(6):
        v.entry(f"sip:a{n}@x")
    assert len(v) == 3 and v.get("sip:a0@x") is not None and v.evicted == 3
