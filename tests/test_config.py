from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.config import (
    PROFILE_DIR,
    InvalidConfig,
    NodeConfig,
    NodeSettings,
    Role,
    config_with_overrides,
    default_data_dir,
    default_node_name,
    load_config,
    load_profile,
    node_aor,
    parse_config,
    parse_override,
    parse_toml,
    profile_names,
)
from meshcomm.config_show import format_config
from meshcomm.errors import ConfigError
from meshcomm.location.table import TrustMode
from meshcomm.security.identity import fingerprint

KEY_A = "ab" * 32
KEY_B = "0123456789abcdef" * 4


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidConfig) as info:
        parse_config(data, "test.toml")
    assert info.value.source == "test.toml"
    return info.value.problems


# ------------------------------------------------------------------ defaults and profiles
def test_empty_config_gives_documented_defaults() -> None:
    cfg = parse_config({}, "empty")
    assert cfg == NodeConfig()
    assert cfg.node.name is None and cfg.node.data_dir is None
    assert cfg.node.domain == "incident.local"
    assert cfg.node.role is Role.HANDSET
    assert cfg.node.incident == "default"
    assert cfg.node.registration_lifetime_s == 300
    assert cfg.trust.policy is TrustMode.OPEN and cfg.trust.agency_keys == ()
    assert cfg.radio.interfaces == () and cfg.radio.impairment == ""
    assert cfg.journal.keep_sip_bodies is False
    assert cfg.relay.store_and_forward_max_messages == 1000
    assert cfg.relay.store_and_forward_max_age_s == 86400


def test_config_is_frozen() -> None:
    cfg = NodeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.node.domain = "x"  # type: ignore[misc]


ALL_PROFILE_FILES = sorted(PROFILE_DIR.glob("*.toml"))


def test_required_profiles_exist() -> None:
    assert {"handset", "vehicle-relay", "command-post", "exercise"} <= set(profile_names())
    assert len(ALL_PROFILE_FILES) == len(profile_names())


@pytest.mark.parametrize("path", ALL_PROFILE_FILES, ids=lambda p: p.name)
def test_every_profile_file_validates(path: Path) -> None:
    cfg = load_config(path)
    assert load_profile(path.stem) == cfg
    assert parse_toml(format_config(cfg), "shown") == cfg


@pytest.mark.parametrize("path", ALL_PROFILE_FILES, ids=lambda p: p.name)
def test_every_profile_key_is_commented(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*[a-z_]+\s*=", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") or "#" in line, f"{path.name}:{number + 1}"


def test_profile_roles_and_exercise_isolation() -> None:
    handset = load_profile("handset")
    exercise = load_profile("exercise")
    assert handset.node.role is Role.HANDSET
    assert load_profile("vehicle-relay").node.role is Role.RELAY
    assert load_profile("command-post").node.role is Role.RELAY
    assert exercise.trust.policy is TrustMode.OPEN
    assert exercise.node.incident not in {load_profile(n).node.incident
                                          for n in profile_names() if n != "exercise"}
    assert exercise.node.registration_lifetime_s < handset.node.registration_lifetime_s


def test_handset_profile_lists_every_key() -> None:
    data = tomllib.loads((PROFILE_DIR / "handset.toml").read_text())
    for section in dataclasses.fields(NodeConfig):
        listed = set(data[section.name])
        optional = {"node": {"name", "data_dir"}, "uplink": {"secret_file"},
                    "upstream": {"password_file"}, "sip": {"users_file"}}.get(
            section.name, set())
        expected = {f.name for f in dataclasses.fields(getattr(NodeConfig(), section.name))}
        assert listed == expected - optional, section.name


def test_unknown_profile_names_the_known_ones() -> None:
    for name in ("nope", "../handset", "HANDSET"):
        with pytest.raises(ConfigError, match=r"known: .*handset") as info:
            load_profile(name)
        assert info.value.key_path == "profile"


# ------------------------------------------------------------------ errors name the key path
def test_unknown_key_names_full_path_with_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"overlay": {"helo_interval_s": 1.0}}, "f.toml")
    assert info.value.key_path == "overlay.helo_interval_s"
    assert str(info.value).startswith("overlay.helo_interval_s: unknown key")
    assert "did you mean hello_interval_s" in str(info.value)


def test_unknown_section_is_an_error() -> None:
    assert problems_of({"nodes": {}}) == [("nodes", "unknown key (did you mean node?)")]


