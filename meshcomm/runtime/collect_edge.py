"""The IO edge of journal collection (``meshcomm ctl collect``; the sans-IO part is
:mod:`meshcomm.node.collect`).

* **Device side**: a :class:`~meshcomm.node.collect_serve.JournalRead` is answered on a
  later loop turn (never inside the pump run) from the node's own journal file through a
  read-only SQLite connection: at most the rows asked for and :data:`READ_MAX_BYTES` of
  data, committed entries only. Before it reads, the node signs its journal's head (a
  checkpoint, at most every :data:`PULL_CHECKPOINT_INTERVAL_S`), so what is collected
  ends in a signed checkpoint rather than an unsigned tail.
* **Collector side** (:meth:`CollectEdge.start`, the control socket's ``collect``): the
  devices the node reaches (routes and bindings), and those DIR already holds a copy of,
  are collected into ``DIR/<node id hex>/`` from the head each copy already has
  (resumable: a second run asks only for newer rows; a device out of reach is reported);
  the node's own journal is copied into ``DIR/<own id hex>/`` the same way, locally. Every
  :class:`~meshcomm.node.collect.CollectRows` (already checked to chain onto that head) is
  appended in one durable SQLite transaction (WAL, ``synchronous=FULL``) to
  ``journal.sqlite`` -- the schema and owner record of a node's own journal, rows copied
  verbatim, never re-chained -- after ``public.key`` (64 hex digits and a newline, the key
  the mesh authenticated) was written atomically. A full disk or any write error rolls the
  transaction back (no half-written chunk), names the file in the device's error and ends
  that device's collection; the next run resumes from what was written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from meshcomm.config import NodeConfig
from meshcomm.diskio import disk_problem, write_atomic
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.journal.store import ROW_COLUMNS, JournalStore
from meshcomm.node.collect import (
    FINAL_STATES,
    ChainBroken,
    Collect,
    CollectConfig,
    CollectRows,
    DeviceState,
    check_rows,
)
from meshcomm.node.collect_serve import JournalRead, ServeConfig
from meshcomm.node.collect_wire import WireRow, decode_row_untrusted, row_to_wire
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import node_id_of
from meshcomm.sqlitefile import open_durable
from meshcomm.types import NodeId

log = logging.getLogger(__name__)

#: Files of one device's copy in DIR/<node id hex>/.
COPY_JOURNAL_FILE: Final = "journal.sqlite"
PUBLIC_KEY_FILE: Final = "public.key"
#: When the collector last heard the device and what head it reported (copy_info()).
COPY_INFO_FILE: Final = "copy.json"
#: A copy's directory name: the full node id in lower-case hex.
NODE_HEX_CHARS: Final = 64
#: Most bytes of row data one JournalRead returns (the part then packs what fits a chunk).
READ_MAX_BYTES: Final = 512 * 1024
#: Rows of the node's own journal copied per loop turn (a turn stays short: the loop
#: also carries live traffic).
OWN_COPY_BATCH_ROWS: Final = 256
#: A device answering pulls signs its journal's head (a checkpoint) at most this often,
#: so a copy ends in a signed checkpoint instead of an unsigned tail.
PULL_CHECKPOINT_INTERVAL_S: Final = 30.0
#: Mode of the collection directories (journals may hold personal data).
DIR_MODE: Final = 0o700
PUBLIC_KEY_MODE: Final = 0o644
_INSERT: Final = (f"INSERT INTO entries ({ROW_COLUMNS}) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class CollectAction(StrEnum):
    """The ``action`` of a ``collect`` control request."""

    START = "start"        # with "out": an absolute directory
    STATUS = "status"
    CANCEL = "cancel"


class CopyError(Exception):
    """A device's copy in DIR cannot be read or written (the message names the file)."""


# --------------------------------------------------------------------------- copies
def copy_dir(out: Path, node: bytes) -> Path:
    return out / node.hex()


