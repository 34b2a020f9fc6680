"""A small incident built as real journals and exported by the real pipeline, for the
sip.pcapng and report.html tests (tests/export/test_pcap.py, test_report.py).

Two nodes, A (alice's, 127.0.0.1:5062) and B (bob's, 127.0.0.1:5064), B's wall clock two
hours ahead, and a third node C seen as a neighbour. Alice calls bob across the mesh
(INVITE, 180, 200, ACK, BYE, 200: each hop journaled from-client, to-mesh, from-mesh,
to-client with the envelope id on both mesh records), sends a MESSAGE whose body the
profile kept, and an old-format MESSAGE record (no start line and headers) crosses too.
Node A also answers a request itself (404, journaled ``originated`` then ``to-client``),
sheds one (503 ``originated`` only), drops an undecodable datagram, and a held MESSAGE's
generated 480 goes to ``store``. The records follow docs/export.md and the helpers'
contract (start, headers, body_len, body/body_sha256, env).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcomm.export.pipeline import export
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.store import JournalStore
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import IDENTITY_FILE, write_key_file

SKEW_S = 7200.0
A, B, C = Identity(b"\x0a" * 32), Identity(b"\x0b" * 32), Identity(b"\x0c" * 32)
ALICE, BOB = "127.0.0.1:5062", "127.0.0.1:5064"
CALL_ID = "call-1@127.0.0.1"
ONE_WAY_S = 0.05                   # mesh delivery, A <-> B
#: The call's messages (method, status, sender side): each crosses as one mesh hop.
CALL = (("INVITE", None, "a"), ("INVITE", 180, "b"), ("INVITE", 200, "b"),
        ("ACK", None, "a"), ("BYE", None, "a"), ("BYE", 200, "b"))
REASON = {180: "Ringing", 200: "OK", 404: "Not Found", 480: "Temporarily Unavailable",
          503: "Service Unavailable"}


def mesh_name(who: Identity) -> str:
    return who.node_id[:8].hex() + ".mesh"


def sip_data(direction: str, peer: str, method: str, status: int | None, *,
             call_id: str, cseq: int, env: str | None = None, body: bytes = b"",
             keep_body: bool = False, extra: Sequence[tuple[str, str]] = (),
             old_format: bool = False) -> dict[str, object]:
    """One sip.message record's data as a gateway journals it."""
    start = (f"{method} sip:bob@incident SIP/2.0" if status is None
             else f"SIP/2.0 {status} {REASON.get(status, 'Status')}")
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK" + call_id[:6] + str(cseq)),
               ("From", "<sip:alice@incident>;tag=a1"),
               ("To", "<sip:bob@incident>" + (";tag=b1" if status or method != "INVITE"
                                              else "")),
               ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
               ("Contact", "<sip:alice@127.0.0.1:5062>"), *extra]
    if body:
        headers.append(("Content-Type", "application/sdp" if method == "INVITE"
                        else "text/plain"))
    headers.append(("Content-Length", str(len(body))))
    data: dict[str, object] = {
        "dir": direction, "method": method, "status": status, "call_id": call_id,
        "cseq": cseq, "from": "sip:alice@incident", "to": "sip:bob@incident", "peer": peer,
        "hops": 1}
    if body:
        data.update({"body": body} if keep_body else
                    {"body_sha256": hashlib.sha256(body).hexdigest()})
    if old_format:
        return data
    data.update({"start": start, "headers": [list(h) for h in headers]})
    if body:
        data["body_len"] = len(body)
    if env is not None:
        data["env"] = env
    return data


