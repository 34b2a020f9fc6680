"""Trust records on the gossip overlay: flooding, anti-entropy and enforcement.

Trust records (:mod:`meshcomm.security.revocation`) spread like bindings:

* **Flooding.** A new record (``TRUST`` envelope, signed by its signer) is stored, made
  durable, enforced, then re-broadcast once after a random assessment delay with the TTL
  decremented. Copies of a record already held cost a dictionary lookup.
* **Anti-entropy.** While a node holds trust records its DIGEST carries a third field,
  the XOR of their ids (absent when it holds none, so a mesh without trust records sends
  the same frames as before). A neighbour whose own hash differs answers, rate-limited per
  sender, with ``TRUST_IDS`` pages (every id it holds); the digest's sender pulls the ids
  it lacks (``TRUST_PULL``), answered by broadcasting the records (TTL 1). Both sides send
  digests, so both learn what the other holds: a node that joins later gets every record.
* **Enforcement** (every node, at every change): a revoked device's bindings leave the
  location table (journaled as expired, so the DHT bridge withdraws them) and new ones
  are refused; envelopes whose origin key is revoked are dropped on receipt, as is
  everything a revoked neighbour sends; routes through it are dropped. Store-and-forward
  finds no binding of a revoked device and so delivers nothing to it. Agency keys added
  or revoked change the table's trust policy at once.
* **Telling the revoked.** Anti-entropy cannot reach a revoked node (its digest answers
  and pulls are dropped like the rest of what it sends), and a record that reached its
  neighbour by anti-entropy (TTL 1) is not flooded on. So a neighbour that cuts a revoked
  node off sends it the records that revoke its key at once, and again (rate-limited per
  sending host and in all, :data:`NOTICE_INTERVAL_S`, :data:`NOTICE_RATE_PER_S`) when a
  frame of a revoked origin or from a revoked neighbour is dropped: the revoked handset
  learns it within a round trip and its gateway refuses its users (``403``) instead of
  sending into a mesh that drops everything. The records are signed by their agency: a
  node that forwards a revoked device's frames learns them too, nothing more.
* **Beyond the overlay**: the DHT bridge asks :meth:`TrustSync.binding_refusal` and
  :meth:`TrustSync.key_revoked` about what it reads (meshcomm.dht.revocations), the tunnel
  :meth:`TrustSync.node_revoked` about items, and the gateway
  :meth:`TrustSync.own_refusal` whether this node itself is revoked (``ctl status``:
  ``this_node_revoked``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from meshcomm.errors import DecodeError
from meshcomm.journal.payloads import BindingExpired, TrustChanged
from meshcomm.location.table import TrustMode
from meshcomm.overlay.counters import DropReason, TxTag
from meshcomm.overlay.ratelimit import TokenBucket, TokenBuckets, link_host
from meshcomm.overlay.timers import TimerKind
from meshcomm.security.credentials import Credential, decode_credential_untrusted
from meshcomm.security.identity import node_id_of
from meshcomm.security.revocation import (
    KIND_NAMES,
    TRUST_ID_LEN,
    TrustRecord,
    TrustState,
    TrustStore,
    credential_id,
    trust_record_from_envelope_untrusted,
)
from meshcomm.types import LinkAddr
from meshcomm.wire import codec
from meshcomm.wire.envelope import Envelope, Hop, MsgType

if TYPE_CHECKING:
    from meshcomm.location.binding import Binding
    from meshcomm.overlay.context import OverlayContext

#: Ids per TRUST_IDS or TRUST_PULL frame (8 bytes each: a page fits a datagram).
MAX_TRUST_IDS: Final = 64
#: A neighbour's digest is answered with our ids at most this often.
TRUST_ANSWER_INTERVAL_S: Final = 1.0
#: A record asked for (or sent) this recently is not asked for (sent) again.
TRUST_PULL_PATIENCE_S: Final = 1.0
TRUST_RECENT_SEND_S: Final = 0.5
MAX_TRACKED: Final = 1024
#: Link addresses of revoked neighbours whose frames are dropped (relayed ones too).
MAX_REVOKED_ADDRS: Final = 256
#: Records sent in answer to one host's pulls: a small PULL cannot make a node broadcast
#: its whole store again and again (a joiner's first full pull fits the burst).
PULL_ANSWER_RATE_PER_S: Final = 64.0
PULL_ANSWER_BURST: Final = 256.0
#: A host whose frames are dropped as revoked is sent the revoking records at most this
#: often, and all such notices together at most NOTICE_RATE_PER_S (a flood of replayed
#: frames of a revoked key from spoofed addresses cannot make a node flood records).
NOTICE_INTERVAL_S: Final = 2.0
NOTICE_RATE_PER_S: Final = 4.0
NOTICE_BURST: Final = 8.0
#: A neighbour cut off is told at once, then again after each of these gaps (1, 2 and 4 s
#: after the first: the notice is one unacknowledged frame, and the revoked node may send
#: nothing for a Trickle interval, so it cannot count on its next frame being dropped).
NOTICE_REPEAT_GAPS_S: Final = (1.0, 1.0, 2.0)
#: Records sent in one notice (a key is revoked by one record per signer authority).
MAX_NOTICE_RECORDS: Final = 4
#: Devices whose latest binding seen here was refused for its credential (revoked, or
#: under ``agency`` of a revoked agency), remembered for node_revoked (oldest forgotten).
MAX_REFUSED_NODES: Final = 4096
#: The refusals that name a credential, not the key.
CREDENTIAL_REFUSALS: Final = frozenset({"credential_revoked", "untrusted_agency"})


class TrustCounter(StrEnum):
    LEARNED = "trust_learned"
    DUPLICATES = "trust_duplicates"
    DROP_REVOKED_ORIGIN = "drop_revoked_origin"
    BINDINGS_REVOKED = "bindings_revoked"
    PULL_ANSWERS_LIMITED = "trust_pull_answers_limited"
    NOTICES = "trust_revocation_notices"
    NOTICES_LIMITED = "trust_revocation_notices_limited"


class TrustSync:
    """The overlay's trust part (one per overlay; see the module docstring)."""

    def __init__(self, ctx: OverlayContext, store: TrustStore) -> None:
        self.ctx = ctx
        self.store = store
        #: A relay's uplink mesh shares the island's store: a record either overlay
        #: learns is enforced and spread by the other too (:meth:`learned_elsewhere`).
        store.observers.append(self.learned_elsewhere)
        self._apply_policy()   # records restored from disk: added agencies trusted at once
        self._answered: dict[str, float] = {}
        self._pulling: dict[bytes, float] = {}
        self._sent: dict[bytes, float] = {}
        self._pending: dict[bytes, tuple[Envelope, Hop]] = {}
        #: revoked neighbours' link addresses -> their revoked key
        self._revoked_addrs: dict[LinkAddr, bytes] = {}
        self._noticed: dict[str, float] = {}
        self._notices = TokenBucket(NOTICE_RATE_PER_S, NOTICE_BURST)
        self._pull_answers = TokenBuckets(PULL_ANSWER_RATE_PER_S, PULL_ANSWER_BURST)
        self._enforced_keys: frozenset[bytes] = frozenset()
        self._nodes_state: TrustState | None = None
        self._revoked_nodes: frozenset[bytes] = frozenset()
        self._own_verdict: tuple[TrustState, bytes | None, str] | None = None
        #: node id -> issue time of the binding that got it refused for its credential.
        self._refused_nodes: OrderedDict[bytes, float] = OrderedDict()
        #: The credential this node's bindings carry (the node core sets it: MeshNode's).
        self.own_credential: Callable[[], bytes | None] = lambda: None

    @property
    def active(self) -> bool:
        """True once any record is held: until then every hook is one length test."""
        return len(self.store) > 0

    # ------------------------------------------------------------ hooks of the overlay
    def refuses_frame(self, env: Envelope, src: LinkAddr, now: float) -> bool:
        """A frame from a revoked origin or a revoked neighbour (call when ``active``);
        its sender is told (rate-limited: :meth:`notify`)."""
        key = self._revoked_addrs.get(src)
        if key is None and self.store.key_revoked(env.origin_key):
            key = env.origin_key
        if key is None:
            return False
        self.ctx.counters[TrustCounter.DROP_REVOKED_ORIGIN] += 1
        self.notify(src, key, now)
        return True

    def notify(self, dst: LinkAddr, key: bytes, now: float) -> None:
        """Send ``dst`` the records that revoke ``key``: at most once per
        NOTICE_INTERVAL_S per host and NOTICE_RATE_PER_S in all."""
        host = link_host(dst)
        last = self._noticed.get(host)
        if last is not None and now - last < NOTICE_INTERVAL_S:
            return
        if not self._notices.take(now):
            self.ctx.counters[TrustCounter.NOTICES_LIMITED] += 1
            return
        _remember(self._noticed, host, now)
        self._tell(dst, key)

    def _tell(self, dst: LinkAddr, key: bytes) -> None:
        for record in [r for r in self.store if r.subject == key][:MAX_NOTICE_RECORDS]:
            self.ctx.transmit(record.envelope, Hop(ttl=1), dst, TxTag.TRUST)
        self.ctx.counters[TrustCounter.NOTICES] += 1

    def notice_due(self, timer_key: bytes, now: float) -> None:
        """A repeated notice to a neighbour cut off (timer key: repeat number, address)."""
        repeat, _, addr = timer_key.decode().partition("|")
        link = LinkAddr(addr)
        key = self._revoked_addrs.get(link)
        if key is None:
            return
        _remember(self._noticed, link_host(link), now)
        self._tell(link, key)
        self._repeat_notice(link, int(repeat) + 1, now)

    def _repeat_notice(self, link: LinkAddr, repeat: int, now: float) -> None:
        if repeat < len(NOTICE_REPEAT_GAPS_S):
            self.ctx.schedule(now + NOTICE_REPEAT_GAPS_S[repeat], TimerKind.TRUST_NOTICE,
                              f"{repeat}|{link}".encode())

    def binding_refusal(self, binding: Binding) -> str:
        """Why the table must refuse ``binding`` ('' if not; call when ``active``). A
        device whose latest binding seen is refused for a credential issued to its own
        key is then refused by :meth:`node_revoked` too (its tunnel items are dropped)."""
        reason, cred = self._refusal(binding.key, binding.credential)
        node, known = binding.node_id, self._refused_nodes.get(binding.node_id)
        if known is not None and binding.issued_at < known:
            return reason                   # an older binding says nothing new
        if reason in CREDENTIAL_REFUSALS and cred is not None and cred.device_key == binding.key:
            self._refused_nodes[node] = binding.issued_at
            self._refused_nodes.move_to_end(node)
            while len(self._refused_nodes) > MAX_REFUSED_NODES:
                self._refused_nodes.popitem(last=False)
        elif not reason and known is not None:
            del self._refused_nodes[node]   # registered again with a credential in force
        return reason

    def key_revoked(self, key: bytes) -> bool:
        """A revoked device or agency key (the DHT bridge's check of a relay's key)."""
        return self.store.key_revoked(key)

    def node_revoked(self, node: bytes) -> bool:
        """Whether ``node`` is the id of a revoked key, or of a device whose latest binding
        seen here carries its own credential, revoked (or, under ``agency``, of a revoked
        agency): tunnel items name nodes by id."""
        state = self.store.state
        if state is not self._nodes_state:
            self._revoked_nodes = frozenset(node_id_of(key) for key in
                                            state.revoked_devices | state.revoked_agencies)
            self._nodes_state = state
        return node in self._revoked_nodes or node in self._refused_nodes

    def own_refusal(self) -> str:
        """Why every other node refuses this node's bindings ('' if it does not): its own
        key, the credential it runs with, or (agency policy) that credential's agency was
        revoked. Cached per trust state: the gateway asks at every client request."""
        state, credential = self.store.state, self.own_credential()
        verdict = self._own_verdict
        if verdict is None or verdict[0] is not state or verdict[1] is not credential:
            key = self.ctx.identity.public_key
            reason = self.refusal_of(key, credential) if self.active else ""
            verdict = self._own_verdict = (state, credential, reason)
        return verdict[2]

    def refusal_of(self, key: bytes, credential_field: bytes | None) -> str:
        """Why a binding of ``key`` carrying ``credential_field`` is refused ('' if not)."""
        return self._refusal(key, credential_field)[0]

    def _refusal(self, key: bytes, credential_field: bytes | None) -> tuple[str, Credential | None]:
        """:meth:`refusal_of`, and the credential it refused (None: not decoded)."""
        reason = self.store.binding_refusal(key, None)
        if reason or credential_field is None:
            return reason, None
        state = self.store.state
        agency = self.ctx.table.policy.mode is TrustMode.AGENCY and state.revoked_agencies
        if not state.revoked_credentials and not agency:
            return "", None      # the common case: nothing a credential could match
        cred = credential_in_field(credential_field)
        if cred is None:
            return "", None
        if credential_id(cred) in state.revoked_credentials:
            return "credential_revoked", cred
        if agency and cred.agency_key in state.revoked_agencies:
            return "untrusted_agency", cred
        return "", cred

    def digest_field(self) -> list[int]:
        """The DIGEST's trust field: [hash] while records are held, else nothing."""
        return [self.store.set_hash] if self.active else []

    # ------------------------------------------------------------ records
    def on_trust(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        record = trust_record_from_envelope_untrusted(env)
        if self.accept(record, src, now) and hop.ttl > 1 and len(self._pending) < MAX_TRACKED:
            delay = self.ctx.rng.uniform(self.ctx.config.rad_min_s, self.ctx.config.rad_max_s)
            self._pending[record.record_id] = (env, hop)
            self.ctx.schedule(now + delay, TimerKind.TRUST_REBROADCAST, record.record_id)

    def originate(self, record: TrustRecord, now: float) -> str | None:
        """A record issued here (``ctl revoke``, a record file): stored durably, enforced
        and flooded at once. Returns None, ``"duplicate"`` or the refusal."""
        outcome = self._offer(record, None, now)
        if outcome is None:
            self.ctx.transmit(record.envelope, Hop(ttl=self.ctx.config.flood_ttl), None,
                              TxTag.TRUST)
        return outcome

    def accept(self, record: TrustRecord, src: LinkAddr | None, now: float) -> bool:
        return self._offer(record, src, now) is None

    def _offer(self, record: TrustRecord, src: LinkAddr | None, now: float) -> str | None:
        outcome = self.store.offer(record, self.ctx.wall_time(now))
        if outcome == "duplicate":
            self.ctx.counters[TrustCounter.DUPLICATES] += 1
            return outcome
        if outcome is not None:
            self.ctx.drop(DropReason.of(str(outcome)), src, now)
            return outcome
        self.ctx.counters[TrustCounter.LEARNED] += 1
        removed = self.enforce(now)
        self.ctx.emit(TrustChanged(kind=KIND_NAMES[record.kind], subject=record.subject.hex(),
                                   signer=record.signer.hex(), record=record.record_id.hex(),
                                   via=src or "", removed=removed, held=len(self.store)))
        self.ctx.anti_entropy.soon(now)
        for observer in self.store.observers:
            if observer != self.learned_elsewhere:
                observer(record, now)
        return None

    def learned_elsewhere(self, record: TrustRecord, now: float) -> None:
        """The other overlay sharing the store stored ``record``: enforce it here and
        flood it on this overlay's links (journaled once, by the overlay that learned it)."""
        self.enforce(now)
        self.ctx.transmit(record.envelope, Hop(ttl=self.ctx.config.flood_ttl), None,
                          TxTag.TRUST)
        self.ctx.anti_entropy.soon(now)

    def rebroadcast_due(self, rid: bytes, now: float) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None or self.store.get(rid) is None:
            return
        env, hop = pending
        self.ctx.transmit(env, Hop(ttl=hop.ttl - 1, hops=hop.hops + 1), None, TxTag.TRUST)

    # ------------------------------------------------------------ enforcement
    def enforce(self, now: float) -> int:
        """Apply the store's state: the table's agency keys, revoked bindings removed,
        revoked neighbours and routes dropped. Returns the bindings removed."""
        state, table = self.store.state, self.ctx.table
        self._apply_policy()
        removed = 0
        for stored in table:
            binding = stored.binding
            if binding.key == self.ctx.identity.public_key or not self.binding_refusal(binding):
                continue
            if table.remove(binding.record_id, now) is not None:
                removed += 1
                self.ctx.emit(BindingExpired(aor=binding.aor, node=binding.node_id.hex(),
                                             seq=binding.seq, tombstone=binding.is_tombstone))
        self.ctx.counters[TrustCounter.BINDINGS_REVOKED] += removed
        keys = state.revoked_devices | state.revoked_agencies
        for key in keys - self._enforced_keys:
            self._cut_off(key, now)
        self._enforced_keys = keys
        return removed

    def _apply_policy(self) -> None:
        """The table trusts the agency keys the records leave trusted."""
        table, trusted = self.ctx.table, self.store.state.trusted_agencies
        if table.policy.agency_keys != trusted:
            table.policy = dataclasses.replace(table.policy, agency_keys=trusted)

    def _cut_off(self, key: bytes, now: float) -> None:
        node = node_id_of(key)
        nb = self.ctx.neighbours.by_id.get(node)
        if nb is not None:
            if len(self._revoked_addrs) < MAX_REVOKED_ADDRS:
                self._revoked_addrs[nb.addr] = key
            self.ctx.neighbours.remove(nb)
            self.notify(nb.addr, key, now)
            self._repeat_notice(nb.addr, 0, now)
        self.ctx.routes.drop(node)
        for route in self.ctx.routes.all():
            if route.next_hop_id == node or route.next_hop in self._revoked_addrs:
                self.ctx.routes.drop(route.dst)

    # ------------------------------------------------------------ anti-entropy
    def on_digest_field(self, field: list[object], env: Envelope, src: LinkAddr,
                        now: float) -> None:
        """A neighbour's DIGEST trust field (``[]`` or ``[hash]``, already range-checked)."""
        theirs = field[0] if field else 0
        if theirs == (self.store.set_hash if self.active else 0):
            return
        host = link_host(src)
        last = self._answered.get(host)
        if last is not None and now - last < TRUST_ANSWER_INTERVAL_S:
            return
        if not self.ctx.verified(env, src, now):
            return
        _remember(self._answered, host, now)
        ids = self.store.ids()      # (none held: one empty page, "send me all")
        for i in range(0, max(1, len(ids)), MAX_TRUST_IDS):
            page = self.ctx.seal(MsgType.TRUST_IDS, ids[i:i + MAX_TRUST_IDS])
            self.ctx.transmit(page, Hop(), src, TxTag.TRUST_IDS)

    def on_ids(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        ids = read_ids_untrusted(env.payload, "trust_ids")
        if not self.ctx.verified(env, src, now):
            return
        if not ids and self.active:
            # an empty page: the sender holds no records (its answer to our digest's
            # trust hash): send them all (Trickle: it need not wait for its own digest to
            # be answered); a partial holder pulls what it lacks from our ids instead
            self.send_records(self.store.ids(), src, now)
        wanted = [rid for rid in ids if self.store.get(rid) is None
                  and now - self._pulling.get(rid, -1e9) >= TRUST_PULL_PATIENCE_S]
        for rid in wanted:
            _remember(self._pulling, rid, now)
        if wanted:
            self.ctx.transmit(self.ctx.seal(MsgType.TRUST_PULL, wanted), Hop(), src,
                              TxTag.TRUST_PULL)

    def on_pull(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        ids = read_ids_untrusted(env.payload, "trust_pull")
        if not self.ctx.verified(env, src, now):
            return
        self.send_records(ids, src, now)

    def send_records(self, ids: list[bytes], src: LinkAddr, now: float) -> None:
        """Broadcast (TTL 1) the records ``src`` asked for or lacks, within its budget;
        one sent within TRUST_RECENT_SEND_S is not sent again."""
        budget = self._pull_answers.bucket(link_host(src), now)
        for rid in ids:
            record = self.store.get(rid)
            if record is None or now - self._sent.get(rid, -1e9) < TRUST_RECENT_SEND_S:
                continue
            if not budget.take(now):
                self.ctx.counters[TrustCounter.PULL_ANSWERS_LIMITED] += 1
                return
            _remember(self._sent, rid, now)
            self.ctx.transmit(record.envelope, Hop(ttl=1), None, TxTag.TRUST)

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, object]:
        state = self.store.state
        return {"records": len(self.store),
                "revoked_devices": len(state.revoked_devices),
                "revoked_credentials": len(state.revoked_credentials),
                "revoked_agencies": len(state.revoked_agencies),
                "trusted_agencies": sorted(k.hex() for k in state.trusted_agencies),
                "refused": {str(k): v for k, v in sorted(self.store.refused.items())},
                "this_node_revoked": self.own_refusal(),
                "latest": [r.describe() for r in reversed(self.store.latest())]}


def credential_in_field(field: bytes) -> Credential | None:
    """The credential in a binding's credential field: the credential alone, or the
    credential of a bundle ``[domain, credential, extra]`` (a role hand-over)."""
    try:
        return decode_credential_untrusted(field)
    except DecodeError:
        pass
    try:
        outer = codec.unpack_untrusted(field)
        if isinstance(outer, list) and len(outer) == 3 and isinstance(outer[1], bytes):
            return decode_credential_untrusted(outer[1])
    except DecodeError:
        return None
    return None


def read_ids_untrusted(payload: object, name: str) -> list[bytes]:
    return [codec.read_bytes(r, f"{name}.id", exact=TRUST_ID_LEN)
            for r in codec.read_list(payload, name, MAX_TRUST_IDS)]


def _remember(stamps: dict[bytes, float] | dict[str, float], key: object, now: float) -> None:
    if len(stamps) >= MAX_TRACKED:
        stamps.clear()
    stamps[key] = now  # type: ignore[index]

