"""The SIP gateway's TCP side (architecture rule 3): every connection is a task of the
node's TaskGroup; limits (connections, idle time, message size) hold; cancelling the
accept loop -- and stopping a node -- closes every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from meshcomm.config import NodeConfig, config_with_overrides
from meshcomm.node.gateway.types import MAX_SIP_MESSAGE_BYTES, Address
from meshcomm.runtime.app import NodeOptions, run_node
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.runtime.sipgw import SipSockets
from tests.runtime.helpers import chain_medium, wait_until

OPTIONS = (b"OPTIONS sip:x@incident.local SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKa"
           b"\r\nContent-Length: 0\r\n\r\n")


async def _eof(reader: asyncio.StreamReader) -> bytes:
    """What is left on a stream until the far end closes it (timeout: it did not)."""
    async with asyncio.timeout(5):
        return await reader.read()


async def _connect(sockets: SipSockets) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(sockets.host, sockets.tcp_port)


def test_cancelling_serve_closes_every_connection_and_ends_the_group() -> None:
    received: list[tuple[bytes, Address]] = []

    async def scenario() -> None:
        sockets = SipSockets("127.0.0.1", 0, 0, lambda d, a: received.append((d, a)),
                             max_tcp_connections=4)
        await sockets.open()
        try:
            async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
                serve = tg.create_task(sockets.serve(tg))
                clients = [await _connect(sockets) for _ in range(3)]
                clients[0][1].write(OPTIONS)
                await wait_until(lambda: sockets.tcp_connections == 3 and len(received) == 1,
                                 "three connections, one message")
                in_group = {t for t in asyncio.all_tasks() if t is not serve
                            and t is not asyncio.current_task()}
                assert len(in_group) == 3          # the handlers: created by serve in tg
                serve.cancel()
            # The group ended: no connection task is left, and every client sees EOF.
            assert all(t.done() for t in in_group)
            assert sockets.tcp_connections == 0
            for reader, writer in clients:
                assert await _eof(reader) == b""
                writer.close()
            assert received[0][0] == OPTIONS and received[0][1][0].startswith("tcp#")
        finally:
            sockets.close()

    asyncio.run(scenario())


def test_tcp_limits_connections_idle_time_and_message_size() -> None:
    async def scenario() -> None:
        sockets = SipSockets("127.0.0.1", 0, 0, lambda d, a: None, max_tcp_connections=2,
                             tcp_idle_timeout_s=0.3)
        await sockets.open()
        try:
            async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
                serve = tg.create_task(sockets.serve(tg))
                first = await _connect(sockets)
                second = await _connect(sockets)
                await wait_until(lambda: sockets.tcp_connections == 2, "two connections")
                third = await _connect(sockets)       # over the limit: closed at once
                assert await _eof(third[0]) == b""
                assert sockets.counters["tcp_refused"] == 1
                huge = (b"MESSAGE sip:x@y SIP/2.0\r\nContent-Length: "
                        + str(MAX_SIP_MESSAGE_BYTES).encode() + b"\r\n\r\n")
                second[1].write(huge)                 # too large: framing error, closed
                assert await _eof(second[0]) == b""
                assert sockets.counters["tcp_framing_errors"] == 1
                assert await _eof(first[0]) == b""    # silent: closed after the idle time
                assert sockets.counters["tcp_idle_closed"] == 1
                await wait_until(lambda: sockets.tcp_connections == 0, "all closed")
                serve.cancel()
            for _reader, writer in (first, second, third):
                writer.close()
        finally:
            sockets.close()

    asyncio.run(scenario())


def test_stopping_a_node_closes_its_sip_tcp_connections(tmp_path: Path) -> None:
    found: list[tuple[NodeDriver, NodeInfo]] = []
    cfg = config_with_overrides(NodeConfig(), {"node.name": "alfa", "sip.udp_port": 0,
                                               "sip.tcp_port": 0})

    def ready(driver: NodeDriver, info: NodeInfo) -> None:
        found.append((driver, info))

    async def scenario(on_ready: Callable[[NodeDriver, NodeInfo], None]) -> None:
        with chain_medium(["a"]) as medium:
            options = NodeOptions(config=cfg, data_dir=tmp_path, hostname="t", seed=3,
                                  radio_specs=(f"mem:{medium.name}/a",),
                                  shutdown_grace_s=0.1, register_delay_s=0.1)
            async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
                node = tg.create_task(run_node(options, on_ready))
                await wait_until(lambda: bool(found), "node up")
                sockets = found[0][0].sip_sockets
                assert sockets is not None
                clients = [await _connect(sockets) for _ in range(2)]
                await wait_until(lambda: sockets.tcp_connections == 2,
                                 "two SIP TCP connections")
                await asyncio.to_thread(control_request, tmp_path / CONTROL_SOCKET_FILE,
                                        "stop", timeout_s=10.0)
                assert await node == 0
            for reader, writer in clients:
                assert await _eof(reader) == b""
                writer.close()
            assert sockets.tcp_connections == 0

    asyncio.run(scenario(ready))
