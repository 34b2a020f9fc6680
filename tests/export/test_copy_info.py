"""copy.json beside a collected journal (meshcomm/export/reader.read_copy_info): read as
written by ctl collect; anything else (missing, garbage, oversized, wrong types, NaN, a
negative head) is no copy record, never an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshcomm.export.reader import COPY_INFO_FILE, MAX_COPY_INFO_BYTES, read_copy_info
from meshcomm.runtime.collect_edge import write_copy_info

NODE = bytes(range(32))
POST = bytes(range(1, 33))


def test_what_collect_writes_is_read_back(tmp_path: Path) -> None:
    write_copy_info(tmp_path, NODE, POST, 1_800_000_000.5, 42)
    journal = tmp_path / NODE.hex() / "journal.sqlite"
    assert read_copy_info(journal) == (POST.hex(), 1_800_000_000.5, 42)
    assert read_copy_info(tmp_path / "elsewhere" / "journal.sqlite") is None


@pytest.mark.parametrize("content", [
    b"", b"\xff\xfe", b"[]", b"null", b'{"collector": 1}',
    json.dumps({"collector": "ab", "heard_wall_s": 1.0, "head_seq": 1}).encode(),
    json.dumps({"collector": "g" * 64, "heard_wall_s": 1.0, "head_seq": 1}).encode(),
    json.dumps({"collector": "a" * 64, "heard_wall_s": "1", "head_seq": 1}).encode(),
    json.dumps({"collector": "a" * 64, "heard_wall_s": True, "head_seq": 1}).encode(),
    b'{"collector": "' + b"a" * 64 + b'", "heard_wall_s": NaN, "head_seq": 1}',
    json.dumps({"collector": "a" * 64, "heard_wall_s": 1.0, "head_seq": -1}).encode(),
    json.dumps({"collector": "a" * 64, "heard_wall_s": 1.0, "head_seq": 2**63}).encode(),
    json.dumps({"collector": "a" * 64, "heard_wall_s": 1.0, "head_seq": 1.5}).encode(),
    b" " * (MAX_COPY_INFO_BYTES + 1),
])
def test_anything_else_is_no_copy_record(tmp_path: Path, content: bytes) -> None:
    (tmp_path / COPY_INFO_FILE).write_bytes(content)
    assert read_copy_info(tmp_path / "journal.sqlite") is None
