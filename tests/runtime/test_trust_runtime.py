"""Revocation at run time: ``meshcomm revoke`` into a running node, enforcement along a
chain of run_node nodes, ``ctl status``, persistence across a restart, the journal."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from meshcomm.cli.main import main as cli_main
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.node.revocation_store import TRUST_FILE, TrustDb
from meshcomm.runtime.app import JOURNAL_FILE, NodeOptions, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    load_or_create_identity,
    write_credential_file,
    write_key_file,
)
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until


def _options(data_dir: Path, spec: str, name: str, root: bytes) -> NodeOptions:
    return node_options(data_dir, spec, name, **{"trust.agency_keys": [root.hex()]})


async def _who_keys(data_dir: Path) -> set[str]:
    rows = await asyncio.to_thread(ctl, data_dir, "who")
    return {e["node_id"] for e in rows}  # type: ignore[attr-defined]


async def _actl(data_dir: Path, command: str) -> dict[str, object]:
    reply = await asyncio.to_thread(ctl, data_dir, command)
    assert isinstance(reply, dict)
    return reply


async def _until_async(what: str, check: Callable[[], Awaitable[bool]],
                       timeout_s: float = 10.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


def test_revoke_cli_enforced_along_a_chain_and_kept_across_restart(tmp_path: Path) -> None:
    agency = Identity(secrets.token_bytes(32))
    key_file = tmp_path / "agency.key"
    write_key_file(key_file, agency)
    dirs = {n: tmp_path / n for n in "abc"}
    infos: dict[str, NodeInfo] = {}
    record_file = tmp_path / "revoke-c.bin"

    def ready(driver: NodeDriver, info: NodeInfo) -> None:
        infos[info.aor] = info

    async def scenario() -> dict[str, object]:
        out: dict[str, object] = {}
        with chain_medium(["a", "b", "c"]) as medium:
            async with asyncio.TaskGroup() as tg:
                tasks = {n: tg.create_task(run_node(_options(
                    dirs[n], f"mem:{medium.name}/{n}", n, agency.public_key), ready))
                    for n in "abc"}
                await wait_until(lambda: len(infos) == 3, "three nodes up")
                c_id = next(i for i in infos.values() if i.aor.startswith("sip:c@")).node_id
                c_key = load_or_create_identity(dirs["c"])[0].public_key

                async def a_knows_c() -> bool:
                    return c_id.hex() in await _who_keys(dirs["a"])

                async def c_gone() -> bool:
                    known = [c_id.hex() in await _who_keys(dirs[n]) for n in "ab"]
                    return not any(known)
                await _until_async("a knows c", a_knows_c)
                code = await asyncio.to_thread(cli_main, [
                    "revoke", "--agency-key", str(key_file), "--incident",
                    next(iter(infos.values())).incident, "--device-key", c_key.hex(),
                    "--note", "handset lost", "--out", str(record_file),
                    "--data-dir", str(dirs["a"])])
                out["cli"] = code
                out["took_s"] = await _until_async("c's binding gone at a and b", c_gone)
                out["trust_b"] = (await _actl(dirs["b"], "status"))["trust"]
                await _actl(dirs["a"], "stop")
                await tasks["a"]
                infos.clear()
                tasks["a"] = tg.create_task(run_node(_options(
                    dirs["a"], f"mem:{medium.name}/a", "a", agency.public_key), ready))
                await wait_until(lambda: len(infos) == 1, "a up again")
                await asyncio.sleep(1.0)        # c keeps announcing; a refuses it
                out["trust_a_restarted"] = (await _actl(dirs["a"], "status"))["trust"]
                out["who_a_restarted"] = await _who_keys(dirs["a"])
                out["c_id"] = c_id.hex()
                # the same record handed again is a duplicate
                out["again"] = await asyncio.to_thread(cli_main, [
                    "revoke", "--record", str(record_file), "--data-dir", str(dirs["a"])])
                for n in "abc":
                    await _actl(dirs[n], "stop")
        return out

    out = asyncio.run(scenario())
    assert out["cli"] == 0 and out["again"] == 0
    assert isinstance(out["took_s"], float) and out["took_s"] < 5.0
    trust_b = out["trust_b"]
    assert isinstance(trust_b, dict) and trust_b["records"] == 1
    assert trust_b["revoked_devices"] == 1
    assert trust_b["latest"][0]["kind"] == "revoke-device"
    assert trust_b["latest"][0]["note"] == "handset lost"
    restarted = out["trust_a_restarted"]
    assert isinstance(restarted, dict) and restarted["records"] == 1
    assert out["c_id"] not in out["who_a_restarted"]  # type: ignore[operator]
    db = TrustDb.open(dirs["b"] / TRUST_FILE)
    assert db.count() == 1
    db.close()
    ident_b = load_or_create_identity(dirs["b"])[0]
    with JournalStore.open(dirs["b"] / JOURNAL_FILE, ident_b.node_id) as journal:
        changes = [e for e in journal.entries() if e.type == JournalEventType.TRUST_CHANGED]
    assert len(changes) == 1 and changes[0].data["removed"] == 1


def test_a_command_node_signs_a_revocation_a_medic_node_cannot(tmp_path: Path) -> None:
    agency = Identity(secrets.token_bytes(32))
    dirs = {n: tmp_path / n for n in "abm"}
    for name, role in (("a", "command"), ("m", "medic")):
        device = load_or_create_identity(dirs[name])[0]
        cred = issue_credential(agency, aor_pattern="sip:*@incident.local", role=role,
                                device_key=device.public_key, issued_at=int(time.time()) - 60,
                                expires_at=int(time.time()) + 3600)
        write_credential_file(dirs[name] / CREDENTIAL_FILE, cred.to_bytes())
    infos: dict[str, NodeInfo] = {}

    def ready(driver: NodeDriver, info: NodeInfo) -> None:
        infos[info.aor] = info

    async def scenario() -> dict[str, object]:
        out: dict[str, object] = {}
        with chain_medium(["m", "a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                for n in "mab":
                    tg.create_task(run_node(_options(
                        dirs[n], f"mem:{medium.name}/{n}", n, agency.public_key), ready))
                await wait_until(lambda: len(infos) == 3, "three nodes up")
                b_key = load_or_create_identity(dirs["b"])[0].public_key
                b_id = next(i for i in infos.values() if i.aor.startswith("sip:b@")).node_id

                async def a_knows_b() -> bool:
                    return b_id.hex() in await _who_keys(dirs["a"])

                async def b_gone() -> bool:
                    known = [b_id.hex() in await _who_keys(dirs[n]) for n in "am"]
                    return not any(known)
                await _until_async("a knows b", a_knows_b)
                out["medic"] = await asyncio.to_thread(cli_main, [
                    "revoke", "--device-key", b_key.hex(), "--data-dir", str(dirs["m"])])
                out["medic_records"] = (await _actl(dirs["m"], "status"))["trust"]
                out["command"] = await asyncio.to_thread(cli_main, [
                    "revoke", "--device-key", b_key.hex(), "--note", "stolen",
                    "--data-dir", str(dirs["a"])])
                out["took_s"] = await _until_async("b gone at a and m", b_gone)
                out["trust_m"] = (await _actl(dirs["m"], "status"))["trust"]
                for n in "mab":
                    await _actl(dirs[n], "stop")
        return out

    out = asyncio.run(scenario())
    assert out["medic"] == 1 and out["command"] == 0
    medic_records = out["medic_records"]
    assert isinstance(medic_records, dict) and medic_records["records"] == 0
    trust_m = out["trust_m"]
    assert isinstance(trust_m, dict) and trust_m["revoked_devices"] == 1
    latest = trust_m["latest"][0]
    assert latest["note"] == "stolen" and latest["signer"] == infos_signer(dirs["a"])


def infos_signer(data_dir: Path) -> str:
    return fingerprint(load_or_create_identity(data_dir)[0].public_key)
