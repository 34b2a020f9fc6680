"""The SIP gateway's UDP socket is read in batches with a large receive buffer, so a
burst from many sockets reaches the gateway's admission instead of being dropped by the
kernel (issue 8)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from meshcomm.node.gateway.types import Address
from meshcomm.runtime.sipgw import UDP_READ_BATCH, SipSockets

SOURCES = 100
PER_SOURCE = 30


def test_a_burst_from_a_hundred_sockets_is_read_whole_in_batches() -> None:
    batches: list[int] = []
    got: list[tuple[bytes, Address]] = []

    def on_batch(batch: list[tuple[bytes, Address]]) -> None:
        batches.append(len(batch))
        got.extend(batch)
        time.sleep(0.002 * len(batch) / 10)        # a busy gateway: 0.2 ms per datagram

    async def main() -> SipSockets:
        sockets = SipSockets("127.0.0.1", 0, 0, lambda _d, _a: None, max_tcp_connections=1)
        await sockets.open()
        sockets.deliver_batch = on_batch
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOURCES)]
        try:
            payload = b"OPTIONS sip:x@incident.local SIP/2.0\r\n" + b"X" * 400 + b"\r\n\r\n"
            for round_ in range(PER_SOURCE):             # 3,000 datagrams, no pause
                for i, s in enumerate(senders):
                    s.sendto(payload + f"{i}/{round_}".encode(), ("127.0.0.1",
                                                                 sockets.udp_port))
            deadline = time.monotonic() + 10
            while len(got) < SOURCES * PER_SOURCE and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            for s in senders:
                s.close()
            sockets.close()
        return sockets

    sockets = asyncio.run(main())
    print(f"\nreceive buffer {sockets.udp_receive_buffer} B, {len(got)} datagrams in "
          f"{len(batches)} batches, largest {max(batches)}")
    assert len(got) == SOURCES * PER_SOURCE                # nothing lost to the kernel
    assert len({addr for _, addr in got}) == SOURCES
    assert 1 < max(batches) <= UDP_READ_BATCH and len(batches) < len(got)
    if os.geteuid() == 0:                                  # SO_RCVBUFFORCE works as root
        assert sockets.udp_receive_buffer >= 4 * 1024 * 1024
    assert sockets.counters["udp_rx"] == len(got)
