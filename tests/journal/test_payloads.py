"""Typed journal payloads: one class per event type, stored exactly as before."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from meshcomm.journal import payloads as P
from meshcomm.journal.chain import CHECKPOINT_HEAD_HASH, CHECKPOINT_HEAD_SEQ, CHECKPOINT_SIGNATURE
from meshcomm.journal.codec import normalize_data
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.events import JournalRecord
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config

ROOT = Path(__file__).resolve().parents[2]

#: The stored keys of every payload class, in the order the cores wrote them (the
#: simulator's trace digest packs records as emitted): the journal format.
#: A field renamed in a payload class changes its stored key; this table makes that a test
#: failure (readers of stored data -- the export, the simulator's metrics -- use these).
STORED_KEYS: dict[type[P.JournalPayload], tuple[str, ...]] = {
    P.NodeStarted: ("node", "role", "incident"),
    P.NodeStopped: ("node",),
    P.NodeFault: ("step", "error", "count", "total"),
    P.NeighbourUp: ("neighbour", "addr", "role"),
    P.NeighbourDown: ("neighbour", "addr"),
    P.RouteChanged: ("dst", "next_hop", "hops", "metric"),
    P.EnvelopeDropped: ("reason", "src", "kind"),
    P.BindingLearned: ("aor", "node", "seq", "state", "lifetime_s", "via", "record"),
    P.BindingUpdated: ("aor", "node", "seq", "state", "lifetime_s", "via", "record"),
    P.BindingExpired: ("aor", "node", "seq", "tombstone"),
    P.BindingConflict: ("aor", "node", "seq"),
    P.BindingRejected: ("aor", "node", "seq", "reason", "via"),
    P.SipMessageSeen: ("dir", "method", "status", "call_id", "cseq", "from", "to", "peer",
                       "hops", "body", "body_sha256", "note", "start", "headers", "body_len",
                       "headers_truncated", "env"),
    P.SipMessageDropped: ("dir", "reason", "peer", "size", "hops"),
    P.SfHeld: ("msg_id", "from", "to", "origin", "state", "reason", "own"),
    P.SfCustody: ("msg_id", "from", "to", "origin", "taken", "holder"),
    P.SfDelivered: ("msg_id", "from", "to", "origin", "requesters"),
    P.SfReceipt: ("msg_id", "from", "to", "origin", "dest", "own", "delivered_wall_s"),
    P.JournalCheckpoint: (CHECKPOINT_HEAD_SEQ, CHECKPOINT_HEAD_HASH, CHECKPOINT_SIGNATURE),
    P.JournalWitnessed: ("node", "seq", "head", "sig", "sent_wall"),
    P.UplinkChanged: ("state", "previous", "peers", "suppressed"),
    P.DhtValueDropped: ("reason", "aor", "suppressed"),
    P.RemoteBindingChanged: ("aor", "node", "seq", "state", "relays"),
    P.UpstreamChanged: ("state", "previous", "registered", "error"),
    P.TrustChanged: ("kind", "subject", "signer", "record", "via", "removed", "held"),
}

#: a value per annotation (payload modules use postponed annotations: the types are text)
_SAMPLE_BY_TYPE: dict[str, object] = {
    "str": "x", "int": 3, "float": 1.5, "bool": True, "bytes": b"\x01\x02",
    "str | None": "y", "int | None": 4, "bytes | None": b"b", "bool | None": False,
    "float | None": 2.5,
    "tuple[str, ...]": ("a", "b"),
    "tuple[tuple[str, str], ...] | None": (("To", "<sip:b@x>"), ("Content-Length", "0")),
}


def _payload_classes() -> list[type[P.JournalPayload]]:
    return [cls for classes in P.PAYLOAD_CLASSES.values() for cls in classes]


def _full_sample(cls: type[P.JournalPayload]) -> P.JournalPayload:
    """An instance of ``cls`` with every field set (no optional one left None)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        values[f.name] = _SAMPLE_BY_TYPE[str(f.type)]
    return cls(**values)


def test_every_event_type_has_a_payload_class() -> None:
    assert set(P.PAYLOAD_CLASSES) == set(J)
    for kind, classes in P.PAYLOAD_CLASSES.items():
        assert classes, kind
        assert all(cls.TYPE is kind for cls in classes)


def test_every_payload_class_is_registered_and_described() -> None:
    defined = {obj for obj in vars(P).values()
               if isinstance(obj, type) and issubclass(obj, P.JournalPayload)
               and "TYPE" in vars(obj)}
    assert defined == set(_payload_classes())
    assert set(STORED_KEYS) == defined