@dataclass
class Journals:
    """Records per device: (its own wall time, type, data)."""

    records: dict[str, list[tuple[float, str, dict[str, object]]]] = field(
        default_factory=lambda: {"a": [], "b": [], "c": []})
    envs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, side: str, wall: float, type_: str, data: dict[str, object]) -> None:
        self.records[side].append((wall + (SKEW_S if side == "b" else 0.0), type_, data))

    def crossing(self, t: float, sender: str, method: str, status: int | None,
                 call_id: str, cseq: int, **kw: object) -> None:
        """One message from a client on ``sender``'s node to the client on the other:
        from-client, to-mesh, from-mesh, to-client (true time t, t+0.01, +0.06, +0.07)."""
        receiver = "b" if sender == "a" else "a"
        nodes = {"a": A, "b": B}
        client = {"a": ALICE, "b": BOB}
        env = f"{next(self.envs):032x}"
        plain = {k: v for k, v in kw.items() if k != "env"}
        for side, when, direction, peer, with_env in (
                (sender, t, "from-client", client[sender], False),
                (sender, t + 0.01, "to-mesh", mesh_name(nodes[receiver]), True),
                (receiver, t + 0.01 + ONE_WAY_S, "from-mesh", mesh_name(nodes[sender]), True),
                (receiver, t + 0.02 + ONE_WAY_S, "to-client", client[receiver], False)):
            data = sip_data(direction, peer, method, status, call_id=call_id, cseq=cseq,
                            env=env if with_env and not plain.get("old_format") else None,
                            **plain)  # type: ignore[arg-type]
            self.add(side, when, J.SIP_MESSAGE.value, data)


def incident_journals(extra_calls: int = 0, hostile: str = "") -> Journals:
    """The records of the incident (see the module docstring); ``extra_calls`` more
    INVITE/200/ACK/BYE/200 calls; ``hostile`` text put into a SIP header and an AoR."""
    j = Journals()
    for side, who in (("a", A), ("b", B), ("c", C)):
        j.add(side, 990.0, J.NODE_STARTED.value, {"node": who.node_id.hex(),
                                                  "role": "handset", "incident": "drill"})
    j.add("a", 991.0, J.NEIGHBOUR_UP.value, {"neighbour": B.node_id.hex(),
                                              "addr": "fe80::b", "role": "handset"})
    j.add("b", 991.1, J.NEIGHBOUR_UP.value, {"neighbour": A.node_id.hex(),
                                              "addr": "fe80::a", "role": "handset"})
    j.add("c", 991.5, J.NEIGHBOUR_UP.value, {"neighbour": B.node_id.hex(),
                                              "addr": "fe80::b", "role": "relay"})
    j.add("a", 992.0, J.ROUTE_CHANGED.value, {"dst": B.node_id.hex(),
                                               "next_hop": B.node_id.hex(), "hops": 1,
                                               "metric": 16})
    for side, aor, who in (("a", "sip:alice@incident", A), ("b", "sip:bob@incident", B)):
        aor_text = aor if not hostile or side == "b" else aor + hostile
        j.add(side, 993.0, J.BINDING_LEARNED.value, {
            "aor": aor_text, "node": who.node_id.hex(), "seq": 1, "state": "active",
            "lifetime_s": 3600, "via": "", "record": b"\x01" * 16})
    sdp = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n" \
          b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    extra = (("Subject", hostile),) if hostile else ()
    for n in range(1 + extra_calls):
        call_id, t = (CALL_ID if n == 0 else f"call-{n + 1}@127.0.0.1"), 1000.0 + 10 * n
        for step, (method, status, sender) in enumerate(CALL):
            if extra_calls and n > 0 and status == 180:
                continue
            cseq = 2 if method == "BYE" else 1
            body = sdp if method == "INVITE" and status in (None, 200) else b""
            j.crossing(t + step * 0.5, sender, method, status, call_id, cseq, body=body,
                       extra=extra)
    t = 1000.0 + 10 * (1 + extra_calls)
    j.crossing(t, "a", "MESSAGE", None, "msg-1@x", 1, body=b"on scene", keep_body=True)
    j.crossing(t + 0.3, "b", "MESSAGE", 200, "msg-1@x", 1)
    j.crossing(t + 1.0, "a", "MESSAGE", None, "msg-old@x", 1, body=b"old", old_format=True)
    j.crossing(t + 1.3, "b", "MESSAGE", 200, "msg-old@x", 1, old_format=True)
    _node_a_answers(j, t + 2.0)
    if hostile:                      # in a drop reason (a chart label) and a Call-ID
        j.add("c", 1001.5, J.ENVELOPE_DROPPED.value, {"reason": hostile + " $x^{2", "src": "x"})
        j.crossing(t + 2.5, "a", "MESSAGE", None, hostile, 1, body=b"x")
    j.add("c", 1001.0 + SKEW_S * 0, J.ENVELOPE_DROPPED.value, {"reason": "bad_signature",
                                                              "src": "fe80::66"})
    j.add("a", t + 3.0, J.NEIGHBOUR_DOWN.value, {"neighbour": B.node_id.hex(),
                                                 "addr": "fe80::b"})
    j.add("a", t + 3.1, J.ROUTE_CHANGED.value, {"dst": B.node_id.hex(), "next_hop": None,
                                                 "hops": None, "metric": None})
    return j


