"""The DHT bridge's interface: its settings, what it reads of the island's table, and
the events it emits beside the DHT operations (:mod:`meshcomm.dht.bridge`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from meshcomm.dht.port import DhtOp
from meshcomm.dht.records import check_uplink_addr
from meshcomm.dht.remote import RemoteBinding
from meshcomm.dht.uplink import UplinkConfig
from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.location.freshness import FreshnessMemory
from meshcomm.location.table import StoredBinding, TrustPolicy

#: Binding capability of a relay whose uplink runs (its island's other nodes and
#: ``ctl status`` see which relays bridge the island).
UPLINK_CAP = "uplink"

class IslandTable(Protocol):
    """What the bridge reads of the island's location table."""

    incident: str
    policy: TrustPolicy
    freshness: FreshnessMemory

    def get(self, record_id: bytes) -> StoredBinding | None: ...

    def __iter__(self) -> Iterator[StoredBinding]: ...


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """Bridge settings (``uplink_addrs``: this relay's uplink "host:port" addresses)."""

    uplink_addrs: tuple[str, ...] = ()
    publish: bool = True
    record_ttl_s: int = 600
    refresh_fraction: float = 0.6
    refresh_jitter: float = 0.1
    republish_spread_s: float = 5.0
    put_retry_s: float = 15.0
    #: After the first put of a record since the uplink came up, put it once more this
    #: soon: in a DHT that was still forming, the first put may have landed far from the
    #: nodes closest to its key, where later lookups look (tools/bench/dht.py found it).
    early_reput_s: float = 30.0
    min_put_ttl_s: int = 5
    resync_s: float = 60.0
    #: a little longer than the runtime port's own get timeout, so its DhtDone decides
    get_timeout_s: float = 12.0
    miss_retry_s: float = 2.0
    negative_ttl_s: float = 10.0
    max_published: int = 4096
    max_cached_aors: int = 1024
    max_lookups: int = 256
    max_waiters: int = 64
    max_watches: int = 256
    max_claims_per_aor: int = 16
    max_relays_per_binding: int = 8
    values_per_lookup: int = 16384
    verifies_per_lookup: int = 1024
    watch_values_per_s: float = 64.0
    watch_values_burst: int = 1024
    values_per_s: float = 20000.0
    values_burst: int = 65536
    verifies_per_s: float = 1000.0
    verifies_burst: int = 4096
    journal_drops_per_s: float = 5.0
    journal_drops_burst: int = 50
    uplink: UplinkConfig = field(default_factory=UplinkConfig)

    def __post_init__(self) -> None:
        for addr in self.uplink_addrs:
            try:
                check_uplink_addr(addr)
            except DecodeError as exc:
                raise ValueError(f"dht.uplink_addrs: {exc}") from exc
        if not 0 < self.refresh_fraction < 1 or not 0 <= self.refresh_jitter < 0.5:
            raise ValueError("dht.refresh_fraction must be in (0, 1), refresh_jitter in [0, .5)")
        if self.record_ttl_s < 2 * self.min_put_ttl_s or self.min_put_ttl_s < 1:
            raise ValueError("dht.record_ttl_s must be >= 2 * min_put_ttl_s >= 2")
        if self.max_watches >= self.max_cached_aors:
            raise ValueError("dht.max_watches must be < max_cached_aors (watched AoRs stay "
                             "cached)")
        if min(self.max_published, self.max_cached_aors, self.max_lookups, self.max_waiters,
               self.max_watches, self.max_claims_per_aor, self.max_relays_per_binding,
               self.values_per_lookup, self.verifies_per_lookup) < 1:
            raise ValueError("dht bounds must be >= 1")


class NotFoundReason(StrEnum):
    NOT_FOUND = "not_found"        # the DHT holds no live binding for it
    UPLINK_DOWN = "uplink_down"    # no uplink, and nothing known
    BUSY = "busy"                  # too many lookups at once


@dataclass(frozen=True, slots=True)
class Resolved:
    """The answer to ``resolve`` (token): the AoR's claims, reachable ones with relays."""

    token: int
    aor: str
    bindings: tuple[RemoteBinding, ...]


@dataclass(frozen=True, slots=True)
class NotFound:
    token: int
    aor: str
    reason: NotFoundReason


@dataclass(frozen=True, slots=True)
class RemoteChanged:
    """What is known of a watched AoR changed: a new binding or relay, a relay lapsed,
    a withdrawal or an expiry (a relay's refresh of what is known is no news)."""

    aor: str
    bindings: tuple[RemoteBinding, ...]


BridgeEvent = DhtOp | Resolved | NotFound | RemoteChanged | JournalRecord


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """For ``ctl status``: the uplink (``since`` on the node's monotonic clock) and sizes;
    ``private`` False: the records are sealed with a secret derived from the incident id
    alone (anyone who knows the id can find and read them)."""

    state: str
    dht_peers: int
    since: float
    private: bool
    published: int
    cached_aors: int
    lookups: int
    watches: int
