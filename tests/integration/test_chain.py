"""Five real `meshcomm handset` processes in five namespaces wired as a chain (issue 2).

Each node hears only its neighbours (veth pairs), the ends are 4 hops apart, and every radio
drops 10% of what it receives (``--impair loss=0.1``). Every node must list all 5 bindings
within 15 s, for the UDP and for the raw-Ethernet radio. Then the far end is stopped with
SIGTERM and every other node must see its binding withdrawn.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.envcheck import require_root
from tests.integration.nodes import ctl_json
from tools.testbed import Testbed, chain
from tools.testbed.nodes import MeshProcess, wait_until

N_NODES = 5
CONVERGENCE_LIMIT_S = 15.0
WITHDRAW_LIMIT_S = 15.0

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _converged(nodes: list[MeshProcess], want: int) -> bool:
    return all(len(node.who_aors() or ()) == want for node in nodes)


def _check_cli_inside_namespace(tb: Testbed, node: MeshProcess) -> list[dict[str, Any]]:
    entries = ctl_json(tb, node, "who")
    assert isinstance(entries, list)
    return entries


def _far_hops(node: MeshProcess, aor: object) -> object:
    entries = node.request("who")
    assert isinstance(entries, list)
    return next((e["hops"] for e in entries if e["aor"] == aor), None)


@pytest.mark.parametrize("kind", ["udp", "ether"])
def test_five_handsets_in_a_chain_converge_and_withdraw(kind: str, tmp_path: Path) -> None:
    require_root()
    with chain(N_NODES) as tb:
        tb.use_workdir(tmp_path)
        t0 = time.monotonic()
        nodes = [tb.start_node(i, impair="loss=0.1", radio_kind=kind, wait=False)
                 for i in range(N_NODES)]
        up = wait_until(lambda: all(n.who_aors() is not None for n in nodes),
                        CONVERGENCE_LIMIT_S)
        up_s = time.monotonic() - t0
        took = wait_until(lambda: _converged(nodes, N_NODES), CONVERGENCE_LIMIT_S - up_s)
        elapsed_s = time.monotonic() - t0
        print(f"\n[{kind}] 5-node chain, 10% loss: every node lists all 5 bindings "
              f"{elapsed_s:.2f} s after the first process start (all 5 processes "
              f"answering after {up_s:.2f} s)")
        assert up is not None, tb.describe()
        assert took is not None, tb.describe()
        assert elapsed_s <= CONVERGENCE_LIMIT_S

        status = nodes[N_NODES - 1].request("status")
        assert isinstance(status, dict)
        far_aor = status["aor"]
        # Routes come from floods and anti-entropy records (with their path metric);
        # node 0 must know the 4-hop route to the far end within the same limit.
        routed = wait_until(lambda: _far_hops(nodes[0], far_aor) == N_NODES - 1,
                            CONVERGENCE_LIMIT_S)
        print(f"[{kind}] route over {N_NODES - 1} hops at node 0: " + (
            f"known {time.monotonic() - t0:.2f} s after start" if routed is not None
            else f"NOT known within {CONVERGENCE_LIMIT_S} s"))
        assert routed is not None, tb.describe()
        entries = {e["aor"]: e for e in _check_cli_inside_namespace(tb, nodes[0])}
        far = entries[far_aor]
        assert far["node_id"] == status["node_id"]
        assert far["state"] == "verified"
        assert len({e["node_id"] for e in entries.values()}) == N_NODES
        node1 = nodes[1].request("status")
        assert isinstance(node1, dict)
        near = entries[node1["aor"]]
        assert (near["hops"], near["next_hop"]) in {(1, node1["node_id"]), (1, None)}
        assert far["hops"] == N_NODES - 1, far
        assert far["next_hop"] == node1["node_id"], far

        # SIGTERM; SIGKILL (exit status -9) if it has not exited within 10 s.
        assert tb.stop_node(N_NODES - 1) == 0, nodes[-1].log_tail()
        gone = wait_until(lambda: all(status["aor"] not in (n.who_aors() or {status["aor"]})
                                      for n in nodes[:-1]), WITHDRAW_LIMIT_S)
        print(f"[{kind}] SIGTERM of the far end: binding withdrawn at all other nodes "
              f"after {gone if gone is None else round(gone, 2)} s")
        assert gone is not None, tb.describe()
        assert all(len(n.who_aors() or ()) == N_NODES - 1 for n in nodes[:-1])
