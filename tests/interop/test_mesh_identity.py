"""SIP identity bound to the signing key across 4 mesh hops in namespaces (issue 12 point 1).

Five namespaces in a chain, a ``meshcomm handset`` in each: baresip "alice" beside node 0,
baresip "bob" beside node 4, and a plain SIP client registered as ``ops-chief`` beside
node 2.

* A client beside node 0 sends a MESSAGE to bob ``From: <sip:ops-chief@...>`` (the AoR
  registered at node 2): node 0's gateway answers 403, counts it and journals the refusal
  (a dropped-message record with its reason); bob receives nothing.
* alice's MESSAGE to bob arrives with ``P-Asserted-Identity: <sip:alice@...>`` in bob's
  SIP trace (asserted by node 4's gateway from the verified binding), and a
  P-Asserted-Identity a client put in its request never reaches bob: a client beside
  node 0 with an unregistered From (as a stock SIPp uac) claiming the ops chief in PAI
  reaches bob without any asserted identity.

* A node built to sign a spoofed From: a real node core (MeshNode, gateway, end-to-end
  sealing) run by the runtime's driver in a device namespace beside node 2 joins the mesh
  with its own key, learns the bindings, and sends bob's node a MESSAGE ``From:
  ops-chief@`` through the core's own to-mesh path (signed with its key): node 4's
  gateway refuses it (identity_refused_mesh counted) and bob receives nothing.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshcomm.location.table import TrustPolicy
from meshcomm.node.core import compose
from meshcomm.node.gateway.types import GatewayConfig, MeshSip
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.runtime.app import JOURNAL_FILE
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from radios import open_radio
from tests.envcheck import require_program, require_root
from tests.interop.clients import DOMAIN, requests_with, wait_binding
from tools.testbed import Testbed, chain
from tools.testbed.baresip import BaresipClient
from tools.testbed.netns import in_netns
from tools.testbed.nodes import wait_until
from tools.testbed.sipclient import GATEWAY, SipUas, build, parse

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_NODES = 5
CHIEF_NODE = 2
ROGUE_NEXT_TO = 2
ROGUE_LEARN_S = 30.0
CONVERGE_S = 30.0
REGISTER_S = 10.0
ANSWER_S = 15.0
JOURNAL_S = 10.0
CHIEF = f"sip:ops-chief@{DOMAIN}"
BOB = f"sip:bob@{DOMAIN}"


@dataclass
class Bed:
    tb: Testbed
    alice: BaresipClient
    bob: BaresipClient
    device_ns: str


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_root()
    require_program("baresip", "baresip-core")
    with chain(N_NODES) as tb:
        tb.use_workdir(tmp_path_factory.mktemp("mesh-identity"))
        device_ns = tb.attach(ROGUE_NEXT_TO, "rogue")
        for i in range(N_NODES):
            tb.start_node(i, name=f"n{i}")
        alice = tb.start_baresip(0, "alice", contacts=[BOB])
        bob = tb.start_baresip(N_NODES - 1, "bob", contacts=[f"sip:alice@{DOMAIN}"])
        chief = SipUas(tb.loopback_udp(CHIEF_NODE), "ops-chief", tb.loopback_udp(CHIEF_NODE))
        assert chief.register(), tb.describe()
        ok = wait_until(lambda: alice.registered() and bob.registered(), REGISTER_S)
        assert ok is not None, "REGISTER to the node's gateway failed\n" + tb.describe()
        for node, aor in ((0, BOB), (0, CHIEF), (N_NODES - 1, f"sip:alice@{DOMAIN}"),
                          (N_NODES - 1, CHIEF)):
            assert wait_binding(tb, node, aor, CONVERGE_S) is not None, tb.describe()
        yield Bed(tb, alice, bob, device_ns)


def _message(sock: socket.socket, from_user: str, text: str,
             extra: tuple[tuple[str, str], ...] = ()) -> int | None:
    """A MESSAGE to bob from the raw client ``sock`` claiming ``from_user``: the final
    status (None: none within ANSWER_S)."""
    call_id, port = secrets.token_hex(6), sock.getsockname()[1]
    headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)}"
                       ";rport"),
               ("Max-Forwards", "70"),
               ("From", f"<sip:{from_user}@{DOMAIN}>;tag={secrets.token_hex(4)}"),
               ("To", f"<{BOB}>"), ("Call-ID", call_id), ("CSeq", "1 MESSAGE"), *extra,
               ("Content-Type", "text/plain")]
    sock.sendto(build(f"MESSAGE {BOB} SIP/2.0", headers, text), GATEWAY)
    deadline = time.monotonic() + ANSWER_S
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            reply = parse(sock.recv(65535))
        except TimeoutError:
            return None
        if reply.get("call-id") == call_id and (reply.status or 0) >= 200:
            return reply.status
    return None


def _journal_has(path: Path, needle: bytes) -> bool:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return any(needle in bytes(value) for row in conn.execute("SELECT * FROM entries")
                   for value in row if isinstance(value, bytes | bytearray))
    finally:
        conn.close()


def test_spoofed_from_is_refused_403_counted_and_journaled(bed: Bed) -> None:
    text = f"spoof-{secrets.token_hex(6)}"
    status = _message(bed.tb.loopback_udp(0), "ops-chief", text)
    print(f"\nMESSAGE from a client at node 0 claiming {CHIEF} (bound at node {CHIEF_NODE}): "
          f"{status}")
    assert status == 403, bed.tb.describe()
    node0 = bed.tb.node(0)
    counters = node0.status()["sip"]["counters"]
    assert counters.get("identity_refused_local", 0) >= 1, counters
    journal = node0.data_dir / JOURNAL_FILE
    assert wait_until(lambda: _journal_has(journal, b"from_not_held_here"), JOURNAL_S), \
        "no journaled refusal"
    time.sleep(2.0)
    assert requests_with(bed.bob, "MESSAGE", sent=False, body_has=text) == []


def test_callee_sees_the_verified_caller_and_never_a_client_supplied_pai(bed: Bed) -> None:
    text = f"genuine-{secrets.token_hex(6)}"
    bed.alice.message(BOB, text)
    got = wait_until(lambda: bool(requests_with(bed.bob, "MESSAGE", sent=False,
                                                body_has=text)), ANSWER_S)
    assert got is not None, bed.tb.describe()
    received = requests_with(bed.bob, "MESSAGE", sent=False, body_has=text)[0]
    pai = received.headers.get("p-asserted-identity")
    print(f"\nbob's trace: MESSAGE from alice 4 hops away, P-Asserted-Identity: {pai}")
    assert pai == f"<sip:alice@{DOMAIN}>", received.headers
    forged = f"forged-{secrets.token_hex(6)}"
    status = _message(bed.tb.loopback_udp(0), "sipp", forged,
                      (("P-Asserted-Identity", f"<{CHIEF}>"),))
    assert status == 200, bed.tb.describe()
    (copy, *_) = requests_with(bed.bob, "MESSAGE", sent=False, body_has=forged)
    assert "p-asserted-identity" not in copy.headers, copy.headers


def test_a_node_built_to_sign_a_spoofed_from_is_refused_at_the_destination(bed: Bed) -> None:
    asyncio.run(_rogue_node(bed))


async def _refused_at_bob(bed: Bed) -> int:
    status = await asyncio.to_thread(bed.tb.node(N_NODES - 1).status)
    return int(status["sip"]["counters"].get("identity_refused_mesh", 0))


async def _rogue_node(bed: Bed) -> None:
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()
    with in_netns(bed.device_ns):          # the radio's sockets live beside node 2
        radio = open_radio(f"udp:to{ROGUE_NEXT_TO}")
        await radio.open()
    node = MeshNode(Identity(secrets.token_bytes(32)), NodeSettings(trust=TrustPolicy()),
                    verifier=SignatureVerifier(), rng=random.Random(5), now=loop.time(),
                    wall_offset_s=offset)
    core = compose(node, gateway_config=GatewayConfig(), rng=random.Random(6),
                   node_aor=f"sip:rogue@{DOMAIN}", now=loop.time())
    driver = NodeDriver(core, [radio], None, loop, wall_offset_s=offset)
    driver.start()
    try:
        deadline = loop.time() + ROGUE_LEARN_S
        while not (node.table.lookup(BOB) and node.table.lookup(CHIEF)):
            assert loop.time() < deadline, "the rogue node never learned the bindings"
            await asyncio.sleep(0.2)
        bob_node = node.table.lookup(BOB)[0].binding.node_id
        before = await _refused_at_bob(bed)
        text = f"rogue-{secrets.token_hex(6)}"
        assert core.gateway is not None
        mesh_host = core.gateway.mesh_host
        data = build(f"MESSAGE {BOB} SIP/2.0", [
            ("Via", f"SIP/2.0/UDP {mesh_host};branch=z9hG4bK{secrets.token_hex(6)}"),
            ("Max-Forwards", "70"), ("From", f"<{CHIEF}>;tag={secrets.token_hex(4)}"),
            ("To", f"<{BOB}>"), ("Call-ID", secrets.token_hex(6)), ("CSeq", "1 MESSAGE"),
            ("Content-Type", "text/plain")], text)
        now = loop.time()
        driver.pump_.command(now, lambda: core._sip_to_mesh(MeshSip(bob_node, data, None), now))
        deadline = loop.time() + ANSWER_S
        while await _refused_at_bob(bed) <= before:
            assert loop.time() < deadline, "node 4 did not refuse the spoofed From"
            await asyncio.sleep(0.3)
        print(f"\nrogue node beside node {ROGUE_NEXT_TO} signing From {CHIEF}: refused at "
              f"node {N_NODES - 1}'s gateway")
        await asyncio.sleep(2.0)
        assert requests_with(bed.bob, "MESSAGE", sent=False, body_has=text) == []
    finally:
        driver.close()
