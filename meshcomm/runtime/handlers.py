"""Control commands of a running node: ``who``, ``status``, ``stop`` (a table keyed by Enum)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshcomm.overlay.core import WhoEntry
from meshcomm.runtime.control import ControlCommand, ControlRequest, Handler
from meshcomm.runtime.driver import NodeDriver

#: Digits kept of floating-point figures in replies.
REPLY_DECIMALS = 3


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who the running node is (for status replies and the startup log)."""

    node_id: bytes
    public_key: bytes
    aor: str
    contact: str
    role: str
    incident: str
    data_dir: Path
    boot_epoch: int


def who_entry_json(entry: WhoEntry) -> dict[str, object]:
    """The ``ctl who --json`` object of one binding."""
    return {"aor": entry.aor, "node_id": entry.node_id, "hops": entry.hops,
            "next_hop": entry.next_hop, "state": entry.state,
            "expires": round(entry.expires_s, 1), "contacts": list(entry.contacts)}


def who(driver: NodeDriver) -> list[dict[str, object]]:
    return [who_entry_json(entry) for entry in driver.who()]


def _neighbours(driver: NodeDriver, now: float) -> list[dict[str, object]]:
    table = driver.node.overlay.neighbours
    out: list[dict[str, object]] = []
    for nb in sorted(table.by_addr.values(), key=lambda n: (n.node_id, n.addr)):
        out.append({"node_id": nb.node_id.hex(), "addr": nb.addr, "role": nb.role,
                    "quality": round(nb.quality(now, table.hello_interval_s), REPLY_DECIMALS),
                    "reverse_quality": round(nb.q_rev, REPLY_DECIMALS),
                    "cost": table.cost(nb.addr, now),
                    "heard_ago_s": round(now - nb.last_heard, REPLY_DECIMALS)})
    return out


def _routes(driver: NodeDriver, now: float) -> list[dict[str, object]]:
    routes = driver.node.overlay.routes
    out: list[dict[str, object]] = []
    for route in sorted(routes.all(), key=lambda r: r.dst):
        if routes.get(route.dst, now) is None:
            continue
        out.append({"dst": route.dst.hex(), "next_hop": route.next_hop_id.hex(),
                    "via": route.next_hop, "hops": route.hops, "metric": route.metric,
                    "age_s": round(now - route.updated_at, REPLY_DECIMALS)})
    return out


def status(driver: NodeDriver, info: NodeInfo) -> dict[str, object]:
    now = driver.now()
    journal = driver.journal
    head = journal.head() if journal is not None else None
    return {
        "node_id": info.node_id.hex(),
        "public_key": info.public_key.hex(),
        "aor": info.aor,
        "contact": info.contact,
        "role": info.role,
        "incident": info.incident,
        "data_dir": str(info.data_dir),
        "boot_epoch": info.boot_epoch,
        "uptime_s": round(now - driver.started_at, REPLY_DECIMALS),
        "radios": {name: dict(radio.counters) for name, radio in driver.radios.items()},
        "neighbours": _neighbours(driver, now),
        "routes": _routes(driver, now),
        "bindings": len(driver.node.table),
        "counters": {**dict(sorted(driver.node.counters.items())), **driver.counters},
        "journal": {
            "path": str(journal.path) if journal is not None else None,
            "durable_seq": journal.durable_seq if journal is not None else 0,
            "head_seq": head[0] if head is not None else 0,
        },
    }


def control_handlers(driver: NodeDriver, info: NodeInfo,
                     request_stop: Callable[[], None]) -> dict[ControlCommand, Handler]:
    """The dispatch table of the control socket."""

    def on_stop(_request: ControlRequest) -> object:
        request_stop()
        return {"stopping": True}

    return {
        ControlCommand.WHO: lambda _request: who(driver),
        ControlCommand.STATUS: lambda _request: status(driver, info),
        ControlCommand.STOP: on_stop,
    }
