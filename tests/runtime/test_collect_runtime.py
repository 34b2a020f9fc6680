"""``meshcomm ctl collect`` in real nodes (run_node on an in-memory radio, one process).

Chain post - bravo - charlie (- delta, whose profile does not list the post). The post runs
``meshcomm ctl collect --out DIR --json`` (the real CLI, over the control socket): every
device's journal lands in DIR/<node id hex>/ as a journal file the journal verifier accepts
with its public.key, rows identical to the device's own file; a second run after more
traffic fetches only the new entries; a run interrupted by ``--cancel`` resumes; delta
refuses (counted, journaled) and the command exits 4 naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.config import ExportSettings, parse_config
from meshcomm.errors import ConfigError
from meshcomm.journal.store import ROW_COLUMNS
from meshcomm.journal.verify import verify_journal
from meshcomm.runtime.app import JOURNAL_FILE, run_node
from meshcomm.runtime.collect_edge import (
    COPY_JOURNAL_FILE,
    PUBLIC_KEY_FILE,
    CopyError,
    append_rows,
    copy_head,
)
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.keystore import load_or_create_identity
from tests.runtime.disk import SmallDisk
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

WAIT_S = 30.0


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.text_factory = bytes
        return [tuple(r) for r in conn.execute(f"SELECT {ROW_COLUMNS} FROM entries "
                                               "ORDER BY seq")]
    finally:
        conn.close()


def _cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ctl", "--data-dir", str(data_dir), "--timeout", "20", "collect", *args])
    return code, out.getvalue(), err.getvalue()


def test_ctl_collect_gathers_a_chain_resumes_and_names_a_refusal(tmp_path: Path) -> None:
    names = ("post", "bravo", "charlie", "delta")
    dirs = {n: tmp_path / n for n in names}
    post_id = load_or_create_identity(dirs["post"])[0].node_id.hex()
    out = tmp_path / "collected"
    up: dict[str, tuple[NodeDriver, NodeInfo]] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            up[key] = (driver, info)
        return cb

    async def scenario() -> tuple[list[tuple[int, str, str]], dict[str, object]]:
        results = []
        with chain_medium(["p", "b", "c", "d"]) as medium:
            async with asyncio.TaskGroup() as tg:
                tasks = []
                for name, station in zip(names, "pbcd", strict=True):
                    allowed = [] if name == "delta" else [post_id]
                    opts = node_options(dirs[name], f"mem:{medium.name}/{station}", name,
                                        **{"export.collectors": allowed})
                    tasks.append(tg.create_task(run_node(opts, ready(name))))
                await wait_until(lambda: len(up) == 4, "four nodes up")
                post = up["post"][0]
                collect = post.core.collect
                assert collect is not None
                await wait_until(lambda: len(collect.reachable(post.now())) == 3,
                                 "routes to the three others", WAIT_S)
                # an interrupted run (cancelled at once): the next run resumes from it
                started = await asyncio.to_thread(ctl, dirs["post"], "collect",
                                                  action="start", out=str(out))
                assert isinstance(started, dict) and started["running"]
                cancelled = await asyncio.to_thread(ctl, dirs["post"], "collect",
                                                    action="cancel")
                assert isinstance(cancelled, dict) and not cancelled["running"]
                results.append(await asyncio.to_thread(_cli, dirs["post"], "--out", str(out),
                                                       "--json"))
                # more traffic on bravo's journal, then a second (incremental) run
                for _ in range(3):
                    await asyncio.to_thread(ctl, dirs["bravo"], "send",
                                            to="sip:charlie@incident.local", text="x",
                                            wait_s=5.0)
                results.append(await asyncio.to_thread(_cli, dirs["post"], "--out", str(out),
                                                       "--json"))
                delta_status = await asyncio.to_thread(ctl, dirs["delta"], "status")
                assert isinstance(delta_status, dict)
                for name in names:
                    await asyncio.to_thread(ctl, dirs[name], "stop")
                for task in tasks:
                    assert await task == 0
        return results, delta_status

    results, delta_status = asyncio.run(scenario())
    ids = {n: info.node_id.hex() for n, (_d, info) in up.items()}
    (code1, json1, err1), (code2, json2, _err2) = results
    assert code1 == 4 and ids["delta"] in err1 and "not an authorised" in err1, err1
    first = {d["node"]: d for d in json.loads(json1)["devices"]}
    assert set(first) == set(ids.values())
    assert first[ids["delta"]]["state"] == "refused"
    for name in ("post", "bravo", "charlie"):
        assert first[ids[name]]["complete"], first[ids[name]]
    second = {d["node"]: d for d in json.loads(json2)["devices"]}
    bravo1, bravo2 = first[ids["bravo"]], second[ids["bravo"]]
    assert bravo2["held_seq"] > bravo1["held_seq"]
    assert bravo2["rows"] == bravo2["held_seq"] - bravo1["held_seq"]   # only the new ones
    print(f"first run {json.loads(json1)['elapsed_s']} s: "
          + ", ".join(f"{n} {first[ids[n]]['rows']} rows {first[ids[n]]['wire_bytes']} B"
                      for n in ("post", "bravo", "charlie")))
    assert code2 == 4
    collect = delta_status["collect"]
    assert isinstance(collect, dict)
    assert collect["counters"]["collect_refused_unauthorised"] >= 1
    # every copy is a valid journal, verified with its public.key, rows as on the device
    for name in ("post", "bravo", "charlie"):
        copy = out / ids[name]
        key = bytes.fromhex((copy / PUBLIC_KEY_FILE).read_text().strip())
        assert key == up[name][1].public_key
        report = verify_journal(copy / COPY_JOURNAL_FILE, key)
        assert report.ok, report
        held = _rows(copy / COPY_JOURNAL_FILE)
        own = _rows(dirs[name] / JOURNAL_FILE)
        assert held == own[:len(held)] and len(held) >= second[ids[name]]["held_seq"]
    assert not (out / ids["delta"]).exists()


def test_copy_writes_are_whole_or_nothing(tmp_path: Path) -> None:
    """A chunk that cannot be written leaves the copy as it was (and says which file)."""
    from tests.node.test_collect import ident, journal_rows

    node = ident("b")
    rows = [tuple(r) for r in journal_rows(node, 20)]
    wire = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]
    append_rows(tmp_path, node.node_id, wire[:10])  # type: ignore[arg-type]
    assert copy_head(tmp_path, node.node_id) == (10, wire[9][7])
    with pytest.raises(CopyError) as info:          # seq 5 again: the whole batch refused
        append_rows(tmp_path, node.node_id, wire[10:] + wire[4:5])  # type: ignore[arg-type]
    assert str(tmp_path) in str(info.value)
    assert copy_head(tmp_path, node.node_id) == (10, wire[9][7])
    report = verify_journal(tmp_path / node.node_id.hex() / COPY_JOURNAL_FILE,
                            node.public_key)
    assert report.ok


def test_full_disk_is_a_clear_error_and_never_a_half_written_copy(
        small_disk: SmallDisk) -> None:
    from tests.node.test_collect import ident, journal_rows

    out = small_disk.path / "collected"
    node, other = ident("b"), ident("c")
    wire = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            for r in journal_rows(node, 40)]
    append_rows(out, node.node_id, wire[:20])  # type: ignore[arg-type]
    small_disk.fill()
    with pytest.raises(CopyError) as info:
        append_rows(out, node.node_id, wire[20:])  # type: ignore[arg-type]
    assert "no space left on device" in str(info.value), info.value
    with pytest.raises(CopyError):               # a new device's copy cannot be created:
        append_rows(out, other.node_id, [])      # nothing is left behind
    assert not (out / other.node_id.hex() / COPY_JOURNAL_FILE).exists()
    small_disk.free()
    assert copy_head(out, node.node_id) == (20, wire[19][7])
    append_rows(out, node.node_id, wire[20:])  # type: ignore[arg-type]
    report = verify_journal(out / node.node_id.hex() / COPY_JOURNAL_FILE, node.public_key)
    assert report.ok and copy_head(out, node.node_id) == (40, wire[39][7])


def test_export_settings_are_validated() -> None:
    assert ExportSettings().collector_roles == ("command",)
    with pytest.raises(ConfigError, match=r"export\.collectors"):
        parse_config({"export": {"collectors": ["nothex"]}})
    with pytest.raises(ConfigError, match="collect_rate_bytes_per_s"):
        parse_config({"export": {"collect_rate_bytes_per_s": 10}})
    cfg = parse_config({"export": {"collectors": ["ab" * 32]}})
    assert cfg.export.collector_ids() == frozenset({bytes.fromhex("ab" * 32)})
