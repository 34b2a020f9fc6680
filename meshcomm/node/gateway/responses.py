"""Response processing of the SIP gateway (RFC 3261 §16.7), a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`: a response is matched to its proxy
transaction by the branch of our Via (§17.1.3), our Via is removed and the response goes
upstream, with the gateway's own rules around it:

* a provisional overtaken on the mesh by the final answer is dropped; the first provisional
  to an INVITE arms Timer C (§16.8) and stops request retransmission;
* a response with no transaction left (it lingered out) is relayed by its Via only when it
  is a 2xx to INVITE (§16.7 step 3 has no state for it), and a late 2xx of a call that
  failed or ended is answered by ending the far side (ACK + BYE, §9.1) instead;
* an SDP the media layer refuses (see :class:`meshcomm.node.gateway.sdp_gate.SdpGate`) drops a
  provisional and turns a 2xx into 488/503 upstream, the far side being ended;
* a MESSAGE answered 480/408 is handed to store-and-forward (:mod:`.custody`).
"""

from __future__ import annotations

import random
from collections import Counter

from meshcomm.node.gateway.contacts import ContactMap
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.custody import MessageCustody
from meshcomm.node.gateway.parts import Peer, ProxyTx
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.proxy_state import ProxyTxState as TxState
from meshcomm.node.gateway.registrar import Registrar
from meshcomm.node.gateway.rfc import OwnHosts
from meshcomm.node.gateway.sdp_gate import SdpGate
from meshcomm.node.gateway.transactions import ProxyTxTable
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    MESH_HOST_SUFFIX,
    Address,
    Direction,
    EnvelopeSlot,
    GatewayConfig,
)
from meshcomm.sip.build import build_ack_for_error, new_branch
from meshcomm.sip.message import SipRequest, SipResponse, Via
from meshcomm.sip.ua_base import via_address

#: Statuses that mean "not reachable now": a MESSAGE is then held for store-and-forward.
UNAVAILABLE_STATUSES = frozenset({408, 480})
BAD_REQUEST = 400
#: A 2xx whose SDP answer was refused goes upstream as this (RFC 3261 §21.4.26).
NOT_ACCEPTABLE_HERE = 488


