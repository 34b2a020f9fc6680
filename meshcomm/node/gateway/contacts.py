"""Contact rewriting and dialog routing of a gateway, as session border controllers do
(sans-IO; a part of :class:`meshcomm.node.gateway.core.SipGateway`).

Far UAs cut corners: some ignore Record-Route (SIPp's ``-sn uas`` does not echo it), some
ignore the Contact and the route set altogether (SIPp's ``-sn uac`` sends its ACK and BYE to
``sip:service@<gateway>:5060``), and a client's Contact names an address (often loopback)
that means nothing on another node. So no in-dialog request depends on the far UA:

* **Client -> mesh.** Every Contact a local client sends toward the mesh (requests and
  1xx/2xx answers) is replaced by ``<sip:c<token>@<own nodehex>.mesh>``; the token is a
  keyed hash of (client address, contact), remembered with the client's real contact and
  address (:class:`ContactMap`, bounded, per-client quota).
* **Mesh -> client.** A Contact ``sip:c<token>@<nodehex>.mesh`` going to a local client is
  replaced by ``<sip:<nodehex>-c<token>@<gateway host>:<port>>``: it names this gateway
  and encodes the far node and its token, without state. A client that follows it (with
  or without a route set) sends its in-dialog request here; the gateway turns the
  Request-URI back into ``sip:c<token>@<nodehex>.mesh`` and sends it to that node, whose
  gateway maps the token to its client's real contact and address.
* **Dialogs.** When a 2xx to INVITE crosses between a client and the mesh, the gateway
  remembers the dialog (Call-ID, local tag, remote tag) -> (far node, far target). An
  in-dialog request from a client that names neither a route nor a contact we know (SIPp
  ``-sn uac``) goes there. Forgotten when a BYE of the dialog is answered; bounded.
* **Service address.** A Request-URI whose host is the gateway's own address (its
  listening host or its ``.mesh`` name) names the user in the incident's domain (the
  domain of the node's AoR): ``sip:service@127.0.0.1:5060`` is ``sip:service@<domain>``.
* **Registrations** (RFC 3581 / RFC 5626 style): a contact is reached at the address it
  names only when that is an IP literal equal to the source address of the REGISTER's
  flow (the client registered itself); otherwise (a host name no node resolves, another
  address, TCP) requests go to the flow's source address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.parts import Peer, is_tcp
from meshcomm.node.gateway.types import MESH_HOST_SUFFIX, NODE_HEX_CHARS, Address
from meshcomm.sip.build import build_request
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, Via
from meshcomm.sip.transaction import DEFAULT_SIP_PORT
from meshcomm.sip.ua_base import address_of
from meshcomm.sip.uri import SipUri, make_sip_uri

#: Client contacts remembered behind tokens (all clients), and per client address.
MAX_CONTACT_TOKENS: Final = 4096
MAX_TOKENS_PER_CLIENT: Final = 64
#: Dialogs remembered for clients that ignore Contact and Route (all, and per client).
MAX_DIALOGS: Final = 4096
MAX_DIALOGS_PER_CLIENT: Final = 256
#: Call-IDs of calls that ended, remembered (oldest forgotten first) so that a late 2xx
#: brings back neither a dialog nor media (at 40 calls/s: the last ~100 s).
MAX_ENDED_CALLS: Final = 4096
#: ACKs for 2xx delivered to clients, remembered to absorb duplicates (the far UA re-ACKs
#: every 2xx retransmission that reached it; on a lossy mesh these arrive after the BYE).
MAX_ACKS_SEEN: Final = 4096
#: Hex digits of a token (64 bits of a keyed BLAKE2b).
TOKEN_HEX: Final = 16
TOKEN_PREFIX: Final = "c"
_TOKEN_RE: Final = re.compile(rf"{TOKEN_PREFIX}[0-9a-f]{{{TOKEN_HEX}}}")
_LOCAL_USER_RE: Final = re.compile(
    rf"([0-9a-f]{{{NODE_HEX_CHARS}}})-({TOKEN_PREFIX}[0-9a-f]{{{TOKEN_HEX}}})")

DialogKey = tuple[str, str, str]
_M = TypeVar("_M", SipRequest, SipResponse)


@dataclass(frozen=True, slots=True)
class ClientContact:
    """A local client's real contact behind a token, and the address it is reached at."""

    contact: SipUri
    peer: Address
    owner: Address


