"""SQLite history: tasks, transitions and full logs, written off the event loop.

The loop thread only puts small records on a queue (`record`); one writer thread owns
the write connection, merges what has queued into a transaction at most every
`FLUSH_INTERVAL`, and commits. With the loop's own batching (HANDOFF_DELAY), a kernel
killed with SIGKILL loses at most about a quarter of a second of output.
If the database fails (disk full, locked too long, corrupt), the store turns itself off
and says so once through `on_error`; tasks go on as if there were no store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .events import TaskEvent
from .machine import TaskState
from .orchestrator import AsyncOrchestrator
from .process import process_start_time
from .task import OneshotTask

logger = logging.getLogger("oneshot_nb")

FLUSH_INTERVAL = 0.2  # seconds the writer gathers records before committing them
HANDOFF_DELAY = 0.05  # seconds the loop gathers records before handing them over
# ...or this much output, whichever comes first. Each handoff wakes the writer, which
# then takes the GIL from the loop: under a flood, fewer and larger handoffs keep the
# loop responsive.
HANDOFF_BYTES = 4 << 20
BUSY_TIMEOUT_MS = 10_000  # another kernel's transaction is short; waiting beats failing
# Consecutive chunks of one stream are stored as one row of up to this. Large rows matter
# under a flood: the writer takes the GIL back after each row, and while the loop thread
# is busy reading, each take waits; 4 MiB rows made a 256 MiB drain 1.6x faster than
# 64 KiB rows (one row per pipe read).
MERGE_BYTES = 4 << 20
BATCH_BYTES = 4 << 20  # a transaction commits early once it holds this much output
# Copying the write-ahead log into the database file (a checkpoint) is the slow part of
# storing a fast stream, so it is left for a quiet moment: once this much has gone into
# the log and a batch comes that is small, or at the latest once CHECKPOINT_MAX has.
CHECKPOINT_QUIET = 16 << 20
CHECKPOINT_MAX = 512 << 20
QUIET_BATCH = 1 << 20
# Output waiting for the writer beyond this makes tasks wait before reading more, so a
# slow disk slows a chatty task down instead of growing the kernel's memory.
HIGH_WATER = 32 << 20
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|KEY|CREDENTIAL|AUTH|PRIVATE|COOKIE", re.I)
REDACTED = "<redacted>"
LIVE_STATES = ("CREATED", "RUNNING", "IDLE")

SCHEMA = [
    # version 1
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, pid INTEGER, pid_start INTEGER, host TEXT, started_at REAL
    );
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY, session TEXT, name TEXT, command TEXT, argv INTEGER,
        cwd TEXT, env TEXT, created_at REAL, started_at REAL, ended_at REAL,
        state TEXT, returncode INTEGER, reason TEXT, error TEXT,
        pid INTEGER, pid_start INTEGER, grace REAL
    );
    CREATE INDEX tasks_created ON tasks (created_at);
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE transitions (
        task TEXT, event TEXT, source TEXT, target TEXT, time REAL, reason TEXT
    );
    CREATE INDEX transitions_task ON transitions (task);
    CREATE TABLE chunks (
        task TEXT, seq INTEGER, stream TEXT, time REAL, data BLOB, PRIMARY KEY (task, seq)
    );
    """,
]


class StoreError(RuntimeError):
    """Raised when a database cannot be opened or was written by a newer version."""


def default_path() -> str:
    """ONESHOT_NB_DB if set, else history.sqlite3 in the user's data directory."""
    if os.environ.get("ONESHOT_NB_DB"):
        return os.environ["ONESHOT_NB_DB"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "oneshot_nb", "history.sqlite3")