@pytest.mark.parametrize("cls", _payload_classes(), ids=lambda c: c.__name__)
def test_stored_keys_and_plain_values(cls: type[P.JournalPayload]) -> None:
    payload = _full_sample(cls)
    assert dataclasses.is_dataclass(payload)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(payload, dataclasses.fields(payload)[0].name, None)
    assert not hasattr(payload, "__dict__")            # slotted
    data = payload.data()
    assert tuple(data) == STORED_KEYS[cls]
    plain, _ = normalize_data(data)                    # storable as it is
    assert plain == data
    record = JournalRecord.of(payload)
    assert (record.type, record.data, record.payload) == (cls.TYPE, data, payload)


def test_keyword_fields_and_optional_ones_left_out() -> None:
    held = P.SfHeld(msg_id="ab", from_aor="sip:a@x", to_aor="sip:b@x", origin="cd",
                    state="queued")
    assert held.data() == {"msg_id": "ab", "from": "sip:a@x", "to": "sip:b@x",
                           "origin": "cd", "state": "queued"}
    dropped = P.EnvelopeDropped(reason="bad_sig", src="fe80::1%eth0")
    assert dropped.data() == {"reason": "bad_sig", "src": "fe80::1%eth0"}
    lost = P.RouteChanged(dst="aa", next_hop=None, hops=None, metric=None)
    assert lost.data() == {"dst": "aa", "next_hop": None, "hops": None, "metric": None}
    request = P.SipMessageSeen(direction="from-client", method="MESSAGE", status=None,
                               call_id="c", cseq=1, from_aor="a", to_aor="b", peer="p", hops=0)
    assert request.data()["status"] is None and "body" not in request.data()
    drop = P.SipMessageDropped(reason="undecodable", peer="p", size=9, hops=0)
    assert drop.data() == {"reason": "undecodable", "peer": "p", "size": 9, "hops": 0,
                           "dir": "dropped"}
    delivered = P.SfDelivered(msg_id="ab", from_aor="a", to_aor="b", origin="cd",
                              requesters=("01", "02"))
    assert delivered.data()["requesters"] == ["01", "02"]     # a list, as msgpack reads it
    with pytest.raises(TypeError):
        P.NodeStopped("aa")  # type: ignore[misc]             # keyword only


def test_records_equal_by_type_and_data() -> None:
    payload = P.NodeStopped(node="aa")
    assert JournalRecord.of(payload) == JournalRecord(J.NODE_STOPPED, {"node": "aa"})
    assert JournalRecord(J.NODE_STOPPED, {"node": "aa"}).payload is None


def test_a_simulated_run_emits_only_typed_records() -> None:
    """Every record the cores emit carries its payload, of a class registered for its
    type, and stores exactly the payload's data (a node leaving gives rarer events)."""
    sim = Simulator(sim_config(ScenarioParams(topology="chain", nodes=5, loss=0.1,
                                              duration_s=60, seed=4)), keep_journal=True)

    def leave(s: Simulator) -> None:
        core = s.core("n2")
        assert core is not None
        core.shutdown(s.now)
        s.after_command("n2")
    sim.call_at(30.0, leave)
    sim.run()
    assert sim.journal is not None
    seen: set[J] = set()
    for records in sim.journal.values():
        for _, record in records:
            payload = record.payload
            assert payload is not None
            assert isinstance(payload, P.PAYLOAD_CLASSES[record.type])
            assert record.data == payload.data()
            seen.add(record.type)
    assert {J.NODE_STARTED, J.NODE_STOPPED, J.NEIGHBOUR_UP, J.ROUTE_CHANGED,
            J.BINDING_LEARNED, J.BINDING_UPDATED} <= seen


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["meshcomm/journal/store.py", "meshcomm/journal/audit.py",
                                    "meshcomm/journal/verify.py", "meshcomm/journal/codec.py",
                                    "meshcomm/cli/journal_cmd.py"])
def test_reading_a_journal_back_does_not_trust_payload_classes(module: str) -> None:
    """Stored journals are untrusted input: the readers keep them as plain mappings and
    never build payload objects from them."""
    assert "meshcomm.journal.payloads" not in _imports(ROOT / module)


#: Modules that may build a record from a type and a mapping: the storage path, which
#: re-stores a record's data normalised (``codec.storable_data``).
RECORDS_FROM_MAPPINGS = {"meshcomm/runtime/driver.py"}


def test_cores_build_records_only_from_payloads() -> None:
    """``JournalRecord(J.X, {...})`` would bypass the payload classes (a renamed field
    would pass mypy again): outside the storage path records come from JournalRecord.of."""
    found = set()
    for path in sorted((ROOT / "meshcomm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "JournalRecord"):
                found.add(path.relative_to(ROOT).as_posix())
    assert found <= RECORDS_FROM_MAPPINGS
