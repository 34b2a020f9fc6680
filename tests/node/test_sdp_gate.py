"""The gateway's media hook hands the media layer the gateway's own address toward the
local client an SDP goes to (a relay on a wildcard writes it instead of 0.0.0.0)."""

from __future__ import annotations

from collections import Counter

from meshcomm.media.relay import SdpPath
from meshcomm.node.gateway.contacts import ContactMap
from meshcomm.node.gateway.sdp_gate import SdpGate
from meshcomm.node.gateway.types import Address
from meshcomm.sip.message import SipResponse

CLIENT: Address = ("192.168.7.20", 5062)
FAR_NODE = b"\x07" * 32
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"


def _answer() -> SipResponse:
    return SipResponse(200, "OK", [("Via", "SIP/2.0/UDP 192.168.7.20:5062;branch=z9hG4bKx"),
                                   ("From", "<sip:a@x>;tag=1"), ("To", "<sip:b@x>;tag=2"),
                                   ("Call-ID", "c1"), ("CSeq", "1 INVITE"),
                                   ("Content-Type", "application/sdp")], SDP)


def test_the_sdp_to_a_client_is_rewritten_with_the_gateway_address_toward_it() -> None:
    seen: list[tuple[SdpPath, str, str]] = []
    asked: list[Address | None] = []

    def rewrite(direction: SdpPath, call_id: str, body: bytes, client_host: str) -> bytes:
        seen.append((direction, call_id, client_host))
        return body

    def toward(peer: Address | None) -> str:
        asked.append(peer)
        return "192.168.7.1"

    contacts = ContactMap(node_hex="07" * 32, local_host="0.0.0.0", local_port=5060,
                          domain="incident.local", secret=b"s" * 16, counters=Counter())
    gate = SdpGate(rewrite, contacts, Counter(), toward)
    assert gate.check(_answer(), FAR_NODE, CLIENT) is not None
    assert seen == [(SdpPath.MESH_TO_CLIENT, "c1", "192.168.7.1")] and asked == [CLIENT]
    # toward the mesh there is no client to name
    seen.clear()
    gate.check(_answer(), CLIENT, FAR_NODE)
    assert seen == [(SdpPath.CLIENT_TO_MESH, "c1", "")]
