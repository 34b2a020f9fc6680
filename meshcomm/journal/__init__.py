"""journal: the tamper-evident, hash-chained event journal of a node.

* :mod:`.events` -- :class:`JournalEventType`, :class:`JournalRecord` (what cores emit).
* :mod:`.codec` -- canonical encoding, entry hash, untrusted data decoder (sans-IO).
* :mod:`.chain` -- :class:`JournalEntry`, :class:`JournalChain`, signed checkpoints,
  :class:`MemoryJournal` for the simulator (sans-IO).
* :mod:`.store` -- ``JournalStore``, the SQLite (WAL, synchronous=FULL) adapter.
* :mod:`.audit` -- ``verify_entries``, the verifier (sans-IO).
* :mod:`.verify` -- ``verify_journal``, the file-reading adapter around it.

Only the sans-IO parts are re-exported here, so a core importing this package does not
pull in sqlite3; import the store and the verifier from their modules.
"""

from meshcomm.journal.chain import JournalChain, JournalEntry, MemoryJournal
from meshcomm.journal.events import JournalEventType, JournalRecord

__all__ = [
    "JournalChain",
    "JournalEntry",
    "JournalEventType",
    "JournalRecord",
    "MemoryJournal",
]
