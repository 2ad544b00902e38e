"""The writer's hold on the history file: its connection and the file it has open,
made at load, made again when the file is deleted or replaced, and closed without
harm to what other connections hold or to a file that is not ours any more."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Any

from ..runners import start_time
from . import database
from .database import (
    DatabaseFile,
    FileIdentity,
    StoreError,
    close_without_checkpoint,
    connect,
    creating,
    fault_kind,
    sidecars,
)
from .rows import UPSERT_TASK


class Connection:
    """The connection to the database at `path` (`db`, None until it is made) and the
    file it has open. `live` holds the newest row of each task not ended: written again
    into a file made anew, so that recovery still finds the task if this kernel dies."""

    def __init__(self, path: str, session: str) -> None:
        self.path = path
        self.session = session
        self.db: sqlite3.Connection | None = None
        self.live: dict[str, dict[str, Any]] = {}
        self._file: DatabaseFile | None = None
        self._sidecars: dict[str, FileIdentity] = {}
        self.moved = ""  # how the file we wrote to went, until one is open again

    def open(self, busy_timeout_ms: int, then_ms: int) -> None:
        """Connect (waiting `busy_timeout_ms` for a lock), begin this session in the
        file, and wait `then_ms` for locks from then on."""
        file = None if self.path == ":memory:" else DatabaseFile(self.path)
        try:
            db = connect(self.path, busy_timeout_ms)
        except BaseException:
            if file is not None:
                file.close()
            raise
        try:
            self._begin_session(db)
            db.execute(f"PRAGMA busy_timeout = {then_ms}")
        except BaseException:
            db.close()
            if file is not None:
                file.close()
            raise
        self.db, self._file = db, file
        if file is not None:
            self._sidecars = sidecars(self.path)  # made by the connection

    def ensure(self, busy_timeout_ms: int) -> str | None:
        """Make sure we write to the file at `path`, and return how the file we wrote
        to went if one was made again. Writes into a file deleted since it was opened
        would vanish with it, so a new one is created; a file put in its place is used
        if it is a database."""
        if self.db is not None:
            if self._file is None:
                return None  # ":memory:"
            status = self._file.status()
            if status == "same":
                return None
            if status == "garbage":
                raise StoreError(f"{self.path} was overwritten by something not a database")
            self.close()
            self.moved = "deleted" if status == "gone" else "replaced"
        try:
            if not self.moved:  # not made yet: the fault at load lasts
                self.open(busy_timeout_ms, busy_timeout_ms)
                return None
            with creating(self.path, self._sidecars):
                self.open(busy_timeout_ms, busy_timeout_ms)
        except sqlite3.Error as exc:
            if fault_kind(exc) == "transient":
                raise
            raise StoreError(f"{self.path} is not a database now ({exc})") from None
        moved, self.moved = self.moved, ""
        return moved

    def close(self) -> None:
        """Close the connection, then the file (in that order: see DatabaseFile). A
        file overwritten in place is left as it is: closing the last connection to it
        would copy our -wal into the user's bytes."""
        db, file = self.db, self._file
        self.db = None
        try:
            if db is not None:
                garbage = False
                if file is not None:
                    try:
                        garbage = file.status() == "garbage"
                    except OSError:
                        garbage = True  # unreadable: not worth writing into either
                if garbage:
                    close_without_checkpoint(db, self.path)
                else:
                    db.close()
        finally:
            if file is not None:
                file.close()

    def is_moved(self) -> bool:
        """Whether the file at `path` is not the one we write to (or unknown)."""
        try:
            return self._file is not None and self._file.status() != "same"
        except OSError:
            return True

    def set_busy_timeout(self, ms: int) -> None:
        if self.db is not None:
            # A failure here: the next write finds out what is wrong.
            with contextlib.suppress(sqlite3.Error):
                self.db.execute(f"PRAGMA busy_timeout = {ms}")

    def checkpoint(self) -> None:
        assert self.db is not None
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _begin_session(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            # OR REPLACE: a file put in place of ours may be a copy that has our session.
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                (
                    self.session,
                    os.getpid(),
                    start_time(os.getpid()),
                    os.uname().nodename,
                    time.time(),
                ),
            )
            db.executemany(UPSERT_TASK, list(self.live.values()))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def note_live(self, items: list[tuple[Any, ...]]) -> None:
        """Keep the newest row of each task not ended, from committed records."""
        for item in items:
            if item[0] == "task":
                row = item[1]
            elif item[0] == "transition":
                row = item[3]
            else:
                continue
            if row["state"] not in database.LIVE_STATES:
                self.live.pop(row["id"], None)
                continue
            old = self.live.get(row["id"])
            if old is not None and row["pid_start"] is None:
                row = {**row, "pid_start": old["pid_start"], "host": old["host"]}
            self.live[row["id"]] = row
