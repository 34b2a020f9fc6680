"""Honest journals of a small incident, for the export's cross-journal tests.

:func:`build_incident` plays a seeded incident on a few devices and writes each device's
journal through the journal API (a :class:`~meshcomm.journal.store.JournalStore` file or
an in-memory :class:`~meshcomm.journal.chain.MemoryJournal`), as the nodes do:

* SIP MESSAGEs over the mesh: the sender's gateway journals ``to-mesh`` and the
  receiver's ``from-mesh`` with the same envelope id (``env``), and the 200 OK back the
  same way (so the clocks are estimated from these pairs);
* other events (routes changing);
* signed checkpoints, each heard by most other devices, which journal a
  ``journal.witnessed`` record of it;
* a finale: every device checkpoints, every other device witnesses that checkpoint, then
  every device checkpoints once more (over those witness records: that last checkpoint is
  what nobody witnessed).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from meshcomm.journal.chain import (
    CHECKPOINT_HEAD_HASH,
    CHECKPOINT_HEAD_SEQ,
    CHECKPOINT_SIGNATURE,
    JournalChain,
    JournalEntry,
    Signer,
)
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.payloads import JournalWitnessed, NodeStarted, SipMessageSeen
from meshcomm.security.identity import Identity

WITNESSED: Final = JournalEventType.WITNESSED.value
T0: Final = 1_800_000_000.0
#: What a rewritten entry is made of: type, data, mono_s, wall_s.
Plain = tuple[str, Mapping[str, object], float, float]


class Writer(Protocol):
    def append(self, type: JournalEventType | str, data: Mapping[str, object],
               mono_s: float, wall_s: float) -> JournalEntry | None: ...

    def checkpoint(self, sign: Signer, mono_s: float, wall_s: float
                   ) -> JournalEntry | None: ...


@dataclass
class Incident:
    idents: Sequence[Identity]
    #: per device: the seqs whose checkpoint another device witnessed
    witnessed: list[set[int]] = field(default_factory=list)
    #: per device: (seq of its to-mesh send, receiver index, receiver's receipt seq)
    sends: list[list[tuple[int, int, int]]] = field(default_factory=list)

    @property
    def hexes(self) -> list[str]:
        return [ident.node_id.hex() for ident in self.idents]


def claim_of(ident: Identity, checkpoint: JournalEntry) -> dict[str, object]:
    """The ``journal.witnessed`` data of ``ident``'s checkpoint entry."""
    head_seq, head_hash, signature = (checkpoint.data[CHECKPOINT_HEAD_SEQ],
                                      checkpoint.data[CHECKPOINT_HEAD_HASH],
                                      checkpoint.data[CHECKPOINT_SIGNATURE])
    assert isinstance(head_seq, int) and isinstance(head_hash, bytes)
    assert isinstance(signature, bytes)
    return dict(JournalWitnessed(node=ident.node_id.hex(), seq=head_seq,
                                 head=head_hash.hex(), sig=signature.hex()).data())


def sip_data(direction: str, peer: Identity, call_id: str, status: int | None,
             env: str | None) -> dict[str, object]:
    data = dict(SipMessageSeen(
        direction=direction, method="MESSAGE", status=status, call_id=call_id, cseq=1,
        from_aor="sip:a@x", to_aor="sip:b@x", peer=peer.node_id[:8].hex() + ".mesh",
        hops=2).data())
    if env is not None:
        data["env"] = env
    return data


