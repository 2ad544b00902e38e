"""Rows of the history tables, made from tasks and their events: what is stored (text
the database can hold, secrets redacted) and in what batches."""

from __future__ import annotations

import json
from typing import Any

from ..engine.options import default_name
from ..engine.task import OneshotTask
from .database import to_sql
from .redaction import redact, redact_text

# Consecutive chunks of one stream are stored as one row of up to this. Large rows matter
# under a flood: the writer takes the GIL back after each row, and while the loop thread
# is busy reading, each take waits; 4 MiB rows made a 256 MiB drain 1.6x faster than
# 64 KiB rows (one row per pipe read).
MERGE_BYTES = 4 << 20

INSERT_CHUNK = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?)"
INSERT_TRANSITION = "INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?)"
# Only the row of the start transition carries pid_start and host (see Store.record):
# later rows must not overwrite them with NULL, or recovery would take an idle task's
# own process for a stranger that reused the pid, and leave it running.
UPSERT_TASK = """
INSERT INTO tasks (
    id, session, name, command, argv, cwd, env, created_at, started_at, ended_at,
    state, returncode, reason, error, pid, pid_start, grace, redacted, runner, host, pty, terminal,
    agent, attempts, after, cpu_seconds, peak_rss)
VALUES (
    :id, :session, :name, :command, :argv, :cwd, :env, :created_at, :started_at, :ended_at,
    :state, :returncode, :reason, :error, :pid, :pid_start, :grace, :redacted, :runner, :host,
    :pty, :terminal, :agent, :attempts, :after, :cpu_seconds, :peak_rss)
ON CONFLICT (id) DO UPDATE SET
    started_at = excluded.started_at, ended_at = excluded.ended_at, state = excluded.state,
    returncode = excluded.returncode, reason = excluded.reason, error = excluded.error,
    pid = excluded.pid, pid_start = coalesce(excluded.pid_start, tasks.pid_start),
    host = coalesce(excluded.host, tasks.host), agent = coalesce(excluded.agent, tasks.agent),
    attempts = excluded.attempts, cpu_seconds = coalesce(excluded.cpu_seconds, tasks.cpu_seconds),
    peak_rss = coalesce(excluded.peak_rss, tasks.peak_rss)
"""
# The options a rerun gives a task again, beside its command, cwd and env (stored in
# the `terminal` column, named for the first of them).
TERMINAL = ("pty", "cols", "rows", "stdin", "agent", "retries", "retry_delay", "retry_on")
SQL = {"chunk": INSERT_CHUNK, "task": UPSERT_TASK, "transition": INSERT_TRANSITION}


def task_row(task: OneshotTask, session: str) -> dict[str, Any]:
    """The task's row. JSON (argv, env) escapes surrogates itself, so it is ASCII.

    What redaction took is recorded, not guessed later from the text: a command or a
    value may hold "<redacted>" of its own.
    """
    redacted: str | list[str]
    if isinstance(task.command, str):
        redacted = redact_text(task.command)
        command = to_sql(redacted)
    else:
        redacted = [redact_text(arg) for arg in task.command]
        command = json.dumps(redacted)
    env = redact(task.env)
    usage = task.usage
    lost = {
        "env": sorted(k for k, v in task.env.items() if env[k] != v),
        "command": redacted != task.command,
    }
    # The default name is the command cut short, maybe in the middle of a password,
    # where no pattern would know it: it is made again from the redacted command.
    if task.name == default_name(task.command):
        name = default_name(redacted)
    else:
        name = redact_text(task.name)
    return {
        "id": task.id,
        "session": session,
        "name": to_sql(name),
        "command": command,
        "argv": int(isinstance(redacted, list)),
        "cwd": to_sql(task.cwd),
        "env": json.dumps(env),
        "created_at": task.created_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "state": task.state.value,
        "returncode": task.returncode,
        "reason": to_sql(task.reason),
        "error": to_sql(None if task.error is None else redact_text(task.error)),
        "pid": task.pid,
        "pid_start": None,
        "grace": task.grace,
        "redacted": json.dumps(lost),
        "runner": task.runner.name,
        "host": None,
        "pty": int(task.options.pty),
        "terminal": json.dumps({name: getattr(task.options, name) for name in TERMINAL}),
        "agent": None if task.agent is None else json.dumps(task.agent.to_dict()),
        "attempts": json.dumps([a.to_dict() for a in task.attempts]) if task.attempts else None,
        "after": json.dumps([other.id for other in task.after]) if task.after else None,
        "cpu_seconds": usage.cpu_seconds if usage is not None else None,
        "peak_rss": usage.peak_rss if usage is not None else None,
    }


def task_of(row: Any) -> str:
    """The id of the task a row of any table belongs to."""
    return row["id"] if isinstance(row, dict) else row[0]


def merge(items: list[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
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
                    to_sql(event.reason),
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
