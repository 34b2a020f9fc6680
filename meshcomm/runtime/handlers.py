"""Control commands of a running node: ``who``, ``status``, ``stop``, ``send``, ``inbox``,
``outbox`` (a table keyed by Enum)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcomm.dht.api import UPLINK_CAP
from meshcomm.errors import DecodeError
from meshcomm.node.gateway.types import InboxEntry, SendResult, SendStatus
from meshcomm.node.storeforward import HeldState, HeldStatus
from meshcomm.overlay.core import GossipOverlay, WhoEntry
from meshcomm.runtime.collect_edge import CollectAction, CollectEdge, parse_out_dir
from meshcomm.runtime.control import ControlCommand, ControlRequest, Handler
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handover_ctl import handover
from meshcomm.runtime.sipusers import SipUsers
from meshcomm.runtime.trust_ctl import revoke, trust_status

#: Digits kept of floating-point figures in replies.
REPLY_DECIMALS = 3
#: A timestamp's decimals (microseconds): a message crosses 4 hops in a few milliseconds,
#: and benchmarks take latency from ``received_at``.
TIME_DECIMALS = 6
#: ``send`` waits at most this long for the outcome (seconds).
MAX_SEND_WAIT_S = 60.0
SEND_POLL_S = 0.02
MAX_TEXT_CHARS = 4000
MAX_AOR_CHARS = 256
#: Other uplinked relays listed in ``ctl status`` (the rest are not shown).
MAX_LISTED_RELAYS = 32


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
            "expires": round(entry.expires_s, 1), "contacts": list(entry.contacts),
            "handover_from": entry.handover_from}


def who(driver: NodeDriver) -> list[dict[str, object]]:
    return [who_entry_json(entry) for entry in driver.who()]


def _neighbours(overlay: GossipOverlay, now: float) -> list[dict[str, object]]:
    table = overlay.neighbours
    out: list[dict[str, object]] = []
    for nb in sorted(table.by_addr.values(), key=lambda n: (n.node_id, n.addr)):
        out.append({"node_id": nb.node_id.hex(), "addr": nb.addr, "role": nb.role,
                    "quality": round(nb.quality(now, table.hello_interval_s), REPLY_DECIMALS),
                    "reverse_quality": round(nb.q_rev, REPLY_DECIMALS),
                    "cost": table.cost(nb.addr, now),
                    "heard_ago_s": round(now - nb.last_heard, REPLY_DECIMALS)})
    return out


def _routes(overlay: GossipOverlay, now: float) -> list[dict[str, object]]:
    routes = overlay.routes
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
        "neighbours": _neighbours(driver.node.overlay, now),
        "routes": _routes(driver.node.overlay, now),
        "bindings": len(driver.node.table),
        "counters": {**dict(sorted(driver.node.counters.items())), **driver.counters},
        "sip": sip_status(driver),
        "media": media_status(driver),
        "store_forward": store_forward_status(driver),
        "uplink": uplink_status(driver),
        "upstream": upstream_status(driver),
        "cross_site": cross_site_status(driver),
        "collect": collect_status(driver),
        "trust": trust_status(driver),
        "journal": journal.status() if journal is not None else {
            "path": None, "durable_seq": 0, "head_seq": 0},
    }


def collect_status(driver: NodeDriver) -> dict[str, object] | None:
    """Journal collection (None without it): collectors served now and the counters of
    both sides (pulls answered, refused, chunks and bytes sent and received)."""
    collect = driver.core.collect
    if collect is None:
        return None
    return {"serving": collect.server.serving, "counters": dict(sorted(collect.counters.items()))}


def uplink_status(driver: NodeDriver) -> dict[str, object] | None:
    """The relay's uplink and DHT bridge (None without an uplink): ``state`` (down,
    joining, up, grace), ``dht_peers``, ``since`` (wall-clock time of the last change),
    ``private`` (false: the records are keyed by the incident id alone, anyone who knows
    it can find and read them), and the bridge's sizes."""
    bridge = driver.core.dht
    if bridge is None:
        return None
    st = bridge.status()
    port = driver.dht_port
    return {"state": st.state, "dht_peers": st.dht_peers,
            "since": round(driver.wall_time(st.since), REPLY_DECIMALS),
            "private": st.private, "published": st.published, "cached_aors": st.cached_aors,
            "lookups": st.lookups, "watches": st.watches,
            "relays": _uplinked_relays(driver),
            "dht_port": port.bound_port() if port is not None else None,
            "dht_port_counters": (dict(sorted(port.counters.items())) if port is not None
                                  else None),
            "counters": dict(sorted(bridge.counters.items()))}


