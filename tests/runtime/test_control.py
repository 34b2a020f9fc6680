"""The control socket: round trips, bad input, limits; the request decoder under Hypothesis."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.node.gateway.types import InboxEntry
from meshcomm.runtime.control import (
    MAX_REQUEST_BYTES,
    ControlCommand,
    ControlError,
    ControlRequest,
    ControlServer,
    NodeNotRunning,
    control_request,
    decode_request_untrusted,
)
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo, control_handlers, inbox_entry_json
from tests.runtime.helpers import chain_medium, make_driver

AOR = "sip:ctl@test.example"
WHO_KEYS = {"aor", "node_id", "hops", "next_hop", "state", "expires"}


def _info(driver: NodeDriver, data_dir: Path) -> NodeInfo:
    ident = driver.node.identity
    return NodeInfo(ident.node_id, ident.public_key, AOR, "sip:ctl@x.mesh", "handset",
                    "default", data_dir, 1)


Scenario = Callable[[NodeDriver, Path, asyncio.Event], Awaitable[None]]


def run_with_server(tmp_path: Path, scenario: Scenario) -> None:
    """Serve a real driver's control socket in a TaskGroup while ``scenario`` runs."""

    async def main() -> None:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("ctl", [f"mem:{medium.name}/a"], tmp_path)
            stop = asyncio.Event()
            path = tmp_path / "control.sock"
            server = ControlServer(path, control_handlers(driver, _info(driver, tmp_path),
                                                          stop.set))
            server.bind()
            driver.register(AOR, ("sip:ctl@x.mesh",))
            try:
                async with asyncio.TaskGroup() as tg:
                    task = tg.create_task(server.serve(tg))
                    try:
                        await scenario(driver, path, stop)
                    finally:
                        task.cancel()
            finally:
                driver.close()
            assert not path.exists()

    asyncio.run(main())


