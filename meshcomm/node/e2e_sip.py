"""End-to-end sealing of a node's SIP traffic (sans-IO), the node core's hook around
:mod:`meshcomm.security.e2e`.

* **Unicast SIP** (``AppKind.SIP``, in the island or tunnelled to another one): the node
  core seals the SIP bytes to the destination node before ``send_unicast`` /
  ``Tunnel.send`` and opens them when a ``UnicastReceived`` of that kind reaches it, with
  the envelope's verified origin key. A message that does not open is dropped and counted;
  nothing of it reaches the gateway or the journal.
* **Store-and-forward parcels**: the origin seals the MESSAGE to the node of the latest
  binding of the To AoR it knows when it holds it (:meth:`SipSealing.seal_for_aor`); relays
  take custody of sealed parcels only. A parcel for an AoR the node has never seen a
  binding of stays in clear in the origin's own store (its own endpoint), is neither
  offered to relays nor sent to any node, and is sealed (:meth:`SipSealing.seal_parcel`)
  as soon as the origin learns a key for the AoR: a binding in its tables
  (:meth:`SipSealing.parcel_key`) or a resolution across sites
  (:mod:`meshcomm.node.sf_remote`). The destination opens it before delivery
  (:meth:`SipSealing.open_parcel`).

Destination keys come from what this node has verified: the location tables' bindings
(the island's and the uplink mesh's), origins of envelopes and tunnelled items that
reached it, and keys the tunnel learned from resolutions; a bounded map
(:data:`MAX_KNOWN_KEYS`, least recently used evicted) keeps them by node id. A message to
a node whose key is unknown is not sent (counted :attr:`E2eCounter.NO_KEY`): the mesh never
falls back to clear text.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.location.table import LocationTable
from meshcomm.node.kinds import AppKind
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES, UnicastReceived
from meshcomm.security.e2e import E2E_VERSION, MAX_SEALED_BYTES, Opener, Sealer
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.types import PUBLIC_KEY_LEN, NodeId

#: Node keys remembered by node id.
MAX_KNOWN_KEYS: Final = 4096
#: Kinds whose body is sealed end to end.
SEALED_KINDS: Final = frozenset({AppKind.SIP})
#: The associated-data kind of a store-and-forward parcel's sealed MESSAGE.
PARCEL_KIND: Final = AppKind.STORE_FORWARD

assert MAX_SEALED_BYTES == MAX_MESSAGE_BYTES


class E2eCounter(StrEnum):
    SEALED = "e2e_sealed"                  # SIP unicasts sealed to their destination
    OPENED = "e2e_opened"                  # ... opened here
    NO_KEY = "e2e_no_key"                  # not sent: the destination's key is unknown
    OPEN_FAILED = "e2e_open_failed"        # dropped: did not open (forged, wrong key, bad)
    PARCEL_SEALED = "e2e_parcel_sealed"    # held MESSAGEs sealed to the To AoR's node
    PARCEL_CLEAR = "e2e_parcel_clear"      # held in clear at the origin (no key known)
    PARCEL_OPEN_FAILED = "e2e_parcel_open_failed"


def is_sealed(body: bytes) -> bool:
    """Whether a held MESSAGE is in sealed form (SIP text never starts with the byte)."""
    return body[:1] == bytes([E2E_VERSION])


class SipSealing:
    """Seals and opens one node's SIP payloads; remembers verified node keys."""

    def __init__(self, identity: Identity, rng: random.Random,
                 tables: Iterable[LocationTable] = (),
                 counters: Counter[str] | None = None) -> None:
        self.sealer = Sealer(identity.public_key, rng)
        self.opener = Opener(identity)
        self.tables = list(tables)
        #: :class:`E2eCounter` counts (the node core passes the node's counters, which
        #: ``ctl status`` shows).
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self.learn(identity.public_key)

    # ------------------------------------------------------------ keys
    def learn(self, public_key: bytes) -> None:
        """A node key this node verified (a signature by it checked, or a binding)."""
        if len(public_key) != PUBLIC_KEY_LEN:
            return
        node_id = node_id_of(public_key)
        if node_id in self._keys:
            self._keys.move_to_end(node_id)
            return
        while len(self._keys) >= MAX_KNOWN_KEYS:
            self._keys.popitem(last=False)
        self._keys[node_id] = public_key

    def key_of(self, node_id: bytes) -> bytes | None:
        key = self._keys.get(node_id)
        if key is not None:
            self._keys.move_to_end(node_id)
            return key
        for table in self.tables:
            for stored in table:
                if stored.binding.node_id == node_id:
                    self.learn(stored.binding.key)
                    return stored.binding.key
        return None

    # ------------------------------------------------------------ unicast
    def seal(self, dst: bytes, kind: int, body: bytes, now: float) -> bytes | None:
        """``body`` sealed to node ``dst``; None (counted) when its key is unknown or the
        sealed form would not fit one unicast message."""
        key = self.key_of(dst)
        if key is None:
            self.counters[E2eCounter.NO_KEY] += 1
            return None
        try:
            sealed = self.sealer.seal(body, key, kind, now)
        except LocalProtocolError:
            self.counters[E2eCounter.NO_KEY] += 1
            return None
        self.counters[E2eCounter.SEALED] += 1
        return sealed

    def open(self, event: UnicastReceived) -> UnicastReceived | None:
        """The event with its body opened; None (counted) if it does not open."""
        try:
            body = self.opener.open_untrusted(event.body, event.origin_key, event.kind)
        except DecodeError:
            self.counters[E2eCounter.OPEN_FAILED] += 1
            return None
        self.counters[E2eCounter.OPENED] += 1
        self.learn(event.origin_key)
        return UnicastReceived(NodeId(event.origin), event.origin_key, event.kind, body,
                               event.hops, event.seq, event.env)

    # ------------------------------------------------------------ store-and-forward
    def seal_for_aor(self, to_aor: str, sip: bytes, now: float) -> bytes:
        """A MESSAGE to hold: sealed to the node of the latest binding of ``to_aor`` this
        node knows (tombstones included: a departed node keeps its key), else as is."""
        key = self.parcel_key(to_aor)
        sealed = self.seal_parcel(sip, key, now) if key is not None else None
        if sealed is not None:
            return sealed
        self.counters[E2eCounter.PARCEL_CLEAR] += 1
        return sip

    def parcel_key(self, to_aor: str) -> bytes | None:
        """The key of the latest binding of ``to_aor`` in the location tables (None: the
        node has seen no binding of it)."""
        latest = None
        for table in self.tables:
            for stored in table.lookup(to_aor):
                if latest is None or stored.binding.issued_at > latest.issued_at:
                    latest = stored.binding
        return latest.key if latest is not None else None

    def seal_parcel(self, sip: bytes, key: bytes, now: float) -> bytes | None:
        """A held MESSAGE sealed to node key ``key`` (a binding's, or the key a
        resolution named); None if it does not fit."""
        try:
            sealed = self.sealer.seal(sip, key, PARCEL_KIND, now)
        except LocalProtocolError:
            return None
        self.counters[E2eCounter.PARCEL_SEALED] += 1
        return sealed

    def open_parcel(self, sip: bytes, origin_key: bytes) -> bytes | None:
        """The MESSAGE of a parcel delivered here (opened if sealed); None if it does not
        open (sealed to another node, or forged)."""
        if not is_sealed(sip):
            return sip
        try:
            return self.opener.open_untrusted(sip, origin_key, PARCEL_KIND)
        except DecodeError:
            self.counters[E2eCounter.PARCEL_OPEN_FAILED] += 1
            return None
