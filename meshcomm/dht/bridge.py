"""DhtBridge: the sans-IO bridge between an island and the DHT (issue 10).

Driving API (ARCHITECTURE.md rule 2): ``next_timer() / on_timer(now) / next_event()``, plus
the inputs

* ``on_dht(result, now)``: what the DHT port returns (:mod:`meshcomm.dht.port`): values and
  completions of our operations, and the DHT node's health (``DhtPeers``, which drives the
  uplink machine, :mod:`meshcomm.dht.uplink`);
* ``on_overlay_record(record, now)``: the overlay's journal records; a binding learned or
  updated in the island is published (``publish``), one that left the table is no longer
  refreshed (``withdraw``). The location table is the one source of truth: the bridge reads
  a binding's expiry and state there, and rescans it every ``resync_s``;
* ``resolve(aor, now) -> token`` and ``watch(aor, now)`` / ``unwatch(aor, now)``.

``next_event`` yields DHT operations for the port (``DhtPut/DhtGet/DhtListen/DhtCancel``),
answers (:class:`Resolved`, :class:`NotFound`), news of watched or cached AoRs
(:class:`RemoteChanged`) and journal records (uplink transitions, dropped values, remote
bindings changing reachability).

**Publishing** (an uplinked relay): every live binding and tombstone of the island's table
(not those in conflict or contested) is put under its AoR's key with a fresh attachment
signed by this relay, for ``min(record_ttl_s, what the table gives it)`` seconds, and put
again at a jittered ``refresh_fraction`` of that TTL; a failed put is retried after
``put_retry_s``. A de-registration publishes the tombstone (readers drop the binding: the
highest sequence wins); a binding that left the table is simply not refreshed and lapses.
While the uplink is down nothing is put; when it comes up everything is put again, spread
over ``republish_spread_s``.

**Resolving**: the remote view (:mod:`meshcomm.dht.remote`) answers at once while it holds
a reachable claim; else a ``DhtGet``, merged as values arrive, answered when the DHT says
done or after ``get_timeout_s``. A miss is retried once after ``miss_retry_s`` (a get right
after its put may miss on a real DHT), then answered ``NotFound`` and remembered for
``negative_ttl_s``. While the uplink is down, what is known is answered unreachable.

**Hostile input**: every value is decoded and verified (:mod:`meshcomm.dht.records`); what
fails is dropped, counted (:class:`~meshcomm.dht.counters.DhtCounter`) and journaled
(rate-limited per reason and AoR, and globally). Work is bounded: at most
``MAX_VALUES_PER_RESULT`` values per result, per lookup ``values_per_lookup`` values and
``verifies_per_lookup`` signature checks, per watch a rate, and global rates for both;
signature checks are spent only on values that decrypt and pass every cheap check, and
never on a copy of an attachment already merged.

**Revocations** (issue 12.4, :mod:`meshcomm.dht.revocations`): a value whose binding the
node's trust records refuse, or whose attaching relay is revoked, is dropped like other
hostile input (before its signatures are checked); when records arrive
(:meth:`DhtBridge.trust_changed`) the remote view forgets what they now refuse.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass

from meshcomm.dht.api import (
    BridgeConfig,
    BridgeEvent,
    BridgeStatus,
    IslandTable,
    NotFound,
    NotFoundReason,
    RemoteChanged,
    Resolved,
)
from meshcomm.dht.counters import DROP_COUNTERS, DhtCounter
from meshcomm.dht.port import (
    MAX_VALUES_PER_RESULT,
    DhtCancel,
    DhtDone,
    DhtGet,
    DhtListen,
    DhtPeers,
    DhtPut,
    DhtResult,
    DhtValues,
)
from meshcomm.dht.records import (
    MAX_UPLINK_ADDRS,
    NONCE_BYTES,
    AorKeys,
    DhtRecord,
    DhtSecret,
    RecordReject,
    VerifyContext,
    check_uplink_addr,
    credentialed,
    decode_dht_value_untrusted,
    encode_dht_value,
    keys_for,
    make_attachment,
    normalise_aor,
    precheck_record,
    verify_signatures,
)
from meshcomm.dht.remote import MergeOutcome, RemoteBinding, RemoteView, StateChange
from meshcomm.dht.revocations import NO_REVOCATIONS, Revocations, revocation_reject
from meshcomm.dht.uplink import Uplink, UplinkChange, UplinkState
from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import (
    BindingExpired,
    BindingLearned,
    BindingUpdated,
    DhtValueDropped,
    RemoteBindingChanged,
    UplinkChanged,
)
from meshcomm.location.binding import Binding
from meshcomm.location.table import BindingState
from meshcomm.overlay.ratelimit import JournalGate, TokenBucket
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier

__all__ = ["BridgeConfig", "BridgeEvent", "BridgeStatus", "DhtBridge", "IslandTable",
           "NotFound", "NotFoundReason", "RemoteChanged", "Resolved"]

#: A drop of the same (reason, AoR) is journaled at most this often (and all drops within
#: the config's journal budget); the rest are only counted.
DROP_JOURNAL_INTERVAL_S = 1.0
MAX_DROP_JOURNAL_KEYS = 1024
#: UP <-> GRACE flaps journaled at once, and one more per this many seconds.
UPLINK_FLAP_JOURNAL_BURST = 10
UPLINK_FLAP_JOURNAL_INTERVAL_S = 60.0
#: Claim states the bridge does not publish (not routable here either).
UNPUBLISHED_STATES = frozenset({BindingState.CONFLICT, BindingState.CONTESTED})
#: Stale refresh-heap entries tolerated beyond twice the publications before a rebuild.
REFRESH_HEAP_SLACK = 64


@dataclass(slots=True)
class _Allowance:
    """Work one operation may cost: values looked at, signatures checked."""

    values: TokenBucket
    verifies: TokenBucket


@dataclass(slots=True)
class _Published:
    binding: Binding
    keys: AorKeys
    due: float | None = None       # next put
    token: int | None = None       # put in flight
    #: the last put lasts as long as the binding: nothing to refresh
    final: bool = False
    #: put again early once since the uplink came up (see BridgeConfig.early_reput_s)
    settled: bool = False


@dataclass(slots=True)
class _Lookup:
    keys: AorKeys
    allowance: _Allowance
    deadline: float
    waiters: list[int]
    get_token: int | None = None
    retried: bool = False


@dataclass(slots=True)
class _Watch:
    keys: AorKeys
    allowance: _Allowance
    refs: int = 1
    token: int | None = None


class DhtBridge:
    """See the module docstring."""

    def __init__(self, identity: Identity, table: IslandTable, secret: DhtSecret,
                 config: BridgeConfig, verifier: SignatureVerifier, rng: random.Random, *,
                 now: float, wall_offset_s: float = 0.0, seq_base: int = 0,
                 revocations: Revocations = NO_REVOCATIONS) -> None:
        self.identity = identity
        self.table = table
        self.secret = secret
        self.config = config
        #: The uplink addresses our attachments name (``set_uplink_addrs`` adds the ones
        #: a NAT maps us to, as a reachable peer sees them).
        self.uplink_addrs: tuple[str, ...] = config.uplink_addrs
        self.rng = rng
        self.wall_offset_s = wall_offset_s
        self.ctx = VerifyContext(table.incident, table.policy, verifier, table.freshness)
        self.uplink = Uplink(config.uplink, now)
        self.remote = RemoteView(max_aors=config.max_cached_aors,
                                 max_claims=config.max_claims_per_aor,
                                 max_relays=config.max_relays_per_binding,
                                 pinned=lambda aor: aor in self._watches)
        self.counters: Counter[str] = Counter()
        self._events: deque[BridgeEvent] = deque()
        self._seq = seq_base
        self._token = 0
        self._published: dict[bytes, _Published] = {}
        self._published_by_aor: dict[str, set[bytes]] = {}
        self._puts: dict[int, bytes] = {}
        #: (due, record id) of the publications' next puts (lazy: valid while pub.due == due)
        self._refresh_heap: list[tuple[float, bytes]] = []
        self._lookups: dict[str, _Lookup] = {}
        self._gets: dict[int, str] = {}
        self._watches: dict[str, _Watch] = {}
        self._listens: dict[int, str] = {}
        self._resync_at: float | None = None
        self._values_budget = TokenBucket(config.values_per_s, config.values_burst, now)
        self._verify_budget = TokenBucket(config.verifies_per_s, config.verifies_burst, now)
        self._drop_journal = JournalGate(DROP_JOURNAL_INTERVAL_S, MAX_DROP_JOURNAL_KEYS,
                                         TokenBucket(config.journal_drops_per_s,
                                                     config.journal_drops_burst, now))
        self._drops_suppressed = 0
        self._flap_budget = TokenBucket(1.0 / UPLINK_FLAP_JOURNAL_INTERVAL_S,
                                        UPLINK_FLAP_JOURNAL_BURST, now)
        self._flaps_suppressed = 0
        self._keys_cache: dict[str, AorKeys] = {}
        #: The node's trust records (meshcomm.dht.revocations; the node core sets it),
        #: and when the remote view is next checked against them (they changed).
        self.revocations = revocations
        self._trust_check_at: float | None = None

    # ------------------------------------------------------------ driving API
    def next_event(self) -> BridgeEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        times = [self.uplink.next_timer(), self.remote.next_timer(), self._resync_at,
                 self._next_refresh(), self._next_lookup(), self._trust_check_at]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        if self._trust_check_at is not None:
            self._forget_revoked()
        due = self.uplink.next_timer()
        if due is not None and due <= now:
            self._uplink_changed(self.uplink.on_timer(now), now)
        for change in self.remote.on_timer(now):
            self._remote_change(change)
        if self._resync_at is not None and self._resync_at <= now:
            self._resync(now, spread_s=0.0)
        while (due := self._next_refresh()) is not None and due <= now:
            _, rid = heapq.heappop(self._refresh_heap)
            self._put(rid, self._published[rid], now)
        for aor, lookup in list(self._lookups.items()):
            if lookup.deadline <= now:
                self._lookup_timer(aor, lookup, now)

    def on_dht(self, result: DhtResult, now: float) -> None:
        """A result from the DHT port."""
        if isinstance(result, DhtPeers):
            self._uplink_changed(self.uplink.on_peers(result.good, now), now)
        elif isinstance(result, DhtValues):
            self._on_values(result, now)
        else:
            self._on_done(result, now)

    def trust_changed(self, _record: object, now: float) -> None:
        """A trust record was stored (an observer of the node's trust store): what the
        remote view holds is checked against the records at the next timer (once for a
        batch of records; at once when a resolution is answered before)."""
        if self._trust_check_at is None:
            self._trust_check_at = now

    def _forget_revoked(self) -> None:
        """Claims the records now refuse leave the remote view, and so do attachments of
        revoked relays (journaled; watchers hear the news)."""
        self._trust_check_at = None
        revocations = self.revocations
        changes, forgotten = self.remote.forget_refused(
            lambda b: bool(revocations.binding_refusal(b)), revocations.key_revoked)
        self.counters[DhtCounter.REVOKED_FORGOTTEN] += forgotten
        for change in changes:
            self._remote_change(change)

    # ------------------------------------------------------------ status
    @property
    def published(self) -> int:
        return len(self._published)

    @property
    def uplink_state(self) -> UplinkState:
        return self.uplink.state

    def status(self) -> BridgeStatus:
        up = self.uplink
        return BridgeStatus(up.state.value, up.peers, up.since, self.secret.private,
                            len(self._published), len(self.remote), len(self._lookups),
                            len(self._watches))

    # ------------------------------------------------------------ publishing inputs
    def on_overlay_record(self, record: JournalRecord, now: float) -> None:
        """An overlay journal record: bindings learned, updated or expired in the island."""
        payload = record.payload
        if isinstance(payload, BindingLearned | BindingUpdated):
            stored = self.table.get(payload.record)
            if stored is not None:
                self.publish(stored.binding, now)
        elif isinstance(payload, BindingExpired):
            for rid in list(self._published_by_aor.get(payload.aor.lower(), ())):
                if self.table.get(rid) is None:
                    self.withdraw(rid, now)

    def publish(self, binding: Binding, now: float) -> None:
        """Publish (or refresh at once) a binding or tombstone the island's table holds."""
        if not self.config.publish:
            return
        rid = binding.record_id
        stored = self.table.get(rid)
        if stored is None or stored.binding.seq != binding.seq:
            return  # not (or no longer) what the table holds: the table decides
        if stored.state in UNPUBLISHED_STATES:
            self.withdraw(rid, now)
            return
        pub = self._published.get(rid)
        if pub is None:
            if len(self._published) >= self.config.max_published:
                return
            pub = _Published(binding, self._keys(binding.aor))
            self._published[rid] = pub
            self._published_by_aor.setdefault(pub.keys.aor, set()).add(rid)
        elif pub.binding.seq == binding.seq and (pub.due is not None or pub.token is not None):
            return  # already published and scheduled
        pub.binding = binding
        self._put(rid, pub, now)
        if self._resync_at is None and self.uplink.is_up:
            self._resync_at = now + self.config.resync_s

    def withdraw(self, record_id: bytes, now: float) -> None:
        """Stop refreshing ``record_id`` (it left the table: it lapses in the DHT). A
        de-registration is published as its tombstone through :meth:`publish`."""
        pub = self._published.pop(record_id, None)
        if pub is None:
            return
        if pub.token is not None:
            self._puts.pop(pub.token, None)
        ids = self._published_by_aor.get(pub.keys.aor)
        if ids is not None:
            ids.discard(record_id)
            if not ids:
                del self._published_by_aor[pub.keys.aor]

    # ------------------------------------------------------------ resolving inputs
    def set_uplink_addrs(self, addrs: tuple[str, ...], now: float) -> None:
        """Our uplink addresses changed (a NAT's mapping learned or changed): what we
        publish names them from now on, every publication is put again (spread over
        ``republish_spread_s``). Malformed ones raise ValueError; at most
        MAX_UPLINK_ADDRS are kept, in order."""
        for addr in addrs:
            try:
                check_uplink_addr(addr)
            except DecodeError as exc:
                raise ValueError(f"uplink address: {exc}") from exc
        addrs = tuple(dict.fromkeys(addrs))[:MAX_UPLINK_ADDRS]
        if addrs == self.uplink_addrs:
            return
        self.uplink_addrs = addrs
        if not self.uplink.is_up:
            return
        for rid, pub in self._published.items():
            if pub.token is None and not pub.final:
                self._schedule(rid, pub, now + self.rng.uniform(
                    0.0, self.config.republish_spread_s))

    def resolve(self, aor: str, now: float) -> int:
        """Look ``aor`` up; the answer comes as :class:`Resolved` or :class:`NotFound`
        with the returned token."""
        token = self._next_token()
        norm = normalise_aor(aor)
        if self._trust_check_at is not None:
            self._forget_revoked()           # never answer from what the records refuse
        if not self.uplink.is_up:
            known = self.remote.view(norm, reachable=False)
            self._answer(token, norm, known, NotFoundReason.UPLINK_DOWN)
            return token
        entry = self.remote.get(norm)
        if entry is not None:
            known = self.remote.view(norm)
            if any(b.reachable for b in known):
                self.counters[DhtCounter.RESOLVED_FROM_CACHE] += 1
                self._answer(token, norm, known, NotFoundReason.NOT_FOUND)
                return token
            if not known and entry.negative_until > now:
                self._answer(token, norm, (), NotFoundReason.NOT_FOUND)
                return token
        lookup = self._lookups.get(norm)
        if lookup is not None and len(lookup.waiters) < self.config.max_waiters:
            lookup.waiters.append(token)
        elif lookup is not None or len(self._lookups) >= self.config.max_lookups:
            self.counters[DhtCounter.LOOKUPS_BUSY] += 1
            self._answer(token, norm, (), NotFoundReason.BUSY)
        else:
            cfg = self.config
            lookup = _Lookup(self._keys(norm), _Allowance(
                TokenBucket(0.0, cfg.values_per_lookup, now),
                TokenBucket(0.0, cfg.verifies_per_lookup, now)), now, [token])
            self._lookups[norm] = lookup
            self._get(norm, lookup, now)
        return token

    def watch(self, aor: str, now: float) -> bool:
        """Listen for changes of ``aor`` while a dialog uses it (counted references);
        False when too many AoRs are watched."""
        norm = normalise_aor(aor)
        found = self._watches.get(norm)
        if found is not None:
            found.refs += 1
            return True
        if len(self._watches) >= self.config.max_watches:
            self.counters[DhtCounter.WATCHES_REFUSED] += 1
            return False
        cfg = self.config
        watch = _Watch(self._keys(norm), _Allowance(
            TokenBucket(cfg.watch_values_per_s, cfg.watch_values_burst, now),
            TokenBucket(cfg.watch_values_per_s, cfg.watch_values_burst, now)))
        self._watches[norm] = watch
        if self.uplink.is_up:
            self._listen(norm, watch)
        return True

    def unwatch(self, aor: str, now: float) -> None:
        norm = normalise_aor(aor)
        watch = self._watches.get(norm)
        if watch is None:
            return
        watch.refs -= 1
        if watch.refs <= 0:
            del self._watches[norm]
            self._cancel(watch)

    # ------------------------------------------------------------ uplink
    def _uplink_changed(self, change: UplinkChange | None, now: float) -> None:
        if change is None:
            return
        self.counters[DhtCounter.UPLINK_CHANGES] += 1
        self._journal_uplink(change, now)
        was_up = change.previous in (UplinkState.UP, UplinkState.GRACE)
        if self.uplink.is_up and not was_up:
            self._resync(now, spread_s=self.config.republish_spread_s)
        elif was_up and not self.uplink.is_up:
            self._went_down(now)

    def _journal_uplink(self, change: UplinkChange, now: float) -> None:
        states = {change.previous, change.state}
        if UplinkState.JOINING in states and UplinkState.UP not in states:
            return  # DOWN <-> JOINING: still down for the mode
        if states == {UplinkState.UP, UplinkState.GRACE} and not self._flap_budget.take(now):
            self._flaps_suppressed += 1
            self.counters[DhtCounter.UPLINK_JOURNAL_SUPPRESSED] += 1
            return
        self._events.append(JournalRecord.of(UplinkChanged(
            state=change.state.value, previous=change.previous.value, peers=change.peers,
            suppressed=self._flaps_suppressed)))
        self._flaps_suppressed = 0

    def _went_down(self, now: float) -> None:
        """Stop publishing, cancel listens, answer the lookups with what is known."""
        self._resync_at = None
        for pub in self._published.values():
            pub.due, pub.token, pub.final, pub.settled = None, None, False, False
        self._puts.clear()
        self._refresh_heap.clear()
        for watch in self._watches.values():
            self._cancel(watch)
        for aor, lookup in list(self._lookups.items()):
            self._finish(aor, lookup, now)

    # ------------------------------------------------------------ publishing
    def _resync(self, now: float, *, spread_s: float) -> None:
        """Listen again where the port ended a listen; publish what the table holds and
        we do not; forget what it no longer holds."""
        if not self.uplink.is_up:
            self._resync_at = None
            return
        self._resync_at = now + self.config.resync_s
        for aor, watch in self._watches.items():
            if watch.token is None:  # the port ended (or refused) its listen: again
                self._listen(aor, watch)
        if not self.config.publish:
            return
        for rid in [r for r in self._published if self.table.get(r) is None]:
            self.withdraw(rid, now)
        for stored in self.table:
            rid = stored.binding.record_id
            pub = self._published.get(rid)
            if stored.state in UNPUBLISHED_STATES:
                self.withdraw(rid, now)
            elif pub is None or pub.binding.seq != stored.binding.seq:
                self.publish(stored.binding, now)
            elif pub.due is None and pub.token is None and not pub.final:
                self._schedule(rid, pub, now + self.rng.uniform(0.0, spread_s))

    def _put(self, rid: bytes, pub: _Published, now: float) -> None:
        pub.due = None
        if not self.uplink.is_up:
            return
        stored = self.table.get(rid)
        if stored is None or stored.state in UNPUBLISHED_STATES:
            self.withdraw(rid, now)
            return
        if stored.binding.seq != pub.binding.seq:
            pub.binding = stored.binding
        cfg = self.config
        left_s = stored.expires_at - now
        ttl = int(min(cfg.record_ttl_s, left_s))
        if ttl < cfg.min_put_ttl_s:
            self.counters[DhtCounter.PUT_SKIPPED_SHORT] += 1
            pub.final = True
            return
        wall = now + self.wall_offset_s
        self._seq += 1
        att = make_attachment(self.identity, incident=self.ctx.incident, binding=pub.binding,
                              addrs=self.uplink_addrs, issued_at=wall, expires_at=wall + ttl,
                              seq=self._seq)
        value = encode_dht_value(DhtRecord(pub.binding, att), pub.keys,
                                 self.rng.randbytes(NONCE_BYTES))
        if pub.token is not None:
            self._puts.pop(pub.token, None)
        pub.token = self._next_token()
        self._puts[pub.token] = rid
        self.counters[DhtCounter.PUTS] += 1
        self._events.append(DhtPut(pub.token, pub.keys.dht_key, value, ttl))
        pub.final = left_s <= ttl
        if not pub.final:
            jitter = 1.0 + cfg.refresh_jitter * self.rng.uniform(-1.0, 1.0)
            self._schedule(rid, pub, now + ttl * cfg.refresh_fraction * jitter)

    def _schedule(self, rid: bytes, pub: _Published, due: float) -> None:
        pub.due = due
        heap = self._refresh_heap
        heapq.heappush(heap, (due, rid))
        if len(heap) > 2 * len(self._published) + REFRESH_HEAP_SLACK:
            self._refresh_heap = [(p.due, r) for r, p in self._published.items()
                                  if p.due is not None]
            heapq.heapify(self._refresh_heap)

    def _next_refresh(self) -> float | None:
        heap = self._refresh_heap
        while heap:
            due, rid = heap[0]
            pub = self._published.get(rid)
            if pub is not None and pub.due == due:
                return due
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------ DHT results
    def _on_done(self, result: DhtDone, now: float) -> None:
        token = result.token
        rid = self._puts.pop(token, None)
        if rid is not None:
            pub = self._published.get(rid)
            if pub is not None and pub.token == token:
                pub.token = None
                if not result.ok:
                    self.counters[DhtCounter.PUTS_FAILED] += 1
                    pub.final = False
                    if self.uplink.is_up:
                        self._schedule(rid, pub, now + self.config.put_retry_s)
                elif not pub.settled and not pub.final and self.uplink.is_up:
                    # A put into a young DHT may land far from the key's true neighbours
                    # (they were not known yet): put it once more soon (tools/bench/dht).
                    pub.settled = True
                    early = now + self.config.early_reput_s
                    if pub.due is None or early < pub.due:
                        self._schedule(rid, pub, early)
            return
        aor = self._gets.pop(token, None)
        if aor is not None:
            lookup = self._lookups.get(aor)
            if lookup is not None and lookup.get_token == token:
                if not result.ok:
                    self.counters[DhtCounter.GETS_FAILED] += 1
                self._get_done(aor, lookup, now)
            return
        aor = self._listens.pop(token, None)
        if aor is not None:
            watch = self._watches.get(aor)
            if watch is not None and watch.token == token:
                watch.token = None  # the listen ended: listened again at the next resync
            return
        self.counters[DhtCounter.STRAY_RESULTS] += 1

    def _on_values(self, result: DhtValues, now: float) -> None:
        aor = self._gets.get(result.token)
        allowance: _Allowance | None = None
        if aor is not None:
            lookup = self._lookups.get(aor)
            allowance = lookup.allowance if lookup is not None else None
        else:
            aor = self._listens.get(result.token)
            watch = self._watches.get(aor) if aor is not None else None
            allowance = watch.allowance if watch is not None else None
        if aor is None or allowance is None:
            self.counters[DhtCounter.STRAY_RESULTS] += 1
            return
        values = result.values
        if len(values) > MAX_VALUES_PER_RESULT:
            self.counters[DhtCounter.VALUES_OVER_RESULT] += len(values) - MAX_VALUES_PER_RESULT
            values = values[:MAX_VALUES_PER_RESULT]
        changed = False
        keys = self._keys(aor)
        for index, value in enumerate(values):
            if not (allowance.values.take(now) and self._values_budget.take(now)):
                self.counters[DhtCounter.VALUES_OVER_BUDGET] += len(values) - index
                break
            changed = self._take_value(keys, value, allowance, now) or changed
        if changed and aor in self._watches:
            self._events.append(RemoteChanged(aor, self.remote.view(aor)))

    def _take_value(self, keys: AorKeys, value: bytes, allowance: _Allowance,
                    now: float) -> bool:
        """Decode, verify and merge one value; True if the remote view changed."""
        self.counters[DhtCounter.VALUES] += 1
        wall = now + self.wall_offset_s
        try:
            record = decode_dht_value_untrusted(value, keys)
        except DecodeError:
            self._drop(RecordReject.UNDECODABLE, keys.aor, now)
            return False
        ctx = self._context()
        reason = (precheck_record(record, keys.aor, ctx, wall)
                  or revocation_reject(self.revocations, record.binding,
                                       record.attachment.relay_key))
        if reason is not None:
            self._drop(reason, keys.aor, now)
            return False
        if self.remote.is_duplicate(keys.aor, record):
            self.counters[DhtCounter.DUPLICATES] += 1
            return False
        if not (allowance.verifies.take(now) and self._verify_budget.take(now)):
            self.counters[DhtCounter.VERIFY_OVER_BUDGET] += 1
            return False
        reason = verify_signatures(record, ctx, wall)
        if reason is not None:
            self._drop(reason, keys.aor, now)
            return False
        binding = record.binding
        cred = credentialed(binding, ctx.policy, wall)
        outcome, change = self.remote.merge(
            keys.aor, record, now, wall, credentialed=cred,
            remembered=self.ctx.freshness.floor(binding.record_id, wall))
        if isinstance(outcome, RecordReject):
            self._drop(outcome, keys.aor, now)
            return False
        if outcome is MergeOutcome.DUPLICATE:
            self.counters[DhtCounter.DUPLICATES] += 1
            return False
        self.counters[DhtCounter.ACCEPTED] += 1
        self.ctx.freshness.accepted(binding, wall, credentialed=cred)
        if change is not None:
            self._remote_change(change, notify=False)  # the batch notifies once
        return outcome is MergeOutcome.CHANGED

    def _context(self) -> VerifyContext:
        """The verify context with the table's trust policy as it is now (trust records
        change its agency keys: an added mutual-aid agency, a revoked one)."""
        if self.ctx.policy is not self.table.policy:
            self.ctx = dataclasses.replace(self.ctx, policy=self.table.policy)
        return self.ctx

    def _drop(self, reason: RecordReject, aor: str, now: float) -> None:
        """Count a dropped value and journal it (rate-limited per reason and AoR, and
        globally: a flood cannot grow the journal)."""
        self.counters[DROP_COUNTERS[reason]] += 1
        if not self._drop_journal.allow((reason.value, aor), now):
            self.counters[DhtCounter.DROP_JOURNAL_SUPPRESSED] += 1
            self._drops_suppressed += 1
            return
        self._events.append(JournalRecord.of(DhtValueDropped(
            reason=reason.value, aor=aor, suppressed=self._drops_suppressed)))
        self._drops_suppressed = 0

    def _remote_change(self, change: StateChange, *, notify: bool = True) -> None:
        binding = change.binding
        self._events.append(JournalRecord.of(RemoteBindingChanged(
            aor=binding.aor, node=binding.node_id.hex(), seq=binding.seq,
            state=change.state.value, relays=tuple(r.hex() for r in change.relays))))
        if notify and change.aor in self._watches:
            self._events.append(RemoteChanged(change.aor, self.remote.view(change.aor)))

    # ------------------------------------------------------------ lookups
    def _get(self, aor: str, lookup: _Lookup, now: float) -> None:
        lookup.get_token = token = self._next_token()
        lookup.deadline = now + self.config.get_timeout_s
        self._gets[token] = aor
        self.counters[DhtCounter.GETS] += 1
        self._events.append(DhtGet(token, lookup.keys.dht_key))

    def _lookup_timer(self, aor: str, lookup: _Lookup, now: float) -> None:
        if lookup.get_token is None:  # the miss retry is due
            self._get(aor, lookup, now)
            return
        self._gets.pop(lookup.get_token, None)
        self.counters[DhtCounter.GETS_FAILED] += 1
        self._get_done(aor, lookup, now)

    def _get_done(self, aor: str, lookup: _Lookup, now: float) -> None:
        if lookup.get_token is not None:
            self._gets.pop(lookup.get_token, None)
        lookup.get_token = None
        if not any(b.reachable for b in self.remote.view(aor)) and not lookup.retried:
            lookup.retried = True
            lookup.deadline = now + self.config.miss_retry_s
            self.counters[DhtCounter.MISS_RETRIES] += 1
            return
        self._finish(aor, lookup, now)

    def _finish(self, aor: str, lookup: _Lookup, now: float) -> None:
        if self._trust_check_at is not None:
            self._forget_revoked()
        del self._lookups[aor]
        if lookup.get_token is not None:
            self._gets.pop(lookup.get_token, None)
        up = self.uplink.is_up
        known = self.remote.view(aor, reachable=up)
        if not known and up:
            self.remote.entry(aor).negative_until = now + self.config.negative_ttl_s
        reason = NotFoundReason.NOT_FOUND if up else NotFoundReason.UPLINK_DOWN
        for token in lookup.waiters:
            self._answer(token, aor, known, reason)

    def _next_lookup(self) -> float | None:
        return min((lk.deadline for lk in self._lookups.values()), default=None)

    def _answer(self, token: int, aor: str, known: tuple[RemoteBinding, ...],
                reason: NotFoundReason) -> None:
        if known:
            self.counters[DhtCounter.RESOLVED] += 1
            self._events.append(Resolved(token, aor, known))
        else:
            self.counters[DhtCounter.NOT_FOUND] += 1
            self._events.append(NotFound(token, aor, reason))

    # ------------------------------------------------------------ listens
    def _listen(self, aor: str, watch: _Watch) -> None:
        watch.token = token = self._next_token()
        self._listens[token] = aor
        self.counters[DhtCounter.LISTENS] += 1
        self._events.append(DhtListen(token, watch.keys.dht_key))

    def _cancel(self, watch: _Watch) -> None:
        if watch.token is None:
            return
        self._listens.pop(watch.token, None)
        self.counters[DhtCounter.CANCELS] += 1
        self._events.append(DhtCancel(watch.token))
        watch.token = None

    # ------------------------------------------------------------ helpers
    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _keys(self, aor: str) -> AorKeys:
        norm = normalise_aor(aor)
        found = self._keys_cache.get(norm)
        if found is None:
            if len(self._keys_cache) >= 2 * self.config.max_cached_aors:
                self._keys_cache.clear()
            found = self._keys_cache[norm] = keys_for(self.secret, norm)
        return found

