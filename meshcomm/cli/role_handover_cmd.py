"""``meshcomm handover``: an agency reassigns a role address offline (issue 12.3).

When the holder of ``sip:ops-chief@fire.example`` cannot sign the hand-over itself (its
handset is lost or broken), the agency does, with its key file::

    meshcomm handover --agency-key agency.key --role sip:ops-chief@fire.example \\
        --to <new holder's public key | its credential.bin> --out ops-chief.handover

and the new holder's node takes it (now, or later from the file)::

    meshcomm handover --record ops-chief.handover --data-dir <new holder's data dir>

(or ``--data-dir`` straight away instead of / besides ``--out``). A hand-over is not a
trust record of its own: the new holder's node keeps it (``handovers.bin``, across
restarts) and carries it inside its bindings of the address; every node checks the
agency signature and moves the address to the new holder (``ctl who``: "handed over").
The record is decoded and verified, as a node will, before it is written or sent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from meshcomm.cli.revoke_cmd import RECORD_FILE_MODE, UsageError, guarded, key32
from meshcomm.config import load_config
from meshcomm.diskio import write_atomic
from meshcomm.errors import DecodeError, TrustError
from meshcomm.runtime.control import (
    CONTROL_SOCKET_FILE,
    DEFAULT_CLIENT_TIMEOUT_S,
    ControlCommand,
    control_request,
)
from meshcomm.security.credentials import (
    Credential,
    check_credential,
    decode_credential_untrusted,
)
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import read_key_file
from meshcomm.security.roles import (
    DEFAULT_ROLE_ADDRESSES,
    MAX_HANDOVER_BYTES,
    Handover,
    check_role,
    decode_handover_untrusted,
    role_user,
    roles_for,
    sign_handover,
    verify_handover_bytes,
)
from meshcomm.wire import limits

KEY_HEX_CHARS = 64
#: The wall clock the hand-over is dated by (a test sets a simulated network's).
wall_clock: Callable[[], float] = time.time


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "handover", help="sign, with an agency key, the hand-over of a role address",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--agency-key", metavar="FILE", type=Path,
                      help="sign offline with this agency key file")
    what.add_argument("--record", metavar="FILE", type=Path,
                      help="a hand-over signed earlier (--out): give it to the node")
    parser.add_argument("--role", metavar="AOR", help="the role address, e.g. "
                        "sip:ops-chief@fire.example (with --agency-key)")
    parser.add_argument("--to", metavar="KEYHEX|FILE",
                        help="the new holder: its device public key (ctl status) or its "
                             "credential file (then checked to cover the role)")
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="the field config: its [trust] role_addresses and agency_keys "
                             "(default: the built-in role addresses)")
    parser.add_argument("--out", metavar="FILE", type=Path, help="write the signed hand-over")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="give it to the new holder's node running with this data dir")
    parser.add_argument("--timeout", metavar="SECONDS", type=float,
                        default=DEFAULT_CLIENT_TIMEOUT_S, dest="timeout_s")
    parser.set_defaults(handler=run_handover)


def run_handover(args: argparse.Namespace) -> int:
    return guarded("handover", lambda: _handover(args))


def _handover(args: argparse.Namespace) -> int:
    if args.out is None and args.data_dir is None:
        raise UsageError("give --out FILE and/or --data-dir DIR (the new holder's node)")
    if args.record is not None:
        if args.out is not None or args.role or args.to:
            raise UsageError("--record goes with --data-dir only")
        return _send(args, decode_handover_untrusted(_read_record(args.record)))
    if not args.role or not args.to:
        raise UsageError("--role and --to are required with --agency-key")
    table, trusted = _profile(args.config)
    aor = role_aor(args.role, table)
    agency = read_key_file(args.agency_key)
    new_key = _new_holder(args.to, aor, table, trusted | {agency.public_key})
    handover = sign_agency_handover(agency, aor=aor, new_key=new_key, now=wall_clock())
    if args.out is not None:
        write_atomic(args.out, handover.to_bytes(), mode=RECORD_FILE_MODE, replace=False)
        print(f"wrote hand-over of {aor} to key {fingerprint(new_key)} from "
              f"{handover.from_time} to {args.out} (signer {fingerprint(agency.public_key)})")
    return _send(args, handover) if args.data_dir is not None else 0


def sign_agency_handover(agency: Identity, *, aor: str, new_key: bytes,
                         now: float) -> Handover:
    """Sign the hand-over of ``aor`` to ``new_key`` from ``now`` and check its bytes as a
    node will (TrustError or DecodeError if they do not hold)."""
    signed = sign_handover(agency, aor=aor, new_key=new_key, from_time=int(now))
    return verify_handover_bytes(signed.to_bytes(), aor=aor, new_key=new_key,
                                 signer_key=agency.public_key, wall_time_s=now)


def role_aor(text: str, table: dict[str, tuple[str, ...]]) -> str:
    """``text`` as a role address of ``table`` (``sip:`` added, lower case); UsageError
    for a malformed address or one that is no role address."""
    aor = text.strip().lower()
    if not aor.startswith(("sip:", "sips:")):
        aor = f"sip:{aor}"
    user, _, host = aor.partition(":")[2].partition("@")
    if not user or not host or len(aor) > limits.MAX_AOR_LEN or any(c in aor for c in " ;<>"):
        raise UsageError(f"--role {text!r}: expected an address like sip:ops-chief@DOMAIN")
    if roles_for(aor, table) is None:
        raise UsageError(f"--role {text!r}: {role_user(aor)!r} is no role address "
                         f"(role addresses: {', '.join(sorted(table))})")
    return aor


def _profile(path: Path | None) -> tuple[dict[str, tuple[str, ...]], frozenset[bytes]]:
    if path is None:
        return dict(DEFAULT_ROLE_ADDRESSES), frozenset()
    trust = load_config(path).trust
    return trust.role_table(), frozenset(bytes.fromhex(k) for k in trust.agency_keys)


def _new_holder(text: str, aor: str, table: dict[str, tuple[str, ...]],
                trusted: frozenset[bytes]) -> bytes:
    """The new holder's key: 64 hex digits, or a credential file that must cover ``aor``
    (pattern, role, not expired, issued by a trusted agency)."""
    if len(text) == KEY_HEX_CHARS and not Path(text).exists():
        return key32(text, "--to")
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--to {text!r}: neither a public key of {KEY_HEX_CHARS} hex digits "
                         f"nor a credential file")
    try:
        cred = decode_credential_untrusted(path.read_bytes())
    except DecodeError as exc:
        raise UsageError(f"--to {path}: not a credential ({exc})") from None
    _check_credential(cred, aor, table, trusted, path)
    return cred.device_key


def _check_credential(cred: Credential, aor: str, table: dict[str, tuple[str, ...]],
                      trusted: frozenset[bytes], path: Path) -> None:
    try:
        check_credential(cred, trusted_agency_keys=trusted, device_key=cred.device_key,
                         aor=aor, wall_time_s=wall_clock())
        check_role(cred, aor, table)
    except TrustError as exc:
        hint = (" (not --agency-key's agency; give --config with its agency_keys)"
                if exc.reason == "untrusted_agency" else "")
        raise UsageError(f"--to {path}: {exc}{hint}") from None


def _read_record(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) > MAX_HANDOVER_BYTES:
        raise UsageError(f"--record {path}: larger than a hand-over ({MAX_HANDOVER_BYTES} B)")
    return data


def _send(args: argparse.Namespace, handover: Handover) -> int:
    """Give the hand-over to the new holder's node (it refuses one naming another key)."""
    reply = control_request(args.data_dir / CONTROL_SOCKET_FILE, ControlCommand.HANDOVER,
                            timeout_s=args.timeout_s, action="accept",
                            handover=handover.to_bytes().hex())
    print(f"node: accepted {reply.get('accepted')} from {reply.get('from_time')} "
          f"(signer {fingerprint(handover.signer_key)}); its bindings of the address "
          f"carry the hand-over from now on")
    return 0
