"""Raw SIP clients beside a gateway of :mod:`tests.node.gateway_net`: a client that is an
address the test speaks for (no UA), registering with hand-written SIP and reading what
the gateway sent it (``Station.unclaimed``)."""

from __future__ import annotations

from meshcomm.node.gateway.types import Address
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from tests.node.gateway_net import DOMAIN, Net


def raw_request(method: str, to_user: str, src: Address, *, from_user: str, branch: str,
                call_id: str, cseq: int = 1, uri: str | None = None,
                headers: tuple[str, ...] = (), body: str = "") -> bytes:
    """A request from the raw client ``from_user`` at ``src`` to ``to_user`` (its AoR is
    the Request-URI unless ``uri`` is given); ``headers`` are extra header lines."""
    to = f"sip:{to_user}@{DOMAIN}"
    lines = [f"{method} {uri or to} SIP/2.0",
             f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{branch};rport",
             "Max-Forwards: 70", f"From: <sip:{from_user}@{DOMAIN}>;tag=t-{from_user}",
             f"To: <{to}>", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", *headers]
    if body:
        lines.append("Content-Type: text/plain")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def raw_register(net: Net, index: int, addr: Address, user: str) -> None:
    """REGISTER ``user`` at node ``index`` from ``addr`` (answered within 0.5 s)."""
    data = raw_request("REGISTER", user, addr, from_user=user, branch=f"reg{user}",
                       call_id=f"reg-{user}@x", uri=f"sip:{DOMAIN}",
                       headers=(f"Contact: <sip:{user}@{addr[0]}:{addr[1]}>", "Expires: 600"))
    net.stations[index].sip.receive_sip(data, addr, net.now)
    net.run_for(0.5)


def received(net: Net, index: int, addr: Address) -> list[SipRequest | SipResponse]:
    """What node ``index``'s gateway sent to the raw client at ``addr``, in order."""
    return [parse_message_untrusted(data) for dest, data in net.stations[index].unclaimed
            if dest == addr]


def statuses(net: Net, index: int, addr: Address) -> list[int]:
    """The statuses of the responses the raw client at ``addr`` got, in order."""
    return [m.status for m in received(net, index, addr) if isinstance(m, SipResponse)]
