"""Role addresses and their signed hand-over (issue 12 point 3).

A *role address* (``sip:ops-chief@fire.example``) names a post, not a person. Under the
``agency`` trust policy a binding of a role address is admitted only when the credential
it carries has a role the profile allows for that address (``[trust] role_addresses``,
keyed by the address's user part; :data:`DEFAULT_ROLE_ADDRESSES` when not configured):
a credential for ``sip:*@fire.example`` with role ``medic`` covers ``sip:bob@fire.example``
but not ``sip:incident-commander@fire.example``.

One key holds a role address at a time. The first eligible claim holds it; it passes to
another key only by a :class:`Handover` "AoR X is held by key K from time T", signed by a
trusted agency key or by the device key of the claim currently on the address (the
current holder's node). The hand-over travels inside the new holder's binding, in the
credential field (:func:`pack_trust_bundle`): no new record kind, and a node that sees the
binding sees the hand-over with it. Among the claims on a role address the one with the
latest hand-over time holds (a claim without a hand-over counts as time 0, the earliest
claim first); the others are kept as conflicts, not used for routing.

Under the ``open`` policy role addresses are ordinary AoRs (zero configuration: the first
key to claim one holds it, as for any AoR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshcomm.errors import DecodeError, TrustError
from meshcomm.security.credentials import (
    Credential,
    check_credential,
    decode_credential_untrusted,
)
from meshcomm.security.identity import Identity, verify_signature
from meshcomm.types import SIGNATURE_LEN
from meshcomm.wire import codec, limits

HANDOVER_DOMAIN = "meshcomm-handover-v1"
BUNDLE_DOMAIN = "meshcomm-trust-bundle-v1"
MAX_TIME_S = 1 << 40
#: Largest encoded hand-over (a 256-byte AoR, two keys, a time and the signature fit).
MAX_HANDOVER_BYTES = 480
#: Largest credential field of a binding: a credential, or a credential and a hand-over.
MAX_TRUST_FIELD_BYTES = limits.MAX_CREDENTIAL_BYTES + MAX_HANDOVER_BYTES + 48
#: Role addresses configured at most, and roles per address.
MAX_ROLE_ADDRESSES = 32
MAX_ROLES_PER_ADDRESS = 8

#: Which credential roles may hold which role addresses (user part -> roles), the default
#: of ``[trust] role_addresses``. The command staff posts need the ``command`` role; the
#: safety officer's address also takes the ``safety`` role.
DEFAULT_ROLE_ADDRESSES: Mapping[str, tuple[str, ...]] = {
    "incident-commander": ("command",),
    "ic": ("command",),
    "ops-chief": ("command",),
    "safety": ("command", "safety"),
}


@dataclass(frozen=True, slots=True)
class Handover:
    """Signed statement: ``aor`` is held by ``new_key`` from ``from_time`` (wall clock)."""

    aor: str
    new_key: bytes
    from_time: int
    signer_key: bytes
    signed_bytes: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return codec.pack([self.signed_bytes, self.signature])


def role_user(aor: str) -> str:
    """The user part of ``sip:user@host`` (lower case), '' when there is none."""
    rest = aor.lower().partition(":")[2]
    return rest.partition("@")[0] if "@" in rest else ""


def roles_for(aor: str, table: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The roles allowed to hold ``aor`` if it is a role address, else None."""
    return table.get(role_user(aor))


def check_role(cred: Credential, aor: str, table: Mapping[str, tuple[str, ...]]) -> None:
    """Raise TrustError when ``aor`` is a role address the credential's role may not hold."""
    allowed = roles_for(aor, table)
    if allowed is not None and cred.role.lower() not in allowed:
        raise TrustError(f"role {cred.role!r} may not hold {aor}", reason="role_scope")


def sign_handover(signer: Identity, *, aor: str, new_key: bytes, from_time: int) -> Handover:
    """Sign a hand-over of ``aor`` to ``new_key`` (by the holder's node or an agency key)."""
    if len(new_key) != 32:
        raise ValueError("new key must be 32 bytes")
    if not 0 < len(aor) <= limits.MAX_AOR_LEN or not 0 <= from_time <= MAX_TIME_S:
        raise ValueError("AoR or time out of range")
    body = codec.pack([HANDOVER_DOMAIN, aor.lower(), new_key, from_time, signer.public_key])
    return Handover(aor.lower(), new_key, from_time, signer.public_key, body, signer.sign(body))


def decode_handover_untrusted(data: bytes) -> Handover:
    """Decode a hand-over's bytes (signature not yet checked)."""
    outer = codec.read_tuple(codec.unpack_untrusted(data, max_bytes=MAX_HANDOVER_BYTES),
                             "handover", 2)
    body = codec.read_bytes(outer[0], "handover.body", max_len=MAX_HANDOVER_BYTES)
    sig = codec.read_bytes(outer[1], "handover.signature", exact=SIGNATURE_LEN)
    fields = codec.read_tuple(codec.unpack_untrusted(body), "handover.fields", 5)
    if fields[0] != HANDOVER_DOMAIN:
        raise DecodeError("not a meshcomm hand-over")
    return Handover(
        aor=codec.read_str(fields[1], "handover.aor", limits.MAX_AOR_LEN).lower(),
        new_key=codec.read_bytes(fields[2], "handover.new_key", exact=32),
        from_time=codec.read_int(fields[3], "handover.from_time", 0, MAX_TIME_S),
        signer_key=codec.read_bytes(fields[4], "handover.signer_key", exact=32),
        signed_bytes=body, signature=sig)


