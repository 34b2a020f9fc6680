"""``meshcomm config show``: the effective configuration as TOML text."""

from __future__ import annotations

import dataclasses
from typing import Any

from meshcomm.config import NodeConfig, to_mapping


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = []
        for ch in value:
            if ch in '"\\':
                escaped.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                escaped.append(f"\\u{ord(ch):04x}")
            else:
                escaped.append(ch)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot format {type(value).__name__}")


_UNSET_NOTES = {
    ("node", "name"): "hostname + short key fingerprint",
    ("node", "data_dir"): "$XDG_DATA_HOME/meshcomm or ~/.local/share/meshcomm",
    ("uplink", "secret_file"): "secret derived from node.incident (records NOT private)",
    ("upstream", "password_file"): "no credentials (digest challenges are not answered)",
    ("sip", "users_file"): "only the users of meshcomm ctl user add",
}


def format_config(cfg: NodeConfig) -> str:
    """The effective configuration as TOML text (parses back to an equal config)."""
    lines: list[str] = []
    data = to_mapping(cfg)
    for section in (f.name for f in dataclasses.fields(cfg)):
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for f in dataclasses.fields(getattr(cfg, section)):
            if f.name in data[section]:
                lines.append(f"{f.name} = {_toml_value(data[section][f.name])}")
            else:
                note = _UNSET_NOTES.get((section, f.name), "unset")
                lines.append(f"# {f.name} unset: {note}")
    return "\n".join(lines) + "\n"
