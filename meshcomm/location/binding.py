"""A binding: a signed registration of an AoR to a device (the BINDING envelope).

Payload: ``[aor, contacts, issued_at, lifetime_s, hold_s, caps, credential]``. The envelope
signature covers it and the incident id, so a binding cannot be replayed into another
incident.

Freshness comes from what the origin signed, never from a hop field:

* the sequence number: per (AoR, key) the highest ever accepted wins, and is remembered
  after the binding leaves the table and across restarts (:mod:`.freshness`);
* ``issued_at`` (the signer's wall clock) plus the lifetime (``hold_s`` for a tombstone):
  the *signed end* of the binding. A receiver counts the lifetime from receipt minus the
  age relays report (so clocks need not agree for the normal case), but never past the
  signed end plus :data:`CLOCK_SKEW_TOLERANCE_S` on its own wall clock, and refuses a
  binding whose signed end is further in the past than that. A relay that forges the hop
  ``age`` down to 0 thus cannot extend a binding beyond what the origin signed (give or
  take the tolerance). Device clocks need not agree within that tolerance (a day, the same
  as the future-dating bound); a device whose clock runs slow by more than that has its
  bindings refused. A binding
  dated further than ``limits.MAX_FUTURE_SKEW_S`` ahead is refused too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity
from meshcomm.security.roles import MAX_TRUST_FIELD_BYTES
from meshcomm.types import Aor, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import Envelope, MsgType, seal

RECORD_ID_LEN = 8
MAX_WALL_TIME_S = float(1 << 40)
#: How far our wall clock may be ahead of a signer's: a binding is kept at most until its
#: signed end (issued_at + lifetime) plus this, read on our clock. The same day as the
#: future-dating bound, on purpose: a responder's device whose clock is wrong (a Raspberry Pi
#: without a real-time clock restores its last saved time) must not vanish from the mesh.
#: Replays are stopped by the remembered sequence numbers (:mod:`.freshness`) and by the
#: clock-free cap "first accepted + lifetime"; this bound only limits what a forged hop age
#: can gain on a node that never saw the binding before.
CLOCK_SKEW_TOLERANCE_S = float(limits.MAX_FUTURE_SKEW_S)


def record_id_of(aor: str, key: bytes) -> bytes:
    """Stable id of the (AoR, key) pair a binding belongs to."""
    return hashlib.sha256(aor.lower().encode() + b"\x00" + key).digest()[:RECORD_ID_LEN]


@dataclass(frozen=True, slots=True)
class Binding:
    aor: Aor
    contacts: tuple[str, ...]
    issued_at: float
    lifetime_s: int
    hold_s: int
    caps: tuple[str, ...]
    credential: bytes | None
    envelope: Envelope
    record_id: bytes

    @property
    def key(self) -> bytes:
        return self.envelope.origin_key

    @property
    def node_id(self) -> NodeId:
        return self.envelope.origin

    @property
    def seq(self) -> int:
        return self.envelope.seq

    @property
    def is_tombstone(self) -> bool:
        return self.lifetime_s == 0

    @property
    def life_s(self) -> int:
        """How long the record lasts: the lifetime, or a tombstone's hold."""
        return self.hold_s if self.lifetime_s == 0 else self.lifetime_s

    @property
    def signed_end(self) -> float:
        """Signer's wall-clock time the record ends: ``issued_at + life_s`` (signed)."""
        return self.issued_at + self.life_s


def make_binding(identity: Identity, *, incident: str, seq: int, aor: str,
                 contacts: tuple[str, ...], issued_at: float, lifetime_s: int,
                 hold_s: int = 0, caps: tuple[str, ...] = (),
                 credential: bytes | None = None) -> Binding:
    """Sign a new binding (``lifetime_s=0`` is a de-registration holding for ``hold_s``)."""
    payload = [aor, list(contacts), float(issued_at), lifetime_s, hold_s, list(caps), credential]
    env = seal(identity, MsgType.BINDING, incident, seq, payload)
    return binding_from_envelope_untrusted(env)


def binding_from_envelope_untrusted(env: Envelope) -> Binding:
    """Validate a BINDING envelope's payload (the signature is checked by the caller)."""
    if env.msg_type is not MsgType.BINDING:
        raise DecodeError("not a binding envelope")
    fields = codec.read_tuple(env.payload, "binding", 7)
    aor = codec.read_str(fields[0], "binding.aor", limits.MAX_AOR_LEN)
    if not aor.startswith(("sip:", "sips:")) or "@" not in aor:
        raise DecodeError(f"binding AoR {aor!r} is not a sip: address", reason="bad_aor")
    lifetime_s = codec.read_int(fields[3], "binding.lifetime_s", 0, limits.MAX_LIFETIME_S)
    credential = fields[6]
    if credential is not None:
        credential = codec.read_bytes(credential, "binding.credential",
                                      max_len=MAX_TRUST_FIELD_BYTES)
    return Binding(
        aor=Aor(aor),
        contacts=codec.read_str_list(fields[1], "binding.contacts", limits.MAX_CONTACTS,
                                     limits.MAX_CONTACT_LEN),
        issued_at=codec.read_float(fields[2], "binding.issued_at", 0.0, MAX_WALL_TIME_S),
        lifetime_s=lifetime_s,
        hold_s=codec.read_int(fields[4], "binding.hold_s", 0, limits.MAX_LIFETIME_S),
        caps=codec.read_str_list(fields[5], "binding.caps", limits.MAX_CAPS, limits.MAX_CAP_LEN),
        credential=credential,
        envelope=env,
        record_id=record_id_of(aor, env.origin_key),
    )
