"""[upstream] at start-up (meshcomm.runtime.upstream_plan): the password file (mode-checked,
never logged), name resolution, the contact address, and the errors naming their key."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from meshcomm.config import InvalidConfig, NodeConfig, Role, config_with_overrides
from meshcomm.errors import ConfigError
from meshcomm.runtime.upstream_plan import (
    MAX_PASSWORD_BYTES,
    contact_address,
    read_password_file,
    upstream_plan,
)

PASSWORD = "correct horse battery"


def _cfg(tmp_path: Path, **upstream: object) -> NodeConfig:
    overrides: dict[str, object] = {"node.role": Role.RELAY.value,
                                    "upstream.registrar": "sip:127.0.0.1:5070"}
    overrides.update({f"upstream.{key}": value for key, value in upstream.items()})
    return config_with_overrides(NodeConfig(), overrides)


def _password(tmp_path: Path, text: str = PASSWORD + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "upstream.password"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_password_file_read_and_stripped(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert read_password_file(_password(tmp_path)) == PASSWORD
    assert "readable by others" not in caplog.text


def test_password_file_readable_by_others_is_a_warning_without_the_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert read_password_file(_password(tmp_path, mode=0o644)) == PASSWORD
    assert "readable by others" in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize("text", ["", "  \n", "x" * (MAX_PASSWORD_BYTES + 1)])
def test_bad_password_files_name_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_password_file(_password(tmp_path, text))
    assert info.value.key_path == "upstream.password_file"


def test_missing_password_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_password_file(tmp_path / "nope")
    assert info.value.key_path == "upstream.password_file"


def test_contact_address_rules(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert contact_address(cfg, "127.0.0.1", 5060, "192.0.2.7") == ("192.0.2.7", 5060)
    assert contact_address(cfg, "10.1.2.3", 5060, None) == ("10.1.2.3", 5060)
    with pytest.raises(ConfigError) as info:
        contact_address(cfg, "0.0.0.0", 5060, None)
    assert info.value.key_path == "upstream.contact"
    configured = _cfg(tmp_path, contact="203.0.113.9:5099")
    assert contact_address(configured, "0.0.0.0", 5060, "192.0.2.7") == ("203.0.113.9", 5099)


def test_plan_of_a_relay(tmp_path: Path) -> None:
    secret = _password(tmp_path)
    cfg = _cfg(tmp_path, username="relay-7", password_file=str(secret), expires_s=300)
    plan = asyncio.run(upstream_plan(cfg, sip_host="127.0.0.1", sip_port=5060,
                                     uplink_host="127.0.0.1"))
    assert plan is not None
    assert plan.proxy == ("127.0.0.1", 5070)                 # the registrar's by default
    config = plan.config
    assert (config.contact_host, config.contact_port) == ("127.0.0.1", 5060)
    assert config.domain == cfg.node.domain and config.expires_s == 300
    assert config.secret is not None and config.secret.password == PASSWORD
    assert PASSWORD not in repr(plan)


def test_plan_resolves_names_once_and_names_what_fails(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, proxy="localhost:5080")
    plan = asyncio.run(upstream_plan(cfg, sip_host="127.0.0.1", sip_port=5060,
                                     uplink_host=None))
    assert plan is not None and plan.proxy in (("127.0.0.1", 5080), ("::1", 5080))
    bad = _cfg(tmp_path, proxy="no-such-host.invalid:5060")
    with pytest.raises(ConfigError) as info:
        asyncio.run(upstream_plan(bad, sip_host="127.0.0.1", sip_port=5060,
                                  uplink_host=None))
    assert info.value.key_path == "upstream.proxy"


def test_no_plan_without_a_registrar_and_none_on_a_handset(tmp_path: Path) -> None:
    assert asyncio.run(upstream_plan(NodeConfig(), sip_host="127.0.0.1", sip_port=5060,
                                     uplink_host=None)) is None
    handset = config_with_overrides(_cfg(tmp_path), {"node.role": Role.HANDSET.value})
    with pytest.raises(ConfigError) as info:
        asyncio.run(upstream_plan(handset, sip_host="127.0.0.1", sip_port=5060,
                                  uplink_host=None))
    assert info.value.key_path == "upstream.registrar"


def test_a_trusted_upstream_needs_the_agency_policy(tmp_path: Path) -> None:
    """Under ``open`` no node honours an identity asserted for a caller beyond the mesh,
    so ``trusted`` there would only mislead: refused, naming the key."""
    assert not asyncio.run(upstream_plan(_cfg(tmp_path), sip_host="127.0.0.1", sip_port=5060,
                                         uplink_host="127.0.0.1")).trusted  # type: ignore[union-attr]
    # refused by the configuration itself (meshcomm config check says so too)
    with pytest.raises(InvalidConfig) as info:
        _cfg(tmp_path, trusted=True)
    assert any(key == "upstream.trusted" for key, _ in info.value.problems)
    agency = config_with_overrides(_cfg(tmp_path), {
        "trust.policy": "agency", "trust.agency_keys": ["ab" * 32], "upstream.trusted": True})
    plan = asyncio.run(upstream_plan(agency, sip_host="127.0.0.1", sip_port=5060,
                                     uplink_host="127.0.0.1"))
    assert plan is not None and plan.trusted
