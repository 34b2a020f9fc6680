"""``meshcomm keygen`` (a new agency key) and ``meshcomm enroll`` (sign a device credential).

Both run offline, before deployment. The wall clock is read here, never in the cores. Each
command stores its handler as ``handler`` in the parsed namespace.
"""

from __future__ import annotations

import argparse
import datetime
import re
import secrets
import sys
import time
from pathlib import Path

from meshcomm.diskio import disk_problem
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.security.credentials import (
    MAX_PATTERN_LEN,
    MAX_ROLE_LEN,
    MAX_TIME_S,
    Credential,
    decode_credential_untrusted,
    issue_credential,
)
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    IDENTITY_FILE,
    read_key_file,
    write_credential_file,
    write_key_file,
)
from meshcomm.wire import limits

DEFAULT_EXPIRES = "30d"
_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
#: Longest credential validity accepted (ten years).
MAX_VALIDITY_S = 10 * 366 * 86400
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_USER_RE = re.compile(r"[A-Za-z0-9._~*-]+")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class UsageError(Exception):
    """A bad command-line value; the message is shown to the user."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keygen`` and ``enroll`` commands."""
    keygen = subparsers.add_parser(
        "keygen", help="create an agency signing key",
        description="Create a new agency key file (mode 0600; never overwrites) and print its "
                    "public key, to list under [trust] agency_keys.")
    keygen.add_argument("--out", metavar="FILE", type=Path, required=True)
    keygen.set_defaults(handler=run_keygen)

    enroll = subparsers.add_parser(
        "enroll", help="issue a device credential with an agency key",
        description="Sign a credential allowing one device key to register an AoR (or an "
                    "AoR pattern such as sip:*@fire.example) in a role, until it expires.")
    enroll.add_argument("--agency-key", metavar="FILE", type=Path, required=True)
    enroll.add_argument("--aor", metavar="PATTERN", required=True,
                        help="sip:user@domain, or '*' for the user part: sip:*@domain")
    enroll.add_argument("--role", required=True, help="e.g. medic, engine-3, command")
    device = enroll.add_mutually_exclusive_group(required=True)
    device.add_argument("--device-key", metavar="HEX", help="the device's public key")
    device.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="the device's data dir (reads its identity; writes "
                             f"{CREDENTIAL_FILE} there unless --out is given)")
    enroll.add_argument("--expires", metavar="DURATION", default=DEFAULT_EXPIRES,
                        help="validity like 12h, 30d, 2w (default %(default)s)")
    enroll.add_argument("--out", metavar="FILE", type=Path)
    enroll.set_defaults(handler=run_enroll)


# --------------------------------------------------------------------------- keygen
def run_keygen(args: argparse.Namespace) -> int:
    path: Path = args.out
    identity = Identity(secrets.token_bytes(32))
    try:
        write_key_file(path, identity, replace_incomplete=True)
    except FileExistsError:
        print(f"meshcomm keygen: {path} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshcomm keygen: {disk_problem(exc, path)}", file=sys.stderr)
        return 1
    print(identity.public_key.hex())
    print(f"wrote agency key {path} (mode 0600, fingerprint {fingerprint(identity.public_key)});"
          " keep it offline and list the public key above under [trust] agency_keys",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- enroll
def parse_duration_s(text: str) -> int:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` (or several: ``1d12h``) -> seconds."""
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"--expires {text!r}: expected a duration like 12h, 30d or 2w")
    total = sum(int(n) * _DURATION_UNITS_S[u] for n, u in parts)
    if not 0 < total <= MAX_VALIDITY_S:
        raise UsageError(f"--expires {text!r}: must be between 1s and 10 years")
    return total


def check_aor_pattern(pattern: str) -> None:
    """sip:user@domain or sips:..., with at most one '*', only in the user part."""
    scheme, colon, rest = pattern.partition(":")
    user, at, domain = rest.rpartition("@")
    ok = (scheme in ("sip", "sips") and bool(colon) and bool(at)
          and _USER_RE.fullmatch(user) is not None and _DOMAIN_RE.fullmatch(domain) is not None
          and pattern.count("*") <= 1 and len(pattern) <= MAX_PATTERN_LEN)
    if not ok:
        raise UsageError(f"--aor {pattern!r}: expected sip:user@domain or sip:*@domain "
                         f"(one '*' at most, in the user part; up to {MAX_PATTERN_LEN} chars)")


def _device_key(args: argparse.Namespace) -> bytes:
    if args.device_key is not None:
        try:
            key = bytes.fromhex(args.device_key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError("--device-key: expected 64 hex digits (a device public key)")
        return key
    path = Path(args.data_dir) / IDENTITY_FILE
    if not path.exists():
        raise UsageError(f"{path} does not exist: start the device once with this data dir "
                         "to create its identity, or give --device-key")
    return bytes(read_key_file(path).public_key)


def _write_credential(path: Path, data: bytes) -> bool:
    """Write atomically; replace only an existing credential file (or an empty one, left
    by an interrupted write). Return True if a credential was replaced."""
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        existing = b""
    except OSError as exc:
        raise UsageError(f"{path} exists and cannot be read; refusing to overwrite it") \
            from exc
    if existing:
        try:
            decode_credential_untrusted(existing)
        except DecodeError as exc:
            raise UsageError(f"{path} exists and is not a credential; refusing to overwrite "
                             "it") from exc
    write_credential_file(path, data)
    return bool(existing)


def _utc(epoch_s: int) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _issue(args: argparse.Namespace, now_s: int) -> Credential:
    check_aor_pattern(args.aor)
    if not (len(args.role) <= MAX_ROLE_LEN and _ROLE_RE.fullmatch(args.role)):
        raise UsageError(f"--role {args.role!r}: 1-{MAX_ROLE_LEN} letters, digits or ._-")
    expires_s = parse_duration_s(args.expires)
    if args.out is None and args.data_dir is None:
        raise UsageError("--out FILE is required with --device-key")
    agency = read_key_file(args.agency_key)
    device_key = _device_key(args)
    cred = issue_credential(agency, aor_pattern=args.aor, role=args.role,
                            device_key=device_key, issued_at=now_s,
                            expires_at=min(now_s + expires_s, MAX_TIME_S))
    if len(cred.to_bytes()) > limits.MAX_CREDENTIAL_BYTES:
        raise UsageError(f"the credential exceeds {limits.MAX_CREDENTIAL_BYTES} bytes; "
                         "shorten the AoR pattern or role")
    return cred


def run_enroll(args: argparse.Namespace) -> int:
    now_s = int(time.time())  # the CLI reads the wall clock; the cores never do
    try:
        cred = _issue(args, now_s)
        out = args.out if args.out is not None else Path(args.data_dir) / CREDENTIAL_FILE
        replaced = _write_credential(out, cred.to_bytes())
    except (UsageError, ConfigError) as exc:
        print(f"meshcomm enroll: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshcomm enroll: {disk_problem(exc, exc.filename or 'credential')}",
              file=sys.stderr)
        return 1
    print(f"credential {'replaced' if replaced else 'written'}: {out}")
    print(f"  aor      {cred.aor_pattern}")
    print(f"  role     {cred.role}")
    print(f"  device   {cred.device_key.hex()} (fingerprint {fingerprint(cred.device_key)})")
    print(f"  agency   {fingerprint(cred.agency_key)}")
    print(f"  valid    {_utc(cred.issued_at)} .. {_utc(cred.expires_at)}")
    return 0
