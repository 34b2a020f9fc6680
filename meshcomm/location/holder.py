"""Who holds a contested AoR under the ``open`` policy: the established holder wins.

The rule (the README states it):

1. A node that has held one claim on an AoR as its holder for ``HOLDER_LOCK_S`` keeps it
   until that claim expires or is withdrawn: established nodes never change their holder
   because of what arrives later, however often it is re-flooded or whoever vouches for it.
2. Otherwise (a node that joined late, or a claim it met only recently) the node adopts
   the claim its neighbours report holding longest. Neighbours report, with every record
   they pass on in anti-entropy (a field outside the signature, in a frame signed by the
   neighbour), for how long they have considered that record's key the holder (``-1``:
   they do not). Each reporting neighbour has one vote per AoR: its current holder and
   since when. A claim's standing is the lower median, over all neighbours that reported on
   the AoR, of how long each has held it (0 for a neighbour that holds another claim), so a
   claim needs more than half of the reporting neighbours behind it: one lying neighbour
   cannot swing a node with two honest ones, and re-flooding a claim adds no vote.
   A neighbour passing on a claim it does not hold (``-1``) votes against it: a joiner
   that meets an attacker's claim before the genuine one does not take it as an
   uncontested holder.
3. Without reports, or when no claim has a majority, the current holder stays and, for a
   node with none yet, the first claim to arrive holds (arrival order, as before) -- but
   only provisionally: until it is locked (rule 1) or backed by a majority (rule 2), and
   at most ``UNSETTLED_MAX_S`` after the contest began on this node, the holder is
   ``contested``: it is not used for routing (a MESSAGE is held meanwhile) and not
   reported to neighbours as held, so a joiner that hears an attacker's claim first
   neither routes to it nor vouches for it while its neighbours' reports are on their way.

Only neighbours heard in a verified HELLO may vote (the overlay checks that); at most
``MAX_HOLDER_VOTERS`` votes are kept per AoR (the oldest forgotten first).
"""

from __future__ import annotations

from collections.abc import Sequence

#: A node that has held a claim this long keeps it (rule 1).
HOLDER_LOCK_S = 60.0
#: A contest this node cannot settle by rules 1-2 falls back to arrival order after this.
UNSETTLED_MAX_S = 10.0
#: Votes kept per AoR.
MAX_HOLDER_VOTERS = 8


class HolderVotes:
    """Per AoR: reporter -> (record id it holds, or None; local time it has held it since)."""

    def __init__(self) -> None:
        self._votes: dict[str, dict[bytes, tuple[bytes | None, float]]] = {}

    def __len__(self) -> int:
        return len(self._votes)

    def report(self, aor_key: str, reporter: bytes, record_id: bytes, held_s: float,
               now: float) -> bool:
        """Record a neighbour's report on one claim; True if its vote changed."""
        votes = self._votes.setdefault(aor_key, {})
        old = votes.get(reporter)
        if held_s >= 0:  # 0: it holds the claim, since just now
            new: tuple[bytes | None, float] = (record_id, now - held_s)
        elif old is None or old[0] == record_id:
            new = (None, now)
        else:
            return False  # it holds another claim: its vote stands
        if old is not None and old[0] == new[0] and abs(old[1] - new[1]) < 1.0:
            return False
        if old is None and len(votes) >= MAX_HOLDER_VOTERS:
            del votes[next(iter(votes))]
        votes.pop(reporter, None)
        votes[reporter] = new
        return True

    def forget(self, aor_key: str) -> None:
        self._votes.pop(aor_key, None)

    def has_votes(self, aor_key: str) -> bool:
        return bool(self._votes.get(aor_key))

    def standing_s(self, aor_key: str, record_ids: Sequence[bytes],
                   now: float) -> list[float]:
        """Lower-median holding time per record: >= 0 when a majority of the reporting
        neighbours hold it (-1 for a neighbour that does not; all -1 when nobody
        reported)."""
        votes = self._votes.get(aor_key)
        if not votes:
            return [-1.0] * len(record_ids)
        out: list[float] = []
        for rid in record_ids:
            held = sorted(max(0.0, now - since) if held_rid == rid else -1.0
                          for held_rid, since in votes.values())
            out.append(held[(len(held) - 1) // 2])
        return out
