"""The uplink transport's options (issue 10): ``--uplink-impair`` / ``[uplink] impairment``
(validated like ``[radio] impairment``) and the transport's configured peers (each
bootstrap node at its port + 1)."""

from __future__ import annotations

import pytest

from meshcomm.cli import handset_cmd
from meshcomm.cli.uplink_opts import uplink_settings
from meshcomm.config import InvalidConfig, parse_config, parse_toml
from meshcomm.config_show import format_config
from meshcomm.runtime.uplink_transport import transport_peer, transport_port, uplink_aor
from radios import Impairment
from tests.cli.test_uplink_opts import parse


def test_uplink_impair_flag_and_key() -> None:
    args = parse(["relay", "--uplink", "lo", "--uplink-impair", "delay=300ms,loss=0.02",
                  "--dht-bootstrap", "127.0.0.1:4222", "--dht-bootstrap", "[2001:db8::7]:4300",
                  "--dht-bootstrap", "dht.example.org:65535"])
    cfg = handset_cmd.build_config(args)
    assert cfg.uplink.impairment == "delay=300ms,loss=0.02"
    plan = uplink_settings(cfg)
    assert plan is not None
    assert plan.impairment == Impairment(loss=0.02, delay_s=0.3)
    # port + 1 each; 65535 + 1 is no port: left out
    assert plan.transport_peers() == ("127.0.0.1:4223", "[2001:db8::7]:4301")
    # the key round-trips through the TOML the config command shows
    assert parse_toml(format_config(cfg), "shown").uplink.impairment == cfg.uplink.impairment
    plain = uplink_settings(parse_config({"node": {"role": "relay"},
                                          "uplink": {"enabled": True, "interface": "lo"}}))
    assert plain is not None and plain.impairment is None


@pytest.mark.parametrize("spec", ["delay=forever", "loss=2", "jitter", "speed=1"])
def test_bad_uplink_impairment_names_its_key(spec: str) -> None:
    with pytest.raises(InvalidConfig, match=r"uplink\.impairment"):
        handset_cmd.build_config(parse(["relay", "--uplink-impair", spec]))
    with pytest.raises(InvalidConfig, match=r"uplink\.impairment"):
        parse_config({"uplink": {"impairment": spec}})


def test_port_rule_and_uplink_aor() -> None:
    assert transport_port(4222) == 4223 and transport_port(0) == 0
    assert transport_peer("::1", 4222) == "[::1]:4223"
    assert transport_peer("relay.example", 65535) is None
    assert uplink_aor(bytes(range(32))) == "sip:0001020304050607@uplink.invalid"
