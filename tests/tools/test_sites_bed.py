"""The sites test bed itself (root): addresses, the NAT box's behaviour, the uplink cut and
the teardown (tools/testbed/sites.py; the product scenarios are in
tests/integration/test_sites.py)."""

from __future__ import annotations

import socket

import pytest

from tests.envcheck import require_root
from tools.testbed import in_netns, list_namespaces
from tools.testbed.sites import WAN_DHT_HOST, Island, sites

pytestmark = [pytest.mark.root]

PORT = 9999
TIMEOUT_S = 1.0


def _udp(namespace: str, host: str) -> socket.socket:
    with in_netns(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, PORT))
    sock.settimeout(TIMEOUT_S)
    return sock


def test_nat_masquerades_blocks_unsolicited_and_the_uplink_can_be_cut() -> None:
    require_root()
    with sites([Island(2), Island(2, nat=True)]) as bed:
        prefix = bed.prefix
        open_relay, nat_relay = bed.node_index(0, 1), bed.node_index(1, 1)
        assert bed.uplinked_nodes() == [open_relay, nat_relay]
        assert bed.radio_specs(open_relay) == ["udp:to0"]  # the uplink is not a radio
        up_open, up_nat = bed.uplinks[open_relay], bed.uplinks[nat_relay]
        assert up_open.wan_address == up_open.address and up_nat.gateway is not None
        wan = _udp(bed.wan_ns, WAN_DHT_HOST)
        a = _udp(bed.ns(open_relay), up_open.address)
        b = _udp(bed.ns(nat_relay), up_nat.address)
        with wan, a, b:
            b.sendto(b"out", (WAN_DHT_HOST, PORT))
            data, seen = wan.recvfrom(64)
            assert (data, seen) == (b"out", (up_nat.wan_address, PORT))  # masqueraded
            wan.sendto(b"reply", seen)
            assert b.recvfrom(64)[0] == b"reply"  # the mapping lets replies in
            a.sendto(b"unasked", seen)  # another WAN host: no mapping for it
            with pytest.raises(TimeoutError):
                b.recvfrom(64)
            with pytest.raises(OSError):  # the private side is not routed from the WAN
                a.sendto(b"x", (up_nat.address, PORT))
            bed.set_uplink(nat_relay, False)
            with pytest.raises(OSError):
                b.sendto(b"cut", (WAN_DHT_HOST, PORT))
            bed.set_uplink(nat_relay, True)  # the default route comes back too
            b.sendto(b"back", (WAN_DHT_HOST, PORT))
            assert wan.recvfrom(64)[0] == b"back"
    assert not [n for n in list_namespaces() if n.startswith(prefix)]
