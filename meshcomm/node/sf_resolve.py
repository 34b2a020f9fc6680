"""Where the To AoRs of held messages live beyond the island (sans-IO), for
:mod:`meshcomm.node.sf_remote`.

A held message whose To AoR has no binding in the island is looked up across sites: the
store-and-forward core asks the node's tunnel (``ResolveAor`` -> ``Tunnel.resolve``: an
uplinked relay of the island, which asks its DHT bridge) and hears the answer through
:meth:`FarAors.answered`. One question per AoR serves every message held for it.
The node an answer names is one whose owner-signed binding of the AoR the tunnel verified
(an island relay's answer is checked, not believed: :mod:`meshcomm.node.tunnel_answer`),
so a parcel is sealed, and a receipt accepted, only for a node that holds the AoR.

* A found node (one the tunnel has a remote route to) is used for :data:`FOUND_KEEP_S`,
  then asked again while messages still wait for it (the AoR may have moved).
* A failed question (not found, busy, no answer) is asked again after a backoff per
  AoR, :data:`RETRY_INITIAL_S` doubling up to :data:`RETRY_MAX_S`.
* An answer that says the other islands cannot be reached at all (no uplink up, no way
  to the far relays) is about every AoR at once: until one succeeds, the node asks *one*
  question every :data:`DOWN_PROBE_S` (whichever AoR is due first), not one per AoR, so
  a handset holding messages for many AoRs costs the radio one small exchange per probe
  while the uplink is down, and a returning uplink is still noticed within
  :data:`DOWN_PROBE_S`; :meth:`FarAors.wake` (the uplink came back, or a probe found a
  node) asks every AoR again at once.

Bounds: one question per AoR at a time, :data:`MAX_RESOLVING` at once and
:data:`ASKS_PER_S` overall (the others wait for a later poll); state for at most
:data:`MAX_FAR_AORS` AoRs (the least recently used not being asked is forgotten first; the
core also drops AoRs no held message needs). A question with no answer in
:data:`ANSWER_TIMEOUT_S` (the tunnel answers every one in less) no longer blocks the next.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from meshcomm.overlay.ratelimit import TokenBucket
from meshcomm.types import NodeId

#: Questions out at once (per node), and AoRs whose state is kept.
MAX_RESOLVING: Final = 8
MAX_FAR_AORS: Final = 2048
#: Questions asked per second at most (sustained; a burst of MAX_RESOLVING): while the
#: uplink is down every AoR is asked every RETRY_MAX_S, and answers come at once.
ASKS_PER_S: Final = 4.0
#: Backoff of the questions about one AoR that found nothing usable.
RETRY_INITIAL_S: Final = 1.0
RETRY_MAX_S: Final = 8.0
#: ... when the answer was that the AoR's island is known but cut off now (its uplink
#: down): asked again soon, as nothing here tells this node when it comes back.
RETRY_UNREACHABLE_MAX_S: Final = 2.0
#: While the other islands are unreachable: one question per this long, for all AoRs.
DOWN_PROBE_S: Final = 2.0
#: A found node is used this long before the AoR is asked again.
FOUND_KEEP_S: Final = 60.0
#: A question unanswered this long no longer counts (the tunnel's own timeout is 15 s).
ANSWER_TIMEOUT_S: Final = 20.0


@dataclass(slots=True)
class _Far:
    node: NodeId | None = None
    next_ask: float = float("-inf")
    backoff_s: float = RETRY_INITIAL_S
    asking: int | None = None
    asked_at: float = float("-inf")
    #: The last answer leaves the way to an upstream proxy open (nothing usable found).
    upstream: bool = False


class FarAors:
    """Resolution state by AoR (case-insensitive); see the module docstring."""

    def __init__(self) -> None:
        self._aors: OrderedDict[str, _Far] = OrderedDict()
        #: Questions out: request id -> AoR key. Ids are negative (the gateway's are
        #: positive), so the node core tells the answers apart.
        self._asking: dict[int, str] = {}
        self._ids = itertools.count(1)
        self._budget = TokenBucket(ASKS_PER_S, MAX_RESOLVING)
        #: While the last answer said the other islands are unreachable: when the next
        #: probe may go (None: not down).
        self._down_probe_at: float | None = None

    def __len__(self) -> int:
        return len(self._aors)

    def node(self, aor: str) -> NodeId | None:
        """The node the last useful answer named for ``aor`` (None: none yet)."""
        far = self._aors.get(aor.lower())
        return far.node if far is not None else None

    def may_go_upstream(self, aor: str) -> bool:
        far = self._aors.get(aor.lower())
        return far is not None and far.upstream

    def owns(self, request_id: int) -> bool:
        return request_id in self._asking

    def want(self, aor: str, now: float) -> int | None:
        """``aor`` is needed: the request id of a question to ask now, or None (one is
        out, its backoff or the kept answer has not run out, or too many are out)."""
        key = aor.lower()
        far = self._aors.get(key)
        if far is None:
            far = self._aors[key] = _Far()
            self._evict()
        self._aors.move_to_end(key)
        if far.asking is not None:
            if now - far.asked_at < ANSWER_TIMEOUT_S:
                return None
            self._asking.pop(far.asking, None)
            far.asking = None
        if (now < far.next_ask or len(self._asking) >= MAX_RESOLVING
                or (self._down_probe_at is not None and now < self._down_probe_at)
                or not self._budget.take(now)):
            return None
        if self._down_probe_at is not None:
            self._down_probe_at = now + DOWN_PROBE_S        # this question is the probe
        request_id = -next(self._ids)
        far.asking, far.asked_at = request_id, now
        self._asking[request_id] = key
        return request_id

    def answered(self, request_id: int, node: NodeId | None, upstream: bool,
                 now: float, *, beyond_down: bool = False,
                 unreachable: bool = False) -> str | None:
        """The answer to question ``request_id``: ``node`` (usable: it has a remote
        route) or None; ``beyond_down``: the answer says no other island can be reached
        now (probe mode, see the module docstring); ``unreachable``: the AoR's island is
        cut off now (short backoff). Returns the AoR key when the answer
        names a node other than the last one (its messages may go at once), else None."""
        key = self._asking.pop(request_id, None)
        far = self._aors.get(key) if key is not None else None
        if far is None or far.asking != request_id:
            return None
        far.asking = None
        far.upstream = node is None and upstream
        if beyond_down and node is None:
            if self._down_probe_at is None:
                self._down_probe_at = now + DOWN_PROBE_S
        elif node is not None and self._down_probe_at is not None:
            self.wake(now)                   # a probe got through: everyone may go
        if node is None:
            far.next_ask = now + far.backoff_s
            cap = RETRY_UNREACHABLE_MAX_S if unreachable else RETRY_MAX_S
            far.backoff_s = min(far.backoff_s * 2, cap)
            return None
        far.next_ask = now + FOUND_KEEP_S
        far.backoff_s = RETRY_INITIAL_S
        changed = far.node != node
        far.node = node
        return key if changed else None

    def next_due(self, after: float) -> float | None:
        """When the next AoR may be asked again, later than ``after`` (None: none)."""
        waiting = [f.next_ask for f in self._aors.values() if f.asking is None]
        probe = self._down_probe_at
        if probe is not None and waiting:
            first = max(min(waiting), probe)        # nothing goes before the probe
            return first if first > after else None
        return min((t for t in waiting if t > after), default=None)

    @property
    def beyond_down(self) -> bool:
        """Whether the last answers said no other island can be reached (probe mode)."""
        return self._down_probe_at is not None

    def wake(self, now: float) -> None:
        """Other islands may be reachable again: every AoR is asked again at once."""
        self._down_probe_at = None
        for far in self._aors.values():
            far.next_ask = now
            far.backoff_s = RETRY_INITIAL_S

    def retain(self, aors: set[str]) -> None:
        """Forget the AoRs (lower case) no held message needs (not those being asked)."""
        for key in [k for k, f in self._aors.items() if k not in aors and f.asking is None]:
            del self._aors[key]

    def _evict(self) -> None:
        while len(self._aors) > MAX_FAR_AORS:
            victim = next((k for k, f in self._aors.items() if f.asking is None), None)
            if victim is None:
                return
            del self._aors[victim]