class _Play:
    def __init__(self, idents: Sequence[Identity], writers: Sequence[Writer],
                 rng: random.Random, skews: Sequence[float]) -> None:
        self.idents, self.writers, self.rng, self.skews = idents, writers, rng, skews
        self.t = T0
        self.calls = 0
        self.incident = Incident(idents, [set() for _ in idents], [[] for _ in idents])

    def write(self, i: int, type: JournalEventType | str, data: Mapping[str, object],
              at: float) -> JournalEntry:
        entry = self.writers[i].append(type, data, at - T0, at + self.skews[i])
        assert entry is not None
        return entry

    def message(self, i: int, j: int) -> None:
        self.calls += 1
        call_id, delay = f"c{self.calls}@incident", self.rng.uniform(0.01, 0.2)
        env, ok = self.rng.randbytes(16).hex(), self.rng.randbytes(16).hex()
        ids = self.idents
        sent = self.write(i, JournalEventType.SIP_MESSAGE,
                          sip_data("to-mesh", ids[j], call_id, None, env), self.t)
        got = self.write(j, JournalEventType.SIP_MESSAGE,
                         sip_data("from-mesh", ids[i], call_id, None, env), self.t + delay)
        self.incident.sends[i].append((sent.seq, j, got.seq))
        answered = self.write(j, JournalEventType.SIP_MESSAGE,
                              sip_data("to-mesh", ids[i], call_id, 200, ok),
                              self.t + delay + 0.01)
        back = self.write(i, JournalEventType.SIP_MESSAGE,
                          sip_data("from-mesh", ids[j], call_id, 200, ok),
                          self.t + 2 * delay + 0.01)
        self.incident.sends[j].append((answered.seq, i, back.seq))
        self.t += 2 * delay + 0.02

    def checkpoint(self, i: int, heard_by: Sequence[int]) -> None:
        entry = self.writers[i].checkpoint(self.idents[i].sign, self.t - T0,
                                           self.t + self.skews[i])
        assert entry is not None
        for j in heard_by:
            self.t += 0.05
            self.write(j, WITNESSED, claim_of(self.idents[i], entry), self.t)
            head_seq = entry.data[CHECKPOINT_HEAD_SEQ]
            assert isinstance(head_seq, int)
            self.incident.witnessed[i].add(head_seq)


def build_incident(idents: Sequence[Identity], writers: Sequence[Writer], *, seed: int,
                   steps: int, skews: Sequence[float] | None = None) -> Incident:
    """Play the incident (see the module docstring) into ``writers`` (one per identity)."""
    play = _Play(idents, writers, random.Random(seed), skews or [0.0] * len(idents))
    rng, n = play.rng, len(idents)
    for i, ident in enumerate(idents):
        play.write(i, JournalEventType.NODE_STARTED, NodeStarted(
            node=ident.node_id.hex(), role="handset", incident="test").data(), play.t)
    for _ in range(steps):
        play.t += rng.uniform(0.5, 2.0)
        i, roll = rng.randrange(n), rng.random()
        if roll < 0.4:
            play.message(i, (i + 1 + rng.randrange(n - 1)) % n)
        elif roll < 0.8:
            play.write(i, JournalEventType.ROUTE_CHANGED,
                       {"dst": rng.randbytes(8).hex(), "hops": rng.randrange(1, 5)}, play.t)
        else:
            play.checkpoint(i, [j for j in range(n) if j != i and rng.random() < 0.8])
    for i in range(n):
        play.t += 1.0
        play.write(i, JournalEventType.ROUTE_CHANGED, {"dst": "final", "hops": 1}, play.t)
        play.checkpoint(i, [j for j in range(n) if j != i])
    for i in range(n):
        play.t += 1.0
        entry = writers[i].checkpoint(idents[i].sign, play.t - T0, play.t + play.skews[i])
        assert entry is not None
    return play.incident


def plain(entries: Sequence[JournalEntry]) -> list[Plain]:
    return [(e.type, e.data, e.mono_s, e.wall_s) for e in entries]


def rechain(ident: Identity, kept: Sequence[JournalEntry],
            tail: Sequence[Plain]) -> list[tuple[JournalEntry, bytes]]:
    """A history rewritten by its own device: ``tail`` chained after the ``kept`` entries
    (a prefix of its journal), each checkpoint signed again over its new head, so the
    result verifies on its own. Each new entry comes with its stored data bytes."""
    head = (kept[-1].seq, kept[-1].entry_hash) if kept else None
    chain = JournalChain(ident.node_id, head)
    out = []
    for type_name, data, mono_s, wall_s in tail:
        if type_name == JournalEventType.CHECKPOINT:
            data = chain.checkpoint_data(ident.sign)
        out.append(chain.append_encoded(type_name, data, mono_s, wall_s))
    return out
