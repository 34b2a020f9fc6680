"""Shared builders for location tests."""

from __future__ import annotations

from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.table import LocationTable, TrustMode, TrustPolicy
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier

INCIDENT = "incident-7"
WALL = 1_800_000_000.0
ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
CAROL = Identity(bytes(range(2, 34)))
AGENCY = Identity(bytes(range(3, 35)))
ROGUE_AGENCY = Identity(bytes(range(4, 36)))


def binding(who: Identity, seq: int, *, aor: str = "sip:medic@fire.example",
            lifetime_s: int = 60, hold_s: int = 0, incident: str = INCIDENT,
            issued_at: float = WALL, credential: bytes | None = None) -> Binding:
    return make_binding(who, incident=incident, seq=seq, aor=aor,
                        contacts=(f"mesh:{who.node_id[:4].hex()}",), issued_at=issued_at,
                        lifetime_s=lifetime_s, hold_s=hold_s, caps=("msg",),
                        credential=credential)


def table(mode: TrustMode = TrustMode.OPEN,
          agency_keys: frozenset[bytes] = frozenset()) -> LocationTable:
    return LocationTable(INCIDENT, TrustPolicy(mode, agency_keys), SignatureVerifier())
