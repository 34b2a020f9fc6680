"""Named limits of the mesh wire format. Every bound a decoder enforces lives here."""

from __future__ import annotations

#: Largest datagram the mesh puts on a radio (fits an IPv6 minimum-MTU UDP payload).
MAX_DATAGRAM_BYTES = 1200
#: Deepest msgpack nesting accepted anywhere (envelope -> payload -> list -> item).
MAX_NESTING_DEPTH = 6
#: Largest msgpack array / map accepted while unpacking.
MAX_ARRAY_ITEMS = 256
MAX_MAP_ITEMS = 32
MAX_STR_BYTES = 512
MAX_BIN_BYTES = MAX_DATAGRAM_BYTES

#: 2: radio frames carry an incident tag, the origin's short id or key, a binary header,
#: and a UNICAST names its destination by a NodeId prefix (issue 13, "short on the wire").
WIRE_VERSION = 2
MAX_INCIDENT_LEN = 64
#: Bytes of the incident tag in a radio frame (a filter: the signature binds the name).
INCIDENT_TAG_LEN = 4
#: Bytes of a NodeId that name a node on the wire: the origin of a frame whose key is
#: elided, and the destination of a UNICAST.
SHORT_NODE_ID_LEN = 8
MAX_TTL = 32
MAX_HOPS = 64
#: Largest (seq) value: 64-bit unsigned.
MAX_SEQ = (1 << 64) - 1

# Bindings
MAX_AOR_LEN = 256
MAX_CONTACTS = 8
MAX_CONTACT_LEN = 256
MAX_CAPS = 16
MAX_CAP_LEN = 32
MAX_LIFETIME_S = 24 * 3600
MAX_CREDENTIAL_BYTES = 400
#: A binding whose issue time is further than this ahead of our wall clock is rejected.
MAX_FUTURE_SKEW_S = 24 * 3600

# Overlay control
MAX_HELLO_NEIGHBOURS = 48
MAX_SUMMARY_ENTRIES = 40
MAX_PULL_IDS = 64
MAX_RECORDS_PER_FRAME = 8
#: Largest holding time (s) a neighbour may report for a claim in anti-entropy.
MAX_HELD_REPORT_S = 30 * 24 * 3600
#: Summary frames (pages of MAX_SUMMARY_ENTRIES) sent in answer to one digest.
MAX_SUMMARY_PAGES_PER_ANSWER = 16
#: Records pushed in answer to one summary page (the rest wait for the next round).
MAX_PUSH_PER_SUMMARY = 24
MAX_UNICAST_BODY_BYTES = 900

# Per-hop acknowledgements (issue 13): a frame is named by the first ACK_ID_LEN bytes of
# its envelope digest; one ack (standalone or piggybacked on a frame to that neighbour)
# names 1..MAX_ACK_IDS frames and carries a LINK_MAC_LEN-byte MAC under the link's key.
ACK_ID_LEN = 6
MAX_ACK_IDS = 16
LINK_MAC_LEN = 8
