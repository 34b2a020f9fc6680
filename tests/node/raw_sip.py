"""Raw SIP clients beside a gateway of :mod:`tests.node.gateway_net`: a client that is an
address the test speaks for (no UA), registering with hand-written SIP and reading what
the gateway sent it (``Station.unclaimed``)."""

from __future__ import annotations

from meshcomm.node.gateway.types import Address
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from tests.node.gateway_net import DOMAIN, Net


def raw_register(net: Net, index: int, addr: Address, user: str) -> None:
    """REGISTER ``user`` at node ``index`` from ``addr`` (answered within 0.5 s)."""
    data = (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {addr[0]}:{addr[1]};branch=z9hG4bKreg{user}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r1\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: reg-{user}@x\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{addr[0]}:{addr[1]}>\r\nExpires: 600\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    net.stations[index].sip.receive_sip(data, addr, net.now)
    net.run_for(0.5)


def received(net: Net, index: int, addr: Address) -> list[SipRequest | SipResponse]:
    """What node ``index``'s gateway sent to the raw client at ``addr``, in order."""
    return [parse_message_untrusted(data) for dest, data in net.stations[index].unclaimed
            if dest == addr]


def statuses(net: Net, index: int, addr: Address) -> list[int]:
    """The statuses of the responses the raw client at ``addr`` got, in order."""
    return [m.status for m in received(net, index, addr) if isinstance(m, SipResponse)]
