"""The DHT port: what the sans-IO DHT bridge asks of a DHT, and what comes back.

The bridge (:mod:`meshcomm.dht`) never talks to a DHT itself. It emits *operations*
(:data:`DhtOp`) from ``next_event``; the edge carries them out on a real DHT (the runtime:
OpenDHT on the uplink interface) or on a model of one (the simulator and the tests: an
in-memory DHT with latency, loss, partitions and churn), and feeds the *results*
(:data:`DhtResult`) back with the bridge's ``on_dht(result, now)``.

Every operation but a cancel carries a ``token`` chosen by the bridge; its results carry
the same token. A ``DhtGet`` yields zero or more ``DhtValues`` batches, then one
``DhtDone``; a ``DhtPut`` yields one ``DhtDone``; a ``DhtListen`` yields ``DhtValues``
whenever values appear under the key, until a ``DhtCancel`` of its token. The edge reports
the DHT's health with ``DhtPeers`` samples (the uplink state machine reads them).

A DHT is an open network: anything under a key may be junk, another incident's, forged,
stale, or a flood. Values are opaque bytes here; the bridge decodes them with its
``*_untrusted`` decoder and drops, counts and journals what does not verify. The edge bounds
what it hands back per result (:data:`MAX_VALUES_PER_RESULT`, :data:`MAX_VALUE_BYTES`) and
drops the rest, counted.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Length of a DHT key (OpenDHT's InfoHash: 160 bits).
DHT_KEY_BYTES = 20
#: Largest value the bridge writes or accepts (OpenDHT's limit is 64 KiB; ours are small).
MAX_VALUE_BYTES = 4096
#: Values handed to the bridge in one DhtValues (the edge drops the rest, counted).
MAX_VALUES_PER_RESULT = 64


@dataclass(frozen=True, slots=True)
class DhtPut:
    """Store ``value`` under ``key`` for ``ttl_s`` seconds (the DHT may keep it shorter:
    the bridge refreshes before it expires)."""

    token: int
    key: bytes
    value: bytes
    ttl_s: int


@dataclass(frozen=True, slots=True)
class DhtGet:
    """Fetch the values under ``key``."""

    token: int
    key: bytes


@dataclass(frozen=True, slots=True)
class DhtListen:
    """Report values under ``key`` as they appear, until cancelled."""

    token: int
    key: bytes


@dataclass(frozen=True, slots=True)
class DhtCancel:
    """Stop the listen of ``token``."""

    token: int


DhtOp = DhtPut | DhtGet | DhtListen | DhtCancel


@dataclass(frozen=True, slots=True)
class DhtValues:
    """Values found under the key of ``token`` (a get's batch or a listen's news)."""

    token: int
    values: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DhtDone:
    """The get or put of ``token`` finished; ``ok`` False: it failed (no peers, timeout)."""

    token: int
    ok: bool


@dataclass(frozen=True, slots=True)
class DhtPeers:
    """The DHT node's health: how many good peers it holds now (IPv4 and IPv6)."""

    good: int


DhtResult = DhtValues | DhtDone | DhtPeers