def cross_site_status(driver: NodeDriver) -> dict[str, object] | None:
    """Traffic with other islands (None on a node without a tunnel): ``remote_routes``
    (remote nodes with a known way there), ``island_relays`` (uplinked relays of the
    island it would go through, best first, node ids), ``uplink_mesh`` (a relay's: its
    members with a route, its neighbours there, the first MAX_LISTED_RELAYS of both as
    ``links`` and ``routes`` in the form of the island's, and its counters) and the
    tunnel's counters."""
    tunnel = driver.core.tunnel
    if tunnel is None:
        return None
    now = driver.now()
    mesh = driver.core.uplink
    return {"remote_routes": tunnel.remote_count(),
            "island_relays": [r.hex() for r in tunnel.island_relays(now)[:MAX_LISTED_RELAYS]],
            "uplink_mesh": None if mesh is None else {
                "members": sum(1 for r in mesh.overlay.routes.all()
                               if mesh.overlay.routes.get(r.dst, now) is not None),
                "neighbours": len(mesh.overlay.neighbours.by_addr),
                "links": _neighbours(mesh.overlay, now)[:MAX_LISTED_RELAYS],
                "routes": _routes(mesh.overlay, now)[:MAX_LISTED_RELAYS],
                "counters": dict(sorted(mesh.counters.items()))},
            "counters": dict(sorted(tunnel.counters.items()))}


def upstream_status(driver: NodeDriver) -> dict[str, object] | None:
    """The upstream SIP registrar (``[upstream]``; None without one): ``state`` (unknown,
    reachable, unreachable), ``since`` (wall clock), AoRs ``registered`` there and
    ``wanted``, ``last_error`` ("" when none), the registrar and the client's counters."""
    upstream = getattr(driver.core, "upstream", None)
    if upstream is None:
        return None
    st = upstream.status()
    return {"state": st.state, "since": round(driver.wall_time(st.since), REPLY_DECIMALS),
            "registered": st.registered, "wanted": st.wanted, "last_error": st.last_error,
            "registrar": st.registrar, "counters": dict(sorted(upstream.counters.items()))}


def _uplinked_relays(driver: NodeDriver) -> list[dict[str, object]]:
    """The island's other relays whose uplink runs (their bindings carry UPLINK_CAP), at
    most MAX_LISTED_RELAYS."""
    own = driver.node.node_id
    found: list[dict[str, object]] = [
             {"node_id": st.binding.node_id.hex(), "aor": st.binding.aor,
              "state": st.state.value}
             for st in driver.node.table
             if UPLINK_CAP in st.binding.caps and not st.binding.is_tombstone
             and st.binding.node_id != own]
    return sorted(found, key=lambda r: str(r["node_id"]))[:MAX_LISTED_RELAYS]


def sip_status(driver: NodeDriver) -> dict[str, object] | None:
    """SIP gateway counters and queue sizes (None without a gateway)."""
    if driver.core.gateway is None:
        return None
    out = driver.core.gateway.status()
    auth = driver.core.gateway.auth
    out["auth"] = None if auth is None else auth.status()
    sockets = driver.sip_sockets
    if sockets is not None:
        out["listen"] = {"host": sockets.host, "udp_port": sockets.udp_port,
                         "tcp_port": sockets.tcp_port,
                         "tcp_connections": sockets.tcp_connections}
        out["sockets"] = dict(sockets.counters)
    return out


