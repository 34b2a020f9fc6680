"""Media counters are MediaCounter members; per-reason and per-channel ones come from
explicit tables with the names reported so far."""

from __future__ import annotations

from meshcomm.media.counters import MediaCounter
from meshcomm.media.packet import Channel
from meshcomm.media.relay import CALL_END_COUNTERS, EndReason
from meshcomm.media.session import (
    DROP_COUNTERS,
    TO_CLIENT_COUNTERS,
    TO_MESH_COUNTERS,
    DropReason,
)


def test_every_reason_and_channel_has_its_counter() -> None:
    assert set(DROP_COUNTERS) == set(DropReason)
    assert all(c == "drop_" + r.value for r, c in DROP_COUNTERS.items())
    assert set(CALL_END_COUNTERS) == set(EndReason)
    assert all(c == "calls_ended_" + r.value for r, c in CALL_END_COUNTERS.items())
    for table, suffix in ((TO_MESH_COUNTERS, "_to_mesh"), (TO_CLIENT_COUNTERS, "_to_client")):
        assert set(table) == set(Channel)
        assert all(c == ch.name.lower() + suffix for ch, c in table.items())
    used = [*DROP_COUNTERS.values(), *CALL_END_COUNTERS.values(),
            *TO_MESH_COUNTERS.values(), *TO_CLIENT_COUNTERS.values()]
    assert len(set(used)) == len(used)
    assert len(MediaCounter.__members__) == len(MediaCounter)     # no two names, one value
