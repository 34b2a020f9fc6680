"""End-to-end sealing through whole node cores (issue 12 point 5): a relay in the middle
hears only sealed SIP and journals none of it; a sealed body re-signed by another node, or
tampered with, is dropped at the destination and counted; nothing reaches the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshcomm.errors import DecodeError
from meshcomm.node.e2e_sip import E2eCounter
from meshcomm.node.kinds import AppKind
from meshcomm.sip.ua_events import IncomingMessage
from meshcomm.wire.envelope import DST_PREFIX_LEN, MsgType, parse_frame_untrusted
from tests.node.gateway_net import DOMAIN, Net, registered

BOB = f"sip:bob@{DOMAIN}"
SECRET = "the east stairwell is blocked"


def _heard(net: Net, index: int) -> list[bytes]:
    """Record every radio frame station ``index`` receives."""
    frames: list[bytes] = []
    pump = net.stations[index].pump
    original: Callable[..., Any] = pump.radio

    def radio(data: bytes, src: Any, now: float) -> Any:
        frames.append(data)
        return original(data, src, now)

    pump.radio = radio  # type: ignore[method-assign]
    return frames


def _messages_at_bob(net: Net) -> list[bytes]:
    return [e.body for e in net.events(2, 5072) if isinstance(e, IncomingMessage)]


def _sip_bodies(frames: list[bytes], dst: bytes) -> list[bytes]:
    bodies = []
    for frame in frames:
        try:        # (media frames, link acks: not envelopes)
            env, _hop = parse_frame_untrusted(frame)
        except DecodeError:
            continue
        # (wire v2: a UNICAST names its destination by a NodeId prefix)
        if env.msg_type is MsgType.UNICAST and env.payload[0] == dst[:DST_PREFIX_LEN] \
                and env.payload[1] == AppKind.SIP:
            bodies.append(bytes(env.payload[2]))
    return bodies


def test_the_relay_hears_and_journals_no_plaintext_and_forgeries_are_dropped() -> None:
    net = Net(3)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    heard = _heard(net, 1)
    alice.message(BOB, SECRET)
    net.run_until(lambda: bool(_messages_at_bob(net)))
    assert _messages_at_bob(net) == [SECRET.encode()]
    relay, dest = net.stations[1], net.stations[2]
    assert heard and not any(SECRET.encode() in f or b"MESSAGE sip:" in f for f in heard)
    assert SECRET not in repr(relay.journal) and SECRET not in repr(relay.other_events)
    assert dest.core.e2e is not None and dest.core.e2e.counters[E2eCounter.OPENED] >= 1
    sealed = _sip_bodies(heard, dest.core.node_id)
    assert sealed, "alice's MESSAGE went through the relay"

    # The relay re-sends alice's sealed MESSAGE as its own (signed by it): bob's node
    # cannot open it (the sender key is in the associated data) and drops it.
    now = net.now
    relay.pump.command(now, lambda: relay.node.send_unicast(dest.core.node_id, AppKind.SIP,
                                                            sealed[0], now))
    net.run_for(2.0)
    assert dest.core.e2e.counters[E2eCounter.OPEN_FAILED] == 1
    # alice's own node sends a tampered copy (one bit): dropped too.
    tampered = bytearray(sealed[0])
    tampered[-20] ^= 0x01
    origin = net.stations[0]
    now = net.now
    origin.pump.command(now, lambda: origin.node.send_unicast(dest.core.node_id, AppKind.SIP,
                                                              bytes(tampered), now))
    net.run_for(2.0)
    assert dest.core.e2e.counters[E2eCounter.OPEN_FAILED] == 2
    assert _messages_at_bob(net) == [SECRET.encode()]
