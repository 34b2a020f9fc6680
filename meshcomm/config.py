"""Node configuration: frozen, validated dataclasses loaded from TOML (ARCHITECTURE.md rule 8).

A field config has the sections ``[node]``, ``[trust]``, ``[overlay]``, ``[radio]``,
``[journal]``, ``[relay]``, ``[sip]``, ``[media]``, ``[uplink]`` and ``[upstream]``; every key
is optional
and falls back to the defaults below.
One generic, type-hint driven loader turns a TOML mapping into :class:`NodeConfig`: an
unknown key, a wrong type or a bad value is a :class:`ConfigError` naming the full key
path (``overlay.helo_interval_s: unknown key``). Every problem in a file is collected, so
``meshcomm config check`` can list them all at once (:class:`InvalidConfig`).

No IO here except :func:`load_config` and :func:`load_profile` reading their file; the data
directory, host name and environment are resolved by the CLI with the pure helpers at the end.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import math
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from meshcomm.errors import ConfigError
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.overlay.config import OverlayConfig
from meshcomm.security.identity import fingerprint
from meshcomm.security.roles import DEFAULT_ROLE_ADDRESSES, parse_role_addresses
from meshcomm.sip.timers import RFC3261_TIMERS, TimerConfig, timer_problems
from meshcomm.types import Aor
from meshcomm.wire import limits

#: The field profiles shipped with the source tree (``field-configs/NAME.toml``).
PROFILE_DIR = Path(__file__).resolve().parent.parent / "field-configs"
PROFILE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

MIN_REGISTRATION_LIFETIME_S = 10
MAX_NODE_NAME_LEN = 64
MAX_DOMAIN_LEN = 253
MAX_INTERFACES = 8
#: Linux IFNAMSIZ - 1.
MAX_IFACE_NAME_LEN = 15
RADIO_KINDS = ("udp", "ether")
MAX_STORE_MESSAGES = 1_000_000
MAX_STORE_AGE_S = 7 * 24 * 3600
AGENCY_KEY_HEX_LEN = 64
MAX_PORT = 65535
#: Upper bound of [sip] timeouts and rates.
MAX_SIP_TIMEOUT_S = 3600.0
#: Upper bound of [sip] queue sizes and connection counts.
MAX_SIP_QUEUE = 100_000
#: Digest algorithms [sip] auth_algorithms may name (RFC 8760), and the realm's shape.
SIP_AUTH_ALGORITHMS = frozenset({"sha-256", "md5"})
_AUTH_REALM_RE = re.compile(r"[A-Za-z0-9.\-_:\[\]]{1,253}")
#: Lowest port of a [media] port range (below are the well-known/system ports).
MIN_MEDIA_PORT = 1024
#: Upper bound of [media] idle_timeout_s (a day) and of max_calls.
MAX_MEDIA_IDLE_S = 86400.0
MAX_MEDIA_CALLS = 4096
#: Largest number of agency keys (own agency plus mutual-aid agencies).
MAX_AGENCY_KEYS = 64

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_DOMAIN_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_INCIDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_HEX_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")
_IFACE_RE = re.compile(r"[A-Za-z0-9._@-]+")

Problems = list[tuple[str, str]]


class Role(StrEnum):
    HANDSET = "handset"
    RELAY = "relay"


class InvalidConfig(ConfigError):
    """One or more problems in a configuration; ``key_path`` names the first.

    ``problems`` holds every (key path, message); ``source`` names the file (or ``<flags>``).
    """

    def __init__(self, source: str, problems: Problems):
        key_path, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(key_path, message + more)
        self.source = source
        self.problems = list(problems)


def _is_domain(text: str) -> bool:
    return (0 < len(text) <= MAX_DOMAIN_LEN
            and all(_DOMAIN_LABEL_RE.fullmatch(label) for label in text.split(".")))


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """``[node]``: who this device is and which incident it joins."""

    name: str | None = None
    domain: str = "incident.local"
    role: Role = Role.HANDSET
    incident: str = "default"
    registration_lifetime_s: int = 300
    data_dir: str | None = None

    def validate(self) -> Problems:
        problems: Problems = []
        if self.name is not None and not (
                len(self.name) <= MAX_NODE_NAME_LEN and _NAME_RE.fullmatch(self.name)):
            problems.append(("name", "must be 1-64 letters, digits or ._~- (a SIP user part)"))
        if not _is_domain(self.domain):
            problems.append(("domain", "must be a host name like fire.example"))
        if not (len(self.incident) <= limits.MAX_INCIDENT_LEN
                and _INCIDENT_RE.fullmatch(self.incident)):
            problems.append(("incident", f"must be 1-{limits.MAX_INCIDENT_LEN} letters, "
                                         "digits or ._:- (no spaces)"))
        if not (MIN_REGISTRATION_LIFETIME_S <= self.registration_lifetime_s
                <= limits.MAX_LIFETIME_S):
            problems.append(("registration_lifetime_s", f"must be in "
                             f"{MIN_REGISTRATION_LIFETIME_S}..{limits.MAX_LIFETIME_S} s"))
        if self.data_dir is not None and not self.data_dir.strip():
            problems.append(("data_dir", "must not be empty (leave it out for the default)"))
        return problems


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """``[trust]``: which bindings are accepted (see meshcomm.location.table)."""

    policy: TrustMode = TrustMode.OPEN
    agency_keys: tuple[str, ...] = ()
    #: Role addresses and the credential roles that may hold them, as
    #: ``"user=role,role"`` (``["ops-chief=command", "safety=command,safety"]``); empty:
    #: the defaults of :data:`meshcomm.security.roles.DEFAULT_ROLE_ADDRESSES`.
    role_addresses: tuple[str, ...] = ()

    def role_table(self) -> dict[str, tuple[str, ...]]:
        """The role-address table (raises ValueError when malformed)."""
        if not self.role_addresses:
            return dict(DEFAULT_ROLE_ADDRESSES)
        raw: dict[str, object] = {}
        for entry in self.role_addresses:
            user, sep, roles = entry.partition("=")
            if not sep or user.strip().lower() in raw:
                raise ValueError(f"{entry!r}: expected a distinct 'user=role,role'")
            raw[user.strip().lower()] = [r.strip() for r in roles.split(",")]
        return parse_role_addresses(raw)

    def validate(self) -> Problems:
        problems: Problems = []
        try:
            self.role_table()
        except ValueError as exc:
            problems.append(("role_addresses", str(exc)))
        for index, key in enumerate(self.agency_keys):
            if not _HEX_KEY_RE.fullmatch(key):
                problems.append((f"agency_keys[{index}]", "not a 64-digit hex key"))
        if len(self.agency_keys) > MAX_AGENCY_KEYS:
            problems.append(("agency_keys", f"at most {MAX_AGENCY_KEYS} keys"))
        if len({k.lower() for k in self.agency_keys}) != len(self.agency_keys):
            problems.append(("agency_keys", "lists a key twice"))
        if self.policy is TrustMode.AGENCY and not self.agency_keys:
            problems.append(("agency_keys", "agency policy needs at least one agency key"))
        return problems

    def to_policy(self) -> TrustPolicy:
        """The location-table policy (call only on a validated config)."""
        return TrustPolicy(self.policy, frozenset(bytes.fromhex(k) for k in self.agency_keys),
                           tuple(self.role_table().items()))


def _impairment_problem(spec: str) -> str:
    """Empty if ``spec`` parses as an impairment, else the problem."""
    if not spec.strip():
        return ""
    from radios.impair import parse_impairment  # lazy: radios pulls in asyncio

    try:
        parse_impairment(spec)
    except ConfigError as exc:
        return str(exc)
    return ""


@dataclass(frozen=True, slots=True)
class RadioSettings:
    """``[radio]``: link drivers to open and an optional user-space impairment."""

    interfaces: tuple[str, ...] = ()
    impairment: str = ""

    def validate(self) -> Problems:
        problems: Problems = []
        for index, spec in enumerate(self.interfaces):
            kind, sep, iface = spec.partition(":")
            if not sep or kind not in RADIO_KINDS:
                problems.append((f"interfaces[{index}]",
                                 f"{spec!r}: expected udp:IFACE or ether:IFACE"))
            elif not (len(iface) <= MAX_IFACE_NAME_LEN and _IFACE_RE.fullmatch(iface)):
                problems.append((f"interfaces[{index}]", f"{iface!r} is not an interface name"))
        if len(self.interfaces) > MAX_INTERFACES:
            problems.append(("interfaces", f"at most {MAX_INTERFACES} interfaces"))
        if len(set(self.interfaces)) != len(self.interfaces):
            problems.append(("interfaces", "lists an interface twice"))
        problem = _impairment_problem(self.impairment)
        if problem:
            problems.append(("impairment", problem))
        return problems


@dataclass(frozen=True, slots=True)
class JournalSettings:
    """``[journal]``: what the tamper-evident journal records."""

    keep_sip_bodies: bool = False

    def validate(self) -> Problems:
        return []


#: Collectors listed in ``[export] collectors`` at most; their roles at most.
MAX_COLLECTORS = 64
MAX_COLLECTOR_ROLES = 16
_ROLE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")
#: Bounds of ``[export] collect_rate_bytes_per_s``.
MIN_COLLECT_RATE = 1_000
MAX_COLLECT_RATE = 100_000_000


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """``[export]``: who may collect this device's journal over the mesh (``meshcomm ctl
    collect`` on a command post, see docs/collect.md), and how fast it is served."""

    #: Node ids or public keys (64 hex digits each) of authorised collectors.
    collectors: tuple[str, ...] = ()
    #: Roles of an agency credential ([trust] agency_keys) that authorise a collector.
    collector_roles: tuple[str, ...] = ("command",)
    #: Bytes per second this device sends one collector at most.
    collect_rate_bytes_per_s: int = 16_000

    def validate(self) -> Problems:
        problems: Problems = []
        for index, key in enumerate(self.collectors):
            if not _HEX_KEY_RE.fullmatch(key):
                problems.append((f"collectors[{index}]", "not a 64-digit hex node id or key"))
        if len(self.collectors) > MAX_COLLECTORS:
            problems.append(("collectors", f"at most {MAX_COLLECTORS}"))
        for index, role in enumerate(self.collector_roles):
            if not _ROLE_NAME_RE.fullmatch(role):
                problems.append((f"collector_roles[{index}]", "1-32 letters, digits or ._-"))
        if len(self.collector_roles) > MAX_COLLECTOR_ROLES:
            problems.append(("collector_roles", f"at most {MAX_COLLECTOR_ROLES}"))
        if not MIN_COLLECT_RATE <= self.collect_rate_bytes_per_s <= MAX_COLLECT_RATE:
            problems.append(("collect_rate_bytes_per_s",
                             f"must be in {MIN_COLLECT_RATE}..{MAX_COLLECT_RATE}"))
        return problems

    def collector_ids(self) -> frozenset[bytes]:
        """The listed node ids and keys as bytes (call only on a validated config)."""
        return frozenset(bytes.fromhex(k) for k in self.collectors)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """``[relay]``: store-and-forward bounds of a relay."""

    store_and_forward_max_messages: int = 1000
    store_and_forward_max_age_s: int = 86400

    def validate(self) -> Problems:
        problems: Problems = []
        if not 0 <= self.store_and_forward_max_messages <= MAX_STORE_MESSAGES:
            problems.append(("store_and_forward_max_messages",
                             f"must be in 0..{MAX_STORE_MESSAGES} (0 disables)"))
        if not 1 <= self.store_and_forward_max_age_s <= MAX_STORE_AGE_S:
            problems.append(("store_and_forward_max_age_s", f"must be in 1..{MAX_STORE_AGE_S} s"))
        return problems


@dataclass(frozen=True, slots=True)
class SipSettings:
    """``[sip]``: the local SIP gateway stock clients register to (UDP and TCP)."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    udp_port: int = 5060
    tcp_port: int = 5060
    message_timeout_s: float = 6.0
    invite_timeout_s: float = 4.0
    max_pending_transactions: int = 256
    max_tcp_connections: int = 64
    client_rate_per_s: float = 20.0
    client_burst: int = 40
    #: RFC 3261 T1/T2 of the gateway toward its clients (retransmission, Timer F).
    t1_s: float = RFC3261_TIMERS.t1_s
    t2_s: float = RFC3261_TIMERS.t2_s
    #: Digest authentication of local clients (docs/sip-auth.md): always on when
    #: listen_host is not a loopback address; require_auth turns it on for loopback too.
    require_auth: bool = False
    #: The digest realm (default: node.domain); offered algorithms, strongest first.
    auth_realm: str = ""
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    #: Extra users: a file of HA1 lines (``meshcomm ctl user hash``), never passwords.
    users_file: str | None = None

    @property
    def timers(self) -> TimerConfig:
        """The gateway's timers (T4, which it does not use, at the RFC value)."""
        return TimerConfig(t1_s=self.t1_s, t2_s=self.t2_s, t4_s=RFC3261_TIMERS.t4_s)

    def validate(self) -> Problems:
        problems: Problems = timer_problems(self.t1_s, self.t2_s, RFC3261_TIMERS.t4_s)
        try:
            ipaddress.ip_address(self.listen_host)
        except ValueError:
            problems.append(("listen_host", "must be an IP address, e.g. 127.0.0.1"))
        for key in ("udp_port", "tcp_port"):
            if not 0 <= getattr(self, key) <= MAX_PORT:
                problems.append((key, f"must be in 0..{MAX_PORT} (0: any free port)"))
        for key in ("message_timeout_s", "invite_timeout_s", "client_rate_per_s"):
            if not 0 < getattr(self, key) <= MAX_SIP_TIMEOUT_S:
                problems.append((key, f"must be > 0 and <= {MAX_SIP_TIMEOUT_S}"))
        for key in ("max_pending_transactions", "max_tcp_connections", "client_burst"):
            if not 1 <= getattr(self, key) <= MAX_SIP_QUEUE:
                problems.append((key, f"must be in 1..{MAX_SIP_QUEUE}"))
        return problems + self._auth_problems()

    def _auth_problems(self) -> Problems:
        problems: Problems = []
        names = [a.lower() for a in self.auth_algorithms]
        if not names or len(set(names)) != len(names) or not set(names) <= SIP_AUTH_ALGORITHMS:
            problems.append(("auth_algorithms", 'one or both of "SHA-256" and "MD5", '
                                                "each once"))
        if self.auth_realm and not _AUTH_REALM_RE.fullmatch(self.auth_realm):
            problems.append(("auth_realm", "a domain like incident.local (default: node.domain)"))
        if self.users_file is not None and not self.users_file.strip():
            problems.append(("users_file", "must not be empty (leave it out for none)"))
        return problems


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """``[media]``: the UDP ports the gateway opens for its clients' RTP/RTCP, and limits."""

    #: Port range for call ports (even RTP, odd RTCP); 0 and 0: any free ports.
    port_first: int = 0
    port_last: int = 0
    idle_timeout_s: float = 900.0
    max_calls: int = 64

    @property
    def port_range(self) -> tuple[int, int] | None:
        return None if self.port_first == self.port_last == 0 else (self.port_first,
                                                                     self.port_last)

    def validate(self) -> Problems:
        problems: Problems = []
        first, last = self.port_first, self.port_last
        if (first, last) != (0, 0):
            if not MIN_MEDIA_PORT <= first <= MAX_PORT:
                problems.append(("port_first", f"must be in {MIN_MEDIA_PORT}..{MAX_PORT} "
                                 "(or 0 with port_last 0)"))
            elif not first + first % 2 + 1 <= last <= MAX_PORT:
                problems.append(("port_last", "must leave at least one even/odd port pair "
                                 f"after port_first and be <= {MAX_PORT}"))
        if not 0 < self.idle_timeout_s <= MAX_MEDIA_IDLE_S:
            problems.append(("idle_timeout_s", f"must be > 0 and <= {MAX_MEDIA_IDLE_S}"))
        if not 1 <= self.max_calls <= MAX_MEDIA_CALLS:
            problems.append(("max_calls", f"must be in 1..{MAX_MEDIA_CALLS}"))
        return problems


