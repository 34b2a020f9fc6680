"""The store-and-forward side of the SIP gateway (a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`): handing MESSAGEs to the holder and answering
202 only once the hold is durable, and delivering a MESSAGE to a local client once per
message id whatever path brings it (exactly once, end to end).

* A MESSAGE a far node does not take (480/408, timeout) goes to ``holder.hold``; the
  client gets 202 when the hold is on disk (at once, or on :meth:`hold_done` after the
  runtime wrote it), 500 with Retry-After when the write failed or was never reported
  within :data:`HOLD_DURABLE_TIMEOUT_S`, 503 with Retry-After when the holder is full.
* :meth:`hold_pending` (the node stops) hands every MESSAGE still waiting for a far node
  to the holder, and holds later ones at once.
* A MESSAGE for a local client whose message id the holder's persisted record says was
  delivered is answered 200 and not delivered again; a copy that arrives while the first
  is with the client waits for the first's answer; a success is reported to the holder
  (``note_delivered``) before the answer leaves (the runtime persists before it sends).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from meshcomm.errors import LocalProtocolError
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import ProxyTx, message_id
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.proxy_state import ProxyTxState as TxState
from meshcomm.node.gateway.transactions import ProxyTxTable
from meshcomm.node.gateway.types import Address, GatewayConfig, HoldRefused, MessageHolder
from meshcomm.sip.message import SipRequest

log = logging.getLogger(__name__)

#: A hold not reported durable (``hold_done``) within this is answered 500.
HOLD_DURABLE_TIMEOUT_S = 5.0
#: The answer to a MESSAGE whose hold could not be written (the client retries).
HOLD_FAILED_STATUS = 500
#: Origin key of a MESSAGE from a local client (the delivered record's fairness key).
LOCAL_ORIGIN = b""


class MessageCustody:
    """Mixin: needs the gateway's holder, counters, config, transactions and answers."""

    holder: MessageHolder | None
    counters: Counter[str]
    config: GatewayConfig
    txs: ProxyTxTable

    def __init__(self) -> None:
        #: MESSAGEs being delivered to a local client, by message id (exactly once).
        self._delivering: dict[bytes, ProxyTx] = {}
        #: MESSAGEs handed to store-and-forward whose hold is not yet durable.
        self._holding: dict[bytes, ProxyTx] = {}
        #: Set by hold_pending (the node stops): MESSAGEs for other nodes are held at once.
        self.stopping = False

    # The gateway's own operations (SipGateway defines them).
    def _respond(self, tx: ProxyTx, status: int, now: float,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        raise NotImplementedError

    def _forward(self, tx: ProxyTx, request: SipRequest, dest: Address | bytes,
                 now: float) -> None:
        raise NotImplementedError

    def _pump_builtin(self, now: float) -> None:
        raise NotImplementedError

    def _retry_after(self, status: int) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _hold_allowed(self, tx: ProxyTx, now: float) -> bool:
        raise NotImplementedError

    def _failed_hold(self, tx: ProxyTx, counter: GatewayCounter, now: float) -> None:
        self.counters[counter] += 1
        self._respond(tx, HOLD_FAILED_STATUS, now,
                      [("Retry-After", str(self.config.retry_after_s))])

    # ------------------------------------------------------------ holding
    def hold_done(self, msg_id: bytes, durable: bool, now: float) -> None:
        """The holder's verdict on a hold (store-and-forward ``SfHoldResult``): answer 202
        when it is on disk, else 500 with Retry-After so the client sends it again."""
        tx = self._holding.pop(msg_id, None)
        if tx is None or tx.state is not TxState.HOLDING:
            return
        if durable:
            self.counters[GatewayCounter.MESSAGES_HELD] += 1
            self._respond(tx, 202, now)
        else:
            self._failed_hold(tx, GatewayCounter.MESSAGES_HOLD_FAILED, now)
        self._pump_builtin(now)

    def hold_pending(self, now: float) -> int:
        """The node is stopping: every MESSAGE of a local client still waiting for the far
        node is handed to store-and-forward now (answered 202 once durable), and MESSAGEs
        for other nodes that come later are held at once. Returns how many were handed."""
        self.stopping = True
        handed = 0
        for tx in self.txs.values():
            if (tx.state in (TxState.TRYING, TxState.PROCEEDING) and tx.method == "MESSAGE"
                    and isinstance(tx.downstream, bytes) and self._hold(tx, now)):
                handed += 1
        self._pump_builtin(now)
        return handed

    def _hold_unconfirmed(self, tx: ProxyTx, now: float) -> None:
        """No verdict on a hold within HOLD_DURABLE_TIMEOUT_S: 500 (the client retries)."""
        self._unhold(tx)
        self._failed_hold(tx, GatewayCounter.MESSAGES_HOLD_UNCONFIRMED, now)

    def _unhold(self, tx: ProxyTx) -> None:
        """Forget the hold of ``tx`` (it leaves HOLDING): its key is the message id."""
        key = message_id(tx.request)
        if self._holding.get(key) is tx:
            del self._holding[key]

    def _hold(self, tx: ProxyTx, now: float) -> bool:
        """Hand an unreachable client's MESSAGE to store-and-forward. True: taken over
        (202 once the hold is durable, at once or on hold_done; 503 when the holder is
        full); False: not held, the caller's answer stands."""
        if (self.holder is None or tx.method != "MESSAGE" or not isinstance(tx.upstream, tuple)
                or tx.msg_id is not None):
            return False
        if tx.state is TxState.HOLDING:
            return True
        request = tx.request
        msg_id = message_id(request)
        if msg_id in self._holding:          # the same message in another transaction
            self.counters[GatewayCounter.MESSAGES_NOT_HELD] += 1
            return False
        if not self._hold_allowed(tx, now):  # over its client's quota (gateway.admission)
            self._respond(tx, 503, now, self._retry_after(503))
            return True
        try:
            durable = self.holder.hold(msg_id=msg_id, from_aor=request.from_addr.uri.aor,
                                       to_aor=request.uri.aor, sip=request.serialize(),
                                       now=now)
        except HoldRefused as exc:           # full of undelivered messages: try later
            self.counters[GatewayCounter.MESSAGES_REFUSED_FULL] += 1
            log.warning("MESSAGE not held for store-and-forward: %s", exc)
            self._respond(tx, 503, now, self._retry_after(503))
            return True
        except LocalProtocolError as exc:   # e.g. over the holder's size limit: 480 stays
            self.counters[GatewayCounter.MESSAGES_NOT_HELD] += 1
            log.info("MESSAGE not held for store-and-forward: %s", exc)
            return False
        if durable:
            self.counters[GatewayCounter.MESSAGES_HELD] += 1
            self._respond(tx, 202, now)
        else:
            tx.step(TxIn.HOLD)
            self._holding[msg_id] = tx
            tx.deadline = now + HOLD_DURABLE_TIMEOUT_S
        return True

    # ------------------------------------------------------------ exactly once
    def _deliver_local(self, tx: ProxyTx, request: SipRequest, dest: Address,
                       msg_id: bytes | None, now: float) -> None:
        """Forward to a local client; an out-of-dialog MESSAGE once per message id: a
        copy already delivered is answered 200 (no second delivery), one arriving while
        the first is with the client gets the first's answer."""
        if request.method != "MESSAGE" or request.to_addr.tag is not None:
            self._forward(tx, request, dest, now)
            return
        key = msg_id if msg_id is not None else message_id(request)
        if self.holder is not None and self.holder.is_delivered(key):
            self.counters[GatewayCounter.DUPLICATES_ANSWERED] += 1
            self._respond(tx, 200, now)
            return
        first = self._delivering.get(key)
        if first is not None:
            self.counters[GatewayCounter.DUPLICATES_ABSORBED] += 1
            tx.step(TxIn.WAIT)
            first.followers.append(tx)
            return
        tx.delivery_id = key
        tx.delivery_origin = tx.upstream if isinstance(tx.upstream, bytes) else LOCAL_ORIGIN
        self._delivering[key] = tx
        self._forward(tx, request, dest, now)

    def _delivery_finished(self, tx: ProxyTx, status: int, now: float) -> None:
        """A local delivery got its final answer: remember a success (persisted by the
        holder before the answer leaves) and answer the copies that waited for it."""
        key = tx.delivery_id
        if key is None:
            return
        if self._delivering.get(key) is tx:
            del self._delivering[key]
        ok = 200 <= status < 300
        if ok and self.holder is not None:           # idempotent after local_delivery_done
            self.holder.note_delivered(key, tx.delivery_origin, now)
        followers, tx.followers = tx.followers, []
        for follower in followers:
            code = 200 if ok else status
            self._respond(follower, code, now, self._retry_after(code))
