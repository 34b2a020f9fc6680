"""The local SIP gateway of a node: a stateful proxy (RFC 3261 §16) whose next hop is a
local client or another node's gateway over the mesh (see docs/gateway-design.md).

Sans-IO, with the driving API of the architecture guide::

    gw = SipGateway(node, GatewayConfig(), rng=rng, node_aor="sip:me@incident.local", now=t)
    gw.receive_local(data, ("127.0.0.1", 40001), now)     # from a SIP client (UDP/TCP)
    gw.receive_mesh(origin_node_id, body, hops, now)       # UnicastReceived kind AppKind.SIP
    for out in gw.to_send(now):  # LocalDatagram -> the client; MeshSip -> send_unicast
        ...
    gw.next_timer(); gw.on_timer(now); gw.next_event()    # JournalRecord, SendResult, InboxEntry

Routing of a request (after Max-Forwards, overload and parser checks):

* a top Route naming this node (``mesh=<nodehex>``) is popped; a next Route naming another
  node sends the request over the mesh to it; a Route naming no node is refused (403: the
  gateway is not an open relay);
* with no Route left, an in-dialog request (To tag) goes to the local client whose contact
  is the Request-URI; an out-of-dialog one is resolved by AoR: a local registration, the
  node's own AoR (built-in UA, ``ctl inbox``), else the location table's binding of another
  node (mesh), else 480 (binding of this node, no client) or 404 (nobody knows it).

Unanswered requests: MESSAGE after ``message_timeout_s`` and INVITE without a provisional
after ``invite_timeout_s`` get 480; a MESSAGE that gets 480/408 is handed to
store-and-forward instead (when a holder is set) and answered 202 once the hold is durable
(:meth:`SipGateway.hold_done`; a failed write is answered 500, a full holder 503).

Exactly once, end to end: a MESSAGE for a local client is delivered once per
``message_id`` whatever path brings it (direct, retransmitted, store-and-forward, a
second holder): a copy already delivered (the holder's persisted record) is answered 200
without a second delivery, a copy arriving while the first is with the client waits for
the first's answer.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, deque
from collections.abc import Sequence

from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.node.gateway.admission import FREEING_METHODS, Admission
from meshcomm.node.gateway.authgate import LocalAuth
from meshcomm.node.gateway.beyond import Beyond
from meshcomm.node.gateway.builtin import BuiltinUa
from meshcomm.node.gateway.contacts import ContactMap
from meshcomm.node.gateway.counters import (
    DIRECTION_COUNTERS,
    DROP_COUNTERS,
    GatewayCounter,
)
from meshcomm.node.gateway.edge_identity import EdgeIdentity
from meshcomm.node.gateway.identity import IdentityChecks
from meshcomm.node.gateway.parts import (
    Peer,
    PendingSipRecord,
    ProxyTx,
    drop_record,
    is_tcp,
)
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.proxy_state import ProxyTxState as TxState
from meshcomm.node.gateway.registrar import Registrar
from meshcomm.node.gateway.responses import ResponseRelay
from meshcomm.node.gateway.revoked import RevokedGate
from meshcomm.node.gateway.rfc import (
    OwnHosts,
    UndecodableAnswers,
    refusal_headers,
    unsupported_proxy_require,
)
from meshcomm.node.gateway.sdp_gate import SdpGate
from meshcomm.node.gateway.transactions import ProxyTxTable
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    DEFAULT_MAX_FORWARDS,
    MAX_SIP_MESSAGE_BYTES,
    MESH_HOST_SUFFIX,
    NODE_HEX_CHARS,
    Address,
    CallEnder,
    Direction,
    EnvelopeSlot,
    GatewayConfig,
    InboxEntry,
    LocalDatagram,
    MeshSip,
    MessageHolder,
    ResolveAor,
    SdpRewriter,
    SendResult,
    identity_sdp,
    no_end_call,
)
from meshcomm.node.mesh import MeshNode
from meshcomm.sip.build import build_cancel, build_response, new_branch
from meshcomm.sip.counters import SipDecodeReason
from meshcomm.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    parse_message_untrusted,
    replace_uri,
)
from meshcomm.sip.timers import TimerName
from meshcomm.sip.transaction import DEFAULT_SIP_PORT, server_key
from meshcomm.sip.ua_base import stamp_via

GatewayEvent = JournalRecord | PendingSipRecord | SendResult | InboxEntry
Output = LocalDatagram | MeshSip | ResolveAor
#: Dialog-creating methods get our Record-Route (§16.6 step 4).
RECORD_ROUTE_METHODS = frozenset({"INVITE", "SUBSCRIBE"})
#: Proxy state lingers this long after the final answer (absorbs retransmissions).
LINGER_S = 8.0
#: Rounds of built-in UA <-> gateway exchange per input (they settle in two or three).
MAX_BUILTIN_ROUNDS = 16
#: Lingering transactions kept beyond the pending limit (oldest dropped).
LINGER_FACTOR = 4


class SipGateway(IdentityChecks, ResponseRelay, Beyond, LocalAuth):
    """See the module docstring."""

    def __init__(self, node: MeshNode, config: GatewayConfig, *, rng: random.Random,
                 node_aor: str, now: float, holder: MessageHolder | None = None,
                 rewrite_sdp: SdpRewriter = identity_sdp,
                 end_call: CallEnder = no_end_call) -> None:
        self.node = node
        self.config = config
        self.rng = rng
        self.node_aor = node_aor.lower()
        self.holder = holder
        self.node_hex = node.node_id.hex()[:NODE_HEX_CHARS]
        self.mesh_host = self.node_hex + MESH_HOST_SUFFIX
        self.end_call = end_call
        self.counters: Counter[str] = Counter()
        self._now = now
        self._ids = itertools.count(1)
        self.registrar = Registrar(node, node_aor=self.node_aor, mesh_host=self.mesh_host,
                                   retry_after_s=config.retry_after_s, counters=self.counters)
        self.revoked = RevokedGate(node, self.counters, lambda r: self._events.append(r),
                                   self._to_tag, now)        # issue 12.4 (gateway.revoked)
        #: Fair load shedding and the store-and-forward quota (gateway.admission).
        self.admission = Admission(config.client_rate_per_s, config.client_burst,
                                   config.max_pending_transactions, self.counters, now)
        #: Proxy transactions by server key and branch, and their timers (a heap).
        self.txs = ProxyTxTable(LINGER_FACTOR * config.max_pending_transactions)
        self._out: list[Output] = []
        #: Set by the node core when it can find AoRs in other islands (a tunnel part):
        #: a client's request for an AoR the island does not know is then resolved
        #: (:class:`ResolveAor`, :meth:`resolved`) instead of answered 404.
        self.resolves_remote = False
        #: Transactions waiting for :meth:`resolved`, with the request to forward.
        self._resolving: dict[int, tuple[ProxyTx, SipRequest]] = {}
        self._events: deque[GatewayEvent] = deque()
        #: Our address for Via/Record-Route toward a client, never a wildcard (gateway.rfc).
        self.hosts = OwnHosts(config.local_host, config.local_port)
        self._undecodable = UndecodableAnswers(now)
        ResponseRelay.__init__(self)
        self.builtin = BuiltinUa(node_aor, (config.local_host, config.local_port),
                                 random.Random(rng.getrandbits(64)))
        #: The built-in UA's inbox and the outcomes of its sends (``ctl inbox`` / ``send``).
        self.inbox = self.builtin.inbox
        self.outbox = self.builtin.outbox
        #: Contact rewriting and dialog routing (far UAs that ignore Route or Contact).
        self.contacts = ContactMap(
            node_hex=self.node_hex, local_host=config.local_host.lower(),
            local_port=config.local_port, domain=self.node_aor.partition("@")[2],
            secret=rng.getrandbits(128).to_bytes(16, "big"), counters=self.counters,
            is_ours=self.hosts.is_ours)
        self.sdp_gate = SdpGate(rewrite_sdp, self.contacts, self.counters,    # media hook
                                self.hosts.toward)
        self.edge_identity = EdgeIdentity(node, config, self.counters)    # RFC 3325 edges
        self.end_call = self._ending(end_call)

    def _ending(self, media_end: CallEnder) -> CallEnder:
        """``end_call`` for the media layer that also forgets the call's dialogs."""
        def end_call(call_id: str) -> None:
            self.contacts.forget_call(call_id)
            media_end(call_id)
        return end_call

    # ============================================================ driving API
    def receive_local(self, data: bytes, src: Address, now: float) -> None:
        """A datagram (or one framed TCP message) from a local client at ``src``."""
        self._now = max(self._now, now)
        self._input(data, src, now, 0)
        self._pump_builtin(now)

    def receive_mesh(self, origin: bytes, body: bytes, hops: int, now: float,
                     env: bytes = b"") -> None:
        """A SIP message from node ``origin``'s gateway (UnicastReceived, AppKind.SIP);
        ``env``: the id of the envelope that carried it (journaled with the message)."""
        self._now = max(self._now, now)
        self.registrar.learn_node(origin)
        self._input(body, origin, now, hops, env)
        self._pump_builtin(now)

    def to_send(self, now: float) -> list[Output]:
        self._pump_builtin(now)
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """The earliest of the transactions' timers, the registrations' expiry and the
        built-in UA's timer: each kept ready (heaps, a cached value), O(1) amortised."""
        times = [t for t in (self.txs.next_timer(), self.registrar.next_expiry(),
                             self.builtin.next_timer()) if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> None:
        """Fire what is due: only the due transactions are visited (oldest first)."""
        self._now = max(self._now, now)
        for tx in self.txs.due(now):
            if not self.txs.holds(tx):
                continue
            if tx.retransmit_at is not None and tx.retransmit_at <= now:
                self._retransmit(tx, now)
            if tx.deadline is not None and tx.deadline <= now:
                tx.deadline = None
                self._expired(tx, now)
            tx.rearm()                  # a timer not due (or not fired) goes back
        self.registrar.expire(now)
        self.builtin.on_timer(now)
        self._pump_builtin(now)

    def next_event(self) -> GatewayEvent | None:
        """The next event. SIP messages' journal records come as :class:`PendingSipRecord`
        (built when delivered, after the node's datagrams went out)."""
        return self._events.popleft() if self._events else None

    # ============================================================ commands
    def send_message(self, to_aor: str, text: str, now: float) -> int:
        """Send a MESSAGE from the node's AoR (built-in UA); returns the send id whose
        :class:`SendResult` follows as an event and in :attr:`outbox`."""
        send_id = self.builtin.send_message(to_aor, text)
        self._pump_builtin(now)
        return send_id

    def send_id_of(self, msg_id: bytes) -> int | None:
        """The ``send_message`` id of the held MESSAGE ``msg_id`` (None: not ours, or sent
        before a restart or too long ago)."""
        return self.builtin.send_id_of(msg_id)

    def deliver_stored(self, msg_id: bytes, sip: bytes, now: float) -> None:
        """Deliver a held MESSAGE (store-and-forward ``SfDeliver``) to the local client
        registered for its To AoR, or the inbox; the holder hears ``local_delivery_done``."""
        try:
            request = parse_message_untrusted(sip)
        except DecodeError:
            request = None
        target = (self.registrar.local_target(request, self._now)
                  if isinstance(request, SipRequest) else None)
        if not isinstance(request, SipRequest) or target is None:
            self.counters[GatewayCounter.STORED_UNDELIVERABLE] += 1
            if self.holder is not None:
                self.holder.local_delivery_done(msg_id, False, now)
            return
        tx = self._new_tx(request, None, 0)
        tx.msg_id = msg_id
        self._deliver_local(tx, replace_uri(request, target[1]), target[0], msg_id, now)
        self._pump_builtin(now)

    def status(self) -> dict[str, object]:
        """Counters and queue sizes for ``ctl status``."""
        return {"pending_transactions": self.txs.pending(), "transactions": len(self.txs),
                "delivering": len(self._delivering), "holding": len(self._holding),
                "dialogs": self.contacts.dialog_count, "contact_tokens": len(self.contacts),
                "local_registrations": sorted(self.registrar), "inbox": len(self.inbox),
                "outbox_pending": self.builtin.outbox_pending(),
                "counters": dict(sorted(self.counters.items()))}

    # ============================================================ input
    def _input(self, data: bytes, src: Peer, now: float, hops: int, env: bytes = b"") -> None:
        if len(data) > MAX_SIP_MESSAGE_BYTES:
            self._drop(SipDecodeReason.OVERSIZE, src, len(data), hops)
            self._answer_undecodable(data, None, src, now)          # 513
            return
        if not data.strip(b"\r\n"):
            self.counters[GatewayCounter.KEEPALIVES] += 1          # RFC 5626 CRLF keep-alive
            return
        try:
            message = parse_message_untrusted(data)
        except DecodeError as exc:
            self._drop(SipDecodeReason.of(exc.reason), src, len(data), hops)
            self._answer_undecodable(data, exc, src, now)
            return
        try:
            if isinstance(message, SipResponse):
                self._on_response(message, src, now, hops, env)
            else:
                self._on_request(message, src, now, hops, env)
        except DecodeError as exc:                  # a header read on use was malformed
            self._drop(SipDecodeReason.of(exc.reason), src, len(data), hops)
            if isinstance(message, SipRequest):
                self._answer_undecodable(data, exc, src, now)

    def _answer_undecodable(self, data: bytes, exc: DecodeError | None, src: Peer,
                            now: float) -> None:
        """A local client's refused request gets the answer RFC 4475 suggests (gateway.rfc)."""
        if not isinstance(src, tuple) or src == BUILTIN_ADDR:
            return
        answer = self._undecodable.answer(data, exc, self._to_tag_any(), now)
        if answer is not None:
            self.counters[GatewayCounter.ANSWERED_UNDECODABLE] += 1
            self._send(src, answer)

    def _drop(self, reason: SipDecodeReason, src: Peer, size: int, hops: int) -> None:
        self.counters[DROP_COUNTERS[reason]] += 1
        self._events.append(drop_record(reason.value, src, size, hops))

    def _journal(self, direction: Direction, message: SipRequest | SipResponse, peer: Peer,
                 hops: int = 0, note: str = "", env: bytes = b"") -> EnvelopeSlot | None:
        """Journal ``message``; a to-mesh record waits for its envelope id in the slot
        returned (the send's :class:`MeshSip` carries it)."""
        self.counters[DIRECTION_COUNTERS[direction]] += 1
        slot = EnvelopeSlot() if direction is Direction.TO_MESH else None
        self._events.append(PendingSipRecord(direction, message, peer, hops,
                                             self.config.keep_sip_bodies, note, env or None,
                                             slot))
        return slot

    # ============================================================ requests
    def _on_request(self, request: SipRequest, src: Peer, now: float, hops: int,
                    env: bytes = b"") -> None:
        from_client = isinstance(src, tuple)
        received = request                          # journaled as it came (Via unstamped)
        if isinstance(src, tuple):
            request = stamp_via(request, src)
            if self._shed(request, src, now):
                return
        self._journal(Direction.FROM_CLIENT if from_client else Direction.FROM_MESH,
                      received, src, hops, env=env)
        if request.method == "ACK":
            self._on_ack(request, src)
            return
        if src == BUILTIN_ADDR and request.method == "MESSAGE" and request.to_addr.tag is None:
            self.builtin.note_request(request)        # ctl send <-> ctl outbox
        existing = self.txs.get(server_key(request))
        if existing is not None:                    # a retransmission (§17.2.3)
            self.counters[GatewayCounter.RETRANSMISSIONS_ABSORBED] += 1
            if existing.last_response is not None:
                self._resend(existing, existing.last_response)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, src, now)
            return
        status = self._admission(request, src, now)
        if status is not None:
            self._reply_stateless(request, src, status,
                                  self._retry_after(status) + refusal_headers(request, status))
            return
        tx = self._new_tx(request, src, hops)
        if (refused := self.revoked.refusal(tx, now)) is not None:     # this node revoked
            self._finish(tx, refused, now, TxIn.SEND_FINAL)
            return
        if self._unauthenticated(tx, now):           # digest auth (gateway.authgate)
            return
        if request.method == "REGISTER":
            self._on_register(tx, now)
            return
        if not self._identity_refused(tx, now):          # issue 12.1 (gateway.identity)
            self._route(tx, now)

    def _admission(self, request: SipRequest, src: Peer, now: float) -> int | None:
        """§16.3 checks and overload protection; the status to refuse with, or None."""
        if request.defects:
            return 400
        if not request.uri.is_sip or (request.method == "REGISTER"
                                      and not request.to_addr.uri.is_sip):
            return 416                                  # RFC 4475 3.3.2-3.3.4
        if request.max_forwards is not None and request.max_forwards <= 0:
            return 483
        if request.method != "CANCEL" and unsupported_proxy_require(request):
            return 420                                  # §16.3 item 4
        if (isinstance(src, bytes) and request.method not in FREEING_METHODS
                and self.admission.mesh_full()):
            self.counters[GatewayCounter.OVERLOADED] += 1      # local clients were shed in _shed
            return 503
        return None

    def _shed(self, request: SipRequest, src: Address, now: float) -> bool:
        """Fair load shedding before anything else is spent on a client's request
        (:mod:`meshcomm.node.gateway.admission`): 503 + Retry-After, journaled sparingly.
        Retransmissions of an admitted request and BYE/CANCEL/ACK always pass."""
        if request.method in FREEING_METHODS or server_key(request) in self.txs:
            return False
        if self.admission.check(request.method, src, self.registrar.is_client(src),
                                now) is None:
            return False
        response = build_response(request, 503, to_tag=self._to_tag(request),
                                  extra_headers=self._retry_after(503))
        if self.admission.may_journal_shed(now):
            self._journal(Direction.ORIGINATED, response, src, note="shed")
        self._send(src, response.serialize())
        return True

    def _hold_allowed(self, tx: ProxyTx, now: float) -> bool:
        """The store-and-forward quota of the MESSAGE's client (gateway.admission)."""
        src = tx.upstream
        return not isinstance(src, tuple) or self.admission.may_hold(
            src, self.registrar.is_client(src), now)

    def _route(self, tx: ProxyTx, now: float) -> None:
        request, routes = self._pop_own_route(tx.request)
        if routes and self._names_upstream(routes[0], tx.upstream):
            # §16.12: the upstream proxy's Record-Route is the next hop (an in-dialog
            # request of a call with a desk phone); its Request-URI is the far contact.
            found = self._in_dialog_target(request, tx.upstream)
            upstream = self.config.upstream
            assert upstream is not None
            self._forward(tx, found[0] if found is not None else request, upstream, now)
            return
        if routes:
            node_hex = routes[0].uri.param("mesh")
            node_id = self.registrar.node_of(node_hex) if node_hex else None
            if node_id is None or node_id == self.node.node_id:
                self._respond(tx, 403 if node_hex is None else 404, now)
                return
            self._forward(tx, self._far_uri(request, tx.upstream), node_id, now)
            return
        if request.to_addr.tag is not None:
            found = self._in_dialog_target(request, tx.upstream)
            if found is None:
                self._respond(tx, 404, now)
                return
            self._forward(tx, found[0], found[1], now)
            return
        self._route_by_aor(tx, request, now)

    def _in_dialog_target(self, request: SipRequest,
                          src: Peer) -> tuple[SipRequest, Address | bytes] | None:
        """An in-dialog request with no Route left: a contact token of ours (from the
        mesh), a rewritten far contact or a dialog (from a client), else a client contact
        seen before (see :mod:`meshcomm.node.gateway.contacts`)."""
        if isinstance(src, bytes):
            client = self.contacts.client_of(request.uri)
            if client is not None:
                return replace_uri(request, client.contact), client.peer
        elif isinstance(src, tuple):
            far = self.contacts.far_target(request, src)
            node = self.registrar.node_of(far.node_hex) if far is not None else None
            if far is not None and node is not None and node != self.node.node_id:
                return replace_uri(request, far.uri), node
        peer = self.registrar.contact_peer(request.uri)
        return None if peer is None else (request, peer)

    def _far_uri(self, request: SipRequest, src: Peer) -> SipRequest:
        """A client's Request-URI naming a far contact we rewrote goes on as that contact."""
        uri = self.contacts.far_uri(request.uri) if isinstance(src, tuple) else None
        return request if uri is None else replace_uri(request, uri)

    def _route_by_aor(self, tx: ProxyTx, request: SipRequest, now: float) -> None:
        service = self.contacts.service_target(request.uri)
        if service is not None:                   # sip:user@<this gateway> (SIPp -s user)
            request = replace_uri(request, service)
        target = self.registrar.local_target(request, self._now)
        if target is not None:
            self._deliver_local(tx, replace_uri(request, target[1]), target[0], None, now)
            return
        aor = request.uri.aor.lower()
        bindings = self.node.table.lookup(aor)
        remote = [b for b in bindings if b.binding.node_id != self.node.node_id]
        if remote and (isinstance(tx.upstream, tuple) or tx.remote_delivery):
            if self.stopping and self._hold(tx, now):
                return
            best = max(remote, key=lambda s: (s.received_at, s.binding.seq))
            self.registrar.learn_node(best.binding.node_id)
            self._forward(tx, request, best.binding.node_id, now)
            return
        if not bindings and self.resolves_remote and (isinstance(tx.upstream, tuple)
                                                      or tx.remote_delivery):
            self._resolve(tx, request, aor, now)
            return
        if not bindings and self._to_upstream(tx, request, now):
            return             # from the mesh: the asking node's DHT lookup found nothing
        self._respond(tx, 480 if bindings else 404, now)

    def _pop_own_route(self, request: SipRequest) -> tuple[SipRequest, list[NameAddr]]:
        """§16.4: remove a top Route naming us; the request and the Routes left."""
        routes = list(request.routes)
        if not routes or not self._is_ours(routes[0]):
            return request, routes
        routes.pop(0)
        if not routes:
            return request.without_header("Route"), routes
        return request.with_headers_replaced("Route", [str(r) for r in routes]), routes

    def _is_ours(self, route: NameAddr) -> bool:
        """A Route names us when it carries our node (``mesh=``) or, untagged, our own
        listening address: a client's outbound-proxy Route (RFC 3261 §16.4)."""
        mesh = route.uri.param("mesh")
        if mesh is not None:
            return mesh == self.node_hex
        return self.hosts.is_ours(route.uri.host, route.uri.port or DEFAULT_SIP_PORT)

    # ------------------------------------------------------------ forwarding
    def _forward(self, tx: ProxyTx, request: SipRequest, dest: Address | bytes,
                 now: float) -> None:
        """§16.6: copy, decrement Max-Forwards, Record-Route, push our Via, send; arm the
        no-answer timer and (toward a UDP client) request retransmission."""
        if isinstance(dest, tuple) and not self.admission.forwarding(tx.tx_id, dest,
                                                                     request.method, now):
            self._respond(tx, 503, now, self._retry_after(503))   # the client is not answering
            return
        branch = new_branch(self.rng)
        out = self.sdp_gate.check(self._prepare(request, dest, branch, tx.upstream),
                                      tx.upstream, dest)
        if isinstance(out, int):                    # the media layer refused the SDP
            self._respond(tx, out, now, self._retry_after(out))
            return
        tx.step(TxIn.FORWARD)
        tx.downstream, tx.out_request = dest, out
        tx.out_bytes = out.serialize()
        self.txs.set_branch(tx, branch)
        if request.method == "INVITE":
            # No provisional within invite_timeout_s, from the mesh or a local client
            # (whose 100/180 takes milliseconds): 480 and the call's media is released
            # (a vanished client held its ports for the ringing timeout). A provisional
            # re-arms the timer for the ringing time (Timer C).
            tx.deadline = now + self.config.invite_timeout_s
            self._reply_provisional(tx, 100)
        elif request.method == "BYE":
            self.end_call(request.call_id)       # §15.1.1: the session ends with the BYE
            tx.deadline = now + self.config.timers.timer_f_s
        elif request.method == "MESSAGE":
            tx.deadline = now + self.config.message_timeout_s
        else:
            tx.deadline = now + self.config.timers.timer_f_s
        if isinstance(dest, tuple) and dest != BUILTIN_ADDR and not is_tcp(dest):
            tx.retransmit_interval_s = self.config.timers.t1_s      # Timer A/E (§17.1)
            tx.retransmit_at = now + tx.retransmit_interval_s
        self._emit(out, dest, tx.hops)

    def _prepare(self, request: SipRequest, dest: Address | bytes, branch: str,
                 upstream: Peer) -> SipRequest:
        max_forwards = request.max_forwards
        hops_left = (DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards) - 1
        out = request.with_headers_replaced("Max-Forwards", [str(hops_left)])
        if isinstance(dest, bytes):
            via = Via("UDP", self.mesh_host, None, (("branch", branch),))
        else:
            transport = "TCP" if is_tcp(dest) else "UDP"
            via = Via(transport, self.hosts.toward(dest), self.config.local_port,
                      (("branch", branch), ("rport", None)))
        out = out.with_headers_replaced("Via", [str(via), *out.header_values("Via")])
        if request.method in RECORD_ROUTE_METHODS and request.to_addr.tag is None and not any(
                self._is_ours(rr) for rr in request.record_routes):
            near = upstream if isinstance(upstream, tuple) else dest
            rr = (f"<sip:{self.hosts.toward(near if isinstance(near, tuple) else None)}:"
                  f"{self.config.local_port};lr;mesh={self.node_hex}>")
            out = out.with_headers_replaced("Record-Route",
                                            [rr, *out.header_values("Record-Route")])
        if isinstance(upstream, tuple):
            self.registrar.learn_contacts(request.contacts, upstream)
        return self.contacts.rewrite(self._asserted(out, request, upstream, dest), upstream, dest)

    def _retry_after(self, status: int) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.config.retry_after_s))] if status == 503 else []

    def _finish_call(self, tx: ProxyTx, status: int) -> None:
        """Tell the media layer a call ended: any final answer to BYE (§15.1.1: the
        session ends when the BYE is sent), a final non-2xx to an initial INVITE."""
        if tx.method == "BYE" or (tx.method == "INVITE" and status >= 300
                                  and tx.request.to_addr.tag is None):
            self.end_call(tx.request.call_id)
        if tx.method == "BYE":
            self.contacts.forget_dialog(tx.request)

    def _retransmit(self, tx: ProxyTx, now: float) -> None:
        """Timer A/E toward a local UDP client (stopped by any answer, see ProxyTx)."""
        if tx.downstream is None:
            tx.retransmit_at = None
            return
        self.counters[GatewayCounter.RETRANSMISSIONS_SENT] += 1
        self._send(tx.downstream, tx.out_bytes)
        timer = TimerName.A if tx.method == "INVITE" else TimerName.E
        tx.retransmit_interval_s = self.config.timers.next_retransmit_interval_s(
            timer, tx.retransmit_interval_s)
        tx.retransmit_at = now + tx.retransmit_interval_s

    def _expired(self, tx: ProxyTx, now: float) -> None:
        """The state's timer fired (see ``ProxyTx.deadline``)."""
        if tx.state is TxState.COMPLETED:
            self.txs.forget(tx, TxIn.LINGER_END)
        elif tx.state is TxState.HOLDING:          # the hold was never reported durable
            self._hold_unconfirmed(tx, now)
        else:
            self._timed_out(tx, now)

    def _timed_out(self, tx: ProxyTx, now: float) -> None:
        """No final answer in time (§16.7 step 6; Timer C once ringing, §16.8): 480, or
        408 for a ringing INVITE or another request; the INVITE's branch is cancelled.
        A request still waiting for its remote target gets 480 (a MESSAGE is held)."""
        if tx.state is TxState.RESOLVING:
            self._resolving.pop(tx.tx_id, None)
            self.counters[GatewayCounter.TIMEOUTS] += 1
            self._respond(tx, 480, now)
            return
        if tx.state not in (TxState.TRYING, TxState.PROCEEDING):
            return
        self.counters[GatewayCounter.TIMEOUTS] += 1
        if tx.method == "INVITE":
            self._cancel_downstream(tx)
        status = 480 if tx.method == "MESSAGE" or (
            tx.method == "INVITE" and tx.state is TxState.TRYING) else 408
        self._respond(tx, status, now)

    def _cancel_downstream(self, tx: ProxyTx) -> None:
        if tx.out_request is not None and tx.downstream is not None:
            self._emit(build_cancel(tx.out_request), tx.downstream, tx.hops)

    # ------------------------------------------------------------ ACK and CANCEL
    def _on_ack(self, request: SipRequest, src: Peer) -> None:
        tx = self.txs.get(server_key(request))
        if tx is not None:            # ACK of a non-2xx final: hop by hop (§17.2.1)
            self.counters[GatewayCounter.ACKS_ABSORBED] += 1
            return
        request, routes = self._pop_own_route(request)
        dest: Address | bytes | None
        if routes and self._names_upstream(routes[0], src):
            found = self._in_dialog_target(request, src)     # §16.12, as in _route
            request, dest = (found[0] if found is not None else request), self.config.upstream
        elif routes:
            node_hex = routes[0].uri.param("mesh")
            dest = self.registrar.node_of(node_hex) if node_hex else None
            request = self._far_uri(request, src)
        else:
            found = self._in_dialog_target(request, src)
            request, dest = found if found is not None else (request, None)
        if dest is None or dest == self.node.node_id:
            self.counters[GatewayCounter.ACKS_UNROUTABLE] += 1
            return
        if isinstance(src, bytes) and isinstance(dest, tuple) and not self.contacts.first_ack(
                request):
            return
        out = self.sdp_gate.check(self._prepare(request, dest, new_branch(self.rng), src),
                                      src, dest)
        if isinstance(out, int):
            self.counters[GatewayCounter.ACKS_DROPPED_SDP] += 1
            return
        self._emit(out, dest, 0)

    def _on_cancel(self, request: SipRequest, src: Peer, now: float) -> None:
        """§16.10: answer the CANCEL, cancel the pending client side."""
        tx = self.txs.get(server_key(request, "INVITE"))
        if tx is None:
            self._reply_stateless(request, src, 481, [])
            return
        self._reply_stateless(request, src, 200, [])
        self.end_call(request.call_id)
        if tx.allows(TxIn.CANCEL):
            tx.step(TxIn.CANCEL)
            self._cancel_downstream(tx)
            if tx.downstream is None:
                self._respond(tx, 487, now)

    # ============================================================ REGISTER (§10.3)
    def _on_register(self, tx: ProxyTx, now: float) -> None:
        if not isinstance(tx.upstream, tuple) or tx.upstream == BUILTIN_ADDR:
            self._respond(tx, 403, now)
            return
        status, headers = self.registrar.register(tx.request, tx.upstream, now)
        self._respond(tx, status, now, headers)

    def _finish(self, tx: ProxyTx, response: SipResponse, now: float, event: TxIn) -> None:
        """The final answer (relayed or generated here) goes upstream: COMPLETED, lingering
        for LINGER_S to absorb retransmissions of the request."""
        if tx.state is TxState.HOLDING:
            self._unhold(tx)
        tx.step(event)
        tx.final_status = response.status
        self.admission.closed(tx.tx_id)
        tx.retransmit_at = None
        tx.deadline = now + LINGER_S
        self._finish_call(tx, response.status)
        if tx.upstream is None:
            ok = 200 <= response.status < 300
            if self.holder is not None and tx.msg_id is not None:
                if tx.remote_delivery:
                    self.holder.remote_delivery_done(tx.msg_id, ok, now)
                else:
                    self.holder.local_delivery_done(tx.msg_id, ok, now)
            self._delivery_finished(tx, response.status, now)
            return
        self._delivery_finished(tx, response.status, now)
        tx.last_response = response
        self._emit(response, tx.upstream, tx.hops)

    # ============================================================ answering
    def _new_tx(self, request: SipRequest, upstream: Peer, hops: int) -> ProxyTx:
        tx = ProxyTx(next(self._ids), server_key(request), request, upstream, hops=hops)
        self.txs.add(tx)
        local = upstream if isinstance(upstream, tuple) else None
        self.admission.opened(tx.tx_id, local, request.method, local is None
                              or self.registrar.note_request(local, request.method))
        self.txs.trim_lingering()
        return tx

    def _respond(self, tx: ProxyTx, status: int, now: float,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        """A final response generated here, through the proxy transaction."""
        if not tx.allows(TxIn.SEND_FINAL):
            return
        if tx.upstream is None and status < 200:
            return
        response = build_response(tx.request, status, to_tag=self._to_tag(tx.request),
                                  extra_headers=headers)
        self._journal(Direction.ORIGINATED, response, tx.upstream, tx.hops)
        if status == 480 and self._hold(tx, now):
            return
        self._finish(tx, response, now, TxIn.SEND_FINAL)

    def _reply_provisional(self, tx: ProxyTx, status: int) -> None:
        if tx.upstream is not None:
            self._emit(build_response(tx.request, status), tx.upstream, tx.hops)

    def _reply_stateless(self, request: SipRequest, src: Peer,
                         status: int, headers: list[tuple[str, str]]) -> None:
        response = build_response(request, status, to_tag=self._to_tag(request),
                                  extra_headers=headers)
        self._journal(Direction.ORIGINATED, response, src)
        if src is not None:
            self._emit(response, src, 0)

    def _to_tag(self, request: SipRequest) -> str | None:
        return None if request.to_addr.tag else self._to_tag_any()

    def _to_tag_any(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    # ============================================================ output
    def _emit(self, message: SipRequest | SipResponse, dest: Address | bytes, hops: int) -> None:
        direction = Direction.TO_MESH if isinstance(dest, bytes) else Direction.TO_CLIENT
        slot = self._journal(direction, message, dest, hops)
        self._send(dest, message.serialize(), slot)

    def _resend(self, tx: ProxyTx, response: SipResponse) -> None:
        """The final answer again, for a retransmitted request: a copy over the mesh is a
        new envelope, journaled (the far node journals its receipt); a client's is not."""
        slot = (self._journal(Direction.TO_MESH, response, tx.upstream, tx.hops,
                              note="retransmission") if isinstance(tx.upstream, bytes) else None)
        self._send(tx.upstream, response.serialize(), slot)

    def _send(self, dest: Peer, data: bytes, slot: EnvelopeSlot | None = None) -> None:
        if dest is None:
            return
        if isinstance(dest, bytes):
            self._out.append(MeshSip(dest, data, slot))
        else:
            self._out.append(LocalDatagram(data, dest))

    # ============================================================ built-in UA
    def _pump_builtin(self, now: float) -> None:
        """Exchange messages between the gateway and its built-in UA until both settle."""
        for _ in range(MAX_BUILTIN_ROUNDS):
            moved = False
            for dgram in self.builtin.to_send(now):
                moved = True
                self._input(dgram.data, BUILTIN_ADDR, now, 0)
            keep: list[Output] = []
            for item in self._out:
                if isinstance(item, LocalDatagram) and item.dest == BUILTIN_ADDR:
                    moved = True
                    self.builtin.receive(item.data,
                                         (self.config.local_host, self.config.local_port), now)
                else:
                    keep.append(item)
            self._out = keep
            self._builtin_events(now)
            if not moved:
                return

    def _builtin_events(self, now: float) -> None:
        self._events.extend(self.builtin.take_events(now))