@pytest.mark.parametrize(("data", "path", "fragment"), [
    ({"node": {"registration_lifetime_s": 1.5}}, "node.registration_lifetime_s", "integer"),
    ({"node": {"registration_lifetime_s": True}}, "node.registration_lifetime_s", "integer"),
    ({"overlay": {"hello_interval_s": "1s"}}, "overlay.hello_interval_s", "number"),
    ({"overlay": {"hello_interval_s": float("nan")}}, "overlay.hello_interval_s", "finite"),
    ({"journal": {"keep_sip_bodies": 1}}, "journal.keep_sip_bodies", "boolean"),
    ({"node": {"role": "car"}}, "node.role", "handset, relay"),
    ({"trust": {"policy": "closed"}}, "trust.policy", "open, agency"),
    ({"trust": {"agency_keys": KEY_A}}, "trust.agency_keys", "list"),
    ({"trust": {"agency_keys": [KEY_A, "zz"]}}, "trust.agency_keys[1]",
     "not a 64-digit hex key"),
    ({"trust": {"agency_keys": [KEY_A, 7]}}, "trust.agency_keys[1]", "string"),
    ({"trust": {"agency_keys": [KEY_A, KEY_A.upper()]}}, "trust.agency_keys", "twice"),
    ({"trust": {"policy": "agency"}}, "trust.agency_keys", "at least one"),
    ({"overlay": 3}, "overlay", "table"),
    ({"node": {"name": "has space"}}, "node.name", "user part"),
    ({"node": {"domain": "-bad-.example"}}, "node.domain", "host name"),
    ({"node": {"incident": ""}}, "node.incident", "letters"),
    ({"node": {"incident": "x" * 65}}, "node.incident", "letters"),
    ({"node": {"registration_lifetime_s": 5}}, "node.registration_lifetime_s", "10..86400"),
    ({"node": {"registration_lifetime_s": 86401}}, "node.registration_lifetime_s", "10..86400"),
    ({"node": {"data_dir": " "}}, "node.data_dir", "empty"),
    ({"overlay": {"hello_interval_s": 8.0}}, "overlay.neighbour_timeout_s", "exceed"),
    ({"overlay": {"flood_ttl": 0}}, "overlay.flood_ttl", "1..32"),
    ({"radio": {"interfaces": ["wifi:wlan0"]}}, "radio.interfaces[0]", "udp:IFACE"),
    ({"radio": {"interfaces": ["udp:"]}}, "radio.interfaces[0]", "interface name"),
    ({"radio": {"interfaces": ["udp:a/b"]}}, "radio.interfaces[0]", "interface name"),
    ({"radio": {"interfaces": ["udp:wlan0", "udp:wlan0"]}}, "radio.interfaces", "twice"),
    ({"radio": {"impairment": "loss=2"}}, "radio.impairment", "loss"),
    ({"radio": {"impairment": "drop=0.1"}}, "radio.impairment", "unknown key"),
    ({"relay": {"store_and_forward_max_messages": -1}},
     "relay.store_and_forward_max_messages", "0.."),
    ({"relay": {"store_and_forward_max_age_s": 0}}, "relay.store_and_forward_max_age_s", "1.."),
    ({"node": {"domain": "a." * 126 + "b"}}, "node.domain", "AoR"),
])
def test_bad_values_name_their_key_path(data: dict[str, Any], path: str, fragment: str) -> None:
    problems = problems_of(data)
    assert problems[0][0] == path
    assert fragment in problems[0][1]


def test_every_problem_is_reported_not_just_the_first() -> None:
    problems = problems_of({"node": {"role": "car", "incident": 3},
                            "overlay": {"helo": 1}, "relay": {"x": 1}})
    assert [p for p, _ in problems] == ["node.role", "node.incident", "overlay.helo", "relay.x"]


