"""Anti-entropy: neighbours compare table digests and pull what they lack.

1. Every node broadcasts a DIGEST (jittered period): record count and one 64-bit hash per
   bucket of the binding table (buckets by record id).
2. A neighbour whose buckets differ answers with a SUMMARY of (record id, seq) for those
   buckets, unicast to the digest's sender.
3. The digest's sender pushes (RECORDS) what the summary lacks or has older, and PULLs
   what the summary has newer; the puller answers PULL with RECORDS.

A change learned this way triggers an early digest, so repairs travel quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshcomm.errors import DecodeError
from meshcomm.location.binding import RECORD_ID_LEN, binding_from_envelope_untrusted
from meshcomm.location.table import DIGEST_BUCKETS, MergeOutcome, bucket_of
from meshcomm.overlay.timers import TimerKind
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
    from meshcomm.overlay.core import GossipOverlay

#: Room left in a datagram for a payload, after the envelope's own fields.
PAYLOAD_BUDGET_BYTES = limits.MAX_DATAGRAM_BYTES - 220
#: An early digest is sent at most this often.
MIN_EARLY_DIGEST_GAP_S = 0.25
EARLY_DIGEST_DELAY_S = (0.02, 0.12)
#: A record broadcast (pushed or pulled) this recently is not sent again: every
#: neighbour heard it. The same holds for a record already being pulled.
RECENT_SEND_S = 0.5
PULL_PATIENCE_S = 1.0
MAX_RECENT = 4096


class AntiEntropy:
    def __init__(self, overlay: GossipOverlay) -> None:
        self.o = overlay
        self._last_digest_at = -1e9
        self._early_pending = False
        self._answered: dict[LinkAddr, float] = {}
        self._recently_sent: dict[bytes, float] = {}
        self._pulling: dict[bytes, float] = {}

    # -------------------------------------------------------------- digests
    def soon(self, now: float) -> None:
        """Ask for an early digest (rate-limited)."""
        if self._early_pending:
            return
        self._early_pending = True
        earliest = max(now, self._last_digest_at + MIN_EARLY_DIGEST_GAP_S)
        self.o.schedule(earliest + self.o.rng.uniform(*EARLY_DIGEST_DELAY_S),
                        TimerKind.DIGEST, b"early")

    def digest_due(self, key: bytes, now: float) -> None:
        if key == b"early":
            self._early_pending = False
        else:
            interval = self.o.config.anti_entropy_interval_s
            self.o.schedule(now + interval * self.o.rng.uniform(0.75, 1.25), TimerKind.DIGEST)
        if len(self.o.neighbours) == 0 or now - self._last_digest_at < MIN_EARLY_DIGEST_GAP_S:
            return
        self._last_digest_at = now
        env = self.o.seal(MsgType.DIGEST, [len(self.o.table), self.o.table.bucket_hashes()])
        self.o.transmit(env, Hop(), None, "digest")

    def on_digest(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        fields = codec.read_tuple(env.payload, "digest", 2)
        theirs = fields[1]
        mine = self.o.table.bucket_hashes()
        if theirs == mine:  # the common case; equal to our ints means well-formed
            return
        if (type(theirs) is not list or len(theirs) != DIGEST_BUCKETS
                or not all(type(h) is int and 0 <= h < 1 << 64 for h in theirs)):
            raise DecodeError("digest: expected 16 unsigned 64-bit bucket hashes")
        differing = [i for i in range(DIGEST_BUCKETS) if theirs[i] != mine[i]]
        last = self._answered.get(src)
        if last is not None and now - last < self.o.config.anti_entropy_interval_s * 0.4:
            return
        if not self.o.verified(env, src, now):
            return
        self._answered[src] = now
        self._send_summaries(differing, src)

    def _send_summaries(self, buckets: list[int], dst: LinkAddr) -> None:
        page_buckets: list[int] = []
        page_entries: list[list[object]] = []
        for b in buckets:
            entries = [[rid, seq] for rid, seq in self.o.table.bucket_entries(b)]
            if page_buckets and len(page_entries) + len(entries) > limits.MAX_SUMMARY_ENTRIES:
                self._send_summary(page_buckets, page_entries, dst)
                page_buckets, page_entries = [], []
            page_buckets.append(b)
            page_entries.extend(entries[:limits.MAX_SUMMARY_ENTRIES])
        if page_buckets:
            self._send_summary(page_buckets, page_entries, dst)

    def _send_summary(self, buckets: list[int], entries: list[list[object]],
                      dst: LinkAddr) -> None:
        env = self.o.seal(MsgType.SUMMARY, [buckets, entries])
        self.o.transmit(env, Hop(), dst, "summary")

    # -------------------------------------------------------------- reconciliation
    def on_summary(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        fields = codec.read_tuple(env.payload, "summary", 2)
        buckets = {codec.read_int(b, "summary.bucket", 0, DIGEST_BUCKETS - 1)
                   for b in codec.read_list(fields[0], "summary.buckets", DIGEST_BUCKETS)}
        theirs: dict[bytes, int] = {}
        for item in codec.read_list(fields[1], "summary.entries", limits.MAX_SUMMARY_ENTRIES):
            pair = codec.read_tuple(item, "summary.entry", 2)
            rid = codec.read_bytes(pair[0], "summary.id", exact=RECORD_ID_LEN)
            theirs[rid] = codec.read_int(pair[1], "summary.seq")
        if not self.o.verified(env, src, now):
            return
        push: list[bytes] = []
        for b in buckets:
            for rid, seq in self.o.table.bucket_entries(b):
                if theirs.get(rid, -1) < seq:
                    push.append(rid)
        pull = []
        for rid, seq in theirs.items():
            stored = self.o.table.get(rid)
            wanted = bucket_of(rid) in buckets and (stored is None or stored.binding.seq < seq)
            if wanted and now - self._pulling.get(rid, -1e9) >= PULL_PATIENCE_S:
                pull.append(rid)
        if push:
            self.send_records(push, now)
        _remember(self._pulling, pull, now)
        for i in range(0, len(pull), limits.MAX_PULL_IDS):
            req = self.o.seal(MsgType.PULL, pull[i:i + limits.MAX_PULL_IDS])
            self.o.transmit(req, Hop(), src, "pull")

    def on_pull(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        ids = [codec.read_bytes(r, "pull.id", exact=RECORD_ID_LEN)
               for r in codec.read_list(env.payload, "pull", limits.MAX_PULL_IDS)]
        if not self.o.verified(env, src, now):
            return
        self.send_records(ids, now)

    def send_records(self, ids: list[bytes], now: float) -> None:
        """Broadcast the records (every neighbour that lacks them learns them too)."""
        page: list[list[object]] = []
        size = 0
        fresh = [rid for rid in ids
                 if now - self._recently_sent.get(rid, -1e9) >= RECENT_SEND_S]
        self.o.counters["ae_records_skipped_recent"] += len(ids) - len(fresh)
        _remember(self._recently_sent, fresh, now)
        for rid in fresh:
            stored = self.o.table.get(rid)
            if stored is None:
                continue
            env = stored.binding.envelope
            age_ms = min(MAX_AGE_MS, int(stored.age_s(now) * 1000))
            metric, hops, via = self._route_to(stored.binding.node_id, now)
            item_size = len(env.signed_bytes) + len(env.signature) + 24
            if page and (size + item_size > PAYLOAD_BUDGET_BYTES
                         or len(page) >= limits.MAX_RECORDS_PER_FRAME):
                self._send_page(page)
                page, size = [], 0
            page.append([env.signed_bytes, env.signature, age_ms, metric, hops, via])
            size += item_size
        if page:
            self._send_page(page)

    def _route_to(self, node: NodeId, now: float) -> tuple[int, int, bytes]:
        """Our path metric, hop count and next hop (short id) to a record's origin, so the
        receiver also learns a route, not only the binding ((-1, -1, b"") if unknown).
        The next hop lets a receiver that is that next hop ignore the offer (split
        horizon: a route through the receiver itself would loop)."""
        if node == self.o.node_id:
            return 0, 0, b""
        route = self.o.routes.get(node, now)
        if route is None or route.hops < 0:  # unknown, or a fallback pointer
            return -1, -1, b""
        return route.metric, route.hops, route.next_hop_id[:4]

    def _send_page(self, page: list[list[object]]) -> None:
        self.o.transmit(self.o.seal(MsgType.RECORDS, page), Hop(), None, "records")

    def on_records(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        items = codec.read_list(env.payload, "records", limits.MAX_RECORDS_PER_FRAME)
        if not self.o.verified(env, src, now):
            return
        changed = False
        for item in items:
            try:
                fields = codec.read_tuple(item, "record", 6)
                inner = decode_signed_untrusted(
                    codec.read_bytes(fields[0], "record.signed"),
                    codec.read_bytes(fields[1], "record.signature", exact=SIGNATURE_LEN))
                age_ms = codec.read_int(fields[2], "record.age_ms", 0, MAX_AGE_MS)
                metric = codec.read_int(fields[3], "record.metric", -1, MAX_METRIC)
                hops = codec.read_int(fields[4], "record.hops", -1, limits.MAX_HOPS)
                through_us = codec.read_bytes(fields[5], "record.via", max_len=4) == \
                    self.o.short_id
                binding = binding_from_envelope_untrusted(inner)
            except DecodeError as exc:
                self.o.drop(exc.reason, src, now)
                continue
            result = self.o.offer_binding(binding, now, age_ms / 1000.0, src)
            self._pulling.pop(binding.record_id, None)
            if result.outcome is MergeOutcome.REJECTED:
                continue
            if metric >= 0 and hops >= 0 and not through_us:
                self.o.learn_route(inner, Hop(hops=hops, metric=metric), src, now, env.origin)
            elif result.changed:
                # Only a record that is new to us proves the sender is nearer its origin.
                self.o.learn_fallback_route(inner, src, env.origin, now)
            if result.changed:
                self.o.counters["ae_learned"] += 1
                self.o.mark_seen(inner.digest, True)
                changed = True
        if changed:
            self.soon(now)


def _remember(stamps: dict[bytes, float], ids: list[bytes], now: float) -> None:
    if len(stamps) + len(ids) > MAX_RECENT:
        stamps.clear()
    for rid in ids:
        stamps[rid] = now
