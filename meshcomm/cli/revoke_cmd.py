"""``meshcomm revoke`` and ``meshcomm add-agency``: signed trust records.

``revoke`` revokes a device key, a credential or an agency key. With ``--agency-key FILE``
it signs offline with that agency key; the record goes to ``--out FILE`` (carried to a
node later: ``meshcomm revoke --record FILE --data-dir DIR``) and/or straight into the
running node of ``--data-dir`` through its control socket, which stores it durably,
enforces it and floods it. Without ``--agency-key`` the running node signs it itself with
its key and its credential, which must have the command role (device and credential
revocations only). ``add-agency`` signs, with a trusted agency key, the addition of a
mutual-aid agency's key.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from meshcomm.diskio import disk_problem, write_atomic
from meshcomm.errors import ConfigError, DecodeError, TrustError
from meshcomm.runtime.control import (
    CONTROL_SOCKET_FILE,
    DEFAULT_CLIENT_TIMEOUT_S,
    ControlCommand,
    ControlError,
    control_request,
)
from meshcomm.security.identity import fingerprint
from meshcomm.security.keystore import read_key_file
from meshcomm.security.revocation import (
    KIND_NAMES,
    MAX_NOTE_LEN,
    TrustKind,
    TrustRecord,
    credential_id,
    decode_trust_record_untrusted,
    make_trust_record,
)

RECORD_FILE_MODE = 0o644


class UsageError(Exception):
    """A bad command-line value; the message is shown to the user."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    revoke = subparsers.add_parser(
        "revoke", help="revoke a device key, a credential or an agency key",
        description=__doc__)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--device-key", metavar="HEX", help="a device's public key")
    target.add_argument("--credential", metavar="FILE", type=Path,
                        help="a credential file (credential.bin)")
    target.add_argument("--credential-id", metavar="HEX",
                        help="a credential's id (SHA-256 of its signed body)")
    target.add_argument("--agency", metavar="HEX", help="an agency public key")
    target.add_argument("--record", metavar="FILE", type=Path,
                        help="a record signed earlier (--out): hand it to the node")
    _common(revoke)
    revoke.set_defaults(handler=run_revoke)
    add = subparsers.add_parser(
        "add-agency", help="sign the addition of a mutual-aid agency key",
        description="Sign, with a trusted agency key, a record adding a mutual-aid "
                    "agency's public key to every node's trusted agency keys.")
    add.add_argument("--key", metavar="HEX", required=True,
                     help="the mutual-aid agency's public key")
    _common(add)
    add.set_defaults(handler=run_add_agency)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agency-key", metavar="FILE", type=Path,
                        help="sign offline with this agency key file")
    parser.add_argument("--incident", help="the incident (required with --agency-key)")
    parser.add_argument("--note", default="", help=f"a short reason (<= {MAX_NOTE_LEN} bytes)")
    parser.add_argument("--out", metavar="FILE", type=Path, help="write the signed record")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="hand the record to the node running with this data dir")
    parser.add_argument("--timeout", metavar="SECONDS", type=float,
                        default=DEFAULT_CLIENT_TIMEOUT_S, dest="timeout_s")


def key32(text: str, option: str) -> bytes:
    """A 32-byte key given as 64 hex digits (UsageError naming ``option`` otherwise)."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"{option}: expected 64 hex digits")
    return key


def _target(args: argparse.Namespace) -> tuple[TrustKind, bytes]:
    if args.device_key is not None:
        return TrustKind.REVOKE_DEVICE, key32(args.device_key, "--device-key")
    if args.credential_id is not None:
        return TrustKind.REVOKE_CREDENTIAL, key32(args.credential_id, "--credential-id")
    if args.credential is not None:
        try:
            return TrustKind.REVOKE_CREDENTIAL, credential_id(args.credential.read_bytes())
        except DecodeError as exc:
            raise UsageError(f"--credential {args.credential}: not a credential ({exc})") \
                from None
    return TrustKind.REVOKE_AGENCY, key32(args.agency, "--agency")


def _sign(args: argparse.Namespace, kind: TrustKind, subject: bytes) -> TrustRecord:
    if not args.incident:
        raise UsageError("--incident is required with --agency-key")
    if len(args.note.encode()) > MAX_NOTE_LEN:
        raise UsageError(f"--note: at most {MAX_NOTE_LEN} bytes")
    agency = read_key_file(args.agency_key)
    return make_trust_record(agency, incident=args.incident, kind=kind, subject=subject,
                             issued_at=int(time.time()), note=args.note)


def _deliver(args: argparse.Namespace, record: TrustRecord | None,
             ask: dict[str, object]) -> int:
    """Write ``--out`` and/or hand the record to the node; print what happened."""
    if record is not None:
        if args.out is not None:
            write_atomic(args.out, record.to_bytes(), mode=RECORD_FILE_MODE, replace=False)
            print(f"wrote {KIND_NAMES[record.kind]} record {record.record_id.hex()} to "
                  f"{args.out} (signer {fingerprint(record.signer)})")
        ask = {"record": record.to_bytes().hex()}
    if args.data_dir is None:
        if record is None:
            raise UsageError("--data-dir is required: the running node signs the record")
        if args.out is None:
            raise UsageError("give --out FILE and/or --data-dir DIR")
        return 0
    reply = control_request(args.data_dir / CONTROL_SOCKET_FILE, ControlCommand.REVOKE,
                            timeout_s=args.timeout_s, **ask)
    described = reply.get("record", {})
    print(f"node: {reply.get('outcome')} ({described.get('kind')} {described.get('id')}, "
          f"{reply.get('records')} trust record(s) held)")
    return 0 if reply.get("outcome") in ("stored", "duplicate") else 1


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run ``body``; a usage, config, decode, control or disk error is one line on stderr
    (``meshcomm COMMAND: ...``) and exit status 1."""
    try:
        return body()
    except (UsageError, ConfigError, DecodeError, TrustError, ControlError) as exc:
        print(f"meshcomm {command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshcomm {command}: {disk_problem(exc, exc.filename or 'file')}",
              file=sys.stderr)
        return 1


def run_revoke(args: argparse.Namespace) -> int:
    return guarded("revoke", lambda: _revoke(args))


def _revoke(args: argparse.Namespace) -> int:
    if args.record is not None:
        record: TrustRecord | None = decode_trust_record_untrusted(args.record.read_bytes())
        return _deliver(args, record, {})
    kind, subject = _target(args)
    if args.agency_key is not None:
        return _deliver(args, _sign(args, kind, subject), {})
    if kind is TrustKind.REVOKE_AGENCY:
        raise UsageError("--agency: agency keys are revoked with --agency-key only")
    if args.out is not None:
        raise UsageError("--out needs --agency-key (a node signs only for itself)")
    ask: dict[str, object] = {"kind": "device" if kind is TrustKind.REVOKE_DEVICE
                              else "credential", "subject": subject.hex(),
                              "note": args.note}
    return _deliver(args, None, ask)


def run_add_agency(args: argparse.Namespace) -> int:
    def body() -> int:
        if args.agency_key is None:
            raise UsageError("--agency-key is required: a trusted agency key signs additions")
        record = _sign(args, TrustKind.ADD_AGENCY, key32(args.key, "--key"))
        return _deliver(args, record, {})
    return guarded("add-agency", body)