#: Bootstrap nodes of the uplink DHT accepted in [uplink] bootstrap.
MAX_DHT_BOOTSTRAP = 16
#: Upper bound of [uplink] up_stable_s and down_grace_s.
MAX_UPLINK_HYSTERESIS_S = 3600.0
#: OpenDHT's usual port.
DEFAULT_DHT_PORT = 4222


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 address in brackets: ``[2001:db8::1]:4222``) -> (host, port);
    ConfigError naming the text otherwise. HOST is an IP address or a host name."""
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise ConfigError(text, "expected HOST:PORT with a port in 1..65535, e.g. "
                                "203.0.113.7:4222 or [2001:db8::7]:4222")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if bracketed or ":" in host or not _is_domain(host):
            raise ConfigError(text, f"{host!r} is neither an IP address nor a host name"
                                    " (IPv6 goes in brackets)") from None
        return host, int(port)
    if bracketed != (address.version == 6):
        raise ConfigError(text, "an IPv6 address goes in brackets, an IPv4 one does not")
    return str(address), int(port)


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """``[uplink]``: a relay's uplink (satellite, LTE, wired) and the DHT node on it.

    The relay's DHT node binds only to ``interface``'s addresses. With no ``bootstrap``
    nodes, OpenDHT's local peer discovery finds the other relays on the uplink segment.
    ``secret_file`` holds the incident secret that keys the DHT records (keyed hash of the
    AoR, encryption); left out, the secret is derived from ``node.incident``, which anyone
    who knows the incident id can do: such records are NOT private on a shared DHT.
    """

    enabled: bool = False
    interface: str = ""
    dht_port: int = DEFAULT_DHT_PORT
    bootstrap: tuple[str, ...] = ()
    secret_file: str | None = None
    up_stable_s: float = 10.0
    down_grace_s: float = 30.0
    #: User-space impairment of the uplink transport (as ``[radio] impairment``), e.g.
    #: ``"delay=300ms,loss=0.02"`` to emulate a satellite hop; empty: none.
    impairment: str = ""

    def validate(self) -> Problems:
        problems: Problems = []
        if self.interface and not (len(self.interface) <= MAX_IFACE_NAME_LEN
                                   and _IFACE_RE.fullmatch(self.interface)):
            problems.append(("interface", f"{self.interface!r} is not an interface name"))
        elif self.enabled and not self.interface:
            problems.append(("interface", "an enabled uplink needs its interface, e.g. wwan0"))
        if not 0 <= self.dht_port <= MAX_PORT:
            problems.append(("dht_port", f"must be in 0..{MAX_PORT} (0: any free port)"))
        for index, entry in enumerate(self.bootstrap):
            try:
                parse_host_port(entry)
            except ConfigError as exc:
                problems.append((f"bootstrap[{index}]", str(exc)))
        if len(self.bootstrap) > MAX_DHT_BOOTSTRAP:
            problems.append(("bootstrap", f"at most {MAX_DHT_BOOTSTRAP} nodes"))
        if len(set(self.bootstrap)) != len(self.bootstrap):
            problems.append(("bootstrap", "lists a node twice"))
        if self.secret_file is not None and not self.secret_file.strip():
            problems.append(("secret_file", "must not be empty (leave it out for the "
                                            "derived, non-private secret)"))
        for key in ("up_stable_s", "down_grace_s"):
            if not 0 < getattr(self, key) <= MAX_UPLINK_HYSTERESIS_S:
                problems.append((key, f"must be > 0 and <= {MAX_UPLINK_HYSTERESIS_S}"))
        problem = _impairment_problem(self.impairment)
        if problem:
            problems.append(("impairment", problem))
        return problems


#: Upper/lower bound of [upstream] expires_s (RFC 3261 §10.2.1.1: the registrar may lower it).
MIN_UPSTREAM_EXPIRES_S = 60
MAX_UPSTREAM_EXPIRES_S = 86400
#: Upper bound of [upstream] max_aors.
MAX_UPSTREAM_AORS = 65536
_SIP_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}")


def parse_registrar(text: str) -> tuple[str, int]:
    """``sip:host[:port]`` -> (host, port); ConfigError naming the text otherwise."""
    scheme, sep, rest = text.strip().partition(":")
    if scheme.lower() != "sip" or not sep or "@" in rest or ";" in rest or "?" in rest:
        raise ConfigError(text, "expected sip:HOST[:PORT] (no user part, no parameters)")
    if rest.endswith("]") or ":" not in rest:
        rest += ":5060"                                 # no port: SIP's default
    return parse_host_port(rest)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """``[upstream]``: a conventional SIP registrar/proxy beyond the mesh (issue 10 item 5).

    With ``registrar`` set, an uplinked relay registers its island's AoRs there (with
    ``username`` and the password in ``password_file``, a file of mode 0600; never inline)
    and forwards requests for AoRs that neither the island nor the DHT knows to ``proxy``
    (default: the registrar's host and port). Host names are resolved (A/AAAA) once at
    start-up; there is no NAPTR/SRV lookup. ``contact`` is the relay's gateway as the
    upstream reaches it (default: the uplink interface's address and the [sip] port).
    ``domain``: only AoRs of this domain are registered (default: node.domain).
    ``trusted``: the upstream is inside the RFC 3325 trust domain, so the
    P-Asserted-Identity of its requests is kept (foreign identities only; needs the agency
    policy); false (the default): removed, the relay asserts nothing for its callers.
    """

    registrar: str = ""
    proxy: str = ""
    username: str = ""
    password_file: str | None = None
    expires_s: int = 600
    domain: str = ""
    contact: str = ""
    max_aors: int = 256
    trusted: bool = False

    def validate(self) -> Problems:
        problems: Problems = []
        if not self.registrar:
            if (self.proxy or self.username or self.password_file or self.contact
                    or self.trusted):
                problems.append(("registrar", "set it (sip:HOST[:PORT]) to use [upstream]"))
            return problems
        for key, check in (("registrar", parse_registrar), ("proxy", parse_host_port),
                           ("contact", parse_host_port)):
            value = getattr(self, key)
            try:
                if value:
                    check(value)
            except ConfigError as exc:
                problems.append((key, str(exc)))
        if self.username and not _SIP_USER_RE.fullmatch(self.username):
            problems.append(("username", "1..64 characters of a SIP user part"))
        if bool(self.username) != (self.password_file is not None):
            problems.append(("password_file", "username and password_file go together"))
        if self.password_file is not None and not self.password_file.strip():
            problems.append(("password_file", "must not be empty"))
        if not MIN_UPSTREAM_EXPIRES_S <= self.expires_s <= MAX_UPSTREAM_EXPIRES_S:
            problems.append(("expires_s", f"must be in {MIN_UPSTREAM_EXPIRES_S}.."
                                          f"{MAX_UPSTREAM_EXPIRES_S}"))
        if self.domain and not (_is_domain(self.domain) or _is_ip(self.domain)):
            problems.append(("domain", f"{self.domain!r} is not a domain"))
        if not 1 <= self.max_aors <= MAX_UPSTREAM_AORS:
            problems.append(("max_aors", f"must be in 1..{MAX_UPSTREAM_AORS}"))
        return problems


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The whole configuration of one node."""

    node: NodeSettings = field(default_factory=NodeSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    radio: RadioSettings = field(default_factory=RadioSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    sip: SipSettings = field(default_factory=SipSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    export: ExportSettings = field(default_factory=ExportSettings)

    def validate(self) -> Problems:
        """Checks across sections (each section checks its own keys)."""
        problems: Problems = []
        name = self.node.name or "x" * 12
        if len(f"sip:{name}@{self.node.domain}") > limits.MAX_AOR_LEN:
            problems.append(("node.domain",
                             f"the AoR would exceed {limits.MAX_AOR_LEN} characters"))
        if self.upstream.trusted and self.trust.policy is not TrustMode.AGENCY:
            problems.append(("upstream.trusted", 'needs [trust] policy = "agency": under '
                             '"open" any device may join the mesh, so no node honours an '
                             "identity asserted for a caller beyond it"))
        return problems


# --------------------------------------------------------------------------- generic loader
def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(hint: Any, value: Any, path: str, problems: Problems) -> Any:
    """Convert one TOML value to ``hint``; on failure record a problem and return MISSING."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, problems)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            problems.append((path, "expected a table"))
            return dataclasses.MISSING
        return _build(hint, value, path, problems)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            problems.append((path, f"expected a list of {_type_name(args[0])}s"))
            return dataclasses.MISSING
        items = [_convert(args[0], v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return dataclasses.MISSING if dataclasses.MISSING in items else tuple(items)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            problems.append((path, "must be one of " + ", ".join(map(str, allowed))))
            return dataclasses.MISSING
        return hint(value)
    return _convert_scalar(hint, value, path, problems)


def _convert_scalar(hint: Any, value: Any, path: str, problems: Problems) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            problems.append((path, "must be a finite number"))
            return dataclasses.MISSING
        return float(value)
    if hint in (bool, int, str) and type(value) is hint:
        return value
    if hint not in (bool, int, float, str):
        raise TypeError(f"config loader cannot handle {hint!r} at {path}")
    problems.append((path, f"expected {_type_name(hint)}, got {type(value).__name__}"))
    return dataclasses.MISSING


def _unknown_key(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")


def _build(cls: type[Any], data: Mapping[str, Any], path: str, problems: Problems) -> Any:
    """Build dataclass ``cls`` from ``data``, driven by its type hints; validate it."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            problems.append((_join(path, str(key)), _unknown_key(str(key), names)))
    before = len(problems)
    values = {}
    for name in names:
        if name in data:
            converted = _convert(hints[name], data[name], _join(path, name), problems)
            if converted is not dataclasses.MISSING:
                values[name] = converted
    instance = cls(**values)
    if len(problems) == before:
        validate = getattr(instance, "validate", None)
        if validate is not None:
            for key, message in validate():
                problems.append((_join(path, key), message))
    return instance


# --------------------------------------------------------------------------- public API
def parse_config(data: Mapping[str, Any], source: str = "<config>") -> NodeConfig:
    """Validate a TOML mapping into a NodeConfig; raise InvalidConfig listing all problems."""
    problems: Problems = []
    cfg = _build(NodeConfig, data, "", problems)
    if problems:
        raise InvalidConfig(source, problems)
    assert isinstance(cfg, NodeConfig)
    return cfg


_TOML_LINE_RE = re.compile(r"at line (\d+)")


def parse_toml(text: str, source: str) -> NodeConfig:
    """Parse TOML text; a syntax error names ``source`` and the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE_RE.search(str(exc))
        where = f"{source}:{match.group(1)}" if match else source
        raise ConfigError(where, f"TOML syntax error: {exc}") from exc
    return parse_config(data, source)


def load_config(path: Path) -> NodeConfig:
    """Read and validate a TOML field config."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "not UTF-8 text") from exc
    return parse_toml(text, str(path))


def profile_names() -> list[str]:
    """Names of the shipped field profiles (``field-configs/*.toml``), sorted."""
    if not PROFILE_DIR.is_dir():
        return []
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def profile_path(name: str) -> Path:
    names = profile_names()
    if not PROFILE_NAME_RE.fullmatch(name) or name not in names:
        raise ConfigError("profile", f"unknown profile {name!r}; known: " + ", ".join(names))
    return PROFILE_DIR / f"{name}.toml"


def load_profile(name: str) -> NodeConfig:
    """Load the shipped profile ``name`` (for example ``handset`` or ``vehicle-relay``)."""
    return load_config(profile_path(name))


def to_mapping(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain TOML-able data (None fields left out, enums as strings)."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            result[f.name] = to_mapping(value)
        elif isinstance(value, enum.Enum):
            result[f.name] = value.value
        elif isinstance(value, tuple):
            result[f.name] = list(value)
        else:
            result[f.name] = value
    return result


def config_with_overrides(cfg: NodeConfig, overrides: Mapping[str, Any]) -> NodeConfig:
    """Apply ``{"overlay.hello_interval_s": 0.5, ...}`` (CLI flags) and re-validate.

    A value of None resets an optional key (``node.name``) to its default.
    """
    data = to_mapping(cfg)
    problems: Problems = []
    for key_path, value in overrides.items():
        section, dot, key = key_path.partition(".")
        if not dot or not isinstance(data.get(section), dict) or "." in key:
            problems.append((key_path, "not a SECTION.KEY path"))
        elif value is None:
            data[section].pop(key, None)
        else:
            data[section][key] = list(value) if isinstance(value, tuple) else value
    if problems:
        raise InvalidConfig("<overrides>", problems)
    return parse_config(data, "<overrides>")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a ``--set KEY=VALUE`` flag; VALUE is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(text, "expected SECTION.KEY=VALUE")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


# --------------------------------------------------------------------------- pure helpers
def default_node_name(hostname: str, public_key: bytes) -> str:
    """Host name (sanitised to a SIP user part) plus a short key fingerprint."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", hostname.split(".")[0]).strip("-").lower()
    host = host[: MAX_NODE_NAME_LEN - 9] or "node"
    return f"{host}-{fingerprint(public_key)}"


def node_aor(settings: NodeSettings, hostname: str, public_key: bytes) -> Aor:
    """``sip:NAME@DOMAIN`` with NAME from the config or :func:`default_node_name`."""
    name = settings.name or default_node_name(hostname, public_key)
    return Aor(f"sip:{name}@{settings.domain}")


def default_data_dir(settings: NodeSettings, env: Mapping[str, str], home: str) -> str:
    """The configured data dir, else ``$XDG_DATA_HOME/meshcomm``, else under ``home``.

    Returns a string path with ``~`` not yet expanded when it came from the config.
    """
    if settings.data_dir is not None:
        return settings.data_dir
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and PurePosixPath(xdg).is_absolute():
        return str(PurePosixPath(xdg) / "meshcomm")
    return str(PurePosixPath(home) / ".local" / "share" / "meshcomm")