def check_handover(handover: Handover, *, aor: str, new_key: bytes,
                   wall_time_s: float) -> None:
    """Raise TrustError unless the hand-over is well signed, names ``aor`` and ``new_key``
    and is not dated in the future (who may sign is the table's question: it knows the
    current holder)."""
    if handover.aor != aor.lower() or handover.new_key != new_key:
        raise TrustError("hand-over names another AoR or key", reason="bad_handover")
    if handover.from_time > wall_time_s + limits.MAX_FUTURE_SKEW_S:
        raise TrustError("hand-over dated in the future", reason="bad_handover")
    if not verify_signature(handover.signer_key, handover.signed_bytes, handover.signature):
        raise TrustError("hand-over signature invalid", reason="bad_handover")


def verify_handover_bytes(data: bytes, *, aor: str, new_key: bytes, signer_key: bytes,
                          wall_time_s: float) -> Handover:
    """Decode a hand-over's bytes as a node will and check them against what was meant to
    be signed (AoR, new key, signer): the offline tools check a record before writing it.

    Raises DecodeError (malformed) or TrustError (another AoR, key or signer; bad
    signature; dated in the future)."""
    handover = decode_handover_untrusted(data)
    check_handover(handover, aor=aor, new_key=new_key, wall_time_s=wall_time_s)
    if handover.signer_key != signer_key:
        raise TrustError("hand-over signed by another key", reason="bad_handover")
    return handover


def pack_trust_bundle(credential: bytes, handover: Handover | None) -> bytes:
    """A binding's credential field: the credential alone, or with a hand-over."""
    if handover is None:
        return credential
    return codec.pack([BUNDLE_DOMAIN, credential, handover.to_bytes()])


def decode_trust_field_untrusted(data: bytes) -> tuple[Credential, Handover | None]:
    """Split a binding's credential field into the credential and any hand-over."""
    outer = codec.unpack_untrusted(data, max_bytes=MAX_TRUST_FIELD_BYTES)
    if isinstance(outer, list) and len(outer) == 3 and outer[0] == BUNDLE_DOMAIN:
        cred = codec.read_bytes(outer[1], "bundle.credential",
                                max_len=limits.MAX_CREDENTIAL_BYTES)
        handover = codec.read_bytes(outer[2], "bundle.handover", max_len=MAX_HANDOVER_BYTES)
        return decode_credential_untrusted(cred), decode_handover_untrusted(handover)
    return decode_credential_untrusted(data), None


def parse_role_addresses(raw: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """``[trust] role_addresses`` from the profile: user part -> list of roles.

    Raises ValueError on a malformed table (the config layer reports it)."""
    if len(raw) > MAX_ROLE_ADDRESSES:
        raise ValueError(f"at most {MAX_ROLE_ADDRESSES} role addresses")
    table: dict[str, tuple[str, ...]] = {}
    for user, roles in raw.items():
        if not user or "@" in user or ":" in user or len(user) > limits.MAX_AOR_LEN:
            raise ValueError(f"role address {user!r} must be a bare user part")
        if (not isinstance(roles, list | tuple) or not 0 < len(roles) <= MAX_ROLES_PER_ADDRESS
                or not all(isinstance(r, str) and r for r in roles)):
            raise ValueError(f"role address {user!r} needs a list of 1-"
                             f"{MAX_ROLES_PER_ADDRESS} role names")
        table[user.lower()] = tuple(str(r).lower() for r in roles)
    return table


def check_trust_field(data: bytes, *, trusted_agency_keys: frozenset[bytes],
                      role_table: Mapping[str, tuple[str, ...]], device_key: bytes, aor: str,
                      wall_time_s: float) -> tuple[Credential, Handover | None]:
    """Everything a binding's credential field must satisfy on its own: the credential
    chains to a trusted agency, names the device key, covers the AoR (pattern and role)
    and is current; a hand-over, when present, is well signed for this AoR and key.

    Raises TrustError (a malformed field: ``bad_credential``)."""
    try:
        cred, handover = decode_trust_field_untrusted(data)
    except DecodeError as exc:
        raise TrustError(str(exc), reason="bad_credential") from exc
    check_credential(cred, trusted_agency_keys=trusted_agency_keys, device_key=device_key,
                     aor=aor, wall_time_s=wall_time_s)
    check_role(cred, aor, role_table)
    if handover is not None:
        check_handover(handover, aor=aor, new_key=device_key, wall_time_s=wall_time_s)
    return cred, handover