def connect(path: str) -> sqlite3.Connection:
    """Open (creating with mode 0600) and migrate the database at `path`."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is private from the first byte.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Large pages store a log's blobs in fewer, larger writes (a third faster than
        # the 4 KiB default, measured); it takes effect only when the file is created.
        db.execute("PRAGMA page_size = 65536")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # see CHECKPOINT_QUIET
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(SCHEMA):
            raise StoreError(
                f"history database is at schema version {version}, newer than this "
                f"oneshot_nb knows ({len(SCHEMA)}); upgrade oneshot_nb or use another file"
            )
        for number in range(version, len(SCHEMA)):
            for statement in filter(str.strip, SCHEMA[number].split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def redact(env: dict[str, str]) -> dict[str, str]:
    """Env overrides with values of secret-looking names replaced."""
    return {k: (REDACTED if SECRET_NAME.search(k) else v) for k, v in env.items()}


class Store:
    """Writes the history of one kernel's tasks to a SQLite file.

    `record` is the listener to attach to an orchestrator; `gate` is the coroutine a
    task awaits before reading more output (back-pressure from a slow disk).
    """

    def __init__(self, path: str, on_error: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_error = on_error
        self.session = uuid.uuid4().hex[:12]
        self.error: str | None = None
        self.lost_records = 0
        self.closed = False
        self._queue: queue.SimpleQueue[list[tuple[Any, ...]] | None] = queue.SimpleQueue()
        # Two counters, each moved by one thread only, so neither needs a lock.
        self._bytes_in = 0
        self._bytes_out = 0
        self._seq: dict[str, int] = {}
        self._flushed = threading.Condition()
        self._written = 0
        self._put = 0
        self._batch: list[tuple[Any, ...]] = []
        self._batch_bytes = 0
        self._batch_lock = threading.Lock()
        self._handoff_timer: asyncio.TimerHandle | None = None
        self._db = connect(path)  # raises here, in the caller, when the file is unusable
        self._db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (
                self.session,
                os.getpid(),
                process_start_time(os.getpid()),
                os.uname().nodename,
                time.time(),
            ),
        )
        self._thread = threading.Thread(
            target=self._write_loop, name="oneshot_nb store", daemon=True
        )
        self._thread.start()

    # -- the loop side: cheap, never blocks --------------------------------------------

    def record(self, event: TaskEvent, task: OneshotTask) -> None:
        if self.error is not None or self.closed:
            self.lost_records += 1
            return
        if event.kind == "output":
            if event.data:
                seq = self._seq.get(task.id, 0)
                self._seq[task.id] = seq + 1
                self._bytes_in += len(event.data)
                self._enqueue(("chunk", task.id, seq, event.stream, event.time, event.data))
        elif event.kind == "transition":
            row = self._task_row(task)
            if event.target is TaskState.RUNNING and event.source is TaskState.CREATED:
                row["pid_start"] = process_start_time(task.pid) if task.pid else None
            self._enqueue(("transition", task.id, event, row))
        elif event.kind == "submitted":
            self._enqueue(("task", self._task_row(task)))

    def attach(self, orchestrator: AsyncOrchestrator) -> None:
        """Record every task of `orchestrator`, and slow its tasks when the disk lags."""
        tasks = orchestrator._tasks

        def listener(event: TaskEvent) -> None:
            self.record(event, tasks[event.task_id])

        listener.wants_text = False  # type: ignore[attr-defined]  # the bytes are stored
        orchestrator.listeners.append(listener)
        orchestrator.output_gate = self.gate

    @property
    def queued_bytes(self) -> int:
        return self._bytes_in - self._bytes_out

    def _task_row(self, task: OneshotTask) -> dict[str, Any]:
        return _task_row(task, self.session)

    def _enqueue(self, item: tuple[Any, ...]) -> None:
        """Add a record to the batch that the loop hands to the writer as one piece.

        Why batch: a queue item per chunk woke the writer thousands of times a second
        under a flood, and each wake took the GIL from the loop. A batch goes at
        HANDOFF_BYTES of output, after HANDOFF_DELAY, or at once for a flush.
        """
        with self._batch_lock:
            self._batch.append(item)
            if item[0] == "chunk":
                self._batch_bytes += len(item[5])
            urgent = item[0] == "flush" or self._batch_bytes >= HANDOFF_BYTES
            if not urgent and self._handoff_timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    urgent = True  # no loop to come back later: hand it over now
                else:
                    self._handoff_timer = loop.call_later(HANDOFF_DELAY, self._handoff)
        if urgent:
            self._handoff()

    def _handoff(self) -> None:
        with self._batch_lock:
            if self._handoff_timer is not None:
                self._handoff_timer.cancel()
                self._handoff_timer = None
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._put += len(batch)
            if batch:
                self._queue.put(batch)  # under the lock: batches reach the writer in order

    async def gate(self) -> None:
        """Wait while too much output is queued for the disk."""
        while self.queued_bytes > HIGH_WATER and self.error is None and not self.closed:
            await anyio.sleep(0.01)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything recorded so far is committed (or the store failed)."""
        self._enqueue(("flush",))  # ends the writer's wait for more: commit now
        target = self._put
        with self._flushed:
            return self._flushed.wait_for(
                lambda: self._written >= target or self.error is not None, timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self.closed = True
        if self._thread.is_alive():
            self._handoff()
            self._queue.put(None)
            self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        db = self._db
        stop = False
        unchecked = 0  # bytes of output written since the last checkpoint
        while not stop:
            items, size, stop = self._collect()
            if self.error is None and items:
                try:
                    self._write(db, items)
                except Exception as exc:
                    self._fail(exc)
            self._bytes_out += size
            with self._flushed:
                self._written += len(items)
                self._flushed.notify_all()
            # After the notify: a flush waits for the commit, not for the checkpoint.
            unchecked += size
            if self.error is None and (
                unchecked > CHECKPOINT_MAX or (unchecked > CHECKPOINT_QUIET and size < QUIET_BATCH)
            ):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception as exc:
                    self._fail(exc)
                unchecked = 0
        db.close()

    def _collect(self) -> tuple[list[tuple[Any, ...]], int, bool]:
        """Wait for a record, then gather more until FLUSH_INTERVAL has passed or
        BATCH_BYTES of output are in hand. Returns them, their output bytes, and
        whether close() asked the writer to stop."""
        items: list[tuple[Any, ...]] = []
        size = 0
        batch = self._queue.get()
        deadline = time.monotonic() + FLUSH_INTERVAL
        while batch is not None:
            items += batch
            size += sum(len(item[5]) for item in batch if item[0] == "chunk")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or size >= BATCH_BYTES or batch[-1][0] == "flush":
                return items, size, False
            try:
                batch = self._queue.get(timeout=remaining)
            except queue.Empty:
                return items, size, False
        return items, size, True

    def _write(self, db: sqlite3.Connection, items: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for kind, rows in _merge(items):
                if kind == "chunk":
                    db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
                elif kind == "task":
                    db.executemany(_UPSERT_TASK, rows)
                elif kind == "transition":
                    db.executemany("INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _fail(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        message = f"oneshot_nb: task history is no longer saved to {self.path} ({self.error})"
        logger.warning(message)
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:
                logger.exception("oneshot_nb store error callback failed")


# Only the row of the start transition carries pid_start (see `record`): later rows must
# not overwrite it with NULL, or recovery would take an idle task's own process for a
# stranger that reused the pid, and leave it running.
_UPSERT_TASK = """
INSERT INTO tasks VALUES (
    :id, :session, :name, :command, :argv, :cwd, :env, :created_at, :started_at, :ended_at,
    :state, :returncode, :reason, :error, :pid, :pid_start, :grace)
ON CONFLICT (id) DO UPDATE SET
    started_at = excluded.started_at, ended_at = excluded.ended_at, state = excluded.state,
    returncode = excluded.returncode, reason = excluded.reason, error = excluded.error,
    pid = excluded.pid, pid_start = coalesce(excluded.pid_start, tasks.pid_start)
"""


def _task_row(task: OneshotTask, session: str) -> dict[str, Any]:
    argv = not isinstance(task.command, str)
    return {
        "id": task.id,
        "session": session,
        "name": task.name,
        "command": json.dumps(task.command) if argv else task.command,
        "argv": int(argv),
        "cwd": task.cwd,
        "env": json.dumps(redact(task.env)),
        "created_at": task.created_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "state": task.state.value,
        "returncode": task.returncode,
        "reason": task.reason,
        "error": task.error,
        "pid": task.pid,
        "pid_start": None,
        "grace": task.grace,
    }


def _merge(items: list[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
    """Group queued records into batches of rows, in order, merging runs of chunks of
    one task and stream into rows of up to MERGE_BYTES, so a chatty task writes a few
    large rows instead of many small ones."""
    batches: list[tuple[str, list[Any]]] = []

    def add(kind: str, row: Any) -> None:
        if batches and batches[-1][0] == kind:
            batches[-1][1].append(row)
        else:
            batches.append((kind, [row]))

    # The newest run of each task; only a chunk of the same stream may join it, so the
    # sequence numbers keep the order in which stdout and stderr interleaved.
    # A run is [task, seq, stream, time, pieces, size]; its pieces are joined at the end,
    # one copy per row.
    runs: dict[str, list[Any]] = {}
    for item in items:
        if item[0] == "chunk":
            _, task_id, seq, stream, when, data = item
            run = runs.get(task_id)
            if run is not None and run[2] == stream and run[5] + len(data) <= MERGE_BYTES:
                run[4].append(data)
                run[5] += len(data)
                continue
            run = [task_id, seq, stream, when, [data], len(data)]
            runs[task_id] = run
            add("chunk", run)
        elif item[0] == "task":
            add("task", item[1])
        elif item[0] == "transition":
            _, task_id, event, row = item
            add("task", row)
            add(
                "transition",
                (
                    task_id,
                    event.event,
                    event.source.value,
                    event.target.value,
                    event.time,
                    event.reason,
                ),
            )
    for index, (kind, rows) in enumerate(batches):
        if kind == "chunk":
            batches[index] = (
                kind,
                [
                    (task_id, seq, stream, when, b"".join(pieces))
                    for task_id, seq, stream, when, pieces, _size in rows
                ],
            )
    return batches