async def _raw_exchange(path: Path, payload: bytes) -> list[dict[str, object]]:
    """Send raw bytes, half-close, read every reply line until the server closes."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return [json.loads(line) for line in data.splitlines()]


def test_who_status_and_stop_round_trip(tmp_path: Path) -> None:
    async def scenario(driver: NodeDriver, path: Path, stop: asyncio.Event) -> None:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        who = await asyncio.to_thread(control_request, path, ControlCommand.WHO)
        assert len(who) == 1
        assert set(who[0]) >= WHO_KEYS
        assert who[0]["aor"] == AOR
        assert who[0]["node_id"] == driver.node.node_id.hex()
        assert who[0]["hops"] == 0 and who[0]["next_hop"] is None
        assert who[0]["state"] == "verified"
        assert 0 < who[0]["expires"] <= 300
        status = await asyncio.to_thread(control_request, path, "status")
        assert status["node_id"] == driver.node.node_id.hex()
        assert status["aor"] == AOR and status["role"] == "handset"
        assert status["bindings"] == 1
        assert status["neighbours"] == [] and status["routes"] == []
        assert status["counters"]["tx_binding"] >= 1
        assert status["journal"]["durable_seq"] >= 1
        assert driver.journal is not None
        assert status["journal"]["durable_seq"] <= driver.journal.durable_seq
        assert status["uptime_s"] >= 0
        assert not stop.is_set()
        assert await asyncio.to_thread(control_request, path, "stop") == {"stopping": True}
        assert stop.is_set()

    run_with_server(tmp_path, scenario)


def test_bad_requests_get_error_replies_and_the_server_survives(tmp_path: Path) -> None:
    async def scenario(driver: NodeDriver, path: Path, stop: asyncio.Event) -> None:
        replies = await _raw_exchange(path, b"".join([
            b"not json\n", b"[1, 2]\n", b'{"cmd": 5}\n', b'{"cmd": "reboot"}\n',
            b"\xff\xfe\n", b"\n", b'{"cmd": "who"}\n', b'{"nested": ' * 50 + b"\n",
            b'{"cmd": "who"}',  # last line without newline: still answered
        ]))
        assert [r["ok"] for r in replies] == [False, False, False, False, False, True,
                                              False, True]
        assert "unknown command 'reboot'" in str(replies[3]["error"])
        assert replies[5]["result"][0]["aor"] == AOR  # type: ignore[index]
        with pytest.raises(ControlError, match="unknown command"):
            await asyncio.to_thread(control_request, path, "reboot")
        assert not stop.is_set()

    run_with_server(tmp_path, scenario)


def test_overlong_line_is_refused_and_connection_closed(tmp_path: Path) -> None:
    async def scenario(driver: NodeDriver, path: Path, stop: asyncio.Event) -> None:
        replies = await _raw_exchange(path, b"x" * (MAX_REQUEST_BYTES * 3) + b'\n{"cmd":"who"}\n')
        assert replies == [{"ok": False, "error": "request line too long"}]
        who = await asyncio.to_thread(control_request, path, "who")
        assert len(who) == 1

    run_with_server(tmp_path, scenario)


def test_many_requests_on_one_connection_and_parallel_clients(tmp_path: Path) -> None:
    async def scenario(driver: NodeDriver, path: Path, stop: asyncio.Event) -> None:
        replies = await _raw_exchange(path, b'{"cmd":"who"}\n' * 20)
        assert len(replies) == 20 and all(r["ok"] for r in replies)
        results = await asyncio.gather(*(asyncio.to_thread(control_request, path, "status")
                                         for _ in range(8)))
        assert {r["node_id"] for r in results} == {driver.node.node_id.hex()}

    run_with_server(tmp_path, scenario)


def test_client_reports_a_node_that_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match="no node is running"):
        control_request(tmp_path / "control.sock", "who")
    # a stale socket file left by a killed node
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "control.sock"))
    sock.close()
    with pytest.raises(NodeNotRunning, match="stale"):
        control_request(tmp_path / "control.sock", "who")


def test_server_rebinds_over_a_stale_socket(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "control.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    server = ControlServer(path, {ControlCommand.WHO: lambda _r: []})
    server.bind()
    try:
        assert path.exists()
    finally:
        server.close()
    assert not path.exists()


def test_too_long_socket_path_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ControlError, match="shorter --data-dir"):
        ControlServer(deep, {}).bind()


def test_handler_failure_is_an_error_reply_not_a_crash(tmp_path: Path) -> None:
    def broken(_request: object) -> object:
        raise RuntimeError("boom")

    server = ControlServer(tmp_path / "c.sock", {ControlCommand.WHO: broken,
                                                 ControlCommand.STATUS: lambda _r: float("nan")})
    assert server.handle_line(b'{"cmd":"who"}') == {"ok": False,
                                                    "error": "internal error in 'who'"}
    assert server.handle_line(b'{"cmd":"status"}')["ok"] is False
    reply = server.handle_line(b'{"cmd":"stop"}')
    assert reply == {"ok": False, "error": "command 'stop' not available"}
    assert server.counters["errors"] == 2


@given(st.binary(max_size=MAX_REQUEST_BYTES + 10))
def test_decode_request_any_bytes_gives_request_or_decode_error(data: bytes) -> None:
    try:
        request = decode_request_untrusted(data)
    except DecodeError:
        return
    assert isinstance(request.command, ControlCommand)


@given(st.sampled_from(list(ControlCommand)),
       st.dictionaries(st.text(max_size=8).filter(lambda k: k != "cmd"),
                       st.integers() | st.text(max_size=8), max_size=4))
def test_decode_request_round_trip(command: ControlCommand, args: dict[str, object]) -> None:
    line = json.dumps({"cmd": command.value, **args}).encode()
    request = decode_request_untrusted(line)
    assert request.command is command
    assert dict(request.args) == args


def test_a_waiting_request_is_handled_when_accepted_without_a_task(tmp_path: Path) -> None:
    """A request already there when the connection is accepted (``meshcomm ctl`` writes
    it right after connecting) runs in the accepting callback, before the loop turns (a
    ``send`` has its MESSAGE on the radio at once); its awaitable result and the next
    requests on the connection are still served, and the reply order holds."""
    ran_in: list[asyncio.Task[object] | None] = []

    async def later(value: str) -> str:
        await asyncio.sleep(0)
        return value

    def handler(request: ControlRequest) -> object:
        ran_in.append(asyncio.current_task())
        return later(str(request.args.get("n")))

    async def scenario() -> None:
        server = ControlServer(tmp_path / "c.sock", {ControlCommand.WHO: handler})
        server.bind()
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve(tg))
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(os.fsencode(server.path))    # the backlog takes it: no loop turn
            client.sendall(b'{"cmd":"who","n":1}\n{"cmd":"who","n":2}\n')
            client.shutdown(socket.SHUT_WR)
            client.setblocking(False)
            data = b""
            while chunk := await asyncio.get_running_loop().sock_recv(client, 4096):
                data += chunk
            client.close()
            replies = [json.loads(line) for line in data.splitlines()]
            serving.cancel()
        assert replies == [{"ok": True, "result": "1"}, {"ok": True, "result": "2"}]
        assert ran_in[0] is None                      # the accepting callback, no task
        assert ran_in[1] is not None                  # the connection's task
        assert server.counters["requests"] == 2

    asyncio.run(scenario())


def test_inbox_times_keep_microseconds() -> None:
    """``received_at`` is a wall-clock time to the microsecond: a message crosses four hops
    in a few milliseconds, and the benchmarks take its latency from this field."""
    async def run() -> float:
        with chain_medium(["a"]) as medium:
            driver = await make_driver("inbox-time", [f"mem:{medium.name}/a"])
            try:
                at = driver.now() + 0.0012345678
                entry = InboxEntry(1, "sip:a@x", "sip:b@x", "text/plain", b"hi", at)
                got = inbox_entry_json(entry, driver)["received_at"]
                assert isinstance(got, float)
                return got - driver.wall_time(at)
            finally:
                driver.close()

    assert abs(asyncio.run(run())) <= 5e-7
