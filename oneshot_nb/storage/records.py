"""Reading the history back: tasks, their logs and transitions; pruning old ones."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..agents import AgentSummary
from ..engine.machine import TaskState
from . import columns
from .database import (
    BUSY_TIMEOUT_MS,
    StoreError,
    default_path,
    from_sql,
    overwritten,
    to_sql,
    uri,
)
from .redaction import was_redacted
from .store import Store

logger = logging.getLogger("oneshot_nb")

# SQLite's integers are 64-bit: a limit or offset beyond this means "no limit".
SQL_MAX = 2**63 - 1

# The Store of this process, if one is open, so that reads see what it has queued.
active_store: Store | None = None

F = TypeVar("F", bound=Callable[..., Any])


def _reads(fn: F) -> F:
    """sqlite3's errors (a file that is not a database, or locked too long) become one
    StoreError line naming the file, instead of a traceback."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def reading(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            given = signature.bind(*args, **kwargs).arguments
            path = given["self"].path if "self" in given else _path(given.get("path"))
            raise StoreError(f"cannot read the task history at {path}: {exc}") from None

    return reading  # type: ignore[return-value]


@dataclass(frozen=True)
class TaskRecord:
    """A task as the history holds it."""

    id: str
    name: str
    command: str | list[str]
    cwd: str | None
    env: dict[str, str]
    state: TaskState
    returncode: int | None
    reason: str | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    session: str
    path: str = field(repr=False)
    # What redaction took, as recorded when the task was stored (schema version 2):
    # {"env": [names], "command": bool}; None for a row stored before that.
    redacted: dict[str, Any] | None = field(default=None, repr=False)
    # Where it ran: the runner's name ("local", "dask") and the host or worker address.
    runner: str = "local"
    host: str | None = None
    # Whether it ran in a terminal (its input is echoed in its output), and what an
    # agent CLI's stream said of its progress (None for other tasks).
    pty: bool = False
    agent: AgentSummary | None = None
    # How it was run beyond its command, cwd and env, as a rerun gives it again: pty,
    # cols, rows, stdin and agent, as the TaskOptions fields (empty: as the defaults).
    terminal: dict[str, Any] = field(default_factory=dict, repr=False)
    # Each attempt of a task that had retries ({"number", "started_at", "ended_at",
    # "returncode", "reason"}), the ids of the tasks it ran after, and what it cost:
    # its process group's CPU seconds and peak resident memory (bytes).
    attempts: list[dict[str, Any]] = field(default_factory=list, repr=False)
    after: list[str] = field(default_factory=list, repr=False)
    cpu_seconds: float | None = None
    peak_rss: int | None = None

    @property
    def redacted_env(self) -> list[str]:
        """The env names whose values the history does not hold in full: secret-looking
        names, and values with a password in a URL."""
        if self.redacted is not None:
            return sorted(self.redacted.get("env", ()))
        # Stored before what was taken was recorded: the text is all there is to go by.
        return sorted(name for name, value in self.env.items() if was_redacted(value))

    @property
    def command_redacted(self) -> bool:
        """Whether the stored command lost a password (or token) in a URL."""
        if self.redacted is not None:
            return bool(self.redacted.get("command"))
        words = [self.command] if isinstance(self.command, str) else self.command
        return any(was_redacted(word) for word in words)

    @_reads
    def read_log(self, stream: str | None = None) -> bytes:
        """The task's whole log as written: one stream ("stdout", "stderr", or "stdin":
        the input it was sent), or all of them in the order they came, as the session
        happened. A terminal echoes its input in its output, so a pty task's log leaves
        its "stdin" out (read it on its own)."""
        if stream is not None and not isinstance(stream, str):
            raise TypeError(f"stream must be a str or None, got {type(stream).__name__}")
        if stream not in (None, "stdout", "stderr", "stdin"):
            raise ValueError(
                f"stream must be 'stdout', 'stderr', 'stdin' or None, got {stream!r:.40}"
            )
        _flush_if_active(self.path)
        db = open_file(self.path)
        try:
            if stream is None:
                rows = db.execute(
                    f"SELECT data FROM chunks WHERE task = ?{self._echoed} ORDER BY seq",
                    (self.id,),
                )
            else:
                rows = db.execute(
                    "SELECT data FROM chunks WHERE task = ? AND stream = ? ORDER BY seq",
                    (self.id, stream),
                )
            return b"".join(row[0] for row in rows)
        finally:
            db.close()

    @property
    def _echoed(self) -> str:
        """The condition that leaves a terminal's input out of its log (see read_log)."""
        return " AND stream != 'stdin'" if self.pty else ""

    @_reads
    def read_chunks(self, last_bytes: int | None = None) -> tuple[list[tuple[str, bytes]], bool]:
        """The output as stored: (stream, bytes) rows in the order they arrived, and
        whether older rows were left out. With `last_bytes`, only the newest rows that
        hold that much are read, so showing the end of a huge log stays cheap."""
        if last_bytes is not None:
            _check_int("last_bytes", last_bytes, 0)
        _flush_if_active(self.path)
        db = open_file(self.path)
        try:
            rows = db.execute(
                f"SELECT stream, data FROM chunks WHERE task = ?{self._echoed} ORDER BY seq DESC",
                (self.id,),
            )
            kept: list[tuple[str, bytes]] = []
            size = 0
            for stream, data in rows:
                if last_bytes is not None and size >= last_bytes:
                    return kept[::-1], True
                kept.append((stream, data))
                size += len(data)
            return kept[::-1], False
        finally:
            db.close()

    @_reads
    def transitions(self) -> list[tuple[str, str, str, float, str | None]]:
        """(event, source, target, time, reason) for each recorded transition."""
        _flush_if_active(self.path)
        db = open_file(self.path)
        try:
            return list(
                db.execute(
                    "SELECT event, source, target, time, reason FROM transitions"
                    " WHERE task = ? ORDER BY rowid",
                    (self.id,),
                )
            )
        finally:
            db.close()


