"""Control commands of the trust records: ``ctl status`` section and ``revoke``.

``revoke`` takes either ``{"record": HEX}`` (a record signed elsewhere, e.g. offline by
``meshcomm revoke --agency-key``), or ``{"kind": "device" | "credential", "subject": HEX,
"note": TEXT}``: the node signs the revocation itself with its key and its credential,
which must have a command role. The record is stored durably before the reply (the
store's write is synchronous), enforced and flooded; the reply says whether it was stored
(``stored``), already known (``duplicate``) or refused (the reason).
"""

from __future__ import annotations

import time
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.overlay.trustsync import TrustSync
from meshcomm.runtime.control import ControlRequest
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.credentials import decode_credential_untrusted
from meshcomm.security.revocation import (
    COMMAND_ROLES,
    MAX_NOTE_LEN,
    MAX_RECORD_BYTES,
    SUBJECT_LEN,
    TrustKind,
    TrustRecord,
    decode_trust_record_untrusted,
    make_trust_record,
)

#: ``kind`` values a node may sign itself (agency keys are revoked or added offline).
SELF_SIGNED_KINDS: Final = {"device": TrustKind.REVOKE_DEVICE,
                            "credential": TrustKind.REVOKE_CREDENTIAL}


def trust_of(driver: NodeDriver) -> TrustSync:
    return driver.node.overlay.trust


def trust_status(driver: NodeDriver) -> dict[str, object]:
    """``ctl status`` section: counts and the latest records."""
    return trust_of(driver).status()


def _hex_arg(request: ControlRequest, name: str, max_bytes: int) -> bytes:
    value = request.args.get(name)
    if not isinstance(value, str) or len(value) > 2 * max_bytes:
        raise DecodeError(f'"{name}" must be a hex string of at most {max_bytes} bytes')
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError(f'"{name}" is not hex') from None


def _self_signed(driver: NodeDriver, request: ControlRequest) -> TrustRecord:
    kind = SELF_SIGNED_KINDS.get(str(request.args.get("kind")))
    if kind is None:
        raise DecodeError('"kind" must be device or credential (or give "record")')
    subject = _hex_arg(request, "subject", SUBJECT_LEN)
    if len(subject) != SUBJECT_LEN:
        raise DecodeError(f'"subject" must be {SUBJECT_LEN} bytes (64 hex digits)')
    note = request.args.get("note", "")
    if not isinstance(note, str) or len(note.encode()) > MAX_NOTE_LEN:
        raise DecodeError(f'"note" must be text of at most {MAX_NOTE_LEN} bytes')
    node = driver.node
    if node.credential is None:
        raise DecodeError("this node has no credential: only a command-role node signs "
                          "revocations (or give a record signed with an agency key)")
    cred = decode_credential_untrusted(node.credential)
    if cred.role not in COMMAND_ROLES:
        raise DecodeError(f"this node's credential has role {cred.role!r}, not command")
    return make_trust_record(node.identity, incident=node.settings.incident, kind=kind,
                             subject=subject, issued_at=int(time.time()), note=note,
                             credential=node.credential)


def revoke(driver: NodeDriver, request: ControlRequest) -> object:
    """``ctl revoke`` (see the module docstring)."""
    if "record" in request.args:
        record = decode_trust_record_untrusted(_hex_arg(request, "record", MAX_RECORD_BYTES))
    else:
        record = _self_signed(driver, request)
    trust = trust_of(driver)
    now = driver.now()
    outcome = driver.pump_.command(now, lambda: trust.originate(record, now))
    return {"outcome": "stored" if outcome is None else str(outcome),
            "record": record.describe(), "records": len(trust.store)}
