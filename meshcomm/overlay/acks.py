"""Per-hop acknowledgements that cost a few bytes: link keys, owed acks, piggybacking.

A unicast frame is acknowledged by the hop that received it, not by an origin-signed
envelope (148 bytes) but by *ack ids* (``Envelope.ack_id``: 6 bytes of the envelope's
digest) under a MAC of the link:

* **Link keys.** Two neighbours share a key without a word on the air: X25519 of their
  Ed25519 keys (each known to the other from its verified HELLO), hashed with the
  incident and both public keys (BLAKE2b). Each direction has its own MAC key (the link
  key hashed with the sender's public key), so an ack cannot be reflected back to its
  sender. The MAC is a keyed BLAKE2b of 8 bytes over the ids.
* **Owed acks.** A receiver holds the ids it owes a neighbour up to ``ack_delay_s``: any
  frame this node sends to that neighbour in the meantime carries them in its hop part
  (``Hop.acks``, ``Hop.mac``, outside the origin's signature) -- a SIP response going
  back usually does. Otherwise one standalone link ack frame (1 + 6n + 8 bytes) carries
  all of them. A duplicate (the sender did not get our ack) is acknowledged at once.
* **Carriers.** A tracked unicast whose first copy carries acks (the response going back
  that a request's ack rode on) needs no ack of its own: its receiver does not send one
  and its sender does not retransmit it on a timer. Its loss is repaired by the frames it
  acknowledged: their sender, missing the ack, retransmits them, and each such duplicate
  makes this node send the carrier again (kept :data:`CARRIER_HOLD_S`, longer than any
  frame is retried; at most :data:`MAX_CARRIER_IDS` ids; beyond, a unicast carries no
  acks and is tracked as usual). That saves the response's ack on every hop. Only the
  first copy of a frame carries acks: a retransmission never does, so a frame that needs
  an ack never looks like a carrier. A carrier is lost for good only if every copy of
  the frames it acknowledged, or every copy of it, is lost, as a tracked frame is only
  if every copy or every ack is.
* **Carriers name their origin short.** A carrier's first copy leaves the origin's key
  out (:mod:`.keydir`): the response comes from the node the acknowledged request was
  routed to, whose key every node of the island holds from its binding. A receiver that
  does not hold it drops the frame *and the acks it carries* (the core reads acks only
  from frames whose origin it resolved), so the request is retransmitted and the carrier
  sent again, with the key. That saves 24 bytes on every hop of every response.
* **Checks.** An ack from a link address with no neighbour key, or whose MAC fails, is
  dropped and counted (``forged_ack``). A replayed ack is harmless: an id only ends the
  wait for a frame this node sent to that very neighbour, which that neighbour had
  received. Ids per frame are bounded (MAX_ACK_IDS) by the decoders, and the owed table
  by :data:`MAX_OWED_LINKS` links (beyond it, acks leave at once).

Passive acknowledgement (the next hop's forwarding, overheard, taken as the ack) needs a
shared medium: our radio edge sends a routed unicast as UDP unicast to the next hop's
address, which other stations do not receive (802.11 filters unicast frames by MAC
address), so the previous hop never hears the forwarding. See forwarding's docstring.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import nacl.bindings
import nacl.exceptions

from meshcomm.overlay.counters import DropReason, OverlayCounter, TxTag
from meshcomm.overlay.timers import TimerKind
from meshcomm.types import Datagram, LinkAddr
from meshcomm.wire import limits
from meshcomm.wire.envelope import (
    ORIGIN_SHORT_LEN,
    Envelope,
    Hop,
    encode_frame,
    encode_link_ack,
)

if TYPE_CHECKING:
    from meshcomm.overlay.context import OverlayContext
    from meshcomm.security.identity import Identity

LINK_KEY_DOMAIN: Final = b"meshcomm-link-key-v1\x00"
ACK_MAC_PERSON: Final = b"meshcomm-ack-mac"
#: Link keys cached (one per neighbour key; the neighbour table holds at most 256).
MAX_LINK_KEYS: Final = 512
#: Links with acks owed at once; beyond it an ack is sent at once, not held.
MAX_OWED_LINKS: Final = 256
#: A carrier is re-sent for a duplicate of a frame it acknowledged for this long, seconds
#: (a frame is retried for at most retransmit_span_s plus one backed-off timeout, 3 s).
CARRIER_HOLD_S: Final = 6.0
#: (link, ack id) pairs whose carrier is kept at once.
MAX_CARRIER_IDS: Final = 256


class LinkKeys:
    """The MAC keys of this node's links, derived from the neighbours' public keys."""

    def __init__(self, identity: Identity, incident: str,
                 max_keys: int = MAX_LINK_KEYS) -> None:
        self._own_key = bytes(identity.public_key)
        _, secret = nacl.bindings.crypto_sign_seed_keypair(identity.seed)
        self._x_secret = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret)
        self._incident = incident.encode()
        self._max = max_keys
        #: neighbour public key -> (MAC key of our acks to it, of its acks to us); None
        #: for a key no shared secret can be made with (not a valid curve point).
        self._keys: OrderedDict[bytes, tuple[bytes, bytes] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _pair(self, peer_key: bytes) -> tuple[bytes, bytes] | None:
        if peer_key in self._keys:
            self._keys.move_to_end(peer_key)
            return self._keys[peer_key]
        pair = self._derive(peer_key)
        self._keys[peer_key] = pair
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return pair

    def _derive(self, peer_key: bytes) -> tuple[bytes, bytes] | None:
        if len(peer_key) != 32 or peer_key == self._own_key:
            return None
        try:
            x_peer = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_key)
            shared = nacl.bindings.crypto_scalarmult(self._x_secret, x_peer)
        except (nacl.exceptions.CryptoError, ValueError, TypeError, RuntimeError):
            return None
        lo, hi = sorted((self._own_key, peer_key))
        link = hashlib.blake2b(LINK_KEY_DOMAIN + len(self._incident).to_bytes(1, "big")
                               + self._incident + lo + hi + shared).digest()

        def direction(sender: bytes) -> bytes:
            return hashlib.blake2b(sender, key=link, digest_size=32).digest()
        return direction(self._own_key), direction(peer_key)

    def usable(self, peer_key: bytes) -> bool:
        """Whether a link key can be made with ``peer_key``."""
        return self._pair(peer_key) is not None

    def mac_out(self, peer_key: bytes, ids: bytes) -> bytes | None:
        """The MAC of ``ids`` acknowledged by us to ``peer_key`` (None: no link key)."""
        pair = self._pair(peer_key)
        return None if pair is None else _mac(pair[0], ids)

    def check_in(self, peer_key: bytes, ids: bytes, mac: bytes) -> bool:
        """Whether ``mac`` authenticates ``ids`` as acknowledged by ``peer_key`` to us."""
        pair = self._pair(peer_key)
        return pair is not None and hmac.compare_digest(_mac(pair[1], ids), mac)


def _mac(key: bytes, ids: bytes) -> bytes:
    return hashlib.blake2b(ids, key=key, digest_size=limits.LINK_MAC_LEN,
                           person=ACK_MAC_PERSON).digest()


class OwedAcks:
    """Acks this node owes its neighbours, held briefly to ride on frames going back."""

    def __init__(self, ctx: OverlayContext, keys: LinkKeys) -> None:
        self.ctx = ctx
        self.keys = keys
        #: link address -> (the neighbour's public key, ack ids owed, in order)
        self._owed: dict[LinkAddr, tuple[bytes, list[bytes]]] = {}
        #: (link address, ack id carried) -> (kept until, the carrier's envelope, its hop
        #: with the key carried: encoded again only if it must be sent again), oldest first
        self._carriers: OrderedDict[tuple[LinkAddr, bytes], tuple[float, Envelope, Hop]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._owed)

    def owe(self, src: LinkAddr, peer_key: bytes, ack_id: bytes, now: float, *,
            at_once: bool) -> None:
        """Acknowledge ``ack_id`` to the neighbour at ``src`` (key ``peer_key``): within
        ``ack_delay_s``, on a frame going there or alone; ``at_once`` for a duplicate."""
        entry = self._owed.get(src)
        if entry is None or entry[0] != peer_key:
            if entry is not None:            # another node took that address: pay it
                self.flush(src)
            if len(self._owed) >= MAX_OWED_LINKS:
                self._send(src, peer_key, [ack_id])
                return
            entry = self._owed[src] = (peer_key, [])
            delay = self.ctx.config.ack_delay_s
            if delay > 0 and not at_once:
                self.ctx.schedule(now + delay, TimerKind.ACK_FLUSH, src.encode())
        ids = entry[1]
        if ack_id not in ids:
            ids.append(ack_id)
        if at_once or len(ids) >= limits.MAX_ACK_IDS or self.ctx.config.ack_delay_s <= 0:
            self.flush(src)

    def flush(self, src: LinkAddr) -> None:
        """Send what is owed to ``src`` now, in one standalone link ack frame."""
        entry = self._owed.pop(src, None)
        if entry is not None and entry[1]:
            self._send(src, entry[0], entry[1])

    def flush_due(self, key: bytes, _now: float) -> None:
        self.flush(LinkAddr(key.decode(errors="replace")))

    def _send(self, src: LinkAddr, peer_key: bytes, ids: list[bytes]) -> None:
        joined = b"".join(ids)
        mac = self.keys.mac_out(peer_key, joined)
        if mac is None:
            return
        self.ctx.counters[OverlayCounter.ACK_IDS_STANDALONE] += len(ids)
        self.ctx.queue_raw(Datagram(encode_link_ack(joined, mac), src), TxTag.ACK)

    def owes(self, dst: LinkAddr) -> bool:
        return dst in self._owed

    def attached(self, env: Envelope, hop: Hop, dst: LinkAddr, plain: bytes) -> bytes:
        """The frame of ``env`` to ``dst`` with the acks owed to ``dst`` riding in its hop
        part (they are then paid), or ``plain`` (its encoding without) if they do not fit
        in a datagram. Not for unicasts: see :meth:`carrier`."""
        entry = self._owed.get(dst)
        found = None if entry is None else self._with_acks(env, hop, entry[0], entry[1])
        if found is None or entry is None:
            return plain
        del self._owed[dst]
        self.ctx.counters[OverlayCounter.ACK_IDS_PIGGYBACKED] += len(entry[1])
        return found[0]

    def _with_acks(self, env: Envelope, hop: Hop, peer_key: bytes,
                   ids: list[bytes]) -> tuple[bytes, Hop] | None:
        """The frame with the acks (the key elided as ``hop`` says), and its hop with
        the key carried (to send it again); None if the frame with the key would not fit
        in a datagram."""
        if not ids:
            return None
        joined = b"".join(ids)
        mac = self.keys.mac_out(peer_key, joined)
        if mac is None:
            return None
        data = encode_frame(env, Hop(hop.ttl, hop.hops, hop.metric, hop.age_ms, hop.addressed,
                                     joined, mac, key_elided=hop.key_elided))
        with_key = len(data) + (len(env.origin_key) - ORIGIN_SHORT_LEN if hop.key_elided
                                else 0)
        if with_key > limits.MAX_DATAGRAM_BYTES:
            return None
        return data, Hop(hop.ttl, hop.hops, hop.metric, hop.age_ms, hop.addressed, joined, mac)

    def carrier(self, env: Envelope, hop: Hop, dst: LinkAddr, now: float) -> bytes | None:
        """The first copy of a tracked unicast ``env`` to ``dst`` carrying the acks owed
        to ``dst``, kept as their carrier (it names its origin short; kept with the key,
        for sending again); None if nothing is owed there, or it does not fit (the
        datagram, or the carrier bound): then it goes without, tracked."""
        entry = self._owed.get(dst)
        if entry is None:
            return None
        self._expire_carriers(now)
        if len(self._carriers) + len(entry[1]) > MAX_CARRIER_IDS:
            return None
        found = self._with_acks(env, replace(hop, key_elided=True), entry[0], entry[1])
        if found is None:
            return None
        data, with_key = found
        del self._owed[dst]
        for ack_id in entry[1]:     # (sent again with the key: see the module docstring)
            self._carriers[(dst, ack_id)] = (now + CARRIER_HOLD_S, env, with_key)
        self.ctx.counters[OverlayCounter.ACK_IDS_PIGGYBACKED] += len(entry[1])
        self.ctx.counters[OverlayCounter.UNICAST_CARRIERS] += 1
        return data

    def resend_carrier(self, src: LinkAddr, ack_id: bytes, now: float) -> bool:
        """A frame with ``ack_id`` came again from ``src``: if its ack rode on a carrier,
        send that carrier again (it, or what it carried, was lost) and say so."""
        if not self._carriers:
            return False
        self._expire_carriers(now)
        kept = self._carriers.get((src, ack_id))
        if kept is None:
            return False
        self.ctx.counters[OverlayCounter.UNICAST_CARRIERS_RESENT] += 1
        self.ctx.queue_raw(Datagram(encode_frame(kept[1], kept[2]), src), TxTag.UNICAST)
        return True

    def _expire_carriers(self, now: float) -> None:
        carriers = self._carriers
        while carriers and next(iter(carriers.values()))[0] <= now:
            carriers.popitem(last=False)

    @property
    def carriers(self) -> int:
        """(link, ack id) pairs whose carrier is kept."""
        return len(self._carriers)

    def authentic(self, ids: bytes, mac: bytes, src: LinkAddr, now: float) -> bool:
        """Whether the acks ``ids`` came from the neighbour at ``src`` (counted if not)."""
        nb = self.ctx.neighbours.get(src)
        if nb is not None and self.keys.check_in(nb.key, ids, mac):
            return True
        self.ctx.drop(DropReason.FORGED_ACK, src, now)
        return False
