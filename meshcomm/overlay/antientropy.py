"""Anti-entropy: neighbours compare table digests and pull what they lack.

1. Every node broadcasts a DIGEST (jittered period): record count and one 64-bit hash per
   bucket of the binding table (buckets by record id).
2. A neighbour whose buckets differ answers with SUMMARY pages of (record id, seq),
   unicast to the digest's sender. A page lists every record of its buckets, or, for a
   bucket too large for one page, every record in a half-open range of record ids
   ``[lo, hi)`` (empty bound: open end), so a bucket of any size is covered by consecutive
   pages. At most ``MAX_SUMMARY_PAGES_PER_ANSWER`` pages answer one digest: a window that
   moves on from answer to answer, so every page of the differing buckets is sent within
   a few rounds and tables as large as the table bound converge.
3. The digest's sender pushes (RECORDS) what a page lacks or has older (at most
   ``MAX_PUSH_PER_SUMMARY`` per page), and PULLs what it has newer; records new to the
   puller are pulled only as far as its admission budget for that neighbour reaches.
   The puller answers PULL with RECORDS.

Every record in RECORDS carries, outside its signature, how long the sender has held it
as its AoR's holder (open policy; -1 if it does not): a node that has not settled on a
holder adopts the one its neighbours agree on (see :mod:`meshcomm.location.holder`), and
asks its neighbours (a broadcast PULL of the contested claims) when it meets a contest.

A change learned this way triggers an early digest, so repairs travel quickly.

**Trickle (issue 13).** Digests follow a Trickle timer (RFC 6206 section 4.2,
:mod:`.trickle`): the interval starts at ``anti_entropy_interval_s`` (Imin) and doubles
up to Imin * 2**``trickle_digest_doublings`` while every digest heard equals ours (a
*consistent* one: same bucket hashes and trust hash); a digest is sent at a random time
in the second half of its interval unless ``trickle_digest_k`` consistent ones were heard
in it. Back to Imin on any inconsistency: a digest that differs from ours (verified), a
binding or tombstone new to our table (flooded, pulled or our own), a trust record
learned, a new neighbour. At Imin a reset changes nothing, so a neighbour sending
differing digests costs at most the fixed rate of before. SUMMARY/PULL/RECORDS after a
mismatch are as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshcomm.errors import DecodeError
from meshcomm.location.binding import RECORD_ID_LEN, binding_from_envelope_untrusted
from meshcomm.location.table import DIGEST_BUCKETS, MergeOutcome, TrustMode, bucket_of
from meshcomm.overlay.counters import DropReason, OverlayCounter, TxTag
from meshcomm.overlay.ratelimit import link_host
from meshcomm.overlay.timers import TimerKind
from meshcomm.overlay.trickle import Beacon, Fired, TrickleCounter
from meshcomm.types import SIGNATURE_LEN, LinkAddr, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    MAX_AGE_MS,
    MAX_METRIC,
    Envelope,
    Hop,
    MsgType,
    decode_signed_untrusted,
)

if TYPE_CHECKING:
    from meshcomm.overlay.context import OverlayContext

#: Room left in a datagram for a payload, after the envelope's own fields.
PAYLOAD_BUDGET_BYTES = limits.MAX_DATAGRAM_BYTES - 220
#: An early digest is sent at most this often.
MIN_EARLY_DIGEST_GAP_S = 0.25
#: After a change learned, our digest goes out after a delay in this range (s): past
#: the random assessment delay of the flood's rebroadcasts (rad_max_s, 60 ms by default).
CHANGE_DIGEST_DELAY_S = (0.15, 0.35)
#: Two digests of the Trickle timer are never closer than this fraction of Imin (the
#: shortest jittered period of the fixed digests of before).
MIN_DIGEST_GAP = 0.75
EARLY_DIGEST_DELAY_S = (0.02, 0.12)
#: A record broadcast (pushed or pulled) this recently is not sent again: every
#: neighbour heard it. The same holds for a record already being pulled.
RECENT_SEND_S = 0.5
PULL_PATIENCE_S = 1.0
MAX_RECENT = 4096
#: Neighbours whose last digest answer time is kept (past this the record starts over).
MAX_ANSWERED = 256
#: A contested AoR is asked about at most this often, and this many AoRs are tracked.
ASK_INTERVAL_S = 2.0
MAX_ASKED = 256

SummaryPage = tuple[list[int], list[list[object]], bytes, bytes]
#: Timer key of a Trickle digest put off because an early one had just gone out.
_DEFERRED = b"deferred"


class AntiEntropy:
    def __init__(self, ctx: OverlayContext) -> None:
        self.ctx = ctx
        self._last_digest_at = -1e9
        self._early_pending = False
        self._answered: dict[str, float] = {}
        self._recently_sent: dict[bytes, float] = {}
        self._pulling: dict[bytes, float] = {}
        self._asked: dict[str, float] = {}
        self._cursor = 0
        #: The digest timer (armed by :meth:`start`).
        self.timer: Beacon | None = None

    # -------------------------------------------------------------- digests
    def start(self, now: float) -> None:
        """Arm the digest timer (the first digest in the second half of Imin)."""
        cfg = self.ctx.config
        interval = cfg.anti_entropy_interval_s
        self.timer = timer = Beacon(interval, self.ctx.rng, now, trickle=cfg.trickle,
                                    doublings=cfg.trickle_digest_doublings,
                                    k=cfg.trickle_digest_k,
                                    first_s=(interval * 0.5, interval),
                                    min_gap_s=interval * MIN_DIGEST_GAP)
        self.ctx.schedule(timer.next_at(), TimerKind.DIGEST, timer.timer_key())

    def changed(self, now: float, *, learned: bool = False) -> None:
        """Something new to our table (``learned``) or a neighbour's differs: Trickle
        reset. After something learned our digest goes out once the flood that brought
        it has passed (CHANGE_DIGEST_DELAY_S, gap allowing): a neighbour that missed the
        flood hears at once that it differs, as with the fixed digests of before, where
        its own periodic digest also told us."""
        timer = self.timer
        if timer is not None and timer.inconsistent(now, urgent=learned, local=learned,
                                                    delay_s=CHANGE_DIGEST_DELAY_S):
            self.ctx.counters[TrickleCounter.DIGEST_RESETS] += 1
            self.ctx.schedule(timer.next_at(), TimerKind.DIGEST, timer.timer_key())

    def soon(self, now: float) -> None:
        """Ask for an early digest (rate-limited), and reset the digest timer."""
        self.changed(now, learned=True)
        if self._early_pending:
            return
        self._early_pending = True
        earliest = max(now, self._last_digest_at + MIN_EARLY_DIGEST_GAP_S)
        self.ctx.schedule(earliest + self.ctx.rng.uniform(*EARLY_DIGEST_DELAY_S),
                        TimerKind.DIGEST, b"early")

    def digest_due(self, key: bytes, now: float) -> None:
        if key == b"early":
            self._early_pending = False
        elif key != _DEFERRED:
            timer = self.timer
            if timer is None or not timer.is_current(key):
                return                      # armed for a deadline a reset replaced
            fired = timer.due(now)
            self.ctx.schedule(timer.next_at(), TimerKind.DIGEST, timer.timer_key())
            if fired is Fired.SUPPRESSED:
                self.ctx.counters[TrickleCounter.DIGEST_SUPPRESSED] += 1
            if fired is not Fired.TRANSMIT:
                return
        if len(self.ctx.neighbours) == 0:
            return
        if now - self._last_digest_at < MIN_EARLY_DIGEST_GAP_S:
            if key not in (b"early", _DEFERRED):     # the timer's own: later, not never
                self.ctx.schedule(self._last_digest_at + MIN_EARLY_DIGEST_GAP_S,
                                  TimerKind.DIGEST, _DEFERRED)
            return
        self._last_digest_at = now
        env = self.ctx.seal(MsgType.DIGEST, [len(self.ctx.table), self.ctx.table.bucket_hashes(),
                                             *self.ctx.trust.digest_field()])
        self.ctx.transmit(env, Hop(), None, TxTag.DIGEST)

    def on_digest(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        fields = env.payload
        if not isinstance(fields, list) or len(fields) not in (2, 3):
            raise DecodeError("digest: expected 2 or 3 fields")
        if len(fields) == 3 and (type(fields[2]) is not int or not 0 <= fields[2] < 1 << 64):
            raise DecodeError("digest: trust hash is not an unsigned 64-bit integer")
        if len(fields) == 3 or self.ctx.trust.active:  # trust records (.trustsync)
            self.ctx.trust.on_digest_field(fields[2:], env, src, now)
        theirs = fields[1]
        mine = self.ctx.table.bucket_hashes()
        if theirs == mine:  # the common case; equal to our ints means well-formed
            if fields[2:] == self.ctx.trust.digest_field():
                if self.timer is not None:
                    self.timer.heard_consistent()
            else:               # trust records differ (either side may hold none)
                self._trust_differs(env, src, now)
            return
        if (type(theirs) is not list or len(theirs) != DIGEST_BUCKETS
                or not all(type(h) is int and 0 <= h < 1 << 64 for h in theirs)):
            raise DecodeError("digest: expected 16 unsigned 64-bit bucket hashes")
        differing = [i for i in range(DIGEST_BUCKETS) if theirs[i] != mine[i]]
        if self.timer is not None and self.timer.current_s <= self.timer.interval_s:
            self.changed(now)       # at Imin: only unsuppresses (see _differs)
        host = link_host(src)
        last = self._answered.get(host)
        if last is not None and now - last < self.ctx.config.anti_entropy_interval_s * 0.4:
            return
        if not self.ctx.verified(env, src, now):
            return
        self.changed(now)
        if len(self._answered) >= MAX_ANSWERED:
            self._answered.clear()
        self._answered[host] = now
        pages = self._summary_pages(differing)
        cap = limits.MAX_SUMMARY_PAGES_PER_ANSWER
        if len(pages) > cap:  # a window that moves on with every answer: all get sent
            self._cursor = (self._cursor + cap) % len(pages)
            pages = (pages[self._cursor:] + pages[:self._cursor])[:cap]
        for page in pages:
            env = self.ctx.seal(MsgType.SUMMARY, list(page))
            self.ctx.transmit(env, Hop(), src, TxTag.SUMMARY)

    def _trust_differs(self, env: Envelope, src: LinkAddr, now: float) -> None:
        """A digest whose trust hash differs from ours: our digest goes out soon (an
        urgent Trickle reset), since only the side that hears the other's digest answers
        with its trust ids (.trustsync). Checked only above Imin; at Imin an urgent reset
        brings this interval's digest forward, no more than one per interval and never
        closer than the minimum gap: at most the fixed rate of before."""
        timer = self.timer
        if (timer is not None and (timer.current_s <= timer.interval_s
                                   or self.ctx.verified(env, src, now))
                and timer.inconsistent(now, urgent=True)):
            self.ctx.counters[TrickleCounter.DIGEST_RESETS] += 1
            self.ctx.schedule(timer.next_at(), TimerKind.DIGEST, timer.timer_key())

    def _summary_pages(self, buckets: list[int]) -> list[SummaryPage]:
        """Pages covering ``buckets`` in order."""
        size = limits.MAX_SUMMARY_ENTRIES
        pages: list[SummaryPage] = []
        small: list[int] = []
        small_entries: list[list[object]] = []
        for b in buckets:
            sorted_ids = self.ctx.table.bucket_entries(b)
            entries: list[list[object]] = [[rid, seq] for rid, seq in sorted_ids]
            if len(entries) <= size:
                if small and len(small_entries) + len(entries) > size:
                    pages.append((small, small_entries, b"", b""))
                    small, small_entries = [], []
                small.append(b)
                small_entries.extend(entries)
            else:
                for i in range(0, len(entries), size):
                    lo = sorted_ids[i][0] if i else b""
                    hi = sorted_ids[i + size][0] if i + size < len(entries) else b""
                    pages.append(([b], entries[i:i + size], lo, hi))
        if small:
            pages.append((small, small_entries, b"", b""))
        return pages

    # -------------------------------------------------------------- reconciliation
    def on_summary(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        buckets, theirs, lo, hi = read_summary_untrusted(env.payload)
        if not self.ctx.verified(env, src, now):
            return
        push: list[bytes] = []
        for b in buckets:
            for rid, seq in self.ctx.table.bucket_entries(b):
                if (not lo or rid >= lo) and (not hi or rid < hi) and theirs.get(rid, -1) < seq:
                    push.append(rid)
        if len(push) > limits.MAX_PUSH_PER_SUMMARY:
            deferred = len(push) - limits.MAX_PUSH_PER_SUMMARY
            self.ctx.counters[OverlayCounter.AE_PUSH_DEFERRED] += deferred
            del push[limits.MAX_PUSH_PER_SUMMARY:]
        new_budget = self.ctx.admission.budget(link_host(src), now)
        if len(self.ctx.table) >= self.ctx.table.max_records:
            # Full: a newcomer gets in only by displacing one of lower standing; try a
            # frame's worth per page rather than pulling what would mostly be refused.
            new_budget = min(new_budget, limits.MAX_RECORDS_PER_FRAME)
        pull = []
        for rid, seq in theirs.items():
            if (bucket_of(rid) not in buckets
                    or now - self._pulling.get(rid, -1e9) < PULL_PATIENCE_S):
                continue
            stored = self.ctx.table.get(rid)
            if stored is None:
                if new_budget <= 0:
                    self.ctx.counters[OverlayCounter.AE_PULL_DEFERRED] += 1
                    continue
                new_budget -= 1
                pull.append(rid)
            elif stored.binding.seq < seq:
                pull.append(rid)
        if push:
            self.send_records(push, now)
        _remember(self._pulling, pull, now)
        for i in range(0, len(pull), limits.MAX_PULL_IDS):
            req = self.ctx.seal(MsgType.PULL, pull[i:i + limits.MAX_PULL_IDS])
            self.ctx.transmit(req, Hop(), src, TxTag.PULL)

    def on_pull(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        ids = [codec.read_bytes(r, "pull.id", exact=RECORD_ID_LEN)
               for r in codec.read_list(env.payload, "pull", limits.MAX_PULL_IDS)]
        if not self.ctx.verified(env, src, now):
            return
        self.send_records(ids, now)

    def ask_holders(self, aor: str, record_ids: list[bytes], now: float) -> None:
        """Ask every neighbour for its view of a contested AoR (a broadcast PULL of the
        claims: the RECORDS answers carry who each neighbour holds, and since when)."""
        key = aor.lower()
        last = self._asked.get(key)
        if (last is not None and now - last < ASK_INTERVAL_S) or len(self.ctx.neighbours) == 0:
            return
        if len(self._asked) >= MAX_ASKED:
            self._asked.clear()
        self._asked[key] = now
        self.ctx.counters[OverlayCounter.AE_HOLDER_ASKS] += 1
        req = self.ctx.seal(MsgType.PULL, record_ids[:limits.MAX_PULL_IDS])
        self.ctx.transmit(req, Hop(), None, TxTag.PULL)

    def send_records(self, ids: list[bytes], now: float) -> None:
        """Broadcast the records (every neighbour that lacks them learns them too)."""
        page: list[list[object]] = []
        size = 0
        fresh = [rid for rid in ids
                 if now - self._recently_sent.get(rid, -1e9) >= RECENT_SEND_S]
        self.ctx.counters[OverlayCounter.AE_RECORDS_SKIPPED_RECENT] += len(ids) - len(fresh)
        _remember(self._recently_sent, fresh, now)
        for rid in fresh:
            stored = self.ctx.table.get(rid)
            if stored is None:
                continue
            env = stored.binding.envelope
            age_ms = min(MAX_AGE_MS, int(stored.age_s(now) * 1000))
            metric, hops, via = self._route_to(stored.binding.node_id, env.seq, now)
            item_size = len(env.signed_bytes) + len(env.signature) + 30
            if page and (size + item_size > PAYLOAD_BUDGET_BYTES
                         or len(page) >= limits.MAX_RECORDS_PER_FRAME):
                self._send_page(page)
                page, size = [], 0
            page.append([env.signed_bytes, env.signature, age_ms, metric, hops, via,
                         self.ctx.table.held_s(stored, now)])
            size += item_size
        if page:
            self._send_page(page)

    def _route_to(self, node: NodeId, seq: int, now: float) -> tuple[int, int, bytes]:
        """Our path metric, hop count and next hop (short id) to a record's origin, so the
        receiver also learns a route, not only the binding ((-1, -1, b"") if unknown).
        The next hop lets a receiver that is that next hop ignore the offer (split
        horizon: a route through the receiver itself would loop). A route learned from an
        older envelope of the origin than the record (``seq``) is not offered: the
        receiver takes a newer envelope's path whatever its metric (RouteTable.consider),
        and the old flood's metric with the new seq made two nodes point at each other
        (seen once digests went out while a refresh's flood was still spreading)."""
        if node == self.ctx.node_id:
            return 0, 0, b""
        route = self.ctx.routes.get(node, now)
        if route is None or route.hops < 0 or 0 <= route.seq < seq:
            return -1, -1, b""    # unknown, a fallback pointer, or an older flood's
        return route.metric, route.hops, route.next_hop_id[:4]

    def _send_page(self, page: list[list[object]]) -> None:
        self.ctx.transmit(self.ctx.seal(MsgType.RECORDS, page), Hop(), None, TxTag.RECORDS)

    def on_records(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        items = codec.read_list(env.payload, "records", limits.MAX_RECORDS_PER_FRAME)
        if not self.ctx.verified(env, src, now):
            return
        nb = self.ctx.neighbours.by_id.get(env.origin)
        voter = env.origin if nb is not None and nb.addr == src else None
        changed = False
        for item in items:
            try:
                fields = codec.read_tuple(item, "record", 7)
                inner = decode_signed_untrusted(
                    codec.read_bytes(fields[0], "record.signed"),
                    codec.read_bytes(fields[1], "record.signature", exact=SIGNATURE_LEN))
                age_ms = codec.read_int(fields[2], "record.age_ms", 0, MAX_AGE_MS)
                metric = codec.read_int(fields[3], "record.metric", -1, MAX_METRIC)
                hops = codec.read_int(fields[4], "record.hops", -1, limits.MAX_HOPS)
                through_us = codec.read_bytes(fields[5], "record.via", max_len=4) == \
                    self.ctx.short_id
                held_s = codec.read_int(fields[6], "record.held_s", -1,
                                        limits.MAX_HELD_REPORT_S)
                binding = binding_from_envelope_untrusted(inner)
            except DecodeError as exc:
                self.ctx.drop(DropReason.of(exc.reason), src, now)
                continue
            refusal = self.ctx.admission_refusal(binding, src, now)
            if refusal is not None:
                self.ctx.drop(refusal, src, now)
                continue
            result = self.ctx.offer_binding(binding, now, age_ms / 1000.0, src)
            self._pulling.pop(binding.record_id, None)
            if result.outcome is MergeOutcome.REJECTED:
                continue
            if voter is not None and self.ctx.table.policy.mode is TrustMode.OPEN:
                self.ctx.table.report_holder(voter, binding.record_id, held_s, now)
            if metric >= 0 and hops >= 0 and not through_us:
                self.ctx.learn_route(inner, Hop(hops=hops, metric=metric), src, now, env.origin)
            elif result.changed:
                # Only a record that is new to us proves the sender is nearer its origin.
                self.ctx.learn_fallback_route(inner, src, env.origin, now)
            if result.changed:
                self.ctx.counters[OverlayCounter.AE_LEARNED] += 1
                self.ctx.mark_seen(inner.digest, True)
                changed = True
        if changed:
            self.soon(now)


def read_summary_untrusted(payload: object) -> tuple[set[int], dict[bytes, int], bytes, bytes]:
    """[buckets, [[record id, seq], ...], lo, hi] of a SUMMARY page (see module doc)."""
    fields = codec.read_tuple(payload, "summary", 4)
    buckets = {codec.read_int(b, "summary.bucket", 0, DIGEST_BUCKETS - 1)
               for b in codec.read_list(fields[0], "summary.buckets", DIGEST_BUCKETS)}
    theirs: dict[bytes, int] = {}
    for item in codec.read_list(fields[1], "summary.entries", limits.MAX_SUMMARY_ENTRIES):
        pair = codec.read_tuple(item, "summary.entry", 2)
        rid = codec.read_bytes(pair[0], "summary.id", exact=RECORD_ID_LEN)
        theirs[rid] = codec.read_int(pair[1], "summary.seq")
    lo = codec.read_bytes(fields[2], "summary.lo", max_len=RECORD_ID_LEN)
    hi = codec.read_bytes(fields[3], "summary.hi", max_len=RECORD_ID_LEN)
    if (lo or hi) and len(buckets) != 1:
        raise DecodeError("summary: a ranged page covers exactly one bucket")
    for rid in theirs:
        if (lo and rid < lo) or (hi and rid >= hi):
            raise DecodeError("summary: entry outside the page's range")
    return buckets, theirs, lo, hi


def _remember(stamps: dict[bytes, float], ids: list[bytes], now: float) -> None:
    if len(stamps) + len(ids) > MAX_RECENT:
        stamps.clear()
    for rid in ids:
        stamps[rid] = now
