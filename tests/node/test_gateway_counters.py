"""The gateway's counters are GatewayCounter members; per-reason, per-direction and
per-verdict counters come from explicit tables with the names reported so far."""

from __future__ import annotations

from pathlib import Path

from meshcomm.node.gateway.admission import SHED_COUNTERS, Shed
from meshcomm.node.gateway.counters import (
    DIRECTION_COUNTERS,
    DROP_COUNTERS,
    SDP_REFUSAL_COUNTERS,
    GatewayCounter,
    SdpRefusal,
)
from meshcomm.node.gateway.types import Direction
from meshcomm.sip.counters import SipDecodeReason
from tests.overlay.test_counters import reason_texts

PKG = Path(__file__).resolve().parents[2] / "meshcomm"


def test_every_reason_direction_and_verdict_has_its_counter() -> None:
    tables = [(DROP_COUNTERS, SipDecodeReason, "dropped_"),
              (SDP_REFUSAL_COUNTERS, SdpRefusal, "sdp_refused_"),
              (DIRECTION_COUNTERS, Direction, "sip_"),
              (SHED_COUNTERS, Shed, "shed_")]
    used: list[GatewayCounter] = []
    for table, keys, prefix in tables:
        assert set(table) == set(keys)
        assert all(counter == prefix + key.value for key, counter in table.items())
        used.extend(table.values())
    assert len(set(used)) == len(used)
    assert len(GatewayCounter.__members__) == len(GatewayCounter)


def test_every_reason_the_media_layer_refuses_sdp_for_is_an_sdp_refusal() -> None:
    sources = [PKG / "sip" / "sdp.py", PKG / "sip" / "grammar.py", PKG / "media" / "keys.py",
               PKG / "media" / "sdp_rewrite.py", PKG / "media" / "relay.py"]
    found = {"malformed", "media_exhausted"} | {text for path in sources
                                                for _, text in reason_texts(path)}
    assert {"bad_sdp", "sdp_limit", "call_id_too_long"} <= found
    assert {t for t in found if SdpRefusal.of(t) is SdpRefusal.OTHER} == set()
