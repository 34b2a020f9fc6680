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
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.cli.ctl_cmd import format_status
from meshcomm.cli.main import main
from meshcomm.config import ExportSettings, parse_config
from meshcomm.errors import ConfigError
from meshcomm.journal.codec import decode_data_untrusted
from meshcomm.journal.store import ROW_COLUMNS, JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.node.collect_serve import (
    REFUSAL_JOURNAL_BURST,
    REFUSAL_JOURNAL_PER_S,
    REFUSAL_REASON,
)
from meshcomm.node.collect_wire import JournalPull, encode_pull
from meshcomm.node.kinds import AppKind
from meshcomm.runtime.app import JOURNAL_FILE, run_node
from meshcomm.runtime.collect_edge import (
    COPY_INFO_FILE,
    COPY_JOURNAL_FILE,
    PUBLIC_KEY_FILE,
    READ_MAX_BYTES,
    CopyError,
    JournalReader,
    append_rows,
    copy_head,
    held_devices,
)
from meshcomm.runtime.control import ControlError
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.keystore import load_or_create_identity
from meshcomm.types import NodeId
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
                for bad in ({"action": "nope"}, {"action": "start", "out": "relative"},
                            {"action": "start"}):
                    with pytest.raises(ControlError, match=r"action|out"):
                        await asyncio.to_thread(ctl, dirs["post"], "collect", **bad)
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
        assert report.ok and report.checkpoints >= 1, report   # signed when pulled
        held = _rows(copy / COPY_JOURNAL_FILE)
        own = _rows(dirs[name] / JOURNAL_FILE)
        assert held == own[:len(held)] and len(held) >= second[ids[name]]["held_seq"]
        # when the post last heard the device (its clock) and the head it reported
        info = json.loads((copy / COPY_INFO_FILE).read_text())
        assert info["collector"] == ids["post"] and info["head_seq"] >= len(held)
        assert abs(info["heard_wall_s"] - time.time()) < 120.0
    assert not (out / ids["delta"]).exists()


def _prefill(data_dir: Path, entries: int) -> bytes:
    """A device that already journaled ``entries`` SIP records (its identity created)."""
    identity = load_or_create_identity(data_dir)[0]
    with JournalStore.open(data_dir / JOURNAL_FILE, identity.node_id) as store:
        for i in range(entries):
            store.append("sip.message", {
                "dir": "to-mesh", "method": "MESSAGE", "status": None, "call_id": f"c{i}",
                "cseq": i, "from": "sip:bravo@incident.local", "to": "sip:x@incident.local",
                "peer": f"{i:016x}.mesh", "hops": 2, "body_sha256": f"{i:064x}",
                "start": "MESSAGE sip:x@incident.local SIP/2.0",
                "headers": [["Via", f"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK{i}"],
                            ["Call-ID", f"c{i}"], ["CSeq", f"{i} MESSAGE"]]},
                100.0 + i, 1.7e9 + i)
    return identity.node_id


