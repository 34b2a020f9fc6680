"""Store-and-forward does not deliver messages held for a revoked device (sf_net: real
MeshNodes, StoreForward cores, SQLite storage)."""

from __future__ import annotations

from pathlib import Path

from meshcomm.node.storeforward import HeldState
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, make_trust_record

from .sf_net import Net, aor

SIP = b"MESSAGE sip:d@incident.test SIP/2.0\r\nContent-Length: 5\r\n\r\nhello"
ROOT = Identity(b"R" * 32)


def _net(tmp_path: Path) -> Net:
    return Net(tmp_path, {"o": "handset", "r": "relay", "d": "handset"},
               links=[("o", "r"), ("r", "d")])


def _trusting_root(net: Net, name: str) -> None:
    node = net.hosts[name].node
    assert node is not None
    node.overlay.trust.store.set_roots(frozenset({ROOT.public_key}))
    node.overlay.trust.enforce(net.now)


def _run(tmp_path: Path, revoke: bool) -> tuple[int, HeldState]:
    net = _net(tmp_path)
    for name in ("o", "r"):
        net.start(name)
        _trusting_root(net, name)
    net.run_until(3.0)
    net.hosts["o"].live_sf.hold(msg_id=b"message-id-0001!", from_aor=aor("o"),
                                to_aor=aor("d"), sip=SIP, now=net.now)
    net.command("o")
    net.run_for(3.0)
    assert len(net.hosts["r"].live_sf.held_for_others()) == 1       # the relay holds it
    if revoke:
        record = make_trust_record(ROOT, incident="sf-test", kind=TrustKind.REVOKE_DEVICE,
                                   subject=net.hosts["d"].identity.public_key,
                                   issued_at=int(net.now))
        node = net.hosts["o"].node
        assert node is not None
        assert node.overlay.trust.originate(record, net.now) is None
        net.command("o")
        net.run_for(2.0)
    net.start("d")              # the (lost) handset comes back in range of the relay
    net.run_for(10.0)
    delivered = len(net.hosts["d"].client)
    state = net.hosts["o"].live_sf.outbox()[0].state
    net.close()
    return delivered, state


def test_held_message_reaches_the_device_when_not_revoked(tmp_path: Path) -> None:
    assert _run(tmp_path, revoke=False) == (1, HeldState.DELIVERED)


def test_held_message_is_not_delivered_to_a_revoked_device(tmp_path: Path) -> None:
    delivered, state = _run(tmp_path, revoke=True)
    assert delivered == 0 and state is not HeldState.DELIVERED
