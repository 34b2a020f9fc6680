"""SIP users on disk and the gateway's digest authentication at start-up (issue 12 item 2).

* :func:`auth_required`: digest authentication is on whenever the gateway's SIP listener
  is beyond loopback (a wildcard or any other address), and on loopback only with
  ``[sip] require_auth`` (a softphone on the handset itself keeps zero configuration).
* :class:`SipUsers`: the users ``meshcomm ctl user add`` stores in the data dir
  (``sip-users``, mode 0600, written whole with fsync and an atomic rename, so a crash or
  a full disk leaves the old file or the new one) beside those of ``[sip] users_file``;
  the control socket's ``user`` command adds, removes and lists them while the node runs
  and the gateway's authenticator sees the change at once.

Format and HA1: :mod:`meshcomm.node.gateway.users`; the checks: :mod:`~meshcomm.node.gateway.auth`.
Passwords pass through :meth:`SipUsers.add` (from the local control socket, mode 0600)
and are hashed at once; they are never stored, logged or journaled.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import Counter
from pathlib import Path
from typing import Final

from meshcomm.config import NodeConfig
from meshcomm.diskio import disk_problem, remove_stale_temp_files, write_atomic
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.node.gateway.auth import AuthSettings, DigestAuthenticator, parse_algorithms
from meshcomm.node.gateway.authgate import LocalAuth
from meshcomm.node.gateway.users import (
    MAX_USERS_FILE_BYTES,
    SipUser,
    UserTable,
    decode_users_untrusted,
    encode_users,
    make_user,
    parse_aor,
)
from meshcomm.sip.digest import DigestAlgorithm

log = logging.getLogger(__name__)

#: The users ``ctl user add`` stores, in the data dir.
SIP_USERS_FILE: Final = "sip-users"
SIP_USERS_MODE: Final = 0o600
#: Bytes of the secret that keys nonces (drawn at every start).
NONCE_SECRET_BYTES: Final = 32


def auth_required(listen_host: str, require_auth: bool) -> bool:
    """Whether local clients must authenticate (module docstring)."""
    if require_auth:
        return True
    try:
        return not ipaddress.ip_address(listen_host.strip("[]")).is_loopback
    except ValueError:
        return True


def _read_users(path: Path, what: str) -> list[SipUser]:
    """The users of ``path`` (none when it does not exist); ConfigError naming the file."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_USERS_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(what, disk_problem(exc, path, "reading")) from None
    try:
        return decode_users_untrusted(data, str(path))
    except DecodeError as exc:
        raise ConfigError(what, str(exc)) from None


def load_users_file(cfg: NodeConfig) -> list[SipUser]:
    """The users of ``[sip] users_file`` (none when unset); a missing file is an error."""
    if cfg.sip.users_file is None:
        return []
    path = Path(cfg.sip.users_file).expanduser()
    if not path.exists():
        raise ConfigError("sip.users_file", f"{path} does not exist")
    return _read_users(path, "sip.users_file")


class SipUsers:
    """The node's SIP users: the data dir's store and ``[sip] users_file``."""

    def __init__(self, path: Path, table: UserTable, realm: str,
                 auth: DigestAuthenticator | None) -> None:
        self.path = path
        self.table = table
        self.realm = realm
        #: The gateway's authenticator (None: authentication is off on this listener).
        self.auth = auth

    @classmethod
    def open(cls, cfg: NodeConfig, data_dir: Path, listen_host: str, now: float) -> SipUsers:
        """Read both user sources; build the authenticator when it is required."""
        path = data_dir / SIP_USERS_FILE
        remove_stale_temp_files(path)
        table = UserTable(load_users_file(cfg), _read_users(path, str(path)))
        realm = cfg.sip.auth_realm or cfg.node.domain
        auth = None
        if auth_required(listen_host, cfg.sip.require_auth):
            settings = AuthSettings(realm, parse_algorithms(cfg.sip.auth_algorithms))
            auth = DigestAuthenticator(table, settings, now=now,
                                       secret=secrets.token_bytes(NONCE_SECRET_BYTES))
            stale = sorted(u.aor for u in table if u.realm != realm)
            if stale:
                log.warning("SIP users of another realm than %s cannot authenticate: %s",
                            realm, ", ".join(stale))
            log.info("SIP digest authentication on (%s, realm %s, %s); %d user(s)%s",
                     "required on loopback" if cfg.sip.require_auth else
                     f"listener {listen_host} is beyond loopback", realm,
                     "/".join(a.value for a in settings.algorithms), len(table),
                     "" if len(table) else ": add one with meshcomm ctl user add AOR")
            if DigestAlgorithm.SHA256 in settings.algorithms:
                log.info("clients on libre 1.x (baresip 1.0, Debian 12) and SIPp 3.6 cannot "
                         "answer a SHA-256 challenge: set [sip] auth_algorithms = [\"MD5\"] "
                         "for them (docs/sip-auth.md)")
        return cls(path, table, realm, auth)

    def attach(self, gateway: LocalAuth, counters: Counter[str]) -> None:
        """Authenticate ``gateway``'s local clients (when required), counting in
        ``counters`` (the gateway's)."""
        if self.auth is not None:
            self.auth.counters = counters
            gateway.auth = self.auth

    # ------------------------------------------------------------ control commands
    def add(self, aor_text: str, password: str) -> dict[str, object]:
        """Add or replace the stored user of ``aor_text``; DecodeError for a bad AoR or
        password, or a disk that refuses the write (the table is then unchanged)."""
        user = make_user(aor_text, password, self.realm)
        replaced = self.table.source_of(user.aor) == "store"
        self._write(self.table.with_added(user))
        log.info("SIP user %s %s", user.aor, "replaced" if replaced else "added")
        return {**self.row(user), "replaced": replaced}

    def remove(self, aor_text: str) -> dict[str, object]:
        aor, _user = parse_aor(aor_text)
        self._write(self.table.with_removed(aor))
        log.info("SIP user %s removed", aor)
        return {"aor": aor, "removed": True}

    def rows(self) -> list[dict[str, object]]:
        return [self.row(user) for user in self.table]

    def row(self, user: SipUser) -> dict[str, object]:
        """What ``ctl user list`` shows of a user (never an HA1)."""
        return {"aor": user.aor, "username": user.username, "realm": user.realm,
                "algorithms": [a.value for a in user.algorithms],
                "source": self.table.source_of(user.aor),
                "usable": user.realm == self.realm}

    def status(self) -> dict[str, object]:
        """``ctl status``: on or off, realm, users and the authenticator's tables."""
        base: dict[str, object] = {"required": self.auth is not None, "realm": self.realm,
                                   "users": len(self.table)}
        return base if self.auth is None else {**base, **self.auth.status()}

    def _write(self, users: list[SipUser]) -> None:
        try:
            write_atomic(self.path, encode_users(users), mode=SIP_USERS_MODE, replace=True)
        except OSError as exc:
            raise DecodeError(f"SIP users not changed: {disk_problem(exc, self.path)}") \
                from None
        self.table.replace_stored(users)