def test_valid_values_are_accepted_and_ints_widen_to_floats() -> None:
    cfg = parse_config({
        "node": {"name": "medic-7", "domain": "fire.example", "role": "relay",
                 "incident": "wildfire-2026:north", "registration_lifetime_s": 60,
                 "data_dir": "~/mc"},
        "trust": {"policy": "agency", "agency_keys": [KEY_A, KEY_B]},
        "overlay": {"hello_interval_s": 2, "neighbour_timeout_s": 6},
        "radio": {"interfaces": ["udp:wlan0", "ether:eth1"],
                  "impairment": "loss=0.1,delay=15ms,jitter=5ms,dup=0.01"},
        "journal": {"keep_sip_bodies": True},
        "relay": {"store_and_forward_max_messages": 0, "store_and_forward_max_age_s": 60},
    }, "inline")
    assert cfg.overlay.hello_interval_s == 2.0 and isinstance(cfg.overlay.hello_interval_s, float)
    assert cfg.radio.interfaces == ("udp:wlan0", "ether:eth1")
    policy = cfg.trust.to_policy()
    assert policy.mode is TrustMode.AGENCY
    assert policy.agency_keys == frozenset({bytes.fromhex(KEY_A), bytes.fromhex(KEY_B)})
    assert parse_toml(format_config(cfg), "shown") == cfg


# ------------------------------------------------------------------ files
def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[node]\ndomain = \"ok.example\"\nrole = handset\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == f"{path}:3"
    assert "TOML syntax error" in str(info.value)


