"""The store's writer thread: it owns the connection, commits what the loop hands over,
and rides out faults.

- A full disk, or a database locked past the busy timeout, pauses history: what waits
  is kept (the loop side bounds it) and written again every RETRY_INTERVAL until it
  goes in; then history resumes and says what was lost meanwhile. While paused, task
  rows and transitions go first and output follows in pieces, so that output bigger
  than the space freed holds nothing else back; what still does not fit is dropped.
- The same holds from load: a lock or a full disk then starts history paused.
- A file deleted or replaced while in use is opened (created) again at its path.
- A row the database refuses is skipped and said, not its whole batch.
- Only a file that is not a database any more ends history for the kernel.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import database
from .connection import Connection
from .database import describe, fault_kind, lasting_at_load
from .rows import SQL, merge, task_of

logger = logging.getLogger("oneshot_nb")

FLUSH_INTERVAL = 0.2  # seconds the writer gathers records before committing them
BATCH_BYTES = 4 << 20  # a transaction commits early once it holds this much output
# Copying the write-ahead log into the database file (a checkpoint) is the slow part of
# storing a fast stream, so it is left for a quiet moment: once this much has gone into
# the log and a batch comes that is small, or at the latest once CHECKPOINT_MAX has.
CHECKPOINT_QUIET = 16 << 20
CHECKPOINT_MAX = 512 << 20
QUIET_BATCH = 1 << 20
# Seconds between attempts to write while history is paused, and between checks that
# the file is still there while there is nothing to write.
RETRY_INTERVAL = 1.0
# While paused, an attempt waits this long for a lock, so the writer goes on taking
# records off the queue instead of waiting a whole busy timeout each time.
RETRY_BUSY_MS = 100
# Loading the extension waits this long for a lock, not the whole busy timeout: a lock
# held longer starts history paused, and loading goes on.
LOAD_BUSY_MS = 200
# While paused, output is written in transactions of up to this much.
PIECE_BYTES = 256 << 10

Records = queue.SimpleQueue[list[tuple[Any, ...]] | None]


@dataclass
class Held:
    """Records the writer has taken off the queue and not yet committed."""

    items: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 0  # bytes of output among them
    chunks: int = 0

    def add(self, items: list[tuple[Any, ...]]) -> None:
        self.items += items
        for item in items:
            if item[0] == "chunk":
                self.size += len(item[5])
                self.chunks += 1


class Writer:
    """Commits the batches put on `records` (None: stop) to the database at `path`.

    The loop side reads `error` (history is off for good), `fault` (paused, retrying),
    and the counters of what is committed or given up: `bytes_out`, `chunks_out`, and
    `written` (records, under `flushed`). `report` says a fault once; `dropped` tells
    how much output the loop side has dropped while paused, `dropped_bytes` how much
    the writer has.
    """

    def __init__(
        self,
        path: str,
        session: str,
        records: Records,
        report: Callable[[str], None],
        dropped: Callable[[], int],
    ) -> None:
        self.path = path
        self.error: str | None = None
        self.fault: str | None = None
        self.skipped_records = 0
        self.dropped_bytes = 0
        self.bytes_out = 0
        self.chunks_out = 0
        self.written = 0
        self.flushed = threading.Condition()
        self._records = records
        self._report = report
        self._dropped = dropped
        self._retry_at = 0.0
        self._dropped_said = 0
        self._skipped_tasks: set[str] = set()
        self._link = Connection(path, session)
        self._hooks_lock = threading.Lock()
        self._on_open: list[Callable[[], None]] | None = []  # None once open
        try:
            self._link.open(LOAD_BUSY_MS, database.BUSY_TIMEOUT_MS)
        except Exception as exc:
            if lasting_at_load(exc):
                raise  # here, in the caller: history is off
            self._pause(exc)
        else:
            self._on_open = None
        self.thread = threading.Thread(target=self._run, name="oneshot_nb store", daemon=True)
        self.thread.start()

    def when_open(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the database is open: at once if it is, else on the writer's
        thread when the fault met at load goes."""
        with self._hooks_lock:
            if self._on_open is not None:
                self._on_open.append(fn)
                return
        fn()

    def _run(self) -> None:
        held = Held()
        stop = False
        unchecked = 0  # bytes of output written since the last checkpoint
        while not stop:
            stop = self._collect(held)
            size = held.size
            if self.error is None and self._due(held, stop) and self._commit(held):
                unchecked = self._checkpoint(unchecked + size, size)
            if self.error is not None:
                self._done(held, held.items)  # given up: history is off
            with self.flushed:
                self.flushed.notify_all()
        if held.items:
            # Nobody reads a message through `report` now: the kernel is going.
            logger.warning(
                "oneshot_nb: %d bytes of output and %d records could not be saved to %s"
                " before it closed (%s)",
                held.size,
                len(held.items) - held.chunks,
                self.path,
                self.fault,
            )
        self._link.close()

    def _collect(self, held: Held) -> bool:
        """Wait up to RETRY_INTERVAL for records, then gather more until FLUSH_INTERVAL
        has passed or BATCH_BYTES of output are in hand. Returns whether close() asked
        the writer to stop."""
        start = held.size
        try:
            batch = self._records.get(timeout=RETRY_INTERVAL)
        except queue.Empty:
            return False
        deadline = time.monotonic() + FLUSH_INTERVAL
        while batch is not None:
            held.add(batch)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or held.size - start >= BATCH_BYTES or batch[-1][0] == "flush":
                return False
            try:
                batch = self._records.get(timeout=remaining)
            except queue.Empty:
                return False
        return True

    def _due(self, held: Held, stop: bool) -> bool:
        """Whether to write now: there is something to write, or the file is not the
        one we opened; while paused, once RETRY_INTERVAL has passed."""
        if self.fault is not None:
            if not stop and time.monotonic() < self._retry_at:
                return False
            # With nothing to write, an empty transaction would pass even on a full
            # disk, and history would seem back only to pause again at the next chunk;
            # a connection not made yet is tried for itself.
            return bool(held.items) or (self._link.db is None and not stop)
        return bool(held.items) or self._link.db is None or self._link.is_moved()

    def _commit(self, held: Held) -> bool:
        """Write `held`: in one transaction, or in pieces while paused. True when all
        of it is committed (or dropped) and history goes on."""
        if self.fault is not None:
            return self._retry(held)
        try:
            self._ensure_open()
            self._write_all(held.items)
        except Exception as exc:
            self._on_fault(exc)
            return False
        self._done(held, held.items)
        self._resume()
        return True

    def _retry(self, held: Held) -> bool:
        """While paused: task rows and transitions first, in one transaction, then the
        output in pieces of PIECE_BYTES, oldest first. Output that does not fit once
        the database has taken what it could in this attempt (a full disk with less
        space freed than is held) is dropped, counted and said: it would hold history
        paused until more space is freed, with no sign of when."""
        records = [item for item in held.items if item[0] != "chunk"]
        took = any(item[0] != "flush" for item in records)  # an empty commit proves nothing
        try:
            self._ensure_open()
            self._write_all(records)
        except Exception as exc:
            self._on_fault(exc)
            return False
        self._done(held, records)
        for piece in _pieces(held.items):
            try:
                self._write_all(piece)
            except Exception as exc:
                if not took or fault_kind(exc) != "transient" or _locked(exc):
                    self._on_fault(exc)
                    return False
                self.dropped_bytes += held.size
                self._done(held, held.items)
                break
            took = True
            self._done(held, piece)
        self._resume()
        self._opened()
        return True

    def _write_all(self, items: list[tuple[Any, ...]]) -> None:
        """Write `items` in one transaction; if the database refuses a row, again one
        by one, skipping what it refuses."""
        try:
            self._write(items)
        except Exception as exc:
            if fault_kind(exc) != "record":
                raise
            self._write(items, one_by_one=True)
        self._link.note_live(items)

    def _write(self, items: list[tuple[Any, ...]], one_by_one: bool = False) -> None:
        """Insert the rows of `items`. One by one, a row the database refuses is
        skipped and said, and the others are written."""
        db = self._link.db
        assert db is not None  # _ensure_open opened it or raised
        db.execute("BEGIN IMMEDIATE")
        try:
            for kind, rows in merge(items):
                if not one_by_one:
                    db.executemany(SQL[kind], rows)
                    continue
                for row in rows:
                    try:
                        db.execute(SQL[kind], row)
                    except Exception as exc:
                        if fault_kind(exc) != "record":
                            raise
                        self._skip(task_of(row), exc)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _ensure_open(self) -> None:
        busy = RETRY_BUSY_MS if self.fault else database.BUSY_TIMEOUT_MS
        moved = self._link.ensure(busy)
        if moved:
            self._report(
                f"oneshot_nb: {self.path} was {moved} while in use; task history goes on"
                " in the file there now (without what the old one held)"
            )

    def _opened(self) -> None:
        """Call what waited for the database to open (see when_open)."""
        with self._hooks_lock:
            hooks, self._on_open = self._on_open or [], None
        for fn in hooks:
            try:
                fn()
            except Exception:
                logger.exception("oneshot_nb: a call once history is open failed")

    def _done(self, held: Held, items: list[tuple[Any, ...]]) -> None:
        """`items` of `held` are committed, or given up: they no longer count as
        queued."""
        if items is held.items:
            size, chunks, held.items = held.size, held.chunks, []
        else:
            gone = {id(item) for item in items}
            held.items = [item for item in held.items if id(item) not in gone]
            size = sum(len(item[5]) for item in items if item[0] == "chunk")
            chunks = sum(1 for item in items if item[0] == "chunk")
        held.size -= size
        held.chunks -= chunks
        self.bytes_out += size
        self.chunks_out += chunks
        with self.flushed:
            self.written += len(items)

    def _checkpoint(self, unchecked: int, size: int) -> int:
        """Copy the write-ahead log into the file at a quiet moment; return how many
        bytes are left unchecked."""
        if unchecked <= CHECKPOINT_MAX and (unchecked <= CHECKPOINT_QUIET or size >= QUIET_BATCH):
            return unchecked
        try:
            self._link.checkpoint()
        except Exception as exc:
            # What is committed is safe in the log: a transient failure can wait for
            # the next quiet moment.
            if fault_kind(exc) != "transient":
                self._fail(exc)
        return 0

    def _on_fault(self, exc: Exception) -> None:
        if fault_kind(exc) == "transient":
            self._pause(exc)
        else:
            self._fail(exc)

    def _pause(self, exc: Exception) -> None:
        if self.fault is None:
            self.fault = describe(exc)
            self._link.set_busy_timeout(RETRY_BUSY_MS)
            self._report(
                f"oneshot_nb: task history cannot be saved to {self.path} for now"
                f" ({self.fault}); tasks run on, and it tries again every"
                f" {RETRY_INTERVAL:g} s"
            )
        self._retry_at = time.monotonic() + RETRY_INTERVAL

    def _resume(self) -> None:
        """After a commit: say that history is saved again, and what was dropped."""
        paused = self.fault is not None
        if paused:
            self.fault = None
            self._link.set_busy_timeout(database.BUSY_TIMEOUT_MS)
        # Read after clearing the fault: output dropped until then is in the count, and
        # the rare chunk dropped as the fault cleared is said at a later commit.
        dropped = self._dropped() + self.dropped_bytes - self._dropped_said
        self._dropped_said += dropped
        lost = f"{dropped:,} bytes of output could not be saved" if dropped else ""
        if paused:
            again = f"task history is saved to {self.path} again"
            self._report(f"oneshot_nb: {again}; {lost + ' meanwhile' if lost else 'nothing lost'}")
        elif lost:
            self._report(f"oneshot_nb: {lost} to {self.path} while history was paused")

    def _skip(self, task_id: str, exc: Exception) -> None:
        self.skipped_records += 1
        if task_id not in self._skipped_tasks:  # said once per task, counted always
            self._skipped_tasks.add(task_id)
            self._report(
                f"oneshot_nb: a history record of task {task_id} could not be saved and was"
                f" skipped ({describe(exc)})"
            )

    def _fail(self, exc: Exception) -> None:
        self.error = describe(exc)
        self._report(f"oneshot_nb: task history is no longer saved to {self.path} ({self.error})")


def _pieces(items: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """Output records in runs of up to PIECE_BYTES (at least one record each)."""
    pieces: list[list[tuple[Any, ...]]] = []
    size = PIECE_BYTES
    for item in items:
        if size + len(item[5]) > PIECE_BYTES:
            pieces.append([])
            size = 0
        pieces[-1].append(item)
        size += len(item[5])
    return pieces


def _locked(exc: Exception) -> bool:
    """A lock passes by itself: no reason to drop what waits for it."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()
