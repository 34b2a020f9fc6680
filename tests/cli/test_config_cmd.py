from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from meshcomm.cli import config_cmd
from meshcomm.config import NodeConfig, load_profile, parse_toml


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshcomm")
    config_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


def test_check_ok_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[node]\nrole = "relay"\nincident = "fire-7"\n'
                    '[radio]\ninterfaces = ["udp:wlan0"]\n')
    assert run(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok\n")
    assert "role relay" in out and "'fire-7'" in out and "udp:wlan0" in out


def test_check_names_every_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[overlay]\nhelo_interval_s = 0.5\n[trust]\n"
                    'agency_keys = ["' + "ab" * 32 + '", "xyz"]\n')
    assert run(["config", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}: trust.agency_keys[1]: not a 64-digit hex key",
        f"{path}: overlay.helo_interval_s: unknown key (did you mean hello_interval_s?)",
    ]


def test_check_syntax_error_and_missing_file(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text("[node]\n\nname = = 1\n")
    assert run(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3: TOML syntax error")
    assert run(["config", "check", str(tmp_path / "absent.toml")]) == 1
    assert "absent.toml: cannot read" in capsys.readouterr().err


def test_show_profile_prints_parseable_effective_config(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", "--profile", "vehicle-relay"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# effective configuration: profile vehicle-relay")
    assert parse_toml(out, "shown") == load_profile("vehicle-relay")


def test_show_defaults_file_and_overrides(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show"]) == 0
    assert parse_toml(capsys.readouterr().out, "shown") == NodeConfig()
    path = tmp_path / "c.toml"
    path.write_text('[node]\nname = "medic-7"\n')
    assert run(["config", "show", str(path), "--set", "overlay.hello_interval_s=0.5",
                "--set", "journal.keep_sip_bodies=true"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["node"]["name"] == "medic-7"
    assert shown["overlay"]["hello_interval_s"] == 0.5
    assert shown["journal"]["keep_sip_bodies"] is True


def test_show_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", "--profile", "nope"]) == 1
    assert "unknown profile 'nope'; known:" in capsys.readouterr().err
    assert run(["config", "show", "--set", "overlay.helo=1"]) == 1
    assert "overlay.helo: unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["config", "show", "--profile", "handset", "some.toml"])


def test_profiles_lists_shipped_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "profiles"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"handset", "vehicle-relay", "command-post", "exercise"} <= set(names)