@_reads
def history(
    limit: int | None = None,
    *,
    offset: int = 0,
    failed: bool = False,
    grep: str | None = None,
    path: str | None = None,
) -> list[TaskRecord]:
    """Past and present tasks, newest first, from the history database.

    `offset` skips that many of the newest (a table's next page); `failed` keeps FAILED
    tasks only; `grep` keeps those whose name or command contains the text. `path`
    defaults to ONESHOT_NB_DB or the per-user file; a relative one is taken from the
    current directory. A limit too large for SQLite (2**63 and up) is no limit.
    Raises TypeError or ValueError naming an argument of the wrong type or value.
    """
    if limit is not None:
        _check_int("limit", limit, 1)
    _check_int("offset", offset, 0)
    if not isinstance(failed, bool):
        raise TypeError(f"failed must be a bool, got {type(failed).__name__}")
    if grep is not None and not isinstance(grep, str):
        raise TypeError(f"grep must be a str or None, got {type(grep).__name__}")
    path = _path(path)
    if path == ":memory:" or not os.path.exists(path):
        return []
    _flush_if_active(path)
    query = "SELECT * FROM tasks"
    where: list[str] = []
    params: list[Any] = []
    if failed:
        where.append("state = 'FAILED'")
    if grep:
        where.append("oneshot_grep(name, command, argv, ?)")
        params.append(to_sql(grep))
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
    params += [-1 if limit is None or limit > SQL_MAX else limit, min(offset, SQL_MAX)]
    db = open_file(path)
    try:
        db.row_factory = sqlite3.Row
        found, unreadable = [], 0
        for row in db.execute(query, params):
            try:
                found.append(_record(row, path))
            except StoreError:
                unreadable += 1  # a row another program wrote, or broke: not the others
        if unreadable:
            logger.warning(
                "oneshot_nb: %d task(s) in %s could not be read and are not shown",
                unreadable,
                path,
            )
        return found
    finally:
        db.close()


@_reads
def get_record(task_id: str, path: str | None = None) -> TaskRecord:
    """The task with id `task_id`; KeyError if the history has none."""
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
    path = _path(path)
    if path != ":memory:" and os.path.exists(path):
        _flush_if_active(path)
        db = open_file(path)
        try:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        finally:
            db.close()
        if row is not None:
            return _record(row, path)
    raise KeyError(f"no task {task_id!r} in the history")


