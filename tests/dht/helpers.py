"""Shared builders for the DHT tests."""

from __future__ import annotations

from meshcomm.dht.records import (
    AorKeys,
    Attachment,
    DhtRecord,
    VerifyContext,
    make_attachment,
)
from meshcomm.location.binding import Binding, make_binding
from meshcomm.location.freshness import FreshnessMemory
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier

INCIDENT = "incident-10"
WALL = 1_800_000_000.0
AOR = "sip:medic@fire.example"
ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
RELAY_A = Identity(bytes(range(10, 42)))
RELAY_B = Identity(bytes(range(11, 43)))
MALLORY = Identity(bytes(range(12, 44)))
AGENCY = Identity(bytes(range(13, 45)))
ADDRS = ("192.0.2.7:4222", "[2001:db8::7]:4222")


def binding(who: Identity = ALICE, seq: int = 1, *, aor: str = AOR, lifetime_s: int = 3600,
            hold_s: int = 0, incident: str = INCIDENT, issued_at: float = WALL,
            credential: bytes | None = None) -> Binding:
    return make_binding(who, incident=incident, seq=seq, aor=aor,
                        contacts=(f"mesh:{who.node_id[:4].hex()}",), issued_at=issued_at,
                        lifetime_s=lifetime_s, hold_s=hold_s, caps=("msg",),
                        credential=credential)


def attach(b: Binding, relay: Identity = RELAY_A, *, seq: int = 1, incident: str = INCIDENT,
           issued_at: float = WALL, ttl_s: float = 600.0,
           addrs: tuple[str, ...] = ADDRS) -> Attachment:
    return make_attachment(relay, incident=incident, binding=b, addrs=addrs,
                           issued_at=issued_at, expires_at=issued_at + ttl_s, seq=seq)


def record(b: Binding | None = None, relay: Identity = RELAY_A, **kw: object) -> DhtRecord:
    b = b if b is not None else binding()
    return DhtRecord(b, attach(b, relay, **kw))  # type: ignore[arg-type]


def context(mode: TrustMode = TrustMode.OPEN, agency_keys: frozenset[bytes] = frozenset(),
            freshness: FreshnessMemory | None = None) -> VerifyContext:
    return VerifyContext(INCIDENT, TrustPolicy(mode, agency_keys), SignatureVerifier(),
                         freshness if freshness is not None else FreshnessMemory())


def nonce(n: int) -> bytes:
    return n.to_bytes(24, "big")


__all__ = ["AorKeys"]