def test_missing_and_binary_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_load_config_reports_source(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[overlay]\nhelo_interval_s = 1\n")
    with pytest.raises(InvalidConfig) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.key_path == "overlay.helo_interval_s"


# ------------------------------------------------------------------ overrides
def test_overrides_apply_and_revalidate() -> None:
    base = load_profile("handset")
    cfg = config_with_overrides(base, {"overlay.hello_interval_s": 0.5, "node.name": "ems-1",
                                       "radio.interfaces": ("udp:wlan1",)})
    assert cfg.overlay.hello_interval_s == 0.5
    assert cfg.node.name == "ems-1" and cfg.radio.interfaces == ("udp:wlan1",)
    assert cfg.trust == base.trust
    assert config_with_overrides(cfg, {"node.name": None}).node.name is None
    assert config_with_overrides(base, {}) == base


@pytest.mark.parametrize(("overrides", "path"), [
    ({"overlay.helo_interval_s": 1.0}, "overlay.helo_interval_s"),
    ({"overlay.hello_interval_s": 9.0}, "overlay.neighbour_timeout_s"),
    ({"hello_interval_s": 1.0}, "hello_interval_s"),
    ({"radar.x": 1}, "radar.x"),
    ({"overlay.a.b": 1}, "overlay.a.b"),
    ({"node.role": "tank"}, "node.role"),
])
def test_bad_overrides_name_the_key(overrides: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with_overrides(NodeConfig(), overrides)
    assert info.value.key_path == path


def test_parse_override_reads_toml_values_or_strings() -> None:
    assert parse_override("overlay.hello_interval_s=0.5") == ("overlay.hello_interval_s", 0.5)
    assert parse_override("journal.keep_sip_bodies = true") == ("journal.keep_sip_bodies", True)
    assert parse_override('radio.interfaces=["udp:a"]') == ("radio.interfaces", ["udp:a"])
    assert parse_override("node.name=medic-7") == ("node.name", "medic-7")
    with pytest.raises(ConfigError):
        parse_override("node.name")


# ------------------------------------------------------------------ pure helpers
def test_default_name_aor_and_data_dir() -> None:
    key = bytes(range(32))
    name = default_node_name("Pi_Medic.local", key)
    assert name == f"pi-medic-{fingerprint(key)}"
    assert default_node_name("...", key) == f"node-{fingerprint(key)}"
    settings = NodeSettings(domain="fire.example")
    assert node_aor(settings, "pi", key) == f"sip:pi-{fingerprint(key)}@fire.example"
    named = NodeSettings(name="medic-7", domain="fire.example")
    assert node_aor(named, "pi", key) == "sip:medic-7@fire.example"
    assert parse_config({"node": {"name": default_node_name("x" * 300, key)}})
    assert default_data_dir(settings, {}, "/home/a") == "/home/a/.local/share/meshcomm"
    assert default_data_dir(settings, {"XDG_DATA_HOME": "/x"}, "/h") == "/x/meshcomm"
    assert default_data_dir(settings, {"XDG_DATA_HOME": "rel"}, "/h") == \
        "/h/.local/share/meshcomm"
    assert default_data_dir(NodeSettings(data_dir="/d"), {"XDG_DATA_HOME": "/x"}, "/h") == "/d"


# ------------------------------------------------------------------ properties
toml_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=True), st.text(max_size=20))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
section_names = st.sampled_from(["node", "trust", "overlay", "radio", "journal", "relay", "x"])
key_names = st.sampled_from(["name", "domain", "role", "incident", "policy", "agency_keys",
                             "hello_interval_s", "flood_ttl", "interfaces", "impairment",
                             "keep_sip_bodies", "store_and_forward_max_age_s", "bogus"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(section_names,
                       st.dictionaries(key_names, toml_values, max_size=4) | toml_values,
                       max_size=4))
def test_any_mapping_gives_config_or_config_error(data: dict[str, Any]) -> None:
    try:
        cfg = parse_config(data, "fuzz")
    except InvalidConfig as exc:
        assert exc.problems and all(isinstance(p, str) for p, _ in exc.problems)
        return
    assert isinstance(cfg, NodeConfig)
    assert parse_toml(format_config(cfg), "shown") == cfg


@settings(max_examples=200, deadline=None)
@given(data_dir=st.text(min_size=1, max_size=40))
def test_show_round_trips_any_string_value(data_dir: str) -> None:
    try:
        cfg = parse_config({"node": {"data_dir": data_dir}}, "fuzz")
    except ConfigError:
        assert not data_dir.strip()
        return
    assert tomllib.loads(format_config(cfg))["node"]["data_dir"] == data_dir
    assert parse_toml(format_config(cfg), "shown") == cfg


# ------------------------------------------------------------------ [upstream]
def test_upstream_settings_parse_and_round_trip() -> None:
    cfg = parse_config({"upstream": {"registrar": "sip:pbx.example.org:5070",
                                     "proxy": "[2001:db8::5]:5060", "username": "relay-7",
                                     "password_file": "/etc/meshcomm/upstream.password",
                                     "expires_s": 300, "domain": "incident.local",
                                     "contact": "203.0.113.9:5060", "max_aors": 32,
                                     "trusted": True},
                        "trust": {"policy": "agency", "agency_keys": ["ab" * 32]}})
    assert cfg.upstream.registrar == "sip:pbx.example.org:5070" and cfg.upstream.trusted
    assert not NodeConfig().upstream.trusted               # outside the trust domain
    assert parse_toml(format_config(cfg), "shown") == cfg
    assert NodeConfig().upstream.registrar == ""          # off by default


@pytest.mark.parametrize(("upstream", "key", "words"), [
    ({"registrar": "sip:alice@pbx.example.org"}, "upstream.registrar", "no user part"),
    ({"registrar": "sips:pbx.example.org"}, "upstream.registrar", "sip:HOST"),
    ({"registrar": "sip:pbx.example.org:0"}, "upstream.registrar", "1..65535"),
    ({"registrar": "sip:pbx;transport=tcp"}, "upstream.registrar", "no parameters"),
    ({"registrar": "sip:h", "proxy": "h"}, "upstream.proxy", "HOST:PORT"),
    ({"registrar": "sip:h", "contact": "::1:5060"}, "upstream.contact", "brackets"),
    ({"registrar": "sip:h", "username": "u"}, "upstream.password_file", "together"),
    ({"registrar": "sip:h", "password_file": "/p"}, "upstream.password_file", "together"),
    ({"registrar": "sip:h", "username": "a b", "password_file": "/p"}, "upstream.username",
     "user part"),
    ({"registrar": "sip:h", "expires_s": 59}, "upstream.expires_s", "60..86400"),
    ({"registrar": "sip:h", "max_aors": 0}, "upstream.max_aors", "1..65536"),
    ({"registrar": "sip:h", "domain": "-bad-"}, "upstream.domain", "not a domain"),
    ({"proxy": "10.0.0.1:5060"}, "upstream.registrar", "set it"),
    ({"trusted": True}, "upstream.registrar", "set it"),
    ({"registrar": "sip:h", "password": "inline"}, "upstream.password", "unknown key"),
])
def test_upstream_errors_name_the_key(upstream: dict[str, Any], key: str, words: str) -> None:
    problems = problems_of({"upstream": upstream})
    assert any(path == key and words in message for path, message in problems), problems


def test_a_trusted_upstream_under_the_open_policy_is_refused_by_config_check() -> None:
    problems = problems_of({"upstream": {"registrar": "sip:pbx.example.org",
                                         "trusted": True}})
    assert any(path == "upstream.trusted" and "agency" in message
               for path, message in problems), problems
