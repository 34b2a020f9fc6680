"""Targets beyond the island for the SIP gateway (issue 10), a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`.

* **Resolution** (RFC 3261 §16.5 with the location service in other islands): a client's
  request for an AoR the island does not know waits in ``RESOLVING`` for the node's
  answer (:class:`~meshcomm.node.gateway.types.ResolveAor` out, :meth:`Beyond.resolved`
  in): found, it is forwarded to the remote node; not found, to the upstream proxy when
  one is configured, else 404; unreachable (no uplink) or no answer, 480 (a MESSAGE is
  held).
* **The upstream proxy** (``GatewayConfig.upstream``): the last target of an unknown AoR,
  and the next hop of an in-dialog request whose Route names it (§16.12); never a
  request's way back to where it came from.
* **Held MESSAGEs sent across** (:meth:`Beyond.deliver_remote`): store-and-forward hands a
  MESSAGE for an AoR beyond the island back; it is resolved and forwarded in a
  transaction of its own, and the holder hears the final answer.
"""

from __future__ import annotations

import random
from collections import Counter

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.admission import Admission
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import Peer, ProxyTx
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.proxy_state import ProxyTxState as TxState
from meshcomm.node.gateway.registrar import Registrar
from meshcomm.node.gateway.types import (
    Address,
    GatewayConfig,
    LocalDatagram,
    MeshSip,
    MessageHolder,
    ResolveAor,
)
from meshcomm.node.mesh import MeshNode
from meshcomm.sip.build import new_branch
from meshcomm.sip.message import NameAddr, SipRequest, Via, parse_message_untrusted
from meshcomm.sip.transaction import DEFAULT_SIP_PORT


class Beyond:
    """Mixin: needs the gateway's node, config, transactions and forwarding."""

    node: MeshNode
    config: GatewayConfig
    counters: Counter[str]
    registrar: Registrar
    admission: Admission
    holder: MessageHolder | None
    rng: random.Random
    mesh_host: str
    resolves_remote: bool
    _now: float
    _out: list[LocalDatagram | MeshSip | ResolveAor]
    _resolving: dict[int, tuple[ProxyTx, SipRequest]]

    # The gateway's own operations (SipGateway defines them).
    def _respond(self, tx: ProxyTx, status: int, now: float) -> None:
        raise NotImplementedError

    def _forward(self, tx: ProxyTx, request: SipRequest, dest: Address | bytes,
                 now: float) -> None:
        raise NotImplementedError

    def _new_tx(self, request: SipRequest, upstream: Peer, hops: int) -> ProxyTx:
        raise NotImplementedError

    def _route_by_aor(self, tx: ProxyTx, request: SipRequest, now: float) -> None:
        raise NotImplementedError

    def _reply_provisional(self, tx: ProxyTx, status: int) -> None:
        raise NotImplementedError

    def _pump_builtin(self, now: float) -> None:
        raise NotImplementedError

    def resolved(self, request_id: int, node: bytes | None, found_nothing: bool,
                 may_go_upstream: bool, now: float) -> None:
        """The answer to :class:`ResolveAor` ``request_id``: the node that holds the AoR,
        or None: then the upstream proxy if there is one and ``may_go_upstream`` (nothing
        is known of the AoR, found or for lack of an uplink), else 404 when
        ``found_nothing``, else 480 (unreachable, no answer: a MESSAGE is held)."""
        self._now = max(self._now, now)
        waiting = self._resolving.pop(request_id, None)
        if waiting is None or waiting[0].state is not TxState.RESOLVING:
            return
        tx, request = waiting
        if node is None and may_go_upstream and self._to_upstream(tx, request, now):
            pass
        elif node is None or node == self.node.node_id:
            self._respond(tx, 404 if found_nothing else 480, now)
        else:
            self.registrar.learn_node(node)
            self._forward(tx, request, node, now)
        self._pump_builtin(now)

    def deliver_remote(self, msg_id: bytes, sip: bytes, now: float) -> None:
        """Send a held MESSAGE (store-and-forward ``SfRemoteTry``) beyond the island: its
        AoR is resolved and it is forwarded as a client's would be; the holder hears
        ``remote_delivery_done`` with the final answer (at once when it cannot go)."""
        self._now = max(self._now, now)
        try:
            request = parse_message_untrusted(sip)
        except DecodeError:
            request = None
        if (not isinstance(request, SipRequest) or not self.resolves_remote
                or self.admission.mesh_full()):
            if self.holder is not None:
                self.holder.remote_delivery_done(msg_id, False, now)
            return
        # A transaction of its own (a fresh Via of ours): the client's may still linger.
        via = Via("UDP", self.mesh_host, None, (("branch", new_branch(self.rng)),))
        request = request.with_headers_replaced("Via", [str(via)])
        tx = self._new_tx(request, None, 0)
        tx.msg_id, tx.remote_delivery = msg_id, True
        self.counters[GatewayCounter.REMOTE_DELIVERY_TRIES] += 1
        self._route_by_aor(tx, request, now)
        self._pump_builtin(now)

    def _to_upstream(self, tx: ProxyTx, request: SipRequest, now: float) -> bool:
        """§16.5/16.6 with the upstream proxy as the target: True when forwarded there
        (never back to where the request came from)."""
        upstream = self.config.upstream
        if upstream is None or tx.upstream == upstream:
            return False
        self.counters[GatewayCounter.TO_UPSTREAM] += 1
        self._forward(tx, request, upstream, now)
        return True

    def _resolve(self, tx: ProxyTx, request: SipRequest, aor: str, now: float) -> None:
        """§16.5 beyond the island: ask the node (see :meth:`resolved`)."""
        tx.step(TxIn.RESOLVE)
        tx.deadline = now + self.config.resolve_timeout_s
        self._resolving[tx.tx_id] = (tx, request)
        self.counters[GatewayCounter.REMOTE_RESOLVES] += 1
        if request.method == "INVITE":
            self._reply_provisional(tx, 100)
        self._out.append(ResolveAor(tx.tx_id, aor))

    def _names_upstream(self, route: NameAddr, src: Peer) -> bool:
        """``route`` (the top Route once ours are gone) names the upstream proxy, and the
        request did not come from there (never back where it came from)."""
        upstream = self.config.upstream
        uri = route.uri
        return (upstream is not None and src != upstream and uri.param("mesh") is None
                and uri.host.strip("[]") == upstream[0]
                and (uri.port or DEFAULT_SIP_PORT) == upstream[1])