class ResponseRelay(MessageCustody):
    """Mixin: needs the gateway's transactions, contacts, registrar, hosts and output."""

    config: GatewayConfig
    counters: Counter[str]
    contacts: ContactMap
    registrar: Registrar
    hosts: OwnHosts
    mesh_host: str
    rng: random.Random
    txs: ProxyTxTable
    sdp_gate: SdpGate

    # The gateway's own operations (SipGateway defines them).
    def _journal(self, direction: Direction, message: SipRequest | SipResponse, peer: Peer,
                 hops: int = 0, note: str = "", env: bytes = b"") -> EnvelopeSlot | None:
        raise NotImplementedError

    def _emit(self, message: SipRequest | SipResponse, dest: Address | bytes, hops: int) -> None:
        raise NotImplementedError

    def _finish(self, tx: ProxyTx, response: SipResponse, now: float, event: TxIn) -> None:
        raise NotImplementedError

    def _on_response(self, response: SipResponse, src: Peer, now: float, hops: int,
                     env: bytes = b"") -> None:
        self._journal(Direction.FROM_CLIENT if isinstance(src, tuple) else Direction.FROM_MESH,
                      response, src, hops, env=env)
        via = response.top_via
        vias = response.header_values("Via")
        if not self._is_our_via(via) or len(vias) < 2:
            self.counters[GatewayCounter.RESPONSES_NOT_OURS] += 1
            return
        if response.cseq.method == "CANCEL":
            return                                      # our CANCEL was answered
        out = response.with_headers_replaced("Via", vias[1:])
        tx = self.txs.of_branch(via.branch or "")
        if tx is None:
            self._stateless_response(out, src)
            return
        if self._foreign_response(tx, src):           # gateway.identity (issue 12.1)
            return
        out = self._response_unasserted(self.contacts.rewrite(out, src, tx.upstream), tx.upstream)
        if response.status < 200 and not tx.allows(TxIn.RECV_1XX):
            # A provisional overtaken on the mesh by the final answer: the client's
            # transaction has moved on; relaying it now would confuse it (§16.7 step 5).
            self.counters[GatewayCounter.PROVISIONAL_AFTER_FINAL] += 1
            return
        if (isinstance(src, bytes) and tx.method == "INVITE" and 200 <= response.status < 300
                and tx.answered and (tx.final_status or 0) >= 300):
            # A 2xx crossing the CANCEL we sent when we failed the call (timeout, refusal):
            # the client was told it failed, so we end the far side (ACK + BYE), as the
            # canceller must (RFC 3261 §9.1), instead of ringing a ghost call through.
            self._abandon_far(response, src)
            return
        if isinstance(src, tuple) and 100 < response.status < 300:
            self.registrar.learn_contacts(response.contacts, src)
        if response.status < 300:                      # 18x (early media) and 2xx
            rewritten = self.sdp_gate.check(out, src, tx.upstream)
            if isinstance(rewritten, int):
                self._refused_answer(tx, response, rewritten, now)
                return
            out = rewritten
            if not tx.answered:   # not a retransmission, nor a 2xx after a failure
                self.contacts.note_answer(tx.request, response, src, tx.upstream)
        if response.status < 200:
            self._on_provisional(tx, out, now)
            return
        if not tx.allows(TxIn.RECV_FINAL):
            if response.status < 300 and tx.method == "INVITE":
                self._relay_response(tx, out)        # 2xx retransmission (§16.7)
            return
        if (response.status >= 300 and tx.method == "INVITE" and tx.out_request is not None
                and src is not None):
            self._emit(build_ack_for_error(tx.out_request, response), src, hops)
        if (response.status in UNAVAILABLE_STATUSES and self._hold(tx, now)):
            return
        self._finish(tx, out, now, TxIn.RECV_FINAL)

    def _on_provisional(self, tx: ProxyTx, response: SipResponse, now: float) -> None:
        """§16.7 steps 2 and 5: the first provisional to an INVITE arms Timer C (§16.6 step
        11); request retransmission stops; a 1xx other than 100 is relayed."""
        if tx.state is TxState.TRYING and tx.method == "INVITE":
            tx.deadline = now + self.config.timers.timer_c_s
        tx.retransmit_at = None
        tx.step(TxIn.RECV_1XX)
        if response.status > 100:
            self._relay_response(tx, response)

    def _stateless_response(self, response: SipResponse, src: Peer) -> None:
        """No state (it lingered out): only a 2xx to INVITE is relayed, by its Via."""
        if not (200 <= response.status < 300 and response.cseq.method == "INVITE"):
            self.counters[GatewayCounter.RESPONSES_STRAY] += 1
            return
        dest = self._via_destination(response.top_via)
        if dest is None:
            return
        if (isinstance(src, bytes) and isinstance(dest, tuple)
                and not self.contacts.has_dialog(response)):
            self._abandon_far(response, src)   # a late 2xx of a call that failed or ended
            return
        out = self.sdp_gate.check(self.contacts.rewrite(response, src, dest), src, dest)
        if isinstance(out, int):
            self.counters[GatewayCounter.RESPONSES_DROPPED_SDP] += 1
            return
        self._emit(out, dest, 0)

    def _foreign_response(self, tx: ProxyTx, src: Peer) -> bool:
        raise NotImplementedError                    # gateway.identity

    def _response_unasserted(self, response: SipResponse, dest: Peer) -> SipResponse:
        raise NotImplementedError                    # gateway.identity

    def _via_destination(self, via: Via) -> Address | bytes | None:
        if via.host.endswith(MESH_HOST_SUFFIX):
            return self.registrar.node_of(via.host[: -len(MESH_HOST_SUFFIX)])
        if via.host == BUILTIN_ADDR[0]:
            return BUILTIN_ADDR
        return via_address(via)

    def _is_our_via(self, via: Via) -> bool:
        return via.host == self.mesh_host or self.hosts.is_ours(via.host, via.port)

    def _relay_response(self, tx: ProxyTx, response: SipResponse) -> None:
        if tx.upstream is None:
            return
        self._emit(response, tx.upstream, tx.hops)

    def _refused_answer(self, tx: ProxyTx, response: SipResponse, status: int,
                        now: float) -> None:
        """A 1xx/2xx whose SDP the media layer refused: a provisional is dropped; a final
        2xx becomes an error answer upstream (488 for a bad body, 503 for no resources) --
        the callee gets no ACK and ends its side (RFC 3261 §13.3.1.4)."""
        if response.status < 200 or tx.answered:
            self.counters[GatewayCounter.RESPONSES_DROPPED_SDP] += 1
            return
        self._respond(tx, NOT_ACCEPTABLE_HERE if status == BAD_REQUEST else status, now,
                      self._retry_after(status))
        if tx.method == "INVITE" and isinstance(tx.downstream, bytes) and response.status < 300:
            self._abandon_far(response, tx.downstream)    # the far side ends its call now

    def _abandon_far(self, response: SipResponse, node: bytes) -> None:
        for request in self.contacts.abandon_requests(
                response, (new_branch(self.rng), new_branch(self.rng))):
            self._emit(request, node, 0)
