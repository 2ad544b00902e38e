"""The store's writer thread: it owns the connection, commits what the loop hands over,
and rides out faults.

- A full disk, or a database locked past the busy timeout, pauses history: what waits
  is kept (the loop side bounds it) and written again every RETRY_INTERVAL until it
  goes in; then history resumes and says what was lost meanwhile.
- A file deleted or replaced while in use is opened (created) again at its path.
- A row the database refuses is skipped and said, not its whole batch.
- Only a file that is not a database any more ends history for the kernel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import database
from .database import (
    LIVE_STATES,
    FileIdentity,
    StoreError,
    connect,
    creating,
    describe,
    fault_kind,
    file_status,
    identify,
    sidecars,
)
from .process import process_start_time
from .rows import SQL, UPSERT_TASK, merge, task_of

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
    how much output the loop side has dropped while paused.
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
        self.session = session
        self.error: str | None = None
        self.fault: str | None = None
        self.skipped_records = 0
        self.bytes_out = 0
        self.chunks_out = 0
        self.written = 0
        self.flushed = threading.Condition()
        self._records = records
        self._report = report
        self._dropped = dropped
        # The newest row of each task not ended: written again into a new file, so
        # that recovery still finds the task if this kernel dies.
        self._live: dict[str, dict[str, Any]] = {}
        self._retry_at = 0.0
        self._moved = ""  # how the file went: "deleted" or "replaced"
        self._dropped_said = 0
        self._skipped_tasks: set[str] = set()
        # Raises here, in the caller, when the file is unusable.
        self._db: sqlite3.Connection | None = connect(path)
        try:
            self._file: FileIdentity | None = None if path == ":memory:" else identify(path)
            self._sidecars = {} if path == ":memory:" else sidecars(path)
            self._begin_session(self._db)
        except BaseException:
            self._db.close()
            raise
        self.thread = threading.Thread(target=self._run, name="oneshot_nb store", daemon=True)
        self.thread.start()

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
                self._done(held)  # given up: history is off
            with self.flushed:
                self.flushed.notify_all()
        if held.items:
            # Nobody reads a message through `report` now: the kernel is going.
            logger.warning(
                "oneshot_nb: %d bytes of output and %d records could not be saved to %s"
                " before it closed (%s)",
                held.size, len(held.items) - held.chunks, self.path, self.fault,
            )
        if self._db is not None:
            self._db.close()

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
            # With nothing to write, an empty transaction would pass even on a full
            # disk, and history would seem back only to pause again at the next chunk.
            return bool(held.items) and (stop or time.monotonic() >= self._retry_at)
        if held.items or self._db is None:
            return True
        try:
            return self._file is not None and file_status(self.path, self._file) != "same"
        except OSError:
            return True  # _commit finds out what is wrong

    def _commit(self, held: Held) -> bool:
        """Write `held` in one transaction; True when it is committed."""
        try:
            self._reopen_if_moved()
            try:
                self._write(held.items)
            except Exception as exc:
                if fault_kind(exc) != "record":
                    raise
                self._write(held.items, one_by_one=True)
        except Exception as exc:
            if fault_kind(exc) == "transient":
                self._pause(exc)
            else:
                self._fail(exc)
            return False
        self._note_live(held.items)
        self._done(held)
        self._resume()
        return True

    def _write(self, items: list[tuple[Any, ...]], one_by_one: bool = False) -> None:
        """Insert the rows of `items`. One by one, a row the database refuses is
        skipped and said, and the others are written."""
        db = self._db
        assert db is not None  # _reopen_if_moved opened it or raised
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

    def _reopen_if_moved(self) -> None:
        """Make sure we write to the file at `path`. Writes into a file deleted since
        it was opened would vanish with it, so a new one is created; a file put in its
        place is used if it is a database."""
        if self._file is None:
            return  # ":memory:"
        if self._db is not None:
            status = file_status(self.path, self._file)
            if status == "same":
                return
            if status == "garbage":
                raise StoreError(f"{self.path} was overwritten by something not a database")
            old, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                old.close()
            self._moved = "deleted" if status == "gone" else "replaced"
        with creating(self.path, self._sidecars):
            try:
                db = connect(self.path, RETRY_BUSY_MS if self.fault else None)
            except sqlite3.Error as exc:
                if fault_kind(exc) == "transient":
                    raise
                raise StoreError(f"{self.path} is not a database now ({exc})") from None
        try:
            self._begin_session(db)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(UPSERT_TASK, list(self._live.values()))
            db.execute("COMMIT")
            self._file, self._sidecars = identify(self.path), sidecars(self.path)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._report(
            f"oneshot_nb: {self.path} was {self._moved} while in use; task history goes on"
            " in the file there now (without what the old one held)"
        )

    def _begin_session(self, db: sqlite3.Connection) -> None:
        # OR REPLACE: a file put in place of ours may be a copy that has our session.
        db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
            (
                self.session,
                os.getpid(),
                process_start_time(os.getpid()),
                os.uname().nodename,
                time.time(),
            ),
        )

    def _note_live(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            if item[0] == "task":
                row = item[1]
            elif item[0] == "transition":
                row = item[3]
            else:
                continue
            if row["state"] not in LIVE_STATES:
                self._live.pop(row["id"], None)
                continue
            old = self._live.get(row["id"])
            if old is not None and row["pid_start"] is None:
                row = {**row, "pid_start": old["pid_start"]}
            self._live[row["id"]] = row

    def _done(self, held: Held) -> None:
        """`held` is committed, or given up: it no longer counts as queued."""
        self.bytes_out += held.size
        self.chunks_out += held.chunks
        with self.flushed:
            self.written += len(held.items)
        held.items, held.size, held.chunks = [], 0, 0

    def _checkpoint(self, unchecked: int, size: int) -> int:
        """Copy the write-ahead log into the file at a quiet moment; return how many
        bytes are left unchecked."""
        if unchecked <= CHECKPOINT_MAX and (unchecked <= CHECKPOINT_QUIET or size >= QUIET_BATCH):
            return unchecked
        assert self._db is not None
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:
            # What is committed is safe in the log: a transient failure can wait for
            # the next quiet moment.
            if fault_kind(exc) != "transient":
                self._fail(exc)
        return 0

    def _pause(self, exc: Exception) -> None:
        if self.fault is None:
            self.fault = describe(exc)
            self._set_busy_timeout(RETRY_BUSY_MS)
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
            self._set_busy_timeout(database.BUSY_TIMEOUT_MS)
        # Read after clearing the fault: output dropped until then is in the count, and
        # the rare chunk dropped as the fault cleared is said at a later commit.
        dropped = self._dropped() - self._dropped_said
        self._dropped_said += dropped
        lost = f"{dropped:,} bytes of output could not be saved" if dropped else ""
        if paused:
            again = f"task history is saved to {self.path} again"
            self._report(f"oneshot_nb: {again}; {lost + ' meanwhile' if lost else 'nothing lost'}")
        elif lost:
            self._report(f"oneshot_nb: {lost} to {self.path} while history was paused")

    def _set_busy_timeout(self, ms: int) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute(f"PRAGMA busy_timeout = {ms}")

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