@dataclass(frozen=True, slots=True)
class FarTarget:
    """Where a client's in-dialog request goes: a node and the Request-URI for it."""

    node_hex: str
    uri: SipUri


@dataclass(frozen=True, slots=True)
class DialogEntry:
    client: Address
    target: FarTarget


def reachable_address(contact: SipUri, source: Address) -> Address:
    """Where requests for a client that sent ``contact`` from ``source`` go (RFC 3581 /
    RFC 5626 style): the contact's own address only if it is an IP literal equal to the
    source IP of a UDP flow; else the source address (TCP: the connection)."""
    if is_tcp(source):
        return source
    named = address_of(contact)
    try:
        ip = ipaddress.ip_address(named[0])
        src_ip = ipaddress.ip_address(source[0])
    except ValueError:
        return source
    return named if ip == src_ip else source


class ContactMap:
    """Tokens for local clients' contacts and the dialogs of clients (see module doc)."""

    def __init__(self, *, node_hex: str, local_host: str, local_port: int, domain: str,
                 secret: bytes, counters: Counter[str],
                 is_ours: Callable[[str, int], bool] | None = None) -> None:
        self.node_hex = node_hex
        self.mesh_host = node_hex + MESH_HOST_SUFFIX
        self.local_host = local_host
        self.local_port = local_port
        self.domain = domain
        self._secret = secret
        self.counters = counters
        #: Further addresses of this gateway (a wildcard listener's interface addresses,
        #: gateway.rfc.OwnHosts.is_ours): an upstream registrar's requests name one.
        self.is_ours = is_ours
        self._tokens: OrderedDict[str, ClientContact] = OrderedDict()
        self._tokens_of: dict[Address, OrderedDict[str, None]] = {}
        self._dialogs: OrderedDict[DialogKey, DialogEntry] = OrderedDict()
        self._dialogs_of: dict[Address, OrderedDict[DialogKey, None]] = {}
        self._acks: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._by_call: dict[str, set[DialogKey]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._abandoned: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    # ------------------------------------------------------------ own address
    def is_own_host(self, uri: SipUri) -> bool:
        """The URI names this gateway: its ``.mesh`` name, its listening address, or an
        address it knows as its own (``is_ours``)."""
        host = uri.host.lower()
        if host == self.mesh_host:
            return True
        port = uri.port or DEFAULT_SIP_PORT
        if host == self.local_host and port == self.local_port:
            return True
        return self.is_ours is not None and self.is_ours(host.strip("[]"), port)

    def service_target(self, uri: SipUri) -> SipUri | None:
        """``sip:user@<own address>`` -> ``sip:user@<domain>`` (None: not such a URI)."""
        if not uri.is_sip or uri.user is None or not self.is_own_host(uri):
            return None
        if _TOKEN_RE.fullmatch(uri.user) or _LOCAL_USER_RE.fullmatch(uri.user):
            return None
        return make_sip_uri(uri.user, self.domain, scheme=uri.scheme)

    # ------------------------------------------------------------ contacts
    def rewrite(self, message: _M, src: Peer, dest: Peer) -> _M:
        """Rewrite the Contact of a message crossing between a client and the mesh."""
        contacts = message.get_header("Contact")
        if contacts is None or contacts.strip() == "*":
            return message
        if isinstance(src, tuple) and isinstance(dest, bytes):
            new = [self._to_mesh(c, src) for c in message.contacts]
        elif isinstance(src, bytes) and isinstance(dest, tuple):
            new = [self._to_client(c) for c in message.contacts]
        else:
            return message
        return message.with_headers_replaced("Contact", [str(c) for c in new])

    def _to_mesh(self, contact: NameAddr, client: Address) -> NameAddr:
        token = self._token_for(contact.uri, client)
        uri = make_sip_uri(token, self.mesh_host)
        self.counters[GatewayCounter.CONTACTS_REWRITTEN_TO_MESH] += 1
        return NameAddr(uri, contact.display_name, contact.params)

    def _to_client(self, contact: NameAddr) -> NameAddr:
        uri = contact.uri
        host = uri.host.lower()
        if (uri.user is None or not host.endswith(MESH_HOST_SUFFIX)
                or not _TOKEN_RE.fullmatch(uri.user)):
            return contact
        node_hex = host[: -len(MESH_HOST_SUFFIX)]
        local = make_sip_uri(f"{node_hex}-{uri.user}", self.local_host, self.local_port)
        self.counters[GatewayCounter.CONTACTS_REWRITTEN_TO_CLIENT] += 1
        return NameAddr(local, contact.display_name, contact.params)

    def _token_for(self, contact: SipUri, client: Address) -> str:
        digest = hashlib.blake2b(f"{client[0]}|{client[1]}|{contact}".encode(),
                                 key=self._secret, digest_size=TOKEN_HEX // 2).hexdigest()
        token = TOKEN_PREFIX + digest
        self._tokens[token] = ClientContact(contact, reachable_address(contact, client), client)
        self._tokens.move_to_end(token)
        mine = self._tokens_of.setdefault(client, OrderedDict())
        mine[token] = None
        mine.move_to_end(token)
        while len(mine) > MAX_TOKENS_PER_CLIENT:
            self._tokens.pop(mine.popitem(last=False)[0], None)
        while len(self._tokens) > MAX_CONTACT_TOKENS:
            old, gone = self._tokens.popitem(last=False)
            owned = self._tokens_of.get(gone.owner)
            if owned is not None:
                owned.pop(old, None)
                if not owned:
                    del self._tokens_of[gone.owner]
        return token

    # ------------------------------------------------------------ in-dialog routing
    def client_of(self, uri: SipUri) -> ClientContact | None:
        """A Request-URI ``sip:c<token>@<own nodehex>.mesh``: the client behind it."""
        if uri.user is None or uri.host.lower() != self.mesh_host:
            return None
        found = self._tokens.get(uri.user)
        if found is None and _TOKEN_RE.fullmatch(uri.user):
            self.counters[GatewayCounter.CONTACT_TOKENS_UNKNOWN] += 1
        return found

    def far_uri(self, uri: SipUri) -> SipUri | None:
        """``sip:<nodehex>-c<token>@<this gateway>`` (a far contact we rewrote for a
        client) -> ``sip:c<token>@<nodehex>.mesh``; None for any other URI."""
        found = self._far(uri)
        return None if found is None else found.uri

    def _far(self, uri: SipUri) -> FarTarget | None:
        if uri.user is None or not self.is_own_host(uri):
            return None
        m = _LOCAL_USER_RE.fullmatch(uri.user)
        if m is None:
            return None
        return FarTarget(m.group(1), make_sip_uri(m.group(2), m.group(1) + MESH_HOST_SUFFIX))

    def far_target(self, request: SipRequest, src: Address) -> FarTarget | None:
        """Where a client's in-dialog request goes when the client named no route or
        contact we know: the node encoded in a rewritten contact, else the dialog."""
        found = self._far(request.uri)
        if found is not None:
            return found
        to_tag, from_tag = request.to_addr.tag, request.from_addr.tag
        if to_tag is None or from_tag is None:
            return None
        entry = self._dialogs.get((request.call_id, from_tag, to_tag))
        if entry is None or entry.client[0] != src[0]:
            return None
        self._dialogs.move_to_end((request.call_id, from_tag, to_tag))
        self.counters[GatewayCounter.DIALOG_ROUTED] += 1
        return entry.target

    def note_answer(self, request: SipRequest, response: SipResponse, src: Peer,
                    upstream: Peer) -> None:
        """A 2xx to INVITE passing between a client and the mesh: remember the dialog
        (for the client: its local tag, the far tag, the far node and its contact)."""
        if not (200 <= response.status < 300 and response.cseq.method == "INVITE"):
            return
        if response.call_id in self._ended:
            self.counters[GatewayCounter.DIALOGS_AFTER_END_IGNORED] += 1
            return
        to_tag, from_tag = response.to_addr.tag, response.from_addr.tag
        if to_tag is None or from_tag is None:
            return
        far: SipRequest | SipResponse
        if isinstance(src, bytes) and isinstance(upstream, tuple):     # we called out
            key, client, far = (response.call_id, from_tag, to_tag), upstream, response
        elif isinstance(src, tuple) and isinstance(upstream, bytes):   # we were called
            key, client, far = (response.call_id, to_tag, from_tag), src, request
        else:
            return
        target = self._mesh_target(far)
        if target is not None:
            self._remember(key, DialogEntry(client, target))

    def _mesh_target(self, message: SipRequest | SipResponse) -> FarTarget | None:
        try:
            contacts = message.contacts
        except DecodeError:
            return None
        for contact in contacts:
            host = contact.uri.host.lower()
            if host.endswith(MESH_HOST_SUFFIX):
                return FarTarget(host[: -len(MESH_HOST_SUFFIX)], contact.uri)
        return None

    def _remember(self, key: DialogKey, entry: DialogEntry) -> None:
        self._drop(key)
        self._dialogs[key] = entry
        self._dialogs_of.setdefault(entry.client, OrderedDict())[key] = None
        self._by_call.setdefault(key[0], set()).add(key)
        mine = self._dialogs_of[entry.client]
        while len(mine) > MAX_DIALOGS_PER_CLIENT:
            self._drop(next(iter(mine)))
            self.counters[GatewayCounter.DIALOGS_EVICTED] += 1
        while len(self._dialogs) > MAX_DIALOGS:
            self._drop(next(iter(self._dialogs)))
            self.counters[GatewayCounter.DIALOGS_EVICTED] += 1

    def _drop(self, key: DialogKey) -> None:
        entry = self._dialogs.pop(key, None)
        if entry is None:
            return
        owned = self._dialogs_of.get(entry.client)
        if owned is not None:
            owned.pop(key, None)
            if not owned:
                del self._dialogs_of[entry.client]
        same_call = self._by_call.get(key[0])
        if same_call is not None:
            same_call.discard(key)
            if not same_call:
                del self._by_call[key[0]]

    def has_dialog(self, response: SipResponse) -> bool:
        """A 2xx from the mesh belongs to a dialog a client of ours has (we called out)."""
        key = (response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")
        return key in self._dialogs

    def forget_call(self, call_id: str) -> None:
        """The call ended (BYE sent or answered, CANCEL, the media layer reclaimed it):
        forget its dialogs (retransmitted BYEs are absorbed by the proxy transaction), and
        remember that it ended, so a late 2xx (a callee answering a CANCELled call, a 2xx
        retransmission) records no dialog and sets up no media again."""
        for key in list(self._by_call.get(call_id, ())):
            self._drop(key)
        self._ended.pop(call_id, None)
        self._ended[call_id] = None
        while len(self._ended) > MAX_ENDED_CALLS:
            del self._ended[next(iter(self._ended))]

    def call_ended(self, call_id: str) -> bool:
        """The call ``call_id`` ended here recently (see :meth:`forget_call`)."""
        return call_id in self._ended

    def first_ack(self, request: SipRequest) -> bool:
        """False for a copy of an ACK (same Call-ID, From tag and CSeq) already delivered
        to a client: ACK is idempotent, and strict UAs (SIPp) fail a call on a late copy."""
        key = (request.call_id, request.from_addr.tag or "", request.cseq.number)
        if key in self._acks:
            self.counters[GatewayCounter.ACKS_DUPLICATE_ABSORBED] += 1
            return False
        self._acks[key] = None
        while len(self._acks) > MAX_ACKS_SEEN:
            self._acks.popitem(last=False)
        return True

    def abandon_requests(self, response: SipResponse,
                         branches: tuple[str, str]) -> list[SipRequest]:
        """ACK and BYE that end the far side of a call whose 2xx (from the mesh) we could
        not relay (its SDP was refused here): sent to the far contact token, whose gateway
        delivers them, so the callee and its gateway release the call at once instead of
        retransmitting the 2xx and holding media (RFC 3261 §13.3.1.4 / a B2BUA's teardown).
        Empty when the 2xx names no mesh contact."""
        target = self._mesh_target(response)
        key = (response.call_id, response.to_addr.tag or "")
        if target is None or key in self._abandoned:      # once per far dialog
            return []
        self._abandoned[key] = None
        while len(self._abandoned) > MAX_ACKS_SEEN:
            self._abandoned.popitem(last=False)
        number = response.cseq.number
        out = []
        for method, cseq, branch in (("ACK", number, branches[0]),
                                     ("BYE", number + 1, branches[1])):
            via = Via("UDP", self.mesh_host, None, (("branch", branch),))
            out.append(build_request(method, target.uri, from_addr=response.from_addr,
                                     to_addr=response.to_addr, call_id=response.call_id,
                                     cseq=cseq, via=via))
        self.counters[GatewayCounter.CALLS_ABANDONED_FAR] += 1
        return out

    def forget_dialog(self, request: SipRequest) -> None:
        """A BYE of the dialog was answered: forget it (either side may have sent it)."""
        from_tag, to_tag = request.from_addr.tag, request.to_addr.tag
        if from_tag is None or to_tag is None:
            return
        for key in ((request.call_id, from_tag, to_tag), (request.call_id, to_tag, from_tag)):
            self._drop(key)