def copy_head(out: Path, node: bytes) -> tuple[int, bytes] | None:
    """(seq, entry hash) of the newest row DIR holds for ``node``; None: nothing yet."""
    path = copy_dir(out, node) / COPY_JOURNAL_FILE
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CopyError(disk_problem(exc, path, "opening")) from None
    try:
        row = conn.execute("SELECT seq, entry_hash, node_id FROM entries "
                           "ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        raise CopyError(f"{path}: {disk_problem(exc, path, 'reading')}") from None
    finally:
        conn.close()
    if row is None:
        return None
    seq, entry_hash, owner = row
    if not isinstance(seq, int) or not isinstance(entry_hash, bytes) or owner != node:
        raise CopyError(f"{path}: its last row is not {node.hex()[:16]}'s; move it aside")
    return seq, entry_hash


def _ensure_dir(out: Path, node: bytes) -> Path:
    directory = copy_dir(out, node)
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise CopyError(disk_problem(exc, directory, "creating")) from None
    return directory


def held_devices(out: Path) -> list[NodeId]:
    """Devices DIR already holds a copy of (collected again even if not heard lately: a
    resumed collection covers them; one out of reach is reported as such)."""
    found: list[NodeId] = []
    with contextlib.suppress(OSError):
        for entry in out.iterdir():
            if (len(entry.name) == NODE_HEX_CHARS and _is_hex(entry.name)
                    and (entry / COPY_JOURNAL_FILE).is_file()):
                found.append(NodeId(bytes.fromhex(entry.name)))
    return found


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def write_public_key(out: Path, node: bytes, public_key: bytes) -> None:
    """``public.key`` of ``node`` (atomic; an existing file must hold the same key)."""
    if node_id_of(public_key) != node:
        raise CopyError(f"key of {node.hex()[:16]} does not hash to its node id")
    path = _ensure_dir(out, node) / PUBLIC_KEY_FILE
    text = public_key.hex().encode() + b"\n"
    with contextlib.suppress(OSError):
        if path.read_bytes() == text:
            return                          # written by an earlier chunk or run
    try:
        write_atomic(path, text, mode=PUBLIC_KEY_MODE, replace=False)
    except FileExistsError:
        if path.read_bytes() != text:
            raise CopyError(f"{path} holds another key; move it aside") from None
    except OSError as exc:
        raise CopyError(disk_problem(exc, path)) from None


def write_copy_info(out: Path, node: bytes, collector: bytes, heard_wall_s: float,
                    head_seq: int) -> None:
    """``copy.json`` of ``node``'s copy (atomic): the collector's node id, its wall clock
    when it last stored rows of the device, and the device's journal head then. The export
    judges a witnessed checkpoint beyond the copy's end as a cut tail only when it was
    witnessed before that moment (a checkpoint made after the copy is no evidence)."""
    path = _ensure_dir(out, node) / COPY_INFO_FILE
    text = json.dumps({"collector": collector.hex(), "heard_wall_s": heard_wall_s,
                       "head_seq": head_seq}, sort_keys=True).encode() + b"\n"
    try:
        write_atomic(path, text, mode=PUBLIC_KEY_MODE, replace=True)
    except OSError as exc:
        raise CopyError(disk_problem(exc, path)) from None


def _create_copy(path: Path, node: bytes) -> None:
    """A new journal file with the node journal's schema and owner record (made by the
    journal store itself); a failed creation leaves no file behind."""
    try:
        JournalStore.open(path, node).close()
    except (OSError, sqlite3.Error, ConfigError, DecodeError) as exc:
        for leftover in (path, path.with_name(path.name + "-wal"),
                         path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        problem = (disk_problem(exc, path) if isinstance(exc, OSError | sqlite3.Error)
                   else f"{path}: {exc}")
        raise CopyError(problem) from None


def append_rows(out: Path, node: bytes, rows: Sequence[WireRow]) -> None:
    """Append ``rows`` (verified) to ``node``'s copy in one durable transaction."""
    path = _ensure_dir(out, node) / COPY_JOURNAL_FILE
    if not path.is_file():
        _create_copy(path, node)
    try:
        conn = open_durable(path, "")
    except (OSError, sqlite3.Error) as exc:
        raise CopyError(disk_problem(exc, path, "opening")) from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, [(seq, mono, wall, node_id, type_name.decode("utf-8"),
                                    data, prev, entry)
                                   for seq, mono, wall, node_id, type_name, data, prev, entry
                                   in rows])
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise CopyError(disk_problem(exc, path)) from None
    finally:
        conn.close()


# --------------------------------------------------------------------------- own journal
class JournalReader:
    """Read-only access to the node's own journal file (committed rows only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def read(self, from_seq: int, max_rows: int) -> tuple[list[tuple[object, ...]], int]:
        """At most ``max_rows`` rows (and about READ_MAX_BYTES of data) from ``from_seq``,
        and the newest seq on disk. Raises sqlite3.Error."""
        conn = self._connect()
        head = conn.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
        rows: list[tuple[object, ...]] = []
        size = 0
        cursor = conn.execute(f"SELECT {ROW_COLUMNS} FROM entries WHERE seq >= ? "
                              "ORDER BY seq LIMIT ?", (from_seq, max_rows))
        try:
            for row in cursor:
                rows.append(tuple(row))
                data = row[5]
                size += len(data) if isinstance(data, bytes) else 0
                if size >= READ_MAX_BYTES:
                    break
        finally:
            cursor.close()
        return rows, int(head)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            conn.text_factory = bytes
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(slots=True)
class _Own:
    """The copy of the node's own journal (collected locally)."""

    node: bytes
    state: DeviceState = DeviceState.WAITING
    rows: int = 0
    next_seq: int = 1
    head_seq: int = 0
    error: str = ""


class CollectEdge:
    """See the module docstring. One per running node; the control socket's ``collect``
    command calls :meth:`start`, :meth:`status` and :meth:`cancel`."""

    def __init__(self, driver: NodeDriver, collect: Collect, public_key: bytes,
                 journal_path: Path | None) -> None:
        self.driver = driver
        self.collect = collect
        self.public_key = public_key
        self.reader = JournalReader(journal_path) if journal_path is not None else None
        self.out: Path | None = None
        self._own: _Own | None = None
        self._errors: dict[bytes, str] = {}
        self._started_wall = 0.0
        self._started = 0.0
        self._generation = 0
        self._signed_at = float("-inf")
        self._signed_seq = 0

    # ------------------------------------------------------------ events from the core
    def on_event(self, event: object) -> bool:
        """Take a collection event (True) or leave it (False)."""
        loop = self.driver.loop
        if isinstance(event, JournalRead):
            loop.call_soon(self._answer_read, event)
            return True
        if isinstance(event, CollectRows):
            loop.call_soon(self._store, event, self._generation)
            return True
        return False

    def sink(self, event: object) -> None:
        """The driver's event sink: collection events here, the rest logged."""
        if not self.on_event(event):
            log.debug("event without a consumer: %r", event)

    def _input(self, fn: Callable[[Collect], object]) -> None:
        if self.driver.closed:
            return
        now = self.driver.now()
        self.driver.pump_.command(now, lambda: self.driver.core.collect_input(fn, now))

    def _sign_head(self) -> None:
        """A signed checkpoint over the journal's head, unless the head is one already
        written here or one was written within PULL_CHECKPOINT_INTERVAL_S."""
        journal, now = self.driver.journal, self.driver.now()
        if (journal is None or self.driver.closed
                or now - self._signed_at < PULL_CHECKPOINT_INTERVAL_S):
            return
        head = journal.head()
        if head is None or head[0] == self._signed_seq:
            return
        entry = journal.checkpoint(self.driver.node.identity.sign, now,
                                   self.driver.wall_time(now))
        self.driver.flush_journal()
        if entry is not None:
            self._signed_at, self._signed_seq = now, entry.seq

    def _answer_read(self, event: JournalRead) -> None:
        self._sign_head()
        rows: list[tuple[object, ...]] = []
        head, ok = 0, self.reader is not None
        if self.reader is not None:
            try:
                rows, head = self.reader.read(event.from_seq, event.max_rows)
            except sqlite3.Error as exc:
                log.warning("collect: own journal unreadable: %s",
                            disk_problem(exc, self.reader.path, "reading"))
                ok = False
        now_rows, now_head, now_ok = rows, head, ok
        self._input(lambda c: c.rows_read(event.read_id, now_rows, now_head, now_ok,
                                          self.driver.now()))

    def _store(self, event: CollectRows, generation: int) -> None:
        out = self.out
        if out is None or generation != self._generation:
            return
        try:
            write_public_key(out, event.node, event.public_key)
            append_rows(out, event.node, event.rows)
            write_copy_info(out, event.node, self.driver.node.node_id,
                            self.driver.wall_time(self.driver.now()), event.head_seq)
        except CopyError as exc:
            error = str(exc)
            log.error("collect %s: %s", event.node.hex()[:16], error)
            self._input(lambda c: c.stored(event.node, False, error, self.driver.now()))
            return
        self._input(lambda c: c.stored(event.node, True, "", self.driver.now()))

    # ------------------------------------------------------------ commands
    def start(self, out: Path) -> dict[str, object]:
        """Collect every reachable device (and this node) into ``out``."""
        if self.collect.collector.running or (self._own is not None
                                              and self._own.state not in FINAL_STATES):
            raise DecodeError("a collection is running; ctl collect --cancel ends it")
        try:
            out.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise DecodeError(disk_problem(exc, out, "creating")) from None
        self._generation += 1
        self.out = out
        self._errors = {}
        self._started_wall = time.time()
        self._started = self.driver.now()
        now = self.driver.now()
        targets: dict[NodeId, tuple[int, bytes] | None] = {}
        for node in sorted({*self.collect.reachable(now), *held_devices(out)}
                           - {self.driver.node.node_id}):
            try:
                targets[node] = copy_head(out, node)
            except CopyError as exc:
                self._errors[node] = str(exc)
        self._start_own(out)
        self._input(lambda c: c.start(targets, self.driver.now()))
        return self.status()

    def cancel(self) -> dict[str, object]:
        self._generation += 1
        self.collect.cancel()
        if self._own is not None and self._own.state not in FINAL_STATES:
            self._own.state, self._own.error = DeviceState.FAILED, "cancelled"
        return self.status()

    def status(self) -> dict[str, object]:
        devices = [_device_json(p.node, p.state, p.rows, p.wire_bytes, p.next_seq,
                                p.head_seq, p.error)
                   for p in self.collect.collector.progress()]
        devices += [_device_json(node, DeviceState.FAILED, 0, 0, 0, 0, error)
                    for node, error in self._errors.items()]
        own = self._own
        if own is not None:
            devices.insert(0, _device_json(own.node, own.state, own.rows, 0, own.next_seq,
                                           own.head_seq, own.error, local=True))
        running = any(not d["done"] for d in devices)
        return {"out": str(self.out) if self.out is not None else None,
                "running": running, "started": round(self._started_wall, 3),
                "elapsed_s": round(self.driver.now() - self._started, 3),
                "left_out": self.collect.collector.left_out, "devices": devices}

    # ------------------------------------------------------------ own journal, locally
    def _start_own(self, out: Path) -> None:
        own = self._own = _Own(self.driver.node.node_id)
        if self.reader is None:
            own.state, own.error = DeviceState.FAILED, "this node keeps no journal"
            return
        try:
            head = copy_head(out, own.node)
            write_public_key(out, own.node, self.public_key)
        except CopyError as exc:
            own.state, own.error = DeviceState.FAILED, str(exc)
            return
        self._sign_head()
        self.driver.flush_journal()
        own.state = DeviceState.PULLING
        self.driver.loop.call_soon(self._copy_own, own, head, self._generation)

    def _copy_own(self, own: _Own, head: tuple[int, bytes] | None, generation: int) -> None:
        out, reader = self.out, self.reader
        if out is None or reader is None or generation != self._generation:
            return
        from_seq = head[0] + 1 if head is not None else 1
        own.next_seq = from_seq
        try:
            raw, own.head_seq = reader.read(from_seq, OWN_COPY_BATCH_ROWS)
            rows = [decode_row_untrusted(row_to_wire(r)) for r in raw]
            new_head = check_rows(rows, own.node, head)
            if rows:
                append_rows(out, own.node, rows)
                write_copy_info(out, own.node, own.node,
                                self.driver.wall_time(self.driver.now()),
                                max(own.head_seq, new_head[0]))
        except (sqlite3.Error, DecodeError, ChainBroken, CopyError) as exc:
            own.state, own.error = DeviceState.FAILED, _own_error(exc, reader.path)
            return
        own.rows += len(rows)
        own.next_seq = new_head[0] + 1
        if not rows:
            own.state = DeviceState.COMPLETE
            return
        self.driver.loop.call_soon(self._copy_own, own, new_head, generation)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _own_error(exc: Exception, path: Path) -> str:
    if isinstance(exc, sqlite3.Error):
        return disk_problem(exc, path, "reading")
    if isinstance(exc, ChainBroken):
        return f"refused at entry {exc.seq}: {exc}"
    return str(exc)


def _device_json(node: bytes, state: DeviceState, rows: int, wire_bytes: int,
                 next_seq: int, head_seq: int, error: str, *,
                 local: bool = False) -> dict[str, object]:
    """One device of the ``collect`` status (``ctl collect --json``)."""
    return {"node": node.hex(), "state": state.value, "done": state in FINAL_STATES,
            "complete": state is DeviceState.COMPLETE, "rows": rows,
            "wire_bytes": wire_bytes, "held_seq": max(next_seq - 1, 0),
            "head_seq": head_seq, "error": error, "local": local}


def parse_out_dir(value: object) -> Path:
    """The ``out`` argument of a ``collect`` request: an absolute path (DecodeError)."""
    if not isinstance(value, str) or not value or len(value) > os.pathconf("/", "PC_PATH_MAX"):
        raise DecodeError('"out" must be a directory path')
    path = Path(value)
    if not path.is_absolute():
        raise DecodeError('"out" must be an absolute path')
    return path


def collect_config(cfg: NodeConfig, credential: bytes | None) -> CollectConfig:
    """The collection part's config from the profile (``[export]``, ``[trust]``)."""
    export = cfg.export
    serve = ServeConfig(collectors=export.collector_ids(),
                        collector_roles=frozenset(export.collector_roles),
                        agency_keys=cfg.trust.to_policy().agency_keys,
                        rate_bytes_per_s=float(export.collect_rate_bytes_per_s))
    return CollectConfig(serve=serve, credential=credential or b"")
