"""SIP users of the local gateway: digest credentials per AoR (issue 12 item 2), sans-IO.

A user is an AoR (``sip:alice@incident.local``), the digest username (the AoR's user
part, as written when the user was added), the realm, and one HA1 per algorithm
(RFC 7616 §3.4.2: ``H(username:realm:password)``; RFC 8760 §2 for SHA-256). The gateway
never holds a password: HA1 is all the server side of digest needs. HA1 is salted by the
username and realm, but it is *password-equivalent within its realm* (whoever holds it can
answer challenges of that realm), so files holding it are mode 0600 and never journaled.

The text format (one user per line, ``#`` comments, fields separated by blanks)::

    # meshcomm sip users v1
    sip:alice@incident.local alice incident.local MD5:<32 hex> SHA-256:<64 hex>

is the same for the store ``meshcomm ctl user add`` keeps in the data dir
(:mod:`meshcomm.runtime.sipusers`) and for a pre-provisioned ``[sip] users_file``
(lines printed by ``meshcomm ctl user hash``). :func:`decode_users_untrusted` reads it
with hard bounds and raises only :class:`~meshcomm.errors.DecodeError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.sip.digest import DigestAlgorithm

#: Users one table (store plus users file) holds at most.
MAX_SIP_USERS: Final = 4096
#: Longest line of a users file; longest file.
MAX_USER_LINE_CHARS: Final = 1024
MAX_USERS_FILE_BYTES: Final = MAX_SIP_USERS * MAX_USER_LINE_CHARS
#: Longest password accepted by ``ctl user add`` (characters).
MAX_PASSWORD_CHARS: Final = 256
#: Longest AoR, username and realm.
MAX_AOR_CHARS: Final = 256
MAX_USERNAME_CHARS: Final = 64
MAX_REALM_CHARS: Final = 253
#: The first line of a file written by this module.
USERS_FILE_HEADER: Final = "# meshcomm sip users v1"
#: Algorithms a user's HA1 is kept for (RFC 8760 SHA-256, and MD5 for older clients).
STORED_ALGORITHMS: Final = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
#: Hex digits of an HA1 per hash.
HA1_HEX_CHARS: Final = {"md5": 32, "sha256": 64}

_AOR_RE: Final = re.compile(r"sips?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64})@"
                            r"([A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])")
_REALM_RE: Final = re.compile(r"[A-Za-z0-9.\-_:\[\]]{1,253}")
_HEX_RE: Final = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class SipUser:
    """One user: AoR (lowercased, the table key), digest username, realm, HA1s."""

    aor: str
    username: str
    realm: str
    ha1s: tuple[tuple[DigestAlgorithm, str], ...]

    def ha1(self, algorithm: DigestAlgorithm) -> str | None:
        for alg, value in self.ha1s:
            if alg is algorithm:
                return value
        return None

    @property
    def algorithms(self) -> tuple[DigestAlgorithm, ...]:
        return tuple(alg for alg, _ in self.ha1s)


def ha1_of(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """RFC 7616 §3.4.2 HA1 = H(username ":" realm ":" password), lower-case hex."""
    data = f"{username}:{realm}:{password}".encode()
    return hashlib.new(algorithm.hash_name, data).hexdigest()


def parse_aor(text: str) -> tuple[str, str]:
    """``sip:user@host`` -> (the AoR lowercased, the user part as written); DecodeError
    for anything else (no display name, port, parameters or headers)."""
    text = text.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = "sip:" + text
    match = _AOR_RE.fullmatch(text)
    if match is None or len(text) > MAX_AOR_CHARS:
        raise DecodeError(f"{text[:80]!r} is not an AoR like sip:alice@incident.local")
    return text.lower(), match.group(1)


def check_realm(realm: str) -> str:
    if not _REALM_RE.fullmatch(realm):
        raise DecodeError(f"{realm[:80]!r} is not a realm (a domain like incident.local)")
    return realm


def check_password(password: str) -> str:
    """A password ``ctl user add`` accepts: 1..MAX_PASSWORD_CHARS characters, no line
    breaks or other control characters (they cannot be typed into a softphone)."""
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise DecodeError(f"the password must have 1..{MAX_PASSWORD_CHARS} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in password):
        raise DecodeError("the password must not contain control characters")
    return password


def make_user(aor_text: str, password: str, realm: str) -> SipUser:
    """The user of ``aor_text`` with HA1s for every stored algorithm."""
    aor, username = parse_aor(aor_text)
    check_realm(realm)
    check_password(password)
    return SipUser(aor, username, realm, tuple(
        (alg, ha1_of(alg, username, realm, password)) for alg in STORED_ALGORITHMS))


# ---------------------------------------------------------------------------- format
def format_user(user: SipUser) -> str:
    """One line of the users file."""
    ha1s = " ".join(f"{alg.value}:{value}" for alg, value in user.ha1s)
    return f"{user.aor} {user.username} {user.realm} {ha1s}"


def encode_users(users: Iterable[SipUser]) -> bytes:
    lines = [USERS_FILE_HEADER, *(format_user(u) for u in sorted(users, key=lambda u: u.aor))]
    return ("\n".join(lines) + "\n").encode()


def _ha1_untrusted(field: str) -> tuple[DigestAlgorithm, str]:
    name, sep, value = field.partition(":")
    algorithm = {a.value.lower(): a for a in STORED_ALGORITHMS}.get(name.lower())
    if not sep or algorithm is None:
        raise DecodeError(f"{field[:40]!r}: expected MD5:<hex> or SHA-256:<hex>")
    value = value.lower()
    if len(value) != HA1_HEX_CHARS[algorithm.hash_name] or not _HEX_RE.fullmatch(value):
        raise DecodeError(f"{algorithm.value} HA1 must be "
                          f"{HA1_HEX_CHARS[algorithm.hash_name]} hex digits")
    return algorithm, value


def parse_user_line_untrusted(line: str) -> SipUser:
    """One non-comment line: ``AOR USERNAME REALM ALG:HA1 [ALG:HA1]``."""
    fields = line.split()
    if not 4 <= len(fields) <= 3 + len(STORED_ALGORITHMS):
        raise DecodeError("expected AOR USERNAME REALM ALG:HA1 [ALG:HA1]")
    aor, user_part = parse_aor(fields[0])
    username, realm = fields[1], check_realm(fields[2])
    if username != user_part or len(username) > MAX_USERNAME_CHARS:
        raise DecodeError(f"username {username[:40]!r} is not the AoR's user part")
    ha1s = tuple(_ha1_untrusted(field) for field in fields[3:])
    if len({alg for alg, _ in ha1s}) != len(ha1s):
        raise DecodeError("an algorithm is listed twice")
    return SipUser(aor, username, realm, ha1s)


def decode_users_untrusted(data: bytes, source: str) -> list[SipUser]:
    """Every user of a users file; DecodeError naming ``source`` and the line number."""
    if len(data) > MAX_USERS_FILE_BYTES:
        raise DecodeError(f"{source}: larger than {MAX_USERS_FILE_BYTES} bytes",
                          reason="oversize")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{source}: not UTF-8 text") from None
    users: dict[str, SipUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_USER_LINE_CHARS:
            raise DecodeError(f"{source}:{number}: line too long", reason="oversize")
        try:
            user = parse_user_line_untrusted(line)
        except DecodeError as exc:
            raise DecodeError(f"{source}:{number}: {exc}") from None
        if user.aor in users:
            raise DecodeError(f"{source}:{number}: {user.aor} is listed twice")
        users[user.aor] = user
        if len(users) > MAX_SIP_USERS:
            raise DecodeError(f"{source}: more than {MAX_SIP_USERS} users", reason="oversize")
    return list(users.values())


# ---------------------------------------------------------------------------- table
class UserTable:
    """The users the gateway authenticates: those of ``[sip] users_file`` (fixed while
    the node runs) and those ``ctl user add`` stored (changed through :meth:`add` and
    :meth:`remove`); a stored user overrides a file user of the same AoR."""

    def __init__(self, file_users: Iterable[SipUser] = (),
                 stored: Iterable[SipUser] = ()) -> None:
        self._file = {u.aor: u for u in file_users}
        self._stored = {u.aor: u for u in stored}
        self._merged: dict[str, SipUser] = {}
        self._merge()

    def _merge(self) -> None:
        self._merged = {**self._file, **self._stored}

    def get(self, aor: str) -> SipUser | None:
        """The user of ``aor`` (lowercased by the caller), or None."""
        return self._merged.get(aor)

    def __len__(self) -> int:
        return len(self._merged)

    def __iter__(self) -> Iterator[SipUser]:
        return iter(sorted(self._merged.values(), key=lambda u: u.aor))

    def source_of(self, aor: str) -> str:
        """``store`` (ctl user add), ``users_file`` or ``""`` (unknown)."""
        return "store" if aor in self._stored else "users_file" if aor in self._file else ""

    def stored(self) -> list[SipUser]:
        """The users ``ctl user add`` stored (what the data dir's file holds)."""
        return list(self._stored.values())

    def with_added(self, user: SipUser) -> list[SipUser]:
        """The stored users once ``user`` is added (for writing before :meth:`add`);
        DecodeError when the table would exceed :data:`MAX_SIP_USERS`."""
        if user.aor not in self._merged and len(self._merged) >= MAX_SIP_USERS:
            raise DecodeError(f"at most {MAX_SIP_USERS} SIP users")
        return [*(u for u in self._stored.values() if u.aor != user.aor), user]

    def with_removed(self, aor: str) -> list[SipUser]:
        """The stored users once ``aor`` is removed; DecodeError if it is not stored."""
        if aor not in self._stored:
            where = " (it is in [sip] users_file: edit that file)" if aor in self._file else ""
            raise DecodeError(f"no stored SIP user {aor}{where}")
        return [u for u in self._stored.values() if u.aor != aor]

    def replace_stored(self, users: Iterable[SipUser]) -> None:
        """Take ``users`` as the stored users (after they were written durably)."""
        self._stored = {u.aor: u for u in users}
        self._merge()
