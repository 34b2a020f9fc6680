"""A TCP SIP client that reconnects (issue 12 item 2): real nodes (run_node on a mem medium)
and real TCP connections to their gateways.

With digest authentication on, alice registers on one connection, that connection closes
(the gateway's idle timeout does that to every quiet TCP client), and her next MESSAGE
comes on a new connection: authenticated as her AoR it is served (it got 403 before: her
registration stayed bound to the dead connection), and requests for her follow her to the
new connection. A different client that connects gets nothing of hers: unauthenticated it
is challenged, with bob's credentials it fails, and alice's calls stay with alice.

Without authentication (the loopback default) the TCP connection is the client's only
proof: a reconnected client is refused until its REGISTER refreshes the binding, which
then serves it on the new connection; another connection still cannot send as it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshcomm.node.gateway.identity import IdentityCounter
from meshcomm.runtime.app import run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.runtime.sipgw import content_length_untrusted
from meshcomm.sip.build import build_response
from meshcomm.sip.digest import (
    AUTH_HEADERS,
    Secret,
    authorization_value,
    best_challenge_untrusted,
)
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

DOMAIN = "incident.local"
NODE_AOR = f"sip:n0@{DOMAIN}"
PASSWORDS = {"alice": "alice pw 1", "bob": "bob pw 2"}
READ_S = 5.0


@dataclass
class TcpClient:
    """One TCP connection to the gateway, speaking as ``user`` (with ``secret``)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    user: str
    secret: Secret | None = None
    cseq: int = 0
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    def request(self, method: str, *, to: str, extra: tuple[str, ...] = (),
                body: bytes = b"") -> bytes:
        self.cseq += 1
        uri = f"sip:{DOMAIN}" if method == "REGISTER" else to
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/TCP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
                 "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{DOMAIN}>;tag={secrets.token_hex(4)}",
                 f"To: <{to}>", f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} {method}",
                 f"Contact: <sip:{self.user}@127.0.0.1:{self.port};transport=tcp>", *extra]
        if body:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def read(self) -> SipRequest | SipResponse:
        async with asyncio.timeout(READ_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            body = await self.reader.readexactly(content_length_untrusted(head))
        return parse_message_untrusted(head + body)

    async def final(self, data: bytes) -> SipResponse:
        """Send ``data``; the final response to it."""
        self.writer.write(data)
        await self.writer.drain()
        while True:
            message = await self.read()
            if isinstance(message, SipResponse) and message.status >= 200:
                return message

    async def send(self, method: str, to: str, *, extra: tuple[str, ...] = (),
                   body: bytes = b"") -> list[int]:
        """``method`` to ``to``, answering one challenge when it has a secret: statuses."""
        first = await self.final(self.request(method, to=to, extra=extra, body=body))
        statuses = [first.status]
        if first.status not in AUTH_HEADERS or self.secret is None:
            return statuses
        challenge_header, credentials_header = AUTH_HEADERS[first.status]
        challenge = best_challenge_untrusted(first.header_values(challenge_header))
        uri = f"sip:{DOMAIN}" if method == "REGISTER" else to
        value = authorization_value(challenge, self.secret, method=method, uri=uri,
                                    cnonce=secrets.token_hex(8))
        again = await self.final(self.request(method, to=to, body=body,
                                              extra=(*extra, f"{credentials_header}: {value}")))
        return [*statuses, again.status]

    def close(self) -> None:
        self.writer.close()


async def _connect(driver: NodeDriver, user: str, password: str | None) -> TcpClient:
    sockets = driver.sip_sockets
    assert sockets is not None
    reader, writer = await asyncio.open_connection(sockets.host, sockets.tcp_port)
    secret = None if password is None else Secret(user, password)
    return TcpClient(reader, writer, user, secret)


async def _register(client: TcpClient) -> list[int]:
    return await client.send("REGISTER", f"sip:{client.user}@{DOMAIN}", extra=("Expires: 600",))


async def _message(client: TcpClient, text: str) -> list[int]:
    return await client.send("MESSAGE", NODE_AOR, body=text.encode())


async def _delivered_to(client: TcpClient, data_dir: Path, text: str) -> None:
    """``ctl send`` from the node to the client's AoR arrives on ``client``'s connection."""
    sending = asyncio.create_task(asyncio.to_thread(
        ctl, data_dir, "send", to=f"sip:{client.user}@{DOMAIN}", text=text, wait_s=8.0))
    request = await client.read()
    assert isinstance(request, SipRequest) and request.method == "MESSAGE", request
    assert request.body == text.encode()
    client.writer.write(build_response(request, 200, to_tag="t1").serialize())
    result = await sending
    assert isinstance(result, dict) and result["status"] == "delivered", result


def _run(tmp_path: Path, body: Callable[[NodeDriver, Path], object],
         **overrides: object) -> None:
    drivers: list[NodeDriver] = []

    def ready(driver: NodeDriver, _info: NodeInfo) -> None:
        drivers.append(driver)

    async def scenario() -> None:
        with chain_medium(["a"]) as medium:
            async with asyncio.TaskGroup() as tg:
                node = tg.create_task(run_node(node_options(
                    tmp_path, f"mem:{medium.name}/a", "n0", **overrides), ready))
                await wait_until(lambda: bool(drivers), "the node up")
                try:
                    await body(drivers[0], tmp_path)           # type: ignore[misc]
                finally:
                    await asyncio.to_thread(ctl, tmp_path, "stop")
                assert await node == 0

    asyncio.run(scenario())


async def _counter(data_dir: Path, name: str) -> int:
    """A SIP counter as ``ctl status`` shows it."""
    status = await asyncio.to_thread(ctl, data_dir, "status")
    assert isinstance(status, dict)
    return int(status["sip"]["counters"].get(name, 0))


def test_authenticated_client_is_served_on_its_new_connection(tmp_path: Path) -> None:
    async def body(driver: NodeDriver, data_dir: Path) -> None:
        for user, password in PASSWORDS.items():
            await asyncio.to_thread(ctl, data_dir, "user", action="add",
                                    aor=f"sip:{user}@{DOMAIN}", password=password)
        first = await _connect(driver, "alice", PASSWORDS["alice"])
        assert await _register(first) == [401, 200]
        assert await _message(first, "one") == [407, 200]
        first.close()
        # A new connection: the nonce of the old one is not valid here, the new challenge
        # is answered, and the MESSAGE is served (403 before: the registration stuck to
        # the closed connection).
        second = await _connect(driver, "alice", PASSWORDS["alice"])
        assert await _message(second, "two") == [407, 200]
        assert await _counter(data_dir, IdentityCounter.FOLLOWED) == 1
        await _delivered_to(second, data_dir, "to alice on her new connection")

        # A different client connects: it cannot speak as alice nor take her AoR.
        other = await _connect(driver, "alice", None)
        assert await _message(other, "spoof") == [407]
        assert await _register(other) == [401]
        bob = await _connect(driver, "bob", PASSWORDS["bob"])
        assert await _register(bob) == [401, 200]
        bob.user = "alice"                         # From alice, bob's credentials
        assert await _message(bob, "spoof") == [407, 407]
        assert await _register(bob) == [401, 401]
        assert await _counter(data_dir, IdentityCounter.FOLLOWED) == 1
        assert await _counter(data_dir, "auth_failed") == 2
        await _delivered_to(second, data_dir, "still to alice")
        for client in (second, other, bob):
            client.close()

    _run(tmp_path, body, **{"sip.require_auth": True})


def test_unauthenticated_tcp_client_is_served_again_after_its_register(tmp_path: Path) -> None:
    async def body(driver: NodeDriver, data_dir: Path) -> None:
        first = await _connect(driver, "carol", None)
        assert await _register(first) == [200]
        assert await _message(first, "one") == [200]
        first.close()
        second = await _connect(driver, "carol", None)
        # No credentials: nothing tells the new connection from another local client.
        assert await _message(second, "two") == [403]
        assert await _register(second) == [200]
        assert await _message(second, "three") == [200]
        await _delivered_to(second, data_dir, "to carol")
        other = await _connect(driver, "carol", None)
        assert await _message(other, "spoof") == [403]
        assert await _counter(data_dir, IdentityCounter.FOLLOWED) == 0
        for client in (second, other):
            client.close()

    _run(tmp_path, body)


IDLE_S = 0.3


def test_a_registered_connection_outlives_the_idle_timeout(tmp_path: Path) -> None:
    """The gateway closed every TCP connection silent for 300 s, registered or not, and
    requests for its client were dropped until it connected and registered again. Now
    a connection that carries a live registration stays open (tcp_idle_kept), and a
    request for its client arrives on it after several idle periods; an unregistered
    one still closes, and the registered one closes one idle period after the client
    de-registers. A header section cut by an idle period is read whole afterwards."""
    async def body(driver: NodeDriver, data_dir: Path) -> None:
        sockets = driver.sip_sockets
        assert sockets is not None
        sockets.tcp_idle_timeout_s = IDLE_S
        dave = await _connect(driver, "dave", None)
        idle = await _connect(driver, "erin", None)
        assert await _register(dave) == [200]
        await asyncio.sleep(4 * IDLE_S)
        assert await asyncio.wait_for(idle.reader.read(), READ_S) == b""   # closed
        assert sockets.counters["tcp_idle_kept"] >= 2
        await _delivered_to(dave, data_dir, "after four idle periods")
        # Half a header section, an idle period, then the rest: one message.
        data = dave.request("MESSAGE", to=NODE_AOR, body=b"cut")
        dave.writer.write(data[:30])
        await asyncio.sleep(2 * IDLE_S)
        assert (await dave.final(data[30:])).status == 200
        assert await dave.send("REGISTER", f"sip:dave@{DOMAIN}", extra=("Expires: 0",)) \
            == [200]
        assert await asyncio.wait_for(dave.reader.read(), 4 * IDLE_S + READ_S) == b""
        for client in (dave, idle):
            client.close()

    _run(tmp_path, body)
