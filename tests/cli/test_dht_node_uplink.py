"""``meshcomm dht-node`` relays the uplink mesh (issue 10), as a real subprocess: relay A and
node B, in this process on real UplinkRadios, each know only the dht-node's transport
(its DHT port + 1); A's uplink mesh routes to B through the dht-node and A's unicast
reaches B. The dht-node keeps its uplink identity in --data-dir, refuses a malformed
--incident, and a busy transport port is one line."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

from meshcomm.overlay.config import OverlayConfig
from tests.cli.test_dht_node_cmd import STARTED_RE, _run, dht_node
from tests.runtime.helpers import wait_until
from tests.runtime.test_uplink_transport import INCIDENT, closing, member, unicast

RELAY_RE = r"uplink mesh relay sip:([0-9a-f]{16})@uplink\.invalid .* on UDP port (\d+)"
#: The dht-node announces after 1 s and anti-entropy runs every 2 s (default overlay).
ROUTE_WAIT_S = 20.0


def test_dht_node_relays_the_uplink_mesh_between_members_that_know_only_it(
        tmp_path: Path) -> None:
    data = tmp_path / "dht"
    with dht_node("--listen", "127.0.0.1:0", "--incident", INCIDENT,
                  "--data-dir", str(data)) as node:
        dht_port = int(node.wait_for(STARTED_RE.pattern).group(3))
        relay_id, transport = node.wait_for(RELAY_RE).groups()
        assert int(transport) == dht_port + 1      # the port rule (free on loopback)
        peer = f"127.0.0.1:{transport}"

        async def scenario() -> None:
            overlay = OverlayConfig()               # the dht-node's timers
            a = await member("a", [peer], 1, relay=True, overlay=overlay)
            with closing([a]) as members:
                b = await member("b", [peer], 2, relay=False, overlay=overlay,
                                 reachable=False)     # its address named nowhere
                members.append(b)

                def via_relay() -> bool:
                    hops, next_hop = a.route_to(b)
                    return hops == 2 and next_hop is not None and next_hop.startswith(relay_id)

                await wait_until(via_relay, "A's route to B through the dht-node",
                                 ROUTE_WAIT_S)
                got = await unicast(a, b, b"through the dht-node")
                assert got.origin == a.mesh.node_id and got.hops == 2
                assert a.radio.peers() == [peer] and b.radio.peers() == [peer]

        asyncio.run(scenario())
        assert node.stop(signal.SIGTERM) == 0
    with dht_node("--listen", "127.0.0.1:0", "--incident", INCIDENT,
                  "--data-dir", str(data)) as again:
        assert again.wait_for(RELAY_RE).group(1) == relay_id      # identity kept
        assert again.stop(signal.SIGINT) == 0


def test_bad_incident_and_busy_transport_port_are_one_line() -> None:
    done = _run("--listen", "127.0.0.1:0", "--incident", "no spaces allowed")
    assert done.returncode == 2 and "incident" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dht_probe:
        dht_probe.bind(("127.0.0.1", 0))
        port = dht_probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", port + 1))
        done = _run("--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"meshcomm dht-node: uplink transport on UDP port {port + 1}: Address already in use")
