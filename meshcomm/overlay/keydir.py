"""Who holds which key: the receiver's key directory and the sender's per-link memory of
origins a neighbour holds (issue 13, "short on the wire").

A radio frame names its origin by an 8-byte short id instead of its 32-byte key where the
receiver already holds the key (:mod:`meshcomm.wire.envelope`). Two tables make that safe:

* :class:`KeyDirectory` (receiver): short id -> (public key, NodeId), filled only from
  verified frames (HELLOs and everything else whose signature checked out) and from
  bindings the location table accepted; bounded (``max_entries``) with least-recently-
  learned eviction. Two keys under one short id make that short id *ambiguous*: frames
  naming it must carry the full key, and a UNICAST destination prefix naming it is refused
  (:mod:`.forwarding`). The signature always covers the full key, so a frame of another
  key under a known short id fails verification; frames naming unknown short ids cost one
  dictionary lookup and add nothing (a flood of them cannot grow the table).
* :class:`LinkOrigins` (sender): per neighbour link, the origins of which that neighbour
  acknowledged a frame from us (so it verified one and holds the key). Only the first copy
  of a UNICAST elides the key, and only towards such a link (or when it is a *carrier*,
  :mod:`.acks`, which always names its origin short on its first copy); retransmissions
  always carry it. Bounded per link and in links; a link's set is emptied when the
  neighbour goes down or comes back as new (a restart), and a receiver that lost the key
  anyway (restarted between two HELLOs) drops the frame unacknowledged, so the
  retransmission, carrying the key, is delivered.
"""

from __future__ import annotations

from meshcomm.security.identity import node_id_of
from meshcomm.types import LinkAddr, NodeId
from meshcomm.wire.envelope import ORIGIN_SHORT_LEN

#: Keys held at once (several times the largest route and binding tables' working sets).
MAX_DIRECTORY_KEYS = 8192
#: Origins remembered per neighbour link, and links remembered.
MAX_ORIGINS_PER_LINK = 256
MAX_LINKS = 256

#: A directory entry: the key and its NodeId, or AMBIGUOUS.
_Entry = tuple[bytes, NodeId]
AMBIGUOUS: _Entry = (b"", NodeId(b""))


class KeyDirectory:
    """Short id -> public key of the origins this node verified (see the module doc)."""

    def __init__(self, max_entries: int = MAX_DIRECTORY_KEYS) -> None:
        self.max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        #: keys learned under a short id another key holds (each made it ambiguous)
        self.clashes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, key: bytes, node_id: NodeId | None = None) -> None:
        """Remember a key whose signature (or binding) was verified."""
        node = node_id if node_id is not None else node_id_of(key)
        short = node[:ORIGIN_SHORT_LEN]
        entries = self._entries
        held = entries.pop(short, None)
        if held is not None and held[0] != key:
            self.clashes += held is not AMBIGUOUS
            entries[short] = AMBIGUOUS          # stays ambiguous until evicted
            return
        if held is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[short] = (key, node)

    def entry(self, short: bytes) -> tuple[bytes, NodeId] | None:
        """The (key, NodeId) held under ``short``; None if unknown or ambiguous."""
        entry = self._entries.get(short)
        return entry if entry is not AMBIGUOUS else None

    def key(self, short: bytes) -> bytes | None:
        """The key held under ``short``; None if unknown or ambiguous."""
        entry = self._entries.get(short)
        return entry[0] if entry is not None and entry is not AMBIGUOUS else None

    def node(self, short: bytes) -> NodeId | None:
        """The NodeId held under ``short``; None if unknown or ambiguous."""
        entry = self._entries.get(short)
        return entry[1] if entry is not None and entry is not AMBIGUOUS else None

    def ambiguous(self, short: bytes) -> bool:
        return self._entries.get(short) is AMBIGUOUS


class LinkOrigins:
    """Per neighbour link, the origins it holds the key of (see the module doc)."""

    def __init__(self, per_link: int = MAX_ORIGINS_PER_LINK,
                 max_links: int = MAX_LINKS) -> None:
        self.per_link = per_link
        self.max_links = max_links
        self._links: dict[LinkAddr, dict[NodeId, None]] = {}

    def acked(self, link: LinkAddr, origin: NodeId) -> None:
        """``link`` acknowledged a frame of ``origin``."""
        origins = self._links.get(link)
        if origins is None:
            if len(self._links) >= self.max_links:
                del self._links[next(iter(self._links))]
            origins = self._links[link] = {}
        origins.pop(origin, None)
        if len(origins) >= self.per_link:
            del origins[next(iter(origins))]
        origins[origin] = None

    def holds(self, link: LinkAddr, origin: NodeId) -> bool:
        origins = self._links.get(link)
        return origins is not None and origin in origins

    def forget(self, link: LinkAddr) -> None:
        """The neighbour at ``link`` went down or restarted: assume it holds nothing."""
        self._links.pop(link, None)
