"""The gateway's registrar and address book (sans-IO): local client registrations
(RFC 3261 §10.3), contacts of local clients learned from requests and responses (for
in-dialog delivery), and the node ids named ``<16 hex>.mesh`` in SIP.

The proxy core (:mod:`meshcomm.node.gateway.core`) owns the transactions and answers; this part
decides what a REGISTER gets and where a local name leads.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence

from meshcomm.deadlines import DeadlineHeap
from meshcomm.location.table import TrustMode
from meshcomm.node.gateway.contacts import reachable_address
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import LocalRegistration, contact_key, expires_of
from meshcomm.node.gateway.regquota import MAX_AORS_PER_CLIENT, RegistrationQuota
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    MAX_KNOWN_CONTACTS,
    MAX_KNOWN_NODES,
    NODE_HEX_CHARS,
    Address,
)
from meshcomm.node.mesh import MeshNode
from meshcomm.sip.message import NameAddr, SipRequest
from meshcomm.sip.uri import SipUri

#: A REGISTER's answer: status and extra headers.
RegisterReply = tuple[int, list[tuple[str, str]]]


class Registrar:
    """Local registrations, known client contacts and known node ids of one gateway."""

    def __init__(self, node: MeshNode, *, node_aor: str, mesh_host: str, retry_after_s: int,
                 counters: Counter[str]) -> None:
        self.node = node
        self.node_aor = node_aor
        self.mesh_host = mesh_host
        self.node_hex = node.node_id.hex()[:NODE_HEX_CHARS]
        self.retry_after_s = retry_after_s
        self.counters = counters
        self._regs: dict[str, LocalRegistration] = {}
        #: When each registration expires (by AoR) and the table order of new AoRs.
        self._expiry: DeadlineHeap[str] = DeadlineHeap()
        self._positions = itertools.count()
        #: Per-client and per-host bounds of new AoRs (gateway.regquota).
        self.quota = RegistrationQuota(self._regs, retry_after_s=retry_after_s,
                                       counters=counters)
        self._contacts: OrderedDict[tuple[str, int], Address] = OrderedDict()
        self._nodes: OrderedDict[str, bytes] = OrderedDict()

    # ------------------------------------------------------------ registrations
    def __iter__(self) -> Iterator[str]:
        return iter(self._regs)

    def __len__(self) -> int:
        return len(self._regs)

    def next_expiry(self) -> float | None:
        """When the first registration expires (O(1) amortised: a deadline heap)."""
        return self._expiry.next_time()

    def expire(self, now: float) -> None:
        """Remove the registrations expired at ``now``, in table order."""
        due = [self._regs[aor] for aor in self._expiry.pop_due(now)]
        for reg in sorted(due, key=lambda r: r.position):
            self.unregister(reg.aor, now)
            self.counters[GatewayCounter.REGISTRATIONS_EXPIRED] += 1

    def register(self, request: SipRequest, upstream: Address, now: float) -> RegisterReply:
        """§10.3 for a REGISTER from the local client at ``upstream``: the answer."""
        aor_uri = request.to_addr.uri
        if not aor_uri.is_sip or aor_uri.user is None:
            return 400, []
        aor = aor_uri.aor.lower()
        if self._held_elsewhere(aor) or self._mesh_refuses(aor, now):
            self.counters[GatewayCounter.REGISTER_CONFLICTS] += 1
            return 403, []
        contacts = request.contacts
        if not contacts and not request.is_contact_star:
            return self._reply(self._regs.get(aor), now)
        expires = expires_of(request)
        if request.is_contact_star or expires == 0:
            self.unregister(aor, now)
            return self._reply(None, now)
        if aor not in self._regs:
            refused = self.quota.admit_new(upstream, now, self.unregister)
            if refused is not None:
                return refused
        contact = contacts[0].uri
        peer = reachable_address(contact, upstream)      # RFC 3581/5626: the flow's source
        old = self._regs.get(aor)
        if old is not None:
            self.quota.removed(old)
        self._regs[aor] = reg = LocalRegistration(
            aor, contact, peer, now + expires, old is not None and old.announced,
            source=upstream, since=now if old is None else old.since,
            used=old is not None and old.used,
            position=next(self._positions) if old is None else old.position)
        self._expiry.schedule(aor, reg.expires_at)
        self.quota.added(reg)
        self.learn_contacts(contacts, peer)
        if not reg.announced and aor != self.node_aor:
            self.node.register(aor_uri.aor, (f"sip:{aor_uri.user}@{self.mesh_host}",), now)
            reg.announced = True
        return self._reply(reg, now)

    def _held_elsewhere(self, aor: str) -> bool:
        """Open trust: another key's live binding holds the AoR (ours would conflict)."""
        if self.node.table.policy.mode is not TrustMode.OPEN:
            return False
        own_key = self.node.identity.public_key
        return any(s.binding.key != own_key for s in self.node.table.lookup(aor))

    def _mesh_refuses(self, aor: str, now: float) -> bool:
        """Agency policy: the binding we would announce is one the mesh refuses (the
        credential's pattern or role, a role address held by another key): issue 12.3."""
        node = self.node
        return bool(node.table.claim_refusal(aor, node.identity.public_key,
                                             node.trust_field(aor),
                                             node.overlay.wall_time(now)))

    def source_of(self, aor: str) -> Address | None:
        """Where the REGISTER of the local registration of ``aor`` came from (None: no
        client holds it here): the gateway's identity check (gateway.identity)."""
        reg = self._regs.get(aor)
        return None if reg is None else reg.source

    def follow_client(self, aor: str, src: Address, *, flow: bool) -> bool:
        """Move the registration of ``aor`` to the client at ``src``, which authenticated
        as its AoR (gateway.identity); with ``flow``, requests for it go there too (a TCP
        client's new connection). False: no registration, or ``src`` holds its quota."""
        reg = self._regs.get(aor)
        if reg is None or sum(r.source == src for r in self._regs.values()) \
                >= MAX_AORS_PER_CLIENT:
            return False
        self.quota.removed(reg)
        reg.source = src
        if flow:
            reg.peer = src
            self.learn_contacts((NameAddr(reg.contact),), src)
        self.quota.added(reg)
        return True

    @staticmethod
    def _reply(reg: LocalRegistration | None, now: float) -> RegisterReply:
        if reg is None:
            return 200, []
        left = max(0, int(reg.expires_at - now))
        return 200, [("Contact", f"<{reg.contact}>;expires={left}"), ("Expires", str(left))]

    def unregister(self, aor: str, now: float) -> None:
        reg = self._regs.pop(aor, None)
        self._expiry.discard(aor)
        if reg is not None:
            self.quota.removed(reg)
        if reg is not None and reg.announced:
            self.node.deregister(aor, now)

    def is_client(self, src: Address) -> bool:
        """Whether ``src`` is where a live local registration's REGISTER came from."""
        return self.quota.is_client(src)

    def note_request(self, src: Address, method: str) -> bool:
        """A request from ``src`` opened a transaction: its registrations count as used
        (not for REGISTER). True if ``src`` is a registered client."""
        return self.quota.note_request(src, method)

    def local_target(self, request: SipRequest, now: float) -> tuple[Address, SipUri] | None:
        """Where a request for the AoR of its Request-URI (or To, for held messages) goes
        on this node: a registered local client, or the built-in UA for the node's AoR."""
        for aor in (request.uri.aor.lower(), request.to_addr.uri.aor.lower()):
            reg = self._regs.get(aor)
            if reg is not None and reg.expires_at > now:
                reg.used = True
                return reg.peer, reg.contact
            if aor == self.node_aor:
                return BUILTIN_ADDR, request.uri
        return None

    # ------------------------------------------------------------ client contacts
    def learn_contacts(self, contacts: Sequence[NameAddr], peer: Address) -> None:
        if peer == BUILTIN_ADDR:
            return
        for contact in contacts:
            key = contact_key(contact.uri)
            self._contacts[key] = reachable_address(contact.uri, peer)
            self._contacts.move_to_end(key)
        while len(self._contacts) > MAX_KNOWN_CONTACTS:
            self._contacts.popitem(last=False)

    def contact_peer(self, uri: SipUri) -> Address | None:
        """The local client reached for an in-dialog Request-URI (a contact we saw)."""
        return self._contacts.get(contact_key(uri))

    # ------------------------------------------------------------ node names
    def learn_node(self, node_id: bytes) -> None:
        key = node_id.hex()[:NODE_HEX_CHARS]
        self._nodes[key] = node_id
        self._nodes.move_to_end(key)
        while len(self._nodes) > MAX_KNOWN_NODES:
            self._nodes.popitem(last=False)

    def node_of(self, node_hex: str) -> bytes | None:
        """The node id named by ``node_hex`` (16 hex digits), if this node knows it."""
        node_hex = node_hex.lower()
        if node_hex == self.node_hex:
            return self.node.node_id
        found = self._nodes.get(node_hex)
        if found is not None:
            return found
        for stored in self.node.table:
            if stored.binding.node_id.hex()[:NODE_HEX_CHARS] == node_hex:
                self.learn_node(stored.binding.node_id)
                return stored.binding.node_id
        return None
