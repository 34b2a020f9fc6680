"""RFC answers of the gateway that its routing logic does not give by itself (sans-IO).

* :func:`unsupported_proxy_require`: RFC 3261 §16.3 item 4 -- a proxy refuses a request
  whose Proxy-Require names an extension it does not support with 420 Bad Extension and an
  Unsupported header listing them (§20.29). This proxy supports none.
* :class:`UndecodableAnswers`: a request the parser refused is answered from its salvaged
  headers (400, 505 for an unknown SIP version, 513 for an oversized message; RFC 4475
  §3.1.2, §3.3.1), at most :data:`UNDECODABLE_ANSWERS_PER_S` per second over all sources
  (garbage must not turn the gateway into a reflector).
* :func:`journal_safe` (defined in :mod:`.parts`, with the records): a SIP journal record
  whose strings carry bytes that are not UTF-8 (the parser keeps them with
  surrogateescape) is normalised before it reaches the journal.
* :class:`OwnHosts`: the gateway's own reachable address for Via and Record-Route. When it
  listens on a wildcard (``0.0.0.0``, ``::``) it writes the address of its interface toward
  the client (an injected ``resolve``; loopback toward a loopback client), never the
  wildcard, and recognises every address it wrote as its own.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.parts import TokenBucket
from meshcomm.node.gateway.types import Address
from meshcomm.sip.message import SipRequest
from meshcomm.sip.salvage import error_response_untrusted

#: Option tags this proxy supports in Proxy-Require (§16.3 item 4): none.
SUPPORTED_PROXY_OPTIONS: Final[frozenset[str]] = frozenset()
#: Most option tags listed back in Unsupported.
MAX_UNSUPPORTED_TAGS: Final = 16
#: Answers to undecodable requests, per second over all sources, and the burst.
UNDECODABLE_ANSWERS_PER_S: Final = 200.0
UNDECODABLE_ANSWERS_BURST: Final = 400
#: Status of a request larger than the gateway takes (RFC 3261 §21.5.11).
MESSAGE_TOO_LARGE: Final = 513
#: Listening addresses that must never be written into Via or Record-Route.
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})
#: Peers whose interface address is remembered (oldest forgotten first).
MAX_HOST_CACHE: Final = 256
#: Own addresses recognised in Route and Via (the ones written; oldest forgotten first).
MAX_OWN_HOSTS: Final = 64

#: Returns this host's source address toward a peer host (None: unknown).
Resolver = Callable[[str], "str | None"]


def unsupported_proxy_require(request: SipRequest) -> tuple[str, ...]:
    """The Proxy-Require option tags this proxy does not support, in order."""
    tags = [tag.strip() for tag in request.header_values("Proxy-Require")]
    unknown = [tag for tag in tags if tag and tag.lower() not in SUPPORTED_PROXY_OPTIONS]
    return tuple(dict.fromkeys(unknown))[:MAX_UNSUPPORTED_TAGS]


def refusal_headers(request: SipRequest, status: int) -> list[tuple[str, str]]:
    """Headers a refusal with ``status`` must carry (420: Unsupported, §20.40)."""
    if status == 420:
        return [("Unsupported", ", ".join(unsupported_proxy_require(request)))]
    return []


class UndecodableAnswers:
    """Answers to requests the parser refused, within a global rate."""

    def __init__(self, now: float) -> None:
        self._bucket = TokenBucket(float(UNDECODABLE_ANSWERS_BURST), now)
        self.unanswered_rate = 0

    def answer(self, data: bytes, error: DecodeError | None, to_tag: str,
               now: float) -> bytes | None:
        """Wire bytes of the answer (``error`` None: the message is oversized), or None:
        no answer can be formed, or the rate is spent (counted)."""
        if error is None:
            error = DecodeError("message too large", status_hint=MESSAGE_TOO_LARGE,
                                reason="oversize")
        answer = error_response_untrusted(data, error, to_tag)
        if answer is None:
            return None
        if not self._bucket.take(now, UNDECODABLE_ANSWERS_PER_S, UNDECODABLE_ANSWERS_BURST):
            self.unanswered_rate += 1
            return None
        return answer


class OwnHosts:
    """The gateway's own host for Via/Record-Route toward a client (module docstring)."""

    def __init__(self, host: str, port: int, resolve: Resolver | None = None) -> None:
        self.host = host
        self.port = port
        self.wildcard = host in WILDCARD_HOSTS
        #: Set by the runtime (a routing-table lookup); sans-IO default: none.
        self.resolve = resolve
        self._toward: OrderedDict[str, str] = OrderedDict()
        self._own: OrderedDict[str, None] = OrderedDict()

    def toward(self, peer: Address | None) -> str:
        """Our address as the client at ``peer`` reaches it, as written in a URI or Via
        (IPv6 in brackets)."""
        if not self.wildcard:
            return self.host
        peer_host = peer[0] if peer is not None else ""
        found = self._toward.get(peer_host)
        if found is None:
            found = self._lookup(peer_host)
            self._toward[peer_host] = found
            while len(self._toward) > MAX_HOST_CACHE:
                self._toward.popitem(last=False)
        self._own[found] = None
        self._own.move_to_end(found)
        while len(self._own) > MAX_OWN_HOSTS:
            self._own.popitem(last=False)
        return f"[{found}]" if ":" in found else found

    def is_ours(self, host: str, port: int | None) -> bool:
        """``host:port`` names this gateway (a Route or Via it wrote)."""
        if port != self.port:
            return False
        return host == self.host or (self.wildcard and host.strip("[]") in self._own)

    def _lookup(self, peer_host: str) -> str:
        v6 = self.host in ("::", "[::]")
        try:
            address = ipaddress.ip_address(peer_host.strip("[]"))
        except ValueError:
            address = None
        if address is not None and address.is_loopback:
            return "::1" if address.version == 6 else "127.0.0.1"
        if self.resolve is not None and address is not None:
            found = self.resolve(str(address))
            if found and found not in WILDCARD_HOSTS:
                return found
        return "::1" if v6 else "127.0.0.1"
