"""The [uplink] section, the relay's uplink flags, and uplink_settings (interface addresses,
bootstrap, secret file)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pytest

from meshcomm.cli import handset_cmd
from meshcomm.cli.uplink_opts import uplink_settings
from meshcomm.config import (
    DEFAULT_DHT_PORT,
    InvalidConfig,
    NodeConfig,
    Role,
    load_profile,
    parse_config,
    parse_host_port,
    parse_toml,
)
from meshcomm.config_show import format_config
from meshcomm.errors import ConfigError
from meshcomm.runtime.uplink_addr import (
    UplinkAddressError,
    UplinkAddresses,
    ipv6_addresses,
    uplink_addresses,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshcomm")
    handset_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


# ------------------------------------------------------------------ [uplink]
def test_defaults_and_profiles() -> None:
    uplink = NodeConfig().uplink
    assert not uplink.enabled and uplink.interface == "" and uplink.bootstrap == ()
    assert uplink.dht_port == DEFAULT_DHT_PORT and uplink.secret_file is None
    assert load_profile("command-post").uplink.enabled
    assert not load_profile("vehicle-relay").uplink.enabled
    assert not load_profile("handset").uplink.enabled
    shown = format_config(NodeConfig())
    assert "# secret_file unset: secret derived from node.incident (records NOT private)" in shown
    cfg = parse_config({"uplink": {"enabled": True, "interface": "wwan0",
                                   "bootstrap": ["203.0.113.7:4222", "[2001:db8::7]:4222",
                                                 "dht.example.org:4222"],
                                   "secret_file": "/etc/meshcomm/s", "dht_port": 0}})
    assert parse_toml(format_config(cfg), "shown") == cfg


@pytest.mark.parametrize(("uplink", "path", "fragment"), [
    ({"enabled": True}, "uplink.interface", "needs its interface"),
    ({"interface": "bad name!"}, "uplink.interface", "not an interface name"),
    ({"interface": "x" * 16}, "uplink.interface", "not an interface name"),
    ({"dht_port": 65536}, "uplink.dht_port", "0..65535"),
    ({"bootstrap": ["203.0.113.7"]}, "uplink.bootstrap[0]", "HOST:PORT"),
    ({"bootstrap": ["::1:4222"]}, "uplink.bootstrap[0]", "brackets"),
    ({"bootstrap": ["[203.0.113.7]:4222"]}, "uplink.bootstrap[0]", "brackets"),
    ({"bootstrap": ["a b:4222"]}, "uplink.bootstrap[0]", "neither an IP address"),
    ({"bootstrap": ["h:0"]}, "uplink.bootstrap[0]", "1..65535"),
    ({"bootstrap": ["h:1", "h:1"]}, "uplink.bootstrap", "twice"),
    ({"bootstrap": [f"h:{i}" for i in range(1, 18)]}, "uplink.bootstrap", "at most 16"),
    ({"bootstrap": "h:1"}, "uplink.bootstrap", "expected a list"),
    ({"secret_file": " "}, "uplink.secret_file", "must not be empty"),
    ({"up_stable_s": 0}, "uplink.up_stable_s", "> 0"),
    ({"down_grace_s": 7200}, "uplink.down_grace_s", "<= 3600"),
    ({"enable": True}, "uplink.enable", "did you mean enabled"),
])
def test_bad_uplink_values_name_their_key(uplink: dict[str, Any], path: str,
                                          fragment: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_config({"uplink": uplink})
    assert any(p == path and fragment in m for p, m in info.value.problems), \
        info.value.problems


def test_parse_host_port() -> None:
    assert parse_host_port(" 203.0.113.7:4222 ") == ("203.0.113.7", 4222)
    assert parse_host_port("[2001:DB8::7]:1") == ("2001:db8::7", 1)
    assert parse_host_port("dht.example.org:65535") == ("dht.example.org", 65535)
    for bad in ("", "h", "h:", ":1", "h:65536", "h:x", "[h]:1", "[::1]", "a_b:1"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


# ------------------------------------------------------------------ relay flags
def test_relay_flags_override_the_profile() -> None:
    args = parse(["relay", "--profile", "vehicle-relay", "--uplink", "lo",
                  "--dht-bootstrap", "203.0.113.7:4222", "--dht-bootstrap", "[::1]:5000",
                  "--dht-port", "0"])
    cfg = handset_cmd.build_config(args)
    assert cfg.uplink.enabled and cfg.uplink.interface == "lo" and cfg.uplink.dht_port == 0
    assert cfg.uplink.bootstrap == ("203.0.113.7:4222", "[::1]:5000")
    assert cfg.uplink.down_grace_s == load_profile("vehicle-relay").uplink.down_grace_s
    plain = handset_cmd.build_config(parse(["relay", "--profile", "command-post"]))
    assert plain.uplink == load_profile("command-post").uplink


def test_bad_relay_flags_are_config_errors() -> None:
    with pytest.raises(InvalidConfig, match=r"uplink\.bootstrap\[0\]"):
        handset_cmd.build_config(parse(["relay", "--dht-bootstrap", "nowhere"]))
    with pytest.raises(InvalidConfig, match=r"uplink\.dht_port"):
        handset_cmd.build_config(parse(["relay", "--dht-port", "99999"]))


def test_handset_has_no_uplink_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["handset", "--uplink", "lo"])
    assert "--uplink" in capsys.readouterr().err


# ------------------------------------------------------------------ uplink_settings
def _relay(**uplink: Any) -> NodeConfig:
    return parse_config({"node": {"role": "relay"}, "uplink": uplink})


def test_uplink_off_gives_no_plan() -> None:
    assert uplink_settings(_relay()) is None
    assert uplink_settings(load_profile("vehicle-relay"),
                           parse(["relay", "--profile", "vehicle-relay"])) is None


def test_plan_from_flags_on_loopback() -> None:
    args = parse(["relay", "--uplink", "lo", "--dht-bootstrap", "127.0.0.1:4300",
                  "--dht-port", "0"])
    plan = uplink_settings(_relay(), args)
    assert plan is not None
    assert plan.addresses == UplinkAddresses("lo", "127.0.0.1", None)
    assert plan.bootstrap == (("127.0.0.1", 4300),) and plan.dht_port == 0
    assert plan.secret is None
    assert plan.uplink_addrs(4222) == ("127.0.0.1:4222",)
    assert plan.up_stable_s == 10.0 and plan.down_grace_s == 30.0


def test_missing_interface_and_handset_role_are_refused() -> None:
    with pytest.raises(UplinkAddressError, match="'nosuch0' does not exist"):
        uplink_settings(_relay(enabled=True, interface="nosuch0"))
    with pytest.raises(ConfigError, match="only a relay"):
        uplink_settings(parse_config({"uplink": {"enabled": True, "interface": "lo"}}))
    with pytest.raises(UplinkAddressError, match="does not exist"):
        uplink_addresses("nosuch0")


def test_secret_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "incident.secret"
    secret.write_bytes(b"  correct horse battery staple\n")
    secret.chmod(0o600)
    plan = uplink_settings(_relay(enabled=True, interface="lo", secret_file=str(secret)))
    assert plan is not None and plan.secret == b"correct horse battery staple"
    assert "correct horse" not in repr(plan)
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        uplink_settings(_relay(enabled=True, interface="lo", secret_file=str(secret)))
    assert "readable by others" in caplog.text and "horse" not in caplog.text
    secret.write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"uplink\.secret_file: .*holds 5"):
        uplink_settings(_relay(enabled=True, interface="lo", secret_file=str(secret)))
    with pytest.raises(ConfigError, match=r"uplink\.secret_file: cannot read"):
        uplink_settings(_relay(enabled=True, interface="lo",
                               secret_file=str(tmp_path / "missing")))


IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
20010db8000000000000000000000005 04 40 00 c0     eth0
20010db8000000000000000000000006 04 40 00 20     eth0
20010db8000000000000000000000007 05 40 00 00     wwan0
garbage
"""


def test_ipv6_addresses_keep_usable_global_ones() -> None:
    assert ipv6_addresses("eth0", IF_INET6) == ["fd00::2"]   # tentative, deprecated out
    assert ipv6_addresses("wwan0", IF_INET6) == ["2001:db8::7"]
    assert ipv6_addresses("lo", IF_INET6) == []              # host scope
    assert ipv6_addresses("nosuch", IF_INET6) == []


def test_role_stays_relay_for_relay_command() -> None:
    assert handset_cmd.build_config(parse(["relay"])).node.role is Role.RELAY