def store_forward_status(driver: NodeDriver) -> dict[str, object] | None:
    """Store-and-forward queue sizes and counters (None without a gateway)."""
    sf = driver.core.sf
    if sf is None:
        return None
    own = sf.outbox()
    states = {state.value: sum(1 for s in own if s.state is state) for state in HeldState}
    storage = driver.sf_storage
    return {"relay": sf.is_relay, "max_held_messages": sf.config.max_held_messages,
            "own": states, "held_for_others": len(sf.held_for_others()),
            "delivered_ids": sf.delivered_count,
            "storage": str(storage.path) if storage is not None else None,
            "counters": dict(sorted(sf.counters.items()))}


def held_status_json(status: HeldStatus, *, own: bool,
                     send_id: int | None = None) -> dict[str, object]:
    """One ``ctl outbox --json`` row: ``state`` queued / held_by / delivered / expired;
    ``send_id`` is the ``ctl send`` id of a message sent with it (else null)."""
    return {"msg_id": status.msg_id.hex(), "send_id": send_id, "to": status.to_aor,
            "state": status.state.value, "holder": status.holder,
            "created": round(status.created, REPLY_DECIMALS), "own": own}


def outbox(driver: NodeDriver, request: ControlRequest) -> object:
    """This node's held/sent MESSAGEs (and, with ``"all": true``, custody for others)."""
    if driver.core.gateway is None or driver.core.sf is None:
        return []
    sf, gateway = driver.core.sf, driver.core.gateway
    every = request.args.get("all", False)
    if not isinstance(every, bool):
        raise DecodeError('"all" must be true or false')
    rows = [held_status_json(s, own=True, send_id=gateway.send_id_of(s.msg_id))
            for s in sf.outbox()]
    if every:
        rows += [held_status_json(s, own=False) for s in sf.held_for_others()]
    return rows


def media_status(driver: NodeDriver) -> dict[str, object] | None:
    """Calls with media, open call ports and the relay's counters (None without media)."""
    relay, ports = driver.core.relay, driver.media_ports
    if relay is None:
        return None
    counters: Counter[str] = Counter(relay.counters)
    for session in relay.sessions.values():
        counters.update(session.counters)   # live calls' counters with the ended calls'
    if ports is not None:
        counters.update(ports.counters)
    return {"calls": len(relay.sessions),
            "open_ports": ports.open_sockets if ports is not None else 0,
            "counters": dict(sorted(counters.items()))}


def send_result_json(result: SendResult) -> dict[str, object]:
    """``ctl send`` reply: ``msg_id`` (hex) is the ``ctl outbox`` id of a held message."""
    return {"id": result.send_id, "to": result.to_aor, "status": result.status.value,
            "code": result.code, "reason": result.reason,
            "msg_id": None if result.msg_id is None else result.msg_id.hex()}


def inbox_entry_json(entry: InboxEntry, driver: NodeDriver) -> dict[str, object]:
    return {"seq": entry.seq, "from": entry.from_aor, "to": entry.to_aor,
            "content_type": entry.content_type,
            "text": entry.body.decode("utf-8", "replace"),
            "received_at": round(driver.wall_time(entry.received_at), TIME_DECIMALS)}


def _text_arg(request: ControlRequest, name: str, max_chars: int) -> str:
    value = request.args.get(name)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise DecodeError(f'"{name}" must be a non-empty string of at most {max_chars} chars')
    return value