@_reads
def prune(days: float, path: str | None = None) -> int:
    """Delete tasks that ended more than `days` days ago; return how many."""
    if isinstance(days, bool) or not isinstance(days, (int, float)):
        raise TypeError(f"days must be a number, got {type(days).__name__}")
    if not days >= 0:
        raise ValueError(f"days must be a number >= 0, got {days!r}")
    path = _path(path)
    if path == ":memory:" or not os.path.exists(path):
        return 0
    # Capped: a number of days too large for a float is older than any task anyway.
    cutoff = time.time() - min(days, 1e9) * 86400
    db = open_file(path, "rw")
    try:
        db.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in db.execute("SELECT id FROM tasks WHERE ended_at < ?", (cutoff,))]
        for table, column in (("chunks", "task"), ("transitions", "task"), ("tasks", "id")):
            db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in ids])
        db.execute("COMMIT")
        return len(ids)
    finally:
        db.close()


def _record(row: Any, path: str) -> TaskRecord:
    """The record of a row; StoreError for a row this version cannot read."""
    try:
        record = _read_row(row, path)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise StoreError(f"task {row['id']!r} in {path} cannot be read: {exc}") from None
    if not isinstance(record.id, str) or not isinstance(record.name, str):
        raise StoreError(f"task {row['id']!r} in {path} cannot be read: no id or name")
    return record


def _read_row(row: Any, path: str) -> TaskRecord:
    # Text that is not UTF-8 (surrogate escapes) is stored as bytes: see database.to_sql.
    command = from_sql(row["command"])
    keys = row.keys()  # a file still at schema version 1 has no "redacted"
    return TaskRecord(
        id=row["id"],
        name=from_sql(row["name"]),
        command=json.loads(command) if row["argv"] else command,
        cwd=from_sql(row["cwd"]),
        env=json.loads(row["env"] or "{}"),
        state=TaskState(row["state"]),
        returncode=row["returncode"],
        reason=from_sql(row["reason"]),
        error=from_sql(row["error"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        session=row["session"],
        path=path,
        redacted=json.loads(row["redacted"]) if "redacted" in keys and row["redacted"] else None,
        runner=from_sql(row["runner"]) or "local" if "runner" in keys else "local",
        host=from_sql(row["host"]) if "host" in keys else None,
        pty=row["pty"] == 1 if "pty" in keys else False,
        agent=columns.agent(row["agent"]) if "agent" in keys else None,
        terminal=columns.json_object(row["terminal"]) if "terminal" in keys else {},
        attempts=columns.json_list(row["attempts"], dict) if "attempts" in keys else [],
        after=columns.json_list(row["after"], str) if "after" in keys else [],
        cpu_seconds=columns.number(row["cpu_seconds"], float) if "cpu_seconds" in keys else None,
        peak_rss=columns.number(row["peak_rss"], int) if "peak_rss" in keys else None,
    )


def _path(path: str | os.PathLike[str] | None) -> str:
    """The file to read: `path` made absolute (now: a relative path is from the current
    directory), or the default."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if path is not None and not isinstance(path, str):
        raise TypeError(f"path must be a str, an os.PathLike or None, got {type(path).__name__}")
    path = path or default_path()
    return path if path == ":memory:" else os.path.abspath(path)


def _check_int(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def open_file(path: str, mode: str = "ro") -> sqlite3.Connection:
    """A connection for reading ("ro") or small edits ("rw"): no creating, no migrating.

    Reading is read-only, not for safety alone: a read-only connection never copies the
    -wal into the file, nor deletes it, when it closes (see database.DatabaseFile).
    """
    if overwritten(path):
        # SQLite would read the pages our writer left in the -wal, as if nothing had
        # happened: say what sqlite3 says of a file put in place by a rename.
        raise StoreError(f"cannot read the task history at {path}: file is not a database")
    db = sqlite3.connect(uri(path, mode), uri=True, isolation_level=None)
    # Text another tool stored that is not UTF-8 reads back as surrogate escapes rather
    # than failing the whole read.
    db.text_factory = lambda data: data.decode("utf-8", "surrogateescape")
    db.create_function("oneshot_grep", 4, _grep, deterministic=True)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return db


def _grep(name: Any, command: Any, argv: Any, grep: str | bytes) -> bool:
    """Whether the task's name or command holds `grep`, compared as the strings the
    task had (SQL's instr would see the JSON of an argv, with its escapes)."""
    text = from_sql(grep) or ""
    if text in (from_sql(name) or ""):
        return True
    command = from_sql(command) or ""
    return text in (" ".join(json.loads(command)) if argv else command)


def _flush_if_active(path: str) -> None:
    if active_store is not None and active_store.path == path:
        active_store.flush()
