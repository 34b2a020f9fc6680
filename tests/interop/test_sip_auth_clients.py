"""Digest authentication with the stock clients Debian 12 ships: baresip 1.0.0 (libre 1.1)
and SIPp 3.6 (``sip-tester``), against a real node whose gateway requires authentication
(``[sip] require_auth`` on loopback: the same code as a gateway beyond loopback, no
namespaces needed). What the test pins down (docs/sip-auth.md, "Which clients need what"):

* **Default offer** (``auth_algorithms = ["SHA-256", "MD5"]``, RFC 8760 §2.4: preferred
  first, one nonce for both): libre 1.1 walks *every* challenge of the 401 and gives up on
  the first it cannot compute ("Function not implemented", ENOSYS), so the order does not
  matter to it; SIPp 3.6 reads only the topmost challenge and stops ("authentication must
  use MD5 or AKAv1-MD5"). Neither sends credentials.
* **``auth_algorithms = ["MD5"]``**: both authenticate. baresip registers (401, 200,
  ``algorithm=MD5``) and gets a MESSAGE from the node; SIPp registers over TCP and then,
  from a new TCP connection (another SIPp run), sends a MESSAGE that is challenged 407,
  answered and delivered (a reconnected TCP client is served, issue 12 item 2).

Each client and node runs on loopback ports of its own; no fixed port is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshcomm.runtime.app import run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.envcheck import require_program
from tests.interop.clients import SCENARIOS, wait_or_kill
from tests.runtime.helpers import chain_medium, ctl, node_options
from tools.testbed.baresip import MODULE_PATH, parse_trace

DOMAIN = "incident.local"
ALICE = f"sip:alice@{DOMAIN}"
START_S = 10.0
CLIENT_S = 8.0
POLL_S = 0.05
LEGACY_ALGORITHMS = ["MD5"]


@dataclass(frozen=True)
class Gateway:
    data_dir: Path
    port: int               # UDP and TCP


def with_gateway(data_dir: Path, body: Callable[[Gateway], None], **overrides: object) -> None:
    """Run ``body`` (blocking, in a worker thread) beside a real node (run_node on the main
    thread's loop, a mem radio of its own) whose gateway requires digest authentication on
    a free loopback port, with user alice; the node is stopped afterwards."""
    require_program("baresip", "baresip-core")
    require_program("sipp", "sip-tester")
    ready: list[int] = []

    def on_ready(driver: NodeDriver, _info: NodeInfo) -> None:
        assert driver.sip_sockets is not None
        ready.append(driver.sip_sockets.udp_port)

    def in_thread() -> None:
        deadline = time.monotonic() + START_S
        while not ready and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert ready, "the node did not start"
        try:
            ctl(data_dir, "user", action="add", aor=ALICE, password=PASSWORD)
            body(Gateway(data_dir, ready[0]))
        finally:
            ctl(data_dir, "stop")

    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            async with asyncio.TaskGroup() as tg:
                node = tg.create_task(run_node(node_options(
                    data_dir, f"mem:{medium.name}/a", "n0", **{
                        "sip.require_auth": True, **overrides}), on_ready))
                await asyncio.to_thread(in_thread)
                assert await node == 0

    asyncio.run(scenario())


PASSWORD = secrets.token_urlsafe(12)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Baresip:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str) -> bool:
        deadline = time.monotonic() + CLIENT_S
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return True
            time.sleep(POLL_S)
        return False


@contextlib.contextmanager
def baresip(workdir: Path, gw: Gateway) -> Iterator[Baresip]:
    """baresip 1.0 with account alice (auth_pass) registering over UDP to ``gw``."""
    conf = workdir / f"baresip-{gw.port}"
    conf.mkdir(parents=True)
    port = _free_port()
    (conf / "config").write_text("\n".join([
        "poll_method epoll", f"sip_listen 127.0.0.1:{port}", "net_interface 127.0.0.1",
        "audio_player nothing,nothing", "audio_source ausine,440",
        f"module_path {MODULE_PATH}", "module g711.so", "module ausine.so",
        "module_app account.so", "module_app menu.so"]) + "\n")
    (conf / "accounts").write_text(
        f'<{ALICE}>;auth_pass={PASSWORD};outbound="sip:127.0.0.1:{gw.port};transport=udp";'
        "regint=600\n")
    (conf / "contacts").write_text("")
    log = workdir / f"baresip-{gw.port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["baresip", "-s", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Baresip(proc, log, port)
    finally:
        proc.terminate()
        if wait_or_kill(proc, 5.0) == -1:
            pytest.fail("baresip did not stop")


def sipp(workdir: Path, gw: Gateway, scenario: str, auth_uri: str, *,
         transport: str = "u1") -> tuple[int, str, str]:
    """One SIPp run as alice: exit status, its error file, its message trace."""
    stem = workdir / f"sipp-{scenario}-{gw.port}-{secrets.token_hex(3)}"
    argv = ["sipp", f"127.0.0.1:{gw.port}", "-sf", str(SCENARIOS / f"{scenario}.xml"),
            "-s", "alice", "-ap", PASSWORD, "-auth_uri", auth_uri, "-t", transport,
            "-i", "127.0.0.1", "-p", str(_free_port()), "-m", "1", "-nostdin",
            "-timeout", f"{int(CLIENT_S)}s", "-trace_err", "-error_file", f"{stem}.errors",
            "-trace_msg", "-message_file", f"{stem}.messages"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    code = wait_or_kill(proc, CLIENT_S + 5.0)

    def read(suffix: str) -> str:
        path = Path(f"{stem}.{suffix}")
        return path.read_text(errors="replace") if path.exists() else ""

    return code, read("errors"), read("messages")


def _statuses(trace: str) -> list[int]:
    return [int(s) for s in re.findall(r"^SIP/2\.0 (\d{3}) ", trace, re.M)]


def _counters(gw: Gateway) -> dict[str, int]:
    status = ctl(gw.data_dir, "status")
    assert isinstance(status, dict)
    return dict(status["sip"]["counters"])


def test_default_offer_sha256_then_md5_stops_the_old_clients(tmp_path: Path) -> None:
    def body(gw: Gateway) -> None:
        with baresip(tmp_path, gw) as client:
            assert client.wait_for(r"Register: Function not implemented"), client.text()
            trace = parse_trace(client.text(), client.port)
        challenges = [m for m in trace if not m.sent and m.status == 401]
        assert challenges, client.text()
        sent = [m for m in trace if m.sent and m.method == "REGISTER"]
        assert sent and not any("authorization" in m.headers for m in sent)
        # Both offers, SHA-256 on top, one nonce: the order is RFC 8760's, not the cause.
        offers = re.findall(r"^WWW-Authenticate: (.*)$", client.text(), re.M)[:2]
        assert ["algorithm=SHA-256" in offers[0], "algorithm=MD5" in offers[1]] == [True, True]
        nonces = {tuple(re.findall(r'nonce="([0-9a-f]+)"', o)) for o in offers}
        assert len(nonces) == 1 and len(next(iter(nonces))) == 1, offers

        code, errors, messages = sipp(tmp_path, gw, "register_auth", DOMAIN)
        assert code != 0 and "authentication must use MD5" in errors, errors
        assert "Authorization:" not in messages
        assert _counters(gw).get("auth_accepted", 0) == 0

    with_gateway(tmp_path / "n-default", body)


def test_md5_offer_serves_baresip_and_sipp_over_udp_and_tcp(tmp_path: Path) -> None:
    def body(gw: Gateway) -> None:
        with baresip(tmp_path, gw) as client:
            assert client.wait_for(r"200 OK \(.*\) \[\d+ binding\]"), client.text()
            trace = parse_trace(client.text(), client.port)
            regs = [m for m in trace if m.method == "REGISTER"]
            assert [m.status for m in regs if not m.sent][:2] == [401, 200]
            credentials = [m.headers["authorization"] for m in regs
                           if m.sent and "authorization" in m.headers]
            # libre leaves algorithm out: MD5 (RFC 7616 §3.4).
            assert credentials and "algorithm" not in credentials[0], credentials
            result = ctl(gw.data_dir, "send", to=ALICE, text="to baresip", wait_s=CLIENT_S)
            assert isinstance(result, dict) and result["status"] == "delivered", result
            assert client.wait_for(r"to baresip")

        # SIPp over TCP: registers on one connection, sends on a new one (another run).
        code, errors, messages = sipp(tmp_path, gw, "register_auth", DOMAIN, transport="t1")
        assert code == 0 and _statuses(messages) == [401, 200], errors + messages
        code, errors, messages = sipp(tmp_path, gw, "message_auth", f"n0@{DOMAIN}",
                                      transport="t1")
        assert code == 0 and _statuses(messages) == [407, 200], errors + messages
        inbox = ctl(gw.data_dir, "inbox")
        assert isinstance(inbox, list)
        assert [(e["from"], e["text"].strip()) for e in inbox] == [
            (ALICE, "sipp on a new connection")]
        counters = _counters(gw)
        assert counters["identity_client_followed"] == 1
        assert counters.get("auth_failed", 0) == 0

    with_gateway(tmp_path / "n-md5", body, **{"sip.auth_algorithms": LEGACY_ALGORITHMS})