def test_a_crashed_command_post_resumes_where_its_copy_ends(tmp_path: Path) -> None:
    """The post crashes mid-collection (its task cancelled: no goodbye) and starts again:
    the next ``ctl collect`` asks only for what the copy lacks, and the copy ends up
    identical to the device's journal. Meanwhile an unauthorised neighbour floods the
    device with pulls: all refused, the journal gets a bounded number of refusal records,
    and the authorised collection completes anyway."""
    dirs = {n: tmp_path / n for n in ("post", "bravo", "mallory")}
    post_id = load_or_create_identity(dirs["post"])[0].node_id.hex()
    bravo_id = _prefill(dirs["bravo"], 3000)
    out = tmp_path / "collected"
    up: dict[str, NodeDriver] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, _info: NodeInfo) -> None:
            up[key] = driver
        return cb

    async def scenario() -> tuple[int, str, dict[str, object]]:
        with chain_medium(["p", "b", "m"]) as medium:
            def start(tg: asyncio.TaskGroup, key: str, station: str) -> asyncio.Task[int]:
                up.pop(key, None)
                opts = node_options(dirs[key], f"mem:{medium.name}/{station}", key, **{
                    "export.collectors": [post_id],
                    "export.collect_rate_bytes_per_s": 2_000_000})
                return tg.create_task(run_node(opts, ready(key)))

            async with asyncio.TaskGroup() as tg:
                t_post, t_bravo = start(tg, "post", "p"), start(tg, "bravo", "b")
                t_mallory = start(tg, "mallory", "m")
                await wait_until(lambda: len(up) == 3, "three nodes up")
                collect = up["post"].core.collect
                assert collect is not None
                await wait_until(lambda: NodeId(bravo_id) in collect.reachable(
                    up["post"].now()), "a route to bravo", WAIT_S)
                await asyncio.to_thread(ctl, dirs["post"], "collect", action="start",
                                        out=str(out))
                await wait_until(lambda: (copy_head(out, bravo_id) or (0, b""))[0] >= 300,
                                 "part of bravo's journal", WAIT_S)
                t_post.cancel()                          # the command post crashes
                assert (await asyncio.gather(t_post, return_exceptions=True))[0] is not None
                held = copy_head(out, bravo_id)
                assert held is not None and held[0] < 3000
                mallory = up["mallory"]
                for _ in range(300):                     # a flood of pulls at bravo
                    mallory.pump_.command(mallory.now(), lambda: mallory.node.send_unicast(
                        bravo_id, AppKind.JOURNAL_PULL, encode_pull(JournalPull(1, 256)),
                        mallory.now()))
                t_post = start(tg, "post", "p")
                await wait_until(lambda: "post" in up, "the post up again")
                code, summary, _err = await asyncio.to_thread(_cli, dirs["post"], "--out",
                                                              str(out), "--json")
                status = await asyncio.to_thread(ctl, dirs["bravo"], "status")
                assert isinstance(status, dict)
                for key in ("post", "bravo", "mallory"):
                    await asyncio.to_thread(ctl, dirs[key], "stop")
                assert (await t_post, await t_bravo, await t_mallory) == (0, 0, 0)
        return code, summary, status

    code, summary, status = asyncio.run(scenario())
    devices = {d["node"]: d for d in json.loads(summary)["devices"]}
    bravo = devices[bravo_id.hex()]
    assert bravo["complete"] and code == 0, summary
    assert bravo["rows"] == bravo["held_seq"] - held_before(summary, bravo)
    copy = out / bravo_id.hex() / COPY_JOURNAL_FILE
    assert _rows(copy) == _rows(dirs["bravo"] / JOURNAL_FILE)[:len(_rows(copy))]
    assert len(_rows(copy)) >= 3000 and verify_journal(copy).ok
    counters = status["collect"]["counters"]  # type: ignore[index]
    # the first 40 (the burst) were refused, the rest rate-limited before any check
    assert 40 <= counters["collect_refused_unauthorised"] < 100
    assert (counters["collect_refused_unauthorised"]
            + counters["collect_refused_rate_limited"]) >= 250   # scoped floods lose some
    assert "collect_refused_unauthorised=" in format_status(status)   # ctl status text
    refusals = [row for row in _rows(dirs["bravo"] / JOURNAL_FILE)
                if row[4] == b"envelope.dropped" and isinstance(row[5], bytes)
                and decode_data_untrusted(row[5]).get("reason") == REFUSAL_REASON]
    assert 1 <= len(refusals) <= REFUSAL_JOURNAL_BURST + 30 * REFUSAL_JOURNAL_PER_S


def held_before(summary: str, device: dict[str, object]) -> int:
    """What the copy held when this run began (its held seq minus the rows it added)."""
    held, rows = device["held_seq"], device["rows"]
    assert isinstance(held, int) and isinstance(rows, int) and summary
    return held - rows


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


def test_a_device_reads_bounded_batches_and_dir_names_its_devices(tmp_path: Path) -> None:
    node = load_or_create_identity(tmp_path / "dev")[0]
    with JournalStore.open(tmp_path / "dev" / JOURNAL_FILE, node.node_id) as store:
        for i in range(40):
            store.append("sip.message", {"body": bytes(30_000), "i": i}, float(i), 1e9 + i)
    reader = JournalReader(tmp_path / "dev" / JOURNAL_FILE)
    try:
        rows, head = reader.read(3, 256)
    finally:
        reader.close()
    assert head == 40 and rows[0][0] == 3
    assert len(rows) == -(-READ_MAX_BYTES // 30_000) < 38      # stops at the byte bound
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / ("ab" * 32)).mkdir()                                # no journal in it
    (out / ("cd" * 32)).mkdir()
    (out / ("cd" * 32) / COPY_JOURNAL_FILE).write_bytes(b"")
    assert held_devices(out) == [bytes.fromhex("cd" * 32)]


def test_export_settings_are_validated() -> None:
    assert ExportSettings().collector_roles == ("command",)
    with pytest.raises(ConfigError, match=r"export\.collectors"):
        parse_config({"export": {"collectors": ["nothex"]}})
    with pytest.raises(ConfigError, match="collect_rate_bytes_per_s"):
        parse_config({"export": {"collect_rate_bytes_per_s": 10}})
    cfg = parse_config({"export": {"collectors": ["ab" * 32]}})
    assert cfg.export.collector_ids() == frozenset({bytes.fromhex("ab" * 32)})
