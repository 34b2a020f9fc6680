"""The SIP gateway in real nodes (run_node on a mem medium): ctl send / inbox across the
mesh, a stock UA over UDP and a raw client over TCP (RFC 3261 §18.3 framing)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from meshcomm.runtime.app import run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.runtime.sipgw import content_length_untrusted
from meshcomm.sip.message import SipResponse, parse_message_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import RequestSucceeded, UaConfig
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until


async def _register_udp(driver: NodeDriver, user: str) -> UserAgent:
    """A stock UA on a real UDP socket (port 0) registers to the node's gateway."""
    loop = asyncio.get_running_loop()
    sockets = driver.sip_sockets
    assert sockets is not None
    gw = (sockets.host, sockets.udp_port)
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            queue.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    ua = UserAgent(UaConfig(aor=f"sip:{user}@incident.local", local_host="127.0.0.1",
                            local_port=port, outbound_proxy=gw), random.Random(5))
    ua.register(expires_s=300)
    for _ in range(100):
        for out in ua.to_send(loop.time()):
            transport.sendto(out.data, out.dest)
        event = ua.next_event()
        if isinstance(event, RequestSucceeded):
            transport.close()
            return ua
        try:
            async with asyncio.timeout(0.1):
                ua.receive(await queue.get(), gw, loop.time())
        except TimeoutError:
            ua.on_timer(loop.time())
    raise AssertionError("REGISTER over UDP got no 200")


async def _tcp_register(driver: NodeDriver) -> SipResponse:
    sockets = driver.sip_sockets
    assert sockets is not None
    reader, writer = await asyncio.open_connection(sockets.host, sockets.tcp_port)
    request = (b"REGISTER sip:incident.local SIP/2.0\r\n"
               b"Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bKtcp1\r\nMax-Forwards: 70\r\n"
               b"From: <sip:tcpuser@incident.local>;tag=t1\r\n"
               b"To: <sip:tcpuser@incident.local>\r\nCall-ID: tcp-1@x\r\nCSeq: 1 REGISTER\r\n"
               b"Contact: <sip:tcpuser@127.0.0.1:40000;transport=tcp>\r\nExpires: 60\r\n"
               b"Content-Length: 0\r\n\r\n")
    writer.write(b"\r\n\r\n" + request[:40])    # keep-alive, then a message in two pieces
    await writer.drain()
    writer.write(request[40:])
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(content_length_untrusted(head))
    writer.close()
    response = parse_message_untrusted(head + body)
    assert isinstance(response, SipResponse)
    return response


def test_ctl_send_inbox_udp_and_tcp_clients_across_two_nodes(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    drivers: dict[str, tuple[NodeDriver, NodeInfo]] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            drivers[key] = (driver, info)
        return cb

    async def scenario() -> None:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                ta = tg.create_task(run_node(node_options(dirs[0], f"mem:{medium.name}/a", "alfa"),
                                             ready("a")))
                tb = tg.create_task(run_node(node_options(dirs[1], f"mem:{medium.name}/b", "bravo"),
                                             ready("b")))
                await wait_until(lambda: len(drivers) == 2, "both nodes up")
                da, db = drivers["a"][0], drivers["b"][0]
                await wait_until(lambda: bool(da.node.table.lookup("sip:bravo@incident.local")),
                                 "b's binding at a")
                result = await asyncio.to_thread(ctl, dirs[0], "send",
                                                 to="sip:bravo@incident.local", text="hello b",
                                                 wait_s=10.0)
                assert isinstance(result, dict) and result["status"] == "delivered"
                inbox = await asyncio.to_thread(ctl, dirs[1], "inbox")
                assert isinstance(inbox, list)
                assert [(e["from"], e["text"]) for e in inbox] == [
                    ("sip:alfa@incident.local", "hello b")]
                missing = await asyncio.to_thread(ctl, dirs[0], "send",
                                                  to="sip:nobody@incident.local", text="x",
                                                  wait_s=10.0)
                assert isinstance(missing, dict) and missing["code"] == 404
                await _register_udp(db, "carol")
                await wait_until(lambda: bool(da.node.table.lookup("sip:carol@incident.local")),
                                 "carol's binding at a")
                response = await _tcp_register(da)
                assert response.status == 200 and response.get_header("Expires") == "60"
                status = await asyncio.to_thread(ctl, dirs[0], "status")
                assert isinstance(status, dict)
                sip = status["sip"]
                assert sip["local_registrations"] == ["sip:tcpuser@incident.local"]
                assert sip["sockets"]["tcp_rx"] == 1
                assert sip["counters"]["sip_to-mesh"] >= 1
                for d in dirs:
                    await asyncio.to_thread(ctl, d, "stop")
                assert (await ta, await tb) == (0, 0)

    asyncio.run(scenario())
