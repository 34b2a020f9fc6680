"""Application kinds of mesh unicast messages (the ``kind`` of a UNICAST envelope)."""

from __future__ import annotations

from enum import IntEnum


class AppKind(IntEnum):
    SIP = 1              # a SIP request or response, bytes as on the wire
    STORE_FORWARD = 2    # the store-and-forward custody protocol
    MEDIA_CONTROL = 3    # media session set-up between gateways (if needed)
    RESOLVE = 4          # a node asks an uplinked relay of its island for a remote AoR
    RESOLVED = 5         # ... and the relay answers (meshcomm.node.tunnel_wire)
    TUNNEL_OUT = 6       # an item for another island, to an uplinked relay of ours
    TUNNEL_WAN = 7       # an item between relays, over the uplink mesh
    TUNNEL_IN = 8        # an item from another island, from the relay it came through
    JOURNAL_PULL = 9     # a collector asks a device for journal rows (node.collect_wire)
    JOURNAL_CHUNK = 10   # ... and the device answers with a chunk of them
