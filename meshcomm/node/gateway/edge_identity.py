"""Asserted identities at the edges of the mesh's trust domain (RFC 3325; issue 12.1), a
part of :class:`meshcomm.node.gateway.core.SipGateway`.

The mesh is the trust domain: a node asserts an identity it verified and strips one it
did not. Three edges:

* **A local client -> the mesh** (the origin gateway): any ``P-Asserted-Identity`` or
  ``P-Preferred-Identity`` the client put in is removed before the request is sealed for
  the mesh (RFC 3325 §5: an asserted identity from outside the domain is not passed on).
  The destination asserts the From itself once it has checked its binding.
* **The upstream SIP proxy -> the mesh** (the uplinked relay of ``[upstream]``): the
  upstream is outside the trust domain unless the deployment says otherwise
  (``[upstream] trusted``, :attr:`GatewayConfig.upstream_trusted`, default false).
  Untrusted: every PAI and PPI from it is removed and the relay asserts nothing (the
  callee sees an unverified caller). Trusted (the PBX is in the domain): its PAI is kept,
  but only when every value is a *foreign* identity: a ``sip:``/``sips:``/``tel:`` URI
  (at most :data:`MAX_ASSERTED_VALUES`, RFC 3325 §9.1) naming no AoR any mesh key has
  claimed and no role address; otherwise the whole header goes
  (``upstream_identity_refused``). A PPI is always removed (the relay does not act on
  it). A From bound to a mesh key is refused with 403 by the identity checks
  (:mod:`meshcomm.node.gateway.identity`, ``from_not_held_here``) before any of this.
* **The mesh -> a local client** (the destination gateway): a verified From is asserted
  as before. A request whose From is not verified keeps the PAI it carries only when it
  was signed by a member of the trust domain -- under the ``agency`` policy a node with
  a credentialed binding (a relay whose trusted upstream asserted it) -- and the values
  are foreign as above (``identity_relayed``); under ``open`` anyone may join, so none is
  kept. ``Privacy: id`` is honoured (nothing asserted).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.location.table import TrustMode
from meshcomm.node.gateway.parts import Peer
from meshcomm.node.gateway.types import BUILTIN_ADDR, GatewayConfig
from meshcomm.node.mesh import MeshNode
from meshcomm.security.roles import roles_for
from meshcomm.sip.message import SipRequest
from meshcomm.sip.msg_headers import parse_name_addr_untrusted

ASSERTED: Final = "P-Asserted-Identity"
PREFERRED: Final = "P-Preferred-Identity"
#: RFC 3325 §9.1: one sip/sips URI and one tel URI at most.
MAX_ASSERTED_VALUES: Final = 2
ASSERTABLE_SCHEMES: Final = frozenset({"sip", "sips", "tel"})


class EdgeCounter(StrEnum):
    UPSTREAM_STRIPPED = "upstream_identity_stripped"  # untrusted upstream: PAI/PPI removed
    UPSTREAM_KEPT = "upstream_identity_kept"          # trusted upstream: its PAI kept
    UPSTREAM_REFUSED = "upstream_identity_refused"    # trusted, but a mesh AoR or malformed
    INGRESS_STRIPPED = "identity_ingress_stripped"    # a client's PAI/PPI kept off the mesh
    RELAYED = "identity_relayed"                      # a member relay's assertion passed on


class EdgeIdentity:
    """See the module docstring. Needs the node (its location table and policy), the
    gateway's config and counters."""

    def __init__(self, node: MeshNode, config: GatewayConfig, counters: Counter[str]) -> None:
        self.node = node
        self.config = config
        self.counters = counters

    def toward_mesh(self, out: SipRequest, src: Peer) -> SipRequest:
        """``out`` (from ``src``) as it may enter the mesh (see the module docstring)."""
        if not isinstance(src, tuple) or src == BUILTIN_ADDR:
            return out                       # from the mesh or the built-in UA: as it is
        if src == self.config.upstream:
            kept = self.from_upstream(out)
            out = _without(out, ASSERTED, PREFERRED)
            return out.with_headers_replaced(ASSERTED, kept) if kept else out
        if _has(out, ASSERTED) or _has(out, PREFERRED):
            self.counters[EdgeCounter.INGRESS_STRIPPED] += 1
            return _without(out, ASSERTED, PREFERRED)
        return out

    def from_upstream(self, request: SipRequest) -> list[str]:
        """The PAI values of a request from the upstream the mesh keeps (none unless
        ``upstream_trusted`` and every value is foreign); counted."""
        if not _has(request, ASSERTED) and not _has(request, PREFERRED):
            return []
        if not self.config.upstream_trusted:
            self.counters[EdgeCounter.UPSTREAM_STRIPPED] += 1
            return []
        if not _has(request, ASSERTED):
            return []
        kept = self._foreign(request)
        self.counters[EdgeCounter.UPSTREAM_KEPT if kept else EdgeCounter.UPSTREAM_REFUSED] += 1
        return kept

    def relayed(self, request: SipRequest, src: Peer) -> list[str]:
        """The PAI values a local client may see for a request whose From is not verified
        here: the trusted upstream's (this relay), or a member relay's (from the mesh)."""
        if src == self.config.upstream and src is not None:
            return self.from_upstream(request)
        if not isinstance(src, bytes) or not _has(request, ASSERTED):
            return []
        if self.node.table.policy.mode is not TrustMode.AGENCY:
            return []
        kept = self._foreign(request)            # cheap first: at most two values
        if not kept or not self._member(src):
            return []
        self.counters[EdgeCounter.RELAYED] += 1
        return kept

    def _member(self, node_id: bytes) -> bool:
        """Node ``node_id`` holds a live credentialed binding (one pass over the table,
        only for a request from the mesh carrying a PAI and an unverified From)."""
        return any(s.binding.node_id == node_id and s.credentialed
                   and not s.binding.is_tombstone for s in self.node.table)

    def _foreign(self, request: SipRequest) -> list[str]:
        """The request's PAI values when they are at most two well-formed sip/sips/tel
        identities that no mesh key claims and that name no role address; else []."""
        try:
            items = [i.strip() for i in request.header_values(ASSERTED) if i.strip()]
            if not 0 < len(items) <= MAX_ASSERTED_VALUES:
                return []
            uris = [parse_name_addr_untrusted(item).uri for item in items]
        except DecodeError:
            return []                     # malformed: removed, the request still goes on
        table = self.node.table
        roles = table.policy.role_table()
        for uri in uris:
            if uri.scheme not in ASSERTABLE_SCHEMES:
                return []
            if uri.is_sip and (table.lookup_all(uri.aor) or roles_for(uri.aor, roles)
                               is not None):
                return []
        return items


def _has(message: SipRequest, name: str) -> bool:
    """The header is present (its values are not read: a malformed one is still seen)."""
    return message.get_header(name) is not None


def _without(message: SipRequest, *names: str) -> SipRequest:
    for name in names:
        if _has(message, name):
            message = message.without_header(name)
    return message
