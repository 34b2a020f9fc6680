"""SIP identity bound to the signing key (issue 12 point 1), a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`.

The identity a request claims is its From AoR. Who vouches for it:

* **At the origin gateway** (a request from a local client): the client must hold the
  AoR here -- a local registration whose REGISTER came from the request's source (same
  address, or the same host over UDP). Without digest authentication a TCP connection is
  the client's only proof: a client that reconnects registers again. With it, a request
  authenticated as its From AoR proves the client holds the AoR's credentials, so the
  registration follows it to its new source (:meth:`IdentityChecks.client_authenticated`:
  a new TCP connection, another port or host); a client without them is challenged
  before it gets here. An AoR bound in the location table to another
  node's key, or to this node's key with no client registered for it (the node's own AoR
  belongs to the built-in UA: ``ctl send``), is refused with 403. An AoR bound nowhere
  passes *unverified* under the ``open`` policy (zero configuration: a stock SIPp
  ``-sn uac`` sends ``From: sip:sipp@127.0.0.1`` without registering; the identity is
  then not asserted anywhere) and is refused under ``agency``. Requests from the
  upstream proxy are not refused for an unbound From (its desk phones live there).
* **At every receiving gateway** (a request from the mesh, ``origin`` = the node id of
  the envelope's signer): the From AoR's usable bindings must include one of ``origin``;
  bound only to other nodes, it is refused with 403 back to the sender. Bound nowhere it
  passes unverified: bindings of other islands are not flooded (a request resolved
  through the DHT or a tunnel arrives with an AoR unknown here), and the origin gateway
  already refuses unbound Froms under ``agency``; an unverified request gets no
  P-Asserted-Identity, so the callee's phone never shows it as verified.
* Responses are not checked by AoR (their To may legitimately name another address than
  the one bound, a service URI): a response over the mesh is accepted only from the node
  the transaction's request went to (:meth:`IdentityChecks._foreign_response`), and
  identity headers in it are removed before it reaches a client. In-dialog requests carry
  the sender's own AoR in From and are checked as above.

Each refusal is counted (:class:`IdentityCounter`) and journaled (a ``sip.drop`` record
with the reason, plus the 403 sent). RFC 3325: the mesh is the trust domain. Toward a
local client the gateway removes any P-Asserted-Identity / P-Preferred-Identity the
request carried and, for a verified From (and no ``Privacy: id``), asserts it; toward the
upstream proxy both are removed. Identities that enter from beyond the mesh (a client's
headers toward the mesh, the upstream's with ``[upstream] trusted``, a member relay's for
a foreign caller) are :mod:`meshcomm.node.gateway.edge_identity`'s.
"""

from __future__ import annotations

from collections import Counter, deque
from enum import Enum, StrEnum

from meshcomm.journal.events import JournalRecord
from meshcomm.location.table import TrustMode
from meshcomm.node.gateway.edge_identity import EdgeIdentity
from meshcomm.node.gateway.parts import Peer, PendingSipRecord, ProxyTx, drop_record, is_tcp
from meshcomm.node.gateway.registrar import Registrar
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    Address,
    GatewayConfig,
    InboxEntry,
    SendResult,
)
from meshcomm.node.mesh import MeshNode
from meshcomm.sip.message import SipRequest, SipResponse

#: Headers that assert or request an identity (RFC 3325 §9.1, §9.2).
IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity")
#: Methods whose From is not checked: ACK and CANCEL follow their INVITE's transaction,
#: REGISTER is the registrar's.
UNCHECKED_METHODS = frozenset({"ACK", "CANCEL", "REGISTER"})


