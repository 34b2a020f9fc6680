"""tools/bench/hops.py: a short run end to end (root), and its frame classification.

The short run (6 messages, 3 s warm-up, with the floor) takes about 25 s: a chain of five
handsets, dumpcap on every link, then the floor's minimal forwarders.
"""

from __future__ import annotations

import json

import pytest

from meshcomm.security.identity import Identity
from meshcomm.wire.envelope import Hop, MsgType, encode_frame, encode_link_ack, seal
from tests.envcheck import require_root
from tools.bench import hops

ALICE = Identity(b"\x11" * 32)


def test_frames_are_named_by_type_acks_and_key() -> None:
    env = seal(ALICE, MsgType.UNICAST, "default", 3, [b"\x00" * 8, 1, b"body"])
    assert hops.frame_kind(encode_frame(env, Hop(ttl=5))) == "UNICAST+key"
    short = encode_frame(env, Hop(ttl=5, key_elided=True, acks=b"a" * 6, mac=b"m" * 8))
    assert hops.frame_kind(short) == "UNICAST+acks"
    assert hops.unicast_signature(short) == env.signature
    assert hops.frame_kind(encode_link_ack(b"a" * 6, b"m" * 8)) == "link-ack"
    assert hops.unicast_signature(encode_link_ack(b"a" * 6, b"m" * 8)) is None
    assert hops.frame_kind(b"\x00junk") == "other"
    hello = seal(ALICE, MsgType.HELLO, "default", 4, [1, "handset", []])
    assert hops.unicast_signature(encode_frame(hello)) is None


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.root
def test_a_short_run_times_every_hop_and_sizes_the_frames(
        capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    assert hops.main(["--messages", "6", "--gap-s", "0.2", "--warmup-s", "3", "--floor",
                      "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "warm-up" in captured.err                   # progress goes to stderr
    assert result["delivered"] == 6
    stages = result["stages"]
    assert set(stages) == {"origin", "relay1", "relay2", "relay3", "destination", "total"}
    assert all(s["n"] == 6 for s in stages.values())
    # every stage before the far end takes time (the destination stage compares n4's
    # clock reading with a capture timestamp, both of this machine's wall clock)
    assert all(stages[s]["p50_ms"] > 0 for s in ("origin", "relay1", "relay2", "relay3"))
    assert 0 < stages["total"]["p50_ms"] < 1000
    frames = result["link_n1_n2"]["messages"]
    # each MESSAGE crossed n1 -> n2 once and its 200 OK came back carrying the ack
    plain = sum(frames.get(k, [0, 0])[0] for k in ("UNICAST", "UNICAST+key"))
    assert plain >= 6 and frames["UNICAST+acks"][0] >= 6
    count, total = frames["UNICAST+acks"]
    assert 150 < total / count < 300                    # a 200 OK carrier, IP bytes
    # the floor: every text crossed the minimal forwarders, in less time than meshcomm
    # takes (a bare signed forward per hop) yet some (4 hops of kernel and wake-ups)
    fl = result["floor"]
    assert fl["n"] == 6 and 0 < fl["p50_ms"] < stages["total"]["p50_ms"]
    assert result["above_floor_ms"] == pytest.approx(stages["total"]["p50_ms"] - fl["p50_ms"],
                                                     abs=0.002)


def test_without_root_it_says_so(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hops.os, "geteuid", lambda: 1000)
    assert hops.main(["--messages", "1"]) == 2
    assert "needs root" in capsys.readouterr().err
    with pytest.raises(SystemExit):                     # bad arguments: argparse's error
        hops.main(["--messages", "0"])
