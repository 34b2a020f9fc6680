"""Agency credentials: an agency key vouches for a device key and the AoRs it may claim.

A credential is issued offline (``meshcomm enroll``) and carried inside a device's
bindings. Under the ``agency`` trust policy a binding is accepted only if its credential
is signed by one of the trusted agency keys, names the binding's signing key, matches the
binding's AoR, and has not expired.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcomm.errors import DecodeError, TrustError
from meshcomm.security.identity import Identity, verify_signature
from meshcomm.types import SIGNATURE_LEN
from meshcomm.wire import codec, limits

CREDENTIAL_DOMAIN = "meshcomm-credential-v1"
MAX_ROLE_LEN = 32
MAX_PATTERN_LEN = limits.MAX_AOR_LEN
MAX_TIME_S = 1 << 40


@dataclass(frozen=True, slots=True)
class Credential:
    agency_key: bytes
    aor_pattern: str
    role: str
    device_key: bytes
    issued_at: int
    expires_at: int
    signed_bytes: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return codec.pack([self.signed_bytes, self.signature])


def aor_matches(pattern: str, aor: str) -> bool:
    """Match an AoR against a pattern: exact, or ``*`` standing for the user part only."""
    if "*" not in pattern:
        return pattern.lower() == aor.lower()
    prefix, _, suffix = pattern.lower().partition("*")
    low = aor.lower()
    if not (low.startswith(prefix) and low.endswith(suffix)):
        return False
    middle = low[len(prefix):len(low) - len(suffix)] if suffix else low[len(prefix):]
    return len(low) >= len(prefix) + len(suffix) and "@" not in middle and ":" not in middle


def issue_credential(agency: Identity, *, aor_pattern: str, role: str, device_key: bytes,
                     issued_at: int, expires_at: int) -> Credential:
    """Sign a credential with an agency identity (offline, before deployment)."""
    if len(device_key) != 32:
        raise ValueError("device key must be 32 bytes")
    if not 0 < len(aor_pattern) <= MAX_PATTERN_LEN or aor_pattern.count("*") > 1:
        raise ValueError("AoR pattern must be non-empty, at most one '*'")
    if expires_at <= issued_at:
        raise ValueError("expiry must be after issue time")
    if len(role) > MAX_ROLE_LEN:
        raise ValueError(f"role longer than {MAX_ROLE_LEN}")
    body = codec.pack([CREDENTIAL_DOMAIN, agency.public_key, aor_pattern, role, device_key,
                       issued_at, expires_at])
    return Credential(agency.public_key, aor_pattern, role, device_key, issued_at, expires_at,
                      body, agency.sign(body))


def decode_credential_untrusted(data: bytes) -> Credential:
    """Decode a credential's bytes (signature not yet checked)."""
    outer = codec.read_tuple(codec.unpack_untrusted(data, max_bytes=limits.MAX_CREDENTIAL_BYTES),
                             "credential", 2)
    body = codec.read_bytes(outer[0], "credential.body", max_len=limits.MAX_CREDENTIAL_BYTES)
    sig = codec.read_bytes(outer[1], "credential.signature", exact=SIGNATURE_LEN)
    fields = codec.read_tuple(codec.unpack_untrusted(body), "credential.fields", 7)
    if fields[0] != CREDENTIAL_DOMAIN:
        raise DecodeError("not a meshcomm credential")
    return Credential(
        agency_key=codec.read_bytes(fields[1], "agency_key", exact=32),
        aor_pattern=codec.read_str(fields[2], "aor_pattern", MAX_PATTERN_LEN),
        role=codec.read_str(fields[3], "role", MAX_ROLE_LEN),
        device_key=codec.read_bytes(fields[4], "device_key", exact=32),
        issued_at=codec.read_int(fields[5], "issued_at", 0, MAX_TIME_S),
        expires_at=codec.read_int(fields[6], "expires_at", 0, MAX_TIME_S),
        signed_bytes=body, signature=sig,
    )


def check_credential(cred: Credential, *, trusted_agency_keys: frozenset[bytes],
                     device_key: bytes, aor: str, wall_time_s: float) -> None:
    """Raise TrustError unless ``cred`` authorises ``device_key`` to claim ``aor`` now."""
    if cred.agency_key not in trusted_agency_keys:
        raise TrustError("credential from an untrusted agency", reason="untrusted_agency")
    if not verify_signature(cred.agency_key, cred.signed_bytes, cred.signature):
        raise TrustError("credential signature invalid", reason="bad_credential")
    if cred.device_key != device_key:
        raise TrustError("credential names another device key", reason="bad_credential")
    if not aor_matches(cred.aor_pattern, aor):
        raise TrustError(f"credential does not cover {aor}", reason="credential_scope")
    if wall_time_s > cred.expires_at:
        raise TrustError("credential expired", reason="credential_expired")