class IdentityState(Enum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    REFUSED = "refused"


class IdentityCounter(StrEnum):
    REFUSED_LOCAL = "identity_refused_local"      # a client's From it does not hold
    REFUSED_MESH = "identity_refused_mesh"        # From bound to another node than the signer
    UNVERIFIED = "identity_unverified"            # From bound nowhere: passed, not asserted
    ASSERTED = "identity_asserted"                # P-Asserted-Identity set toward a client
    STRIPPED = "identity_headers_stripped"        # client-supplied PAI/PPI removed
    FOREIGN_RESPONSES = "identity_foreign_responses"  # a response from another node
    FOLLOWED = "identity_client_followed"         # a registration moved to its client's new source


class IdentityChecks:
    """Mixin: needs the gateway's node, registrar, config, counters and answering."""

    node: MeshNode
    node_aor: str
    registrar: Registrar
    config: GatewayConfig
    edge_identity: EdgeIdentity
    counters: Counter[str]
    _events: deque[JournalRecord | SendResult | InboxEntry | PendingSipRecord]

    def _respond(self, tx: ProxyTx, status: int, now: float) -> None:
        raise NotImplementedError          # SipGateway's

    def identity_of(self, request: SipRequest, src: Peer) -> tuple[IdentityState, str]:
        """Whether ``request``'s From is vouched for coming from ``src``, and why not."""
        aor = request.from_addr.uri.aor.lower()
        if src == BUILTIN_ADDR:
            return IdentityState.VERIFIED, ""
        if src is None:                      # a held MESSAGE checked when it was taken
            return IdentityState.UNVERIFIED, ""
        bound = self.node.table.lookup(aor)
        if isinstance(src, bytes):
            if any(s.binding.node_id == src for s in bound):
                return IdentityState.VERIFIED, ""
            return ((IdentityState.REFUSED, "from_bound_elsewhere") if bound
                    else (IdentityState.UNVERIFIED, ""))
        return self._local_identity(aor, src, bool(bound))

    def _local_identity(self, aor: str, src: Address, bound: bool) -> tuple[IdentityState, str]:
        source = self.registrar.source_of(aor)
        if source is not None:
            return ((IdentityState.VERIFIED, "") if _same_client(source, src)
                    else (IdentityState.REFUSED, "from_held_by_other_client"))
        if bound or aor == self.node_aor:
            return IdentityState.REFUSED, "from_not_held_here"
        if self.node.table.policy.mode is TrustMode.AGENCY and src != self.config.upstream:
            return IdentityState.REFUSED, "from_unbound"
        return IdentityState.UNVERIFIED, ""

    def client_authenticated(self, aor: str, src: Address) -> None:
        """The local client at ``src`` authenticated (digest) a request as ``aor``: it
        holds the AoR's credentials. When ``aor`` is registered here from another source
        (a TCP client on a new connection once its old one closed, another port or host),
        the registration follows the client: its requests are verified from there and,
        when both are TCP connections, requests for the AoR go to the new one."""
        source = self.registrar.source_of(aor)
        if source is None or _same_client(source, src):
            return
        if self.registrar.follow_client(aor, src, flow=is_tcp(source) and is_tcp(src)):
            self.counters[IdentityCounter.FOLLOWED] += 1

    def _identity_refused(self, tx: ProxyTx, now: float) -> bool:
        """Refuse ``tx`` with 403 when its From is not vouched for (counted, journaled)."""
        if tx.method in UNCHECKED_METHODS:
            return False
        state, reason = self.identity_of(tx.request, tx.upstream)
        if state is IdentityState.UNVERIFIED:
            self.counters[IdentityCounter.UNVERIFIED] += 1
        if state is not IdentityState.REFUSED:
            return False
        self.counters[IdentityCounter.REFUSED_MESH if isinstance(tx.upstream, bytes)
                      else IdentityCounter.REFUSED_LOCAL] += 1
        self._events.append(drop_record(reason, tx.upstream, len(tx.request.body), tx.hops))
        self._respond(tx, 403, now)
        return True

    def _asserted(self, out: SipRequest, request: SipRequest, src: Peer,
                  dest: Address | bytes) -> SipRequest:
        """RFC 3325 at the edges of the trust domain: toward the mesh, identity headers
        from a client or the upstream go (gateway.edge_identity); toward a local client or
        the upstream, identity headers go, a verified From is asserted to a local client,
        else what a trusted upstream or a member relay asserted for a foreign caller."""
        if dest == BUILTIN_ADDR:
            return out
        if isinstance(dest, bytes):
            return self.edge_identity.toward_mesh(out, src)
        relayed = self.edge_identity.relayed(request, src) if dest != self.config.upstream \
            else []
        for name in IDENTITY_HEADERS:
            if out.get_header(name) is not None:      # (a malformed value goes as well)
                self.counters[IdentityCounter.STRIPPED] += 1
                out = out.without_header(name)
        if dest == self.config.upstream or request.method in UNCHECKED_METHODS or _private(out):
            return out
        if self.identity_of(request, src)[0] is not IdentityState.VERIFIED:
            return out.with_headers_replaced("P-Asserted-Identity", relayed) if relayed else out
        self.counters[IdentityCounter.ASSERTED] += 1
        aor = request.from_addr.uri.aor
        return out.with_headers_replaced("P-Asserted-Identity", [f"<{aor}>"])


    def _foreign_response(self, tx: ProxyTx, src: Peer) -> bool:
        """A response over the mesh from another node than the one the request went to
        (it matched a branch it should not know): dropped, counted."""
        if not isinstance(src, bytes) or not isinstance(tx.downstream, bytes):
            return False
        if src == tx.downstream:
            return False
        self.counters[IdentityCounter.FOREIGN_RESPONSES] += 1
        return True

    def _response_unasserted(self, response: SipResponse, dest: Peer) -> SipResponse:
        """RFC 3325 on responses: identity headers from beyond the trust domain's edge are
        removed before a response reaches a client or the upstream."""
        if not isinstance(dest, tuple) or dest == BUILTIN_ADDR:
            return response
        for name in IDENTITY_HEADERS:
            if response.header_values(name):
                self.counters[IdentityCounter.STRIPPED] += 1
                response = response.without_header(name)
        return response


def _same_client(source: Address, src: Address) -> bool:
    """The request comes from where the REGISTER did: the same address, or the same host
    over UDP (a client may send from another port than it registered from)."""
    if source == src:
        return True
    return not is_tcp(source) and not is_tcp(src) and source[0] == src[0]



def _private(request: SipRequest) -> bool:
    """RFC 3323/3325: ``Privacy: id`` asks that the identity not be asserted."""
    text = ";".join(request.header_values("Privacy")).lower().replace(",", ";")
    return "id" in {token.strip() for token in text.split(";")}
