"""radios: link drivers behind one interface (see radios.base).

``open_radio("udp:IFACE" | "ether:IFACE" | "mem:MEDIUM/STATION", impairment=..., seed=...)``
returns a :class:`Radio`; ``await radio.open()`` before use.
"""

from radios.base import MESH_DATAGRAM_MAX_BYTES, Radio, RadioKind, open_radio
from radios.impair import ImpairedRadio, Impairment, parse_impairment

__all__ = [
    "MESH_DATAGRAM_MAX_BYTES",
    "ImpairedRadio",
    "Impairment",
    "Radio",
    "RadioKind",
    "open_radio",
    "parse_impairment",
]
