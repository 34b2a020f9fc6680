"""Child process of the crash-safety test: append and flush forever, report durable seqs.

Usage: ``python crash_writer.py JOURNAL_PATH NODE_ID_HEX``. Each loop turn appends one to
three entries, flushes them, and only then writes the durable seq as one line to stdout.
The parent kills this process with SIGKILL at an arbitrary moment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore


def main(path: Path, node_id: bytes) -> None:
    store = JournalStore.open(path, node_id)
    turn = 0
    while True:
        turn += 1
        for i in range(1 + turn % 3):
            store.append(JournalEventType.ENVELOPE_DROPPED,
                         {"turn": turn, "i": i, "reason": "duplicate", "pad": b"\x00" * 64},
                         float(turn), 1.7e9 + turn)
        durable_seq = store.flush()
        sys.stdout.write(f"{durable_seq}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]))
