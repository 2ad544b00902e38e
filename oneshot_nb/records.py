"""Reading the history back, and settling the tasks of kernels that died."""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from .database import BUSY_TIMEOUT_MS, LIVE_STATES, StoreError, default_path, from_sql, to_sql
from .machine import TaskState
from .process import group_alive, process_start_time, signal_group, terminate_group
from .redaction import was_redacted
from .store import Store

# A dead kernel's tasks get at most this long to go after SIGTERM, whatever their grace:
# loading the extension waits for it.
RECOVERY_GRACE_CAP = 5.0

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
            path = given["self"].path if "self" in given else given.get("path") or default_path()
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

    @property
    def redacted_env(self) -> list[str]:
        """The env names whose values the history does not hold in full: secret-looking
        names, and values with a password in a URL."""
        return sorted(name for name, value in self.env.items() if was_redacted(value))

    @property
    def command_redacted(self) -> bool:
        """Whether the stored command lost a password in a URL."""
        words = [self.command] if isinstance(self.command, str) else self.command
        return any(was_redacted(word) for word in words)

    @_reads
    def read_log(self, stream: str | None = None) -> bytes:
        """The task's whole output as written: one stream ("stdout" or "stderr"), or
        both in the order they arrived."""
        _flush_if_active(self.path)
        db = _open(self.path)
        try:
            if stream is None:
                rows = db.execute("SELECT data FROM chunks WHERE task = ? ORDER BY seq", (self.id,))
            else:
                rows = db.execute(
                    "SELECT data FROM chunks WHERE task = ? AND stream = ? ORDER BY seq",
                    (self.id, stream),
                )
            return b"".join(row[0] for row in rows)
        finally:
            db.close()

    @_reads
    def read_chunks(self, last_bytes: int | None = None) -> tuple[list[tuple[str, bytes]], bool]:
        """The output as stored: (stream, bytes) rows in the order they arrived, and
        whether older rows were left out. With `last_bytes`, only the newest rows that
        hold that much are read, so showing the end of a huge log stays cheap."""
        _flush_if_active(self.path)
        db = _open(self.path)
        try:
            rows = db.execute(
                "SELECT stream, data FROM chunks WHERE task = ? ORDER BY seq DESC", (self.id,)
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
        db = _open(self.path)
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
    defaults to ONESHOT_NB_DB or the per-user file.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, got {offset!r}")
    path = path or default_path()
    if path == ":memory:" or not os.path.exists(path):
        return []
    _flush_if_active(path)
    query = "SELECT * FROM tasks"
    where, params = [], []
    if failed:
        where.append("state = 'FAILED'")
    if grep:
        where.append("oneshot_grep(name, command, argv, ?)")
        params.append(to_sql(grep))
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY created_at DESC, rowid DESC"
    if limit is not None or offset:
        query += f" LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
    db = _open(path)
    try:
        db.row_factory = sqlite3.Row
        return [_record(row, path) for row in db.execute(query, params)]
    finally:
        db.close()


@_reads
def get_record(task_id: str, path: str | None = None) -> TaskRecord:
    path = path or default_path()
    if path != ":memory:" and os.path.exists(path):
        _flush_if_active(path)
        db = _open(path)
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
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days >= 0:
        raise ValueError(f"days must be a number >= 0, got {days!r}")
    path = path or default_path()
    if path == ":memory:" or not os.path.exists(path):
        return 0
    cutoff = time.time() - days * 86400
    db = _open(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in db.execute("SELECT id FROM tasks WHERE ended_at < ?", (cutoff,))]
        for table, column in (("chunks", "task"), ("transitions", "task"), ("tasks", "id")):
            db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in ids])
        db.execute("COMMIT")
        return len(ids)
    finally:
        db.close()


def recover(store: Store) -> list[str]:
    """Settle the tasks that kernels on this host left CREATED, RUNNING or IDLE when
    they died: terminate each surviving process group (SIGTERM, then SIGKILL after its
    grace, at most RECOVERY_GRACE_CAP) and mark the task INTERRUPTED, "kernel died".

    A group is signalled only when its leader is the very process the task started
    (same pid and start time), or when no process has that pid any more (the group's
    other members keep its id, which the system then cannot hand out again).
    Returns the ids of the tasks settled.
    """
    db = _open(store.path)
    try:
        rows = db.execute(
            f"""SELECT t.id, t.state, t.pid, t.pid_start, t.grace, s.pid, s.pid_start, s.host
            FROM tasks t LEFT JOIN sessions s ON s.id = t.session
            WHERE t.state IN ({", ".join("?" * len(LIVE_STATES))}) AND t.session != ?""",
            (*LIVE_STATES, store.session),
        ).fetchall()
        host = os.uname().nodename
        orphans = [row for row in rows if row[7] in (None, host) and not _alive(row[5], row[6])]
        groups = {}
        for _, _, pid, pid_start, grace, *_ in orphans:
            if pid is not None and _ours(pid, pid_start) and terminate_group(pid):
                groups[pid] = min(grace or 0.0, RECOVERY_GRACE_CAP)
        deadline = time.monotonic() + max(groups.values(), default=0.0)
        while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        now = time.time()
        settled_ids = []
        db.execute("BEGIN IMMEDIATE")
        for task_id, state, *_ in orphans:
            settled = db.execute(
                "UPDATE tasks SET state = 'INTERRUPTED', reason = 'kernel died',"
                " ended_at = ? WHERE id = ? AND state = ?",
                (now, task_id, state),
            )
            if settled.rowcount == 0:
                continue  # another kernel loading at the same moment settled it first
            settled_ids.append(task_id)
            db.execute(
                "INSERT INTO transitions"
                " VALUES (?, 'interrupt', ?, 'INTERRUPTED', ?, 'kernel died')",
                (task_id, state, now),
            )
        db.execute("COMMIT")
        return settled_ids
    finally:
        db.close()


def _alive(pid: int | None, start: int | None) -> bool:
    """Whether a kernel's process still runs: same pid and start time; where start
    times cannot be read (no /proc), any process with that pid counts as alive."""
    if pid is None:
        return False
    if start is None or not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_start_time(pid) == start


def _ours(pid: int, start: int | None) -> bool:
    """Whether signalling group `pid` reaches the task's processes and nothing else:
    its leader is the very process (start time, zombie or not), or no process has that
    pid (the group's other members keep the id, which the system cannot reuse then)."""
    if start is None or not _HAS_PROC:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            now = int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return True
    except (OSError, IndexError, ValueError):
        return False
    return now == start


_HAS_PROC = os.path.isdir("/proc/self")


def _record(row: Any, path: str) -> TaskRecord:
    # Text that is not UTF-8 (surrogate escapes) is stored as bytes: see database.to_sql.
    command = from_sql(row["command"])
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
    )


def _open(path: str) -> sqlite3.Connection:
    """A connection for reading and small edits: no creating, no migrating."""
    # Quoted: in a URI, "#", "?" and "%" in the path would otherwise name another file.
    # Quoted as bytes: a path that is not UTF-8 names the file os.fsencode gives.
    uri = f"file:{quote(os.fsencode(path))}?mode=rw"
    db = sqlite3.connect(uri, uri=True, isolation_level=None)
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
