"""Revocation and trust updates across six real ``meshcomm handset`` processes in six
namespaces wired as a chain (issue 12, point 4 done-when).

Agency policy: every node starts with the agency key in its profile (``--set
trust.agency_keys=[...]``) and a credential made with the same code as ``meshcomm
enroll``. Two checks, each within 10 s of the record being issued with the real CLI into
node 0 (``meshcomm revoke`` / ``meshcomm add-agency --agency-key ... --data-dir``):

* a revoked handset (node 5) disappears from every other node's ``ctl who`` and its
  traffic is dropped (node 4 counts drops); node 5 itself says it is revoked in ``ctl
  status`` and its gateway answers ``ctl send`` 403 Device Revoked (nothing arrives);
* a mutual-aid agency's handset (node 5, whose profile trusts its own agency too) is
  refused everywhere until the home agency signs the addition of its key, then is listed
  by every node.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    load_or_create_identity,
    write_credential_file,
    write_key_file,
)
from tests.envcheck import require_root
from tests.integration.nodes import QUICK_HANDSET_ARGS
from tools.testbed import Testbed, chain
from tools.testbed.nodes import MeshProcess, wait_until

N_NODES = 6
LIMIT_S = 10.0
CONVERGE_S = 30.0
DOMAIN = "incident.local"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _enrolled(data_dir: Path, agency: Identity) -> None:
    device = load_or_create_identity(data_dir)[0]
    now = int(time.time())
    cred = issue_credential(agency, aor_pattern=f"sip:*@{DOMAIN}", role="firefighter",
                            device_key=device.public_key, issued_at=now - 60,
                            expires_at=now + 86400)
    write_credential_file(data_dir / CREDENTIAL_FILE, cred.to_bytes())


def _start(tb: Testbed, i: int, data_dir: Path, trusted: list[Identity]) -> MeshProcess:
    keys = ", ".join(f'"{a.public_key.hex()}"' for a in trusted)
    return tb.start_node(i, name=f"unit{i}", data_dir=data_dir, wait=False, extra_args=(
        *QUICK_HANDSET_ARGS, "--set", "trust.policy=agency",
        "--set", f"trust.agency_keys=[{keys}]"))


def _aors(node: MeshProcess) -> set[str]:
    return node.who_aors() or set()


def _inbox(node: MeshProcess) -> list[str]:
    reply = node.request("inbox")
    rows = reply if isinstance(reply, list) else reply.get("messages", [])
    return [str(e.get("text")) for e in rows]


def _cli(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "meshcomm.cli.main", *argv],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _chain_up(tmp_path: Path, tb: Testbed, agencies: list[Identity],
              trusted: list[list[Identity]]) -> list[MeshProcess]:
    tb.use_workdir(tmp_path)
    dirs = [tmp_path / f"data{i}" for i in range(N_NODES)]
    for i, d in enumerate(dirs):
        _enrolled(d, agencies[i])
    return [_start(tb, i, dirs[i], trusted[i]) for i in range(N_NODES)]


def test_revoked_handset_vanishes_and_is_cut_off_within_10_s(tmp_path: Path) -> None:
    require_root()
    root = Identity(secrets.token_bytes(32))
    key_file = tmp_path / "agency.key"
    write_key_file(key_file, root)
    with chain(N_NODES) as tb:
        nodes = _chain_up(tmp_path, tb, [root] * N_NODES, [[root]] * N_NODES)
        everyone = {f"sip:unit{i}@{DOMAIN}" for i in range(N_NODES)}
        assert wait_until(lambda: all(_aors(n) == everyone for n in nodes), CONVERGE_S) \
            is not None, "the chain did not converge"
        # before: a MESSAGE from unit5 reaches node 0 (so the check after means something)
        nodes[5].request("send", to=f"sip:unit0@{DOMAIN}", text="before", wait_s=3.0,
                         timeout_s=10.0)
        assert wait_until(lambda: "before" in _inbox(nodes[0]), 10.0) is not None
        victim = nodes[5].status()
        t0 = time.monotonic()
        _cli("revoke", "--agency-key", str(key_file), "--incident", victim["incident"],
             "--device-key", victim["public_key"], "--note", "handset lost",
             "--data-dir", str(nodes[0].data_dir))
        issued_s = time.monotonic() - t0
        gone = f"sip:unit5@{DOMAIN}"
        took = wait_until(lambda: all(gone not in _aors(n) for n in nodes[:5]), LIMIT_S)
        took_s = time.monotonic() - t0
        assert took is not None
        print(f"\nmeshcomm revoke took {issued_s:.2f} s (process start included); unit5 gone "
              f"from all five other nodes {took:.2f} s after it returned, {took_s:.2f} s "
              "after it started")
        # the revoked handset learns it too: its ctl status says so, and its gateway
        # refuses its clients (ctl send here) 403 instead of sending into a mesh that
        # drops everything it sends
        knows = wait_until(lambda: nodes[5].status()["trust"].get("this_node_revoked")
                           == "revoked", LIMIT_S)
        assert knows is not None
        reply = nodes[5].request("send", to=f"sip:unit0@{DOMAIN}",
                                 text="from the lost handset", wait_s=2.0, timeout_s=10.0)
        assert (reply["code"], reply["reason"]) == (403, "Device Revoked"), reply
        print(f"unit5's own ctl status said it is revoked {time.monotonic() - t0:.2f} s after "
              "meshcomm revoke started; its ctl send was answered 403 Device Revoked")
        # its traffic is dropped: nothing from the revoked handset reaches node 0
        time.sleep(2.0)
        assert "from the lost handset" not in _inbox(nodes[0])
        counters = nodes[4].status()["counters"]
        assert counters.get("drop_revoked", 0) > 0
        for n in nodes[:5]:
            trust = n.status()["trust"]
            assert trust["records"] == 1 and trust["revoked_devices"] == 1


def test_mutual_aid_agency_added_by_signed_update_registers_within_10_s(
        tmp_path: Path) -> None:
    require_root()
    home, aid = Identity(secrets.token_bytes(32)), Identity(secrets.token_bytes(32))
    key_file = tmp_path / "home.key"
    write_key_file(key_file, home)
    with chain(N_NODES) as tb:
        nodes = _chain_up(tmp_path, tb, [home] * 5 + [aid], [[home]] * 5 + [[home, aid]])
        locals_ = {f"sip:unit{i}@{DOMAIN}" for i in range(5)}
        assert wait_until(lambda: all(locals_ <= _aors(n) for n in nodes[:5]), CONVERGE_S) \
            is not None, "the home nodes did not converge"
        crew = f"sip:unit5@{DOMAIN}"
        time.sleep(2.0)
        assert all(crew not in _aors(n) for n in nodes[:5])   # an unknown agency: refused
        incident = nodes[0].status()["incident"]
        t0 = time.monotonic()
        _cli("add-agency", "--agency-key", str(key_file), "--incident", incident,
             "--key", aid.public_key.hex(), "--data-dir", str(nodes[0].data_dir))
        took = wait_until(lambda: all(crew in _aors(n) for n in nodes[:5]), LIMIT_S)
        took_s = time.monotonic() - t0
        assert took is not None
        print(f"\nmutual-aid agency added at node 0: its handset listed by all five home "
              f"nodes {took_s:.2f} s after meshcomm add-agency started ({took:.2f} s after "
              "it returned)")