def send(driver: NodeDriver, request: ControlRequest) -> Coroutine[Any, Any, object]:
    """Queue a MESSAGE now; the reply waits (up to ``wait_s``) for its outcome."""
    if driver.core.gateway is None:
        raise DecodeError("this node runs without a SIP gateway ([sip] enabled = false)")
    to = _text_arg(request, "to", MAX_AOR_CHARS)
    text = _text_arg(request, "text", MAX_TEXT_CHARS)
    wait = request.args.get("wait_s", 0.0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= \
            MAX_SEND_WAIT_S:
        raise DecodeError(f'"wait_s" must be a number in 0..{MAX_SEND_WAIT_S}')
    if not to.startswith(("sip:", "sips:")):
        to = f"sip:{to}"
    try:
        send_id = driver.send_message(to, text)
    except Exception as exc:  # a bad AoR is the caller's mistake: say so
        raise DecodeError(f"cannot send to {to!r}: {exc}") from None
    gateway = driver.core.gateway

    async def outcome() -> object:
        deadline = driver.now() + float(wait)
        while (gateway.outbox[send_id].status is SendStatus.PENDING
               and driver.now() < deadline):
            await asyncio.sleep(SEND_POLL_S)
        return send_result_json(gateway.outbox[send_id])

    return outcome()


def inbox(driver: NodeDriver, request: ControlRequest) -> object:
    if driver.core.gateway is None:
        return []
    since = request.args.get("since", 0)
    if not isinstance(since, int) or isinstance(since, bool):
        raise DecodeError('"since" must be an integer')
    return [inbox_entry_json(e, driver) for e in driver.core.gateway.inbox if e.seq > since]


def collect(edge: CollectEdge | None, request: ControlRequest) -> object:
    """``ctl collect``: ``action`` start (with ``out``, an absolute directory), status or
    cancel; the reply is the collection's status (meshcomm.runtime.collect_edge)."""
    if edge is None:
        raise DecodeError("this node runs without journal collection")
    try:
        action = CollectAction(str(request.args.get("action", CollectAction.STATUS)))
    except ValueError:
        raise DecodeError('"action" must be start, status or cancel') from None
    actions: dict[CollectAction, Callable[[], object]] = {
        CollectAction.START: lambda: edge.start(parse_out_dir(request.args.get("out"))),
        CollectAction.STATUS: edge.status,
        CollectAction.CANCEL: edge.cancel,
    }
    return actions[action]()


def user(sip_users: SipUsers | None, request: ControlRequest) -> object:
    """``ctl user``: ``action`` add (``aor``, ``password``), remove (``aor``) or list;
    the password is hashed at once and never echoed, logged or journaled."""
    if sip_users is None:
        raise DecodeError("this node runs without a SIP gateway ([sip] enabled = false)")
    action = request.args.get("action", "list")
    if action == "list":
        return {**sip_users.status(), "users": sip_users.rows()}
    aor = _text_arg(request, "aor", MAX_AOR_CHARS)
    if action == "remove":
        return sip_users.remove(aor)
    if action == "add":
        password = request.args.get("password")
        if not isinstance(password, str):
            raise DecodeError('"password" must be a string')
        return {**sip_users.add(aor, password), "required": sip_users.auth is not None}
    raise DecodeError('"action" must be add, remove or list')


def control_handlers(driver: NodeDriver, info: NodeInfo,
                     request_stop: Callable[[], None],
                     collect_edge: CollectEdge | None = None,
                     sip_users: SipUsers | None = None) -> dict[ControlCommand, Handler]:
    """The dispatch table of the control socket."""

    def on_stop(_request: ControlRequest) -> object:
        request_stop()
        return {"stopping": True}

    return {
        ControlCommand.WHO: lambda _request: who(driver),
        ControlCommand.STATUS: lambda _request: status(driver, info),
        ControlCommand.STOP: on_stop,
        ControlCommand.SEND: lambda request: send(driver, request),
        ControlCommand.INBOX: lambda request: inbox(driver, request),
        ControlCommand.OUTBOX: lambda request: outbox(driver, request),
        ControlCommand.COLLECT: lambda request: collect(collect_edge, request),
        ControlCommand.REVOKE: lambda request: revoke(driver, request),
        ControlCommand.USER: lambda request: user(sip_users, request),
        ControlCommand.HANDOVER: lambda request: handover(driver, request, info.data_dir),
    }
