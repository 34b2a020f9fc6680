"""The ``runtime_pump`` fuzz target: the whole runtime pump under hostile SIP and radio input.

Not only the cores: a real :class:`~meshcomm.runtime.driver.NodeDriver` with a relay's full
SIP stack (a NodeCore: MeshNode, SipGateway with store-and-forward and the media relay, a
registered client), a real :class:`~meshcomm.journal.store.JournalStore` on disk, an
in-memory radio that captures what the node transmits, and a peer MeshNode on that radio.
The loop runs on a virtual clock so the driver's one timer fires as it would.

Each input is split into messages (harness.MESSAGE_SEPARATOR); the first byte of a message
picks its path: local SIP from a client, SIP across the mesh from the peer's gateway (a
signed UNICAST the peer sends), or a raw radio frame. After every message the clock moves
on and due timers run. Then the contract (a failure is a crash):

* nothing was contained (a contained failure in the driver is a bug that would have
  stopped the pump before issue 8) and no journal record needed normalising;
* the journal takes every record and the driver's timer is armed whenever the core
  has a deadline;
* the node keeps answering: an OPTIONS from a well-behaved client to the node's AoR is
  answered in the same pump.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from pathlib import Path
from typing import Final

from meshcomm.journal.store import JournalStore
from meshcomm.node.kinds import AppKind
from meshcomm.runtime.driver import NodeDriver
from meshcomm.types import LinkAddr
from radios.base import Radio
from tools.fuzz import harness as h
from tools.fuzz.hostile_sip import hostile_datagram

RADIO: Final = "fz"
PEER_ADDR: Final = "peer"
#: A message's first byte modulo this picks the path (local SIP, mesh SIP, radio frame).
PATHS: Final = 3
STEP_S: Final = 0.1
MTU_BYTES: Final = 1500
WELL_BEHAVED: Final = ("127.0.0.1", 5999)


class CaptureRadio(Radio):
    """An in-memory radio: what the node sends is kept for the peer."""

    def __init__(self) -> None:
        super().__init__(RADIO, MTU_BYTES)
        self.sent: list[bytes] = []
        self._open = False

    async def open(self) -> None:
        self._open = True

    def send(self, data: bytes, dst: str | None) -> None:
        self.check_send(data)
        self.count_tx(len(data))
        self.sent.append(data)

    def close(self) -> None:
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is set by the caller (timers fire when it is advanced)."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0

    def time(self) -> float:
        return self.virtual_now

    def advance(self, seconds: float) -> None:
        self.virtual_now += seconds
        self.run_until_complete(asyncio.sleep(0))


class PumpRig:
    """One driven node (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.loop = VirtualClockLoop()
        self.station = h.station()
        node = self.station.core.node
        self.radio = CaptureRadio()
        self.loop.run_until_complete(self.radio.open())
        self.local: list[tuple[bytes, tuple[str, int]]] = []
        journal = JournalStore.open(workdir / "journal.sqlite", node.node_id)
        self.driver = NodeDriver(self.station.core, [self.radio], journal, self.loop,
                                 wall_offset_s=0.0,
                                 sip_sink=lambda d: self.local.append((d.data, d.dest)))
        self.driver.start()
        self.peer = self.station.peer
        for _ in range(4):                   # the peer hears the node (a route back)
            self.step()

    def step(self) -> None:
        """Frames both ways between node and peer, then the clock moves on."""
        now = self.loop.time()
        for frame in self.radio.sent:
            self.peer.receive(frame, LinkAddr("gw"), now)
        self.radio.sent.clear()
        t = self.peer.next_timer()
        if t is not None and t <= now:
            self.peer.on_timer(now)
        for dgram in self.peer.to_send(now):
            self.driver.receive(RADIO, dgram.data, PEER_ADDR)
        while self.peer.next_event() is not None:
            pass
        self.loop.advance(STEP_S)

    def feed(self, message: bytes) -> None:
        if not message:
            return
        path, body = message[0] % PATHS, message[1:]
        if path == 0:
            self.driver.receive_sip(body, h.CLIENT)
        elif path == 1 and body:
            self.peer.send_unicast(self.driver.node.node_id, AppKind.SIP, body[:14_000],
                                   self.loop.time())
        else:
            self.driver.receive(RADIO, body, PEER_ADDR)
        self.step()

    def check(self) -> None:
        """The contract of the module docstring; AssertionError is a crash."""
        counters = self.driver.counters
        assert counters["contained_faults"] == 0, dict(self.driver.faults.kinds)
        assert counters["journal_records_normalised"] == 0, "a core journaled raw wire data"
        if self.driver.core.next_timer() is not None:
            assert self.driver.armed_at is not None, "the timer was not re-armed"
        self.local.clear()
        options = h.request("OPTIONS", "gw", "probe", WELL_BEHAVED, call_id="probe-1")
        self.driver.receive_sip(options, WELL_BEHAVED)
        answers = [d for d, dest in self.local if dest == WELL_BEHAVED]
        assert any(d.startswith(b"SIP/2.0 200 ") for d in answers), answers

    def close(self) -> None:
        self.driver.close()
        self.loop.close()


def runtime_pump(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fz-pump-") as tmp:
        rig = PumpRig(Path(tmp))
        try:
            for message in h.split_messages(data):
                rig.feed(message)
            rig.step()
            rig.check()
        finally:
            rig.close()


def runtime_pump_seeds() -> list[bytes]:
    """Hostile SIP down both SIP paths, overlay frames down the radio, the RFC vectors."""
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "8")))
    seeds: list[bytes] = []
    for n in range(40):
        msgs = [bytes([n % 2]) + hostile_datagram(rng, n * 3 + k, f"sip:gw@{h.DOMAIN}",
                                                  "127.0.0.1:6000") for k in range(3)]
        seeds.append(h.join_messages(*msgs))
    seeds += [h.join_messages(b"\x02" + frame) for frame in h.overlay_frames()[:40]]
    seeds += [h.join_messages(b"\x00" + v, b"\x01" + v) for v in h.sip_vectors()[:40]]
    return seeds
