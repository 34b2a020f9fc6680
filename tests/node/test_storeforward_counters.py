"""Store-and-forward counters are SfCounter members; per-reason counters come from
explicit tables, with the names reported so far."""

from __future__ import annotations

from pathlib import Path

from meshcomm.node.sf_counters import (
    CUSTODY_REFUSAL_COUNTERS,
    SF_DROP_COUNTERS,
    CustodyRefusal,
    SfCounter,
    SfDropReason,
)
from tests.overlay.test_counters import reason_texts

PKG = Path(__file__).resolve().parents[2] / "meshcomm"


def test_every_drop_reason_and_refusal_has_its_counter() -> None:
    assert set(SF_DROP_COUNTERS) == set(SfDropReason)
    assert all(c == "sf_drop_" + r.value for r, c in SF_DROP_COUNTERS.items())
    assert set(CUSTODY_REFUSAL_COUNTERS) == set(CustodyRefusal)
    assert all(c == "sf_offer_refused_" + r.value for r, c in CUSTODY_REFUSAL_COUNTERS.items())
    tables = [*SF_DROP_COUNTERS.values(), *CUSTODY_REFUSAL_COUNTERS.values()]
    assert len(set(tables)) == len(tables)
    assert all(c.value.startswith("sf_") for c in SfCounter)


def test_every_reason_a_store_forward_decoder_gives_is_a_drop_reason() -> None:
    """The decoders: the msgpack codec and the store-and-forward wire format."""
    sources = [PKG / "wire" / "codec.py", PKG / "node" / "storeforward_wire.py",
               *sorted((PKG / "node").glob("sf_*.py"))]
    found = {"malformed"} | {text for path in sources for _, text in reason_texts(path)}
    assert {"truncated", "bad_aor", "bad_version"} <= found      # the scan sees the sources
    assert {t for t in found if SfDropReason.of(t) is SfDropReason.OTHER} == set()
    assert SfDropReason.of("no_such_reason") is SfDropReason.OTHER