def _node_a_answers(j: Journals, t: float) -> None:
    """A request node A answers itself (404: originated, then to-client), one it sheds
    (503: originated only), an undecodable datagram, a held MESSAGE's 480 (to store)."""
    j.add("a", t, J.SIP_MESSAGE.value, sip_data("from-client", ALICE, "MESSAGE", None,
                                                 call_id="nf@x", cseq=1))
    for direction in ("originated", "to-client"):
        j.add("a", t + 0.001, J.SIP_MESSAGE.value,
              sip_data(direction, ALICE, "MESSAGE", 404, call_id="nf@x", cseq=1))
    j.add("a", t + 0.2, J.SIP_MESSAGE.value, {**sip_data(
        "originated", ALICE, "MESSAGE", 503, call_id="shed@x", cseq=1), "note": "shed"})
    j.add("a", t + 0.3, J.SIP_MESSAGE.value, {"dir": "dropped", "reason": "undecodable",
                                              "peer": ALICE, "size": 17, "hops": 0})
    j.add("a", t + 0.4, J.SIP_MESSAGE.value, sip_data(
        "originated", "store", "MESSAGE", 480, call_id="held@x", cseq=1))


def write_device(root: Path, who: Identity,
                 records: list[tuple[float, str, dict[str, object]]]) -> Path:
    """A data directory with the identity key and a journal holding ``records``."""
    data_dir = root / who.node_id[:4].hex()
    data_dir.mkdir(parents=True)
    write_key_file(data_dir / IDENTITY_FILE, who)
    with JournalStore.open(data_dir / "journal.sqlite", who.node_id) as store:
        for wall, type_, data in records:
            store.append(type_, data, wall, wall)
        store.checkpoint(who.sign, 0.0, records[-1][0] + 1.0)
        store.flush()
    return data_dir


def export_incident(root: Path, journals: Journals | None = None
                    ) -> tuple[Path, dict[str, Any]]:
    """Write the journals and run the real export of the timeline (the capture and the
    report are written by the tests that look at them); (out dir, summary as --json
    prints)."""
    j = journals or incident_journals()
    dirs = [write_device(root / "devices", who, sorted(j.records[side], key=lambda r: r[0]))
            for side, who in (("a", A), ("b", B), ("c", C))]
    out = root / "out"
    summary = export(dirs, out, capture=False, report=False)
    return out, json.loads(json.dumps(summary.as_json()))


def test_the_incident_exports_verified_with_b_two_hours_ahead(tmp_path: Path) -> None:
    out, summary = export_incident(tmp_path)
    assert summary["verified"] is True and summary["problems"] == []
    offsets = {d["device"]: d["offset_s"] for d in summary["devices"]}
    assert abs(offsets[B.node_id.hex()] - SKEW_S) < 0.1
    events = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    sip = [e for e in events if e["type"] == "sip.message"]
    assert len(sip) == 4 * (6 + 4) + 6
    first = next(e for e in sip if e["data"].get("start", "").startswith("INVITE"))
    assert first["data"]["headers"][3] == ["Call-ID", CALL_ID]
