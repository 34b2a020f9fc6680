"""The gateway's table of proxy transactions (sans-IO bookkeeping, no SIP processing):
lookup by server key (§17.2.3 matching of retransmissions) and by the branch of the
forwarded request (§17.1.3 matching of responses), the bound on lingering transactions,
and the transactions' timers.

Timers are on a :class:`~meshcomm.deadlines.DeadlineHeap`: a
:class:`~meshcomm.node.gateway.parts.ProxyTx` in the table re-arms it whenever its
``deadline`` or ``retransmit_at`` is set, so :meth:`ProxyTxTable.next_timer` costs O(1)
amortised and :meth:`ProxyTxTable.due` O(due · log n), where a scan of every transaction
on each call made a flood's cost grow with its square. Transactions due together are
handed out in table order (oldest first), the order a scan of the table had.
"""

from __future__ import annotations

import itertools

from meshcomm.deadlines import DeadlineHeap
from meshcomm.node.gateway.parts import ProxyTx
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn

ServerKey = tuple[str, ...]


class ProxyTxTable:
    """Proxy transactions by server key and branch, and their timers."""

    def __init__(self, linger_limit: int) -> None:
        #: Transactions kept at most while lingering ones can be evicted (oldest first).
        self.linger_limit = linger_limit
        self.by_server: dict[ServerKey, ProxyTx] = {}
        self.by_branch: dict[str, ProxyTx] = {}
        self.timers: DeadlineHeap[ProxyTx] = DeadlineHeap()
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self.by_server)

    def __contains__(self, key: ServerKey) -> bool:
        return key in self.by_server

    def get(self, key: ServerKey) -> ProxyTx | None:
        return self.by_server.get(key)

    def of_branch(self, branch: str) -> ProxyTx | None:
        return self.by_branch.get(branch)

    def values(self) -> list[ProxyTx]:
        """A snapshot, oldest first."""
        return list(self.by_server.values())

    def pending(self) -> int:
        """Transactions not answered yet (``ctl status``)."""
        return sum(1 for tx in self.by_server.values() if not tx.answered)

    # ------------------------------------------------------------ membership
    def add(self, tx: ProxyTx) -> None:
        """``tx`` holds its server key from now on. A transaction it replaces (a held
        MESSAGE delivered where its first copy still lingers) keeps its branch but its
        timers no longer fire, and ``tx`` takes its place in the table's order."""
        old = self.by_server.get(tx.server_key)
        if old is not None:
            old.timers = None
            self.timers.discard(old)
        tx.order = next(self._order) if old is None else old.order
        self.by_server[tx.server_key] = tx
        tx.timers = self.timers
        tx.rearm()

    def set_branch(self, tx: ProxyTx, branch: str) -> None:
        tx.branch = branch
        self.by_branch[branch] = tx

    def forget(self, tx: ProxyTx, event: TxIn) -> None:
        """``tx`` leaves the table (lingered out, or evicted)."""
        tx.step(event)
        tx.deadline = tx.retransmit_at = None
        tx.timers = None
        self.by_server.pop(tx.server_key, None)
        if tx.branch:
            self.by_branch.pop(tx.branch, None)

    def trim_lingering(self) -> None:
        """Over :attr:`linger_limit`, drop lingering (answered) transactions, oldest first."""
        excess = len(self.by_server) - self.linger_limit
        if excess <= 0:
            return
        # Oldest first, reading only as far as the victims (no copy of the whole table).
        victims = list(itertools.islice(
            (tx for tx in self.by_server.values() if tx.allows(TxIn.EVICT)), excess))
        for tx in victims:
            self.forget(tx, TxIn.EVICT)

    # ------------------------------------------------------------ timers
    def next_timer(self) -> float | None:
        """The earliest ``deadline`` or ``retransmit_at`` of a transaction in the table."""
        return self.timers.next_time()

    def due(self, now: float) -> list[ProxyTx]:
        """The transactions with a timer due at ``now``, in table order. Their entries
        leave the heap: the caller fires them, then calls :meth:`ProxyTx.rearm` (a timer
        not due, or set again while firing, goes back on the heap)."""
        return sorted(self.timers.pop_due(now), key=lambda tx: tx.order)

    def holds(self, tx: ProxyTx) -> bool:
        """``tx`` is the table's transaction for its server key."""
        return self.by_server.get(tx.server_key) is tx
