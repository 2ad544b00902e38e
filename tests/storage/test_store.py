"""The store with real processes: schema, what the tables hold (where each task ran
included), byte-exact logs, and that writing neither blocks the event loop nor stops
tasks when the database fails."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import anyio
import pytest
from helpers import py, query, stored_orchestrator, wait_for_line, wait_until
from helpers.runners import HOST, NamedRunner

from oneshot_nb import TaskState
from oneshot_nb.runners.procfs import start_time as process_start_time
from oneshot_nb.storage.database import BUSY_TIMEOUT_MS, SCHEMA
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.store import REDACTED, Store, StoreError, connect, redact

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MIB = 1 << 20


def writes(*parts: tuple[str, bytes]) -> list[str]:
    """A command writing each (stream, bytes) part in turn, flushed, 50 ms apart: long
    enough for the loop to read each part before the next arrives."""
    return py(
        f"""
        import sys, time
        for stream, data in {parts!r}:
            out = getattr(sys, stream).buffer
            out.write(data)
            out.flush()
            time.sleep(0.05)
        """
    )


# -- schema ---------------------------------------------------------------------------------


def test_a_new_database_is_wal_with_a_busy_timeout_at_the_newest_schema_version(tmp_path):
    """connect() creates the four tables in WAL mode, waits for locks, and marks the
    file as the newest schema version (3)."""
    path = str(tmp_path / "history.sqlite3")
    db = connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA busy_timeout").fetchone() == (BUSY_TIMEOUT_MS,)
        assert db.execute("PRAGMA user_version").fetchone() == (5,) == (len(SCHEMA),)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"sessions", "tasks", "transitions", "chunks"}
    finally:
        db.close()
    # WAL is a property of the file: another connection finds it so too.
    assert query(path, "PRAGMA journal_mode") == [("wal",)]


def test_the_database_file_is_private_and_its_directory_is_created(tmp_path):
    """A missing directory is created, and the file is mode 0600 whatever the umask."""
    path = tmp_path / "new" / "dir" / "history.sqlite3"
    old = os.umask(0)
    try:
        connect(str(path)).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_reopening_a_database_keeps_its_version_and_its_rows(tmp_path):
    """A second connect() (the next kernel) migrates nothing and loses nothing."""
    path = str(tmp_path / "history.sqlite3")
    Store(path).close()
    Store(path).close()
    assert query(path, "PRAGMA user_version") == [(len(SCHEMA),)]
    assert query(path, "SELECT count(*) FROM sessions") == [(2,)]


def test_a_version_1_file_is_migrated_to_the_newest_and_keeps_its_rows(tmp_path):
    """Version 2 records what redaction took (the "redacted" column), version 3 the
    runner and host of each task. A file written by version 1 gets the columns, keeps
    every row, and its old rows still say what they lost, read from the text as before
    (they recorded nothing else), and that they ran locally on their kernel's host."""
    path = str(tmp_path / "history.sqlite3")
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for statement in filter(str.strip, SCHEMA[0].split(";")):
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO sessions VALUES ('s1', 1, 1, 'host', 0)")
    old.execute(
        "INSERT INTO tasks VALUES ('t1', 's1', 'old', 'echo https://u:<redacted>@h', 0, '/',"
        " ?, 1, 2, 3, 'COMPLETED', 0, 'exit', NULL, 9, NULL, 1)",
        (json.dumps({"API_TOKEN": REDACTED, "MODE": "fast"}),),
    )
    old.execute("INSERT INTO chunks VALUES ('t1', 0, 'stdout', 2, ?)", (b"kept\n",))
    old.close()
    Store(path).close()
    assert query(path, "PRAGMA user_version") == [(len(SCHEMA),)]
    assert query(path, "SELECT id, redacted, runner, host FROM tasks") == [
        ("t1", None, "local", "host")
    ]
    record = get_record("t1", path=path)
    assert (record.name, record.state, record.read_log()) == ("old", TaskState.COMPLETED, b"kept\n")
    assert (record.redacted_env, record.command_redacted) == (["API_TOKEN"], True)
    assert query(path, "SELECT count(*) FROM sessions") == [(2,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_database_of_a_newer_schema_is_refused_with_a_clear_error(tmp_path):
    """A file whose user_version is above what this version knows raises StoreError
    saying so, and is left as it was."""
    path = str(tmp_path / "history.sqlite3")
    db = sqlite3.connect(path)
    newer = len(SCHEMA) + 1
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    for open_it in (connect, Store):
        with pytest.raises(
            StoreError, match=rf"schema version {newer}, newer than .* knows \({len(SCHEMA)}\)"
        ):
            open_it(path)
    assert query(path, "PRAGMA user_version") == [(newer,)]
    assert query(path, "SELECT name FROM sqlite_master") == []


# -- what the tables hold -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "my_auth"])
def test_env_values_with_secret_looking_names_are_redacted(name):
    """Values of names that look like secrets are replaced; the name is kept."""
    assert redact({name: "s3cret"}) == {name: REDACTED}


@pytest.mark.parametrize("name", ["PATH_EXTRA", "LANG", "CUDA_VISIBLE_DEVICES"])
def test_env_values_with_ordinary_names_are_kept(name):
    """Ordinary settings are stored as given, so a rerun can use them."""
    assert redact({name: "value"}) == {name: "value"}


async def test_the_tables_hold_the_task_its_transitions_and_its_chunks(tmp_path):
    """One failing task leaves its row (command, cwd, redacted env, times, state, exit
    code, reason), every transition the task made, and its output; no secret value is
    anywhere in the files."""
    path = tmp_path / "history.sqlite3"
    env = {"API_TOKEN": "t0k3n-value", "DB_PASSWORD": "pa55-value", "PATH_EXTRA": "/opt/bin"}
    command = "echo out; echo err >&2; exit 3"
    async with stored_orchestrator(path) as (orch, store):
        task = orch.submit(command, name="tables", cwd=tmp_path, env=env)
        assert await task.wait() is TaskState.FAILED
    rows = query(
        path,
        "SELECT id, session, name, command, argv, cwd, env, state, returncode, reason, error,"
        " pid, grace FROM tasks",
    )
    assert rows == [
        (
            task.id,
            store.session,
            "tables",
            command,
            0,
            str(tmp_path),
            json.dumps({"API_TOKEN": REDACTED, "DB_PASSWORD": REDACTED, "PATH_EXTRA": "/opt/bin"}),
            "FAILED",
            3,
            "exit",
            None,
            task.pid,
            task.grace,
        )
    ]
    [(created, started, ended)] = query(path, "SELECT created_at, started_at, ended_at FROM tasks")
    assert (created, started, ended) == (task.created_at, task.started_at, task.ended_at)
    assert created <= started <= ended
    assert query(path, "SELECT task, event, source, target, time, reason FROM transitions") == [
        (task.id, t.event, t.source.value, t.target.value, t.time, t.reason)
        for t in task.transitions
    ]
    assert query(path, "SELECT event, source, target FROM transitions") == [
        ("start", "CREATED", "RUNNING"),
        ("fail", "RUNNING", "FAILED"),
    ]
    chunks = query(path, "SELECT task, stream, seq, data FROM chunks ORDER BY seq")
    assert {c[0] for c in chunks} == {task.id}
    assert b"".join(c[3] for c in chunks if c[1] == "stdout") == b"out\n"
    assert b"".join(c[3] for c in chunks if c[1] == "stderr") == b"err\n"
    assert query(path, "SELECT pid, host FROM sessions WHERE id = ?", store.session) == [
        (os.getpid(), os.uname().nodename)
    ]
    for file in tmp_path.glob("history.sqlite3*"):
        assert b"t0k3n-value" not in file.read_bytes()
        assert b"pa55-value" not in file.read_bytes()


async def test_an_argv_command_is_stored_as_a_list(tmp_path):
    """A task given an argv list reads back as that list, not as one string."""
    path = tmp_path / "history.sqlite3"
    argv = ["echo", "two words", "'quoted'"]
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(argv)
        await task.wait()
    record = get_record(task.id, path=str(path))
    assert record.command == argv
    assert record.read_log() == b"two words 'quoted'\n"


# -- byte-exact logs ------------------------------------------------------------------------

PAYLOADS = {
    "invalid utf-8": b"ok \xff\xfe then \xc3\x28 and a cut \xe2\x82",
    "nul bytes": b"a\x00b\x00\x00c\n\x00",
    "no trailing newline": b"line 1\nline 2\nno newline at the end",
    "crlf and carriage returns": b"progress 10%\rprogress 20%\r\nwindows\r\n",
}


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
async def test_output_reads_back_byte_for_byte(tmp_path, stream, payload):
    """Whatever bytes a task writes, read_log gives back exactly, per stream and both."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(writes((stream, payload)))
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    other = "stderr" if stream == "stdout" else "stdout"
    assert record.read_log(stream) == payload
    assert record.read_log(other) == b""
    assert record.read_log() == payload


async def test_a_10_mb_line_without_a_newline_reads_back_whole(tmp_path):
    """One 10 MB line with no newline at all is stored complete and in order."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(
            py(
                """
                import sys
                sys.stdout.buffer.write(bytes(range(256)) * 39063)
                sys.stdout.buffer.write(b"end")
                """
            )
        )
        assert await task.wait() is TaskState.COMPLETED
    expected = bytes(range(256)) * 39063 + b"end"
    assert len(expected) > 10_000_000
    record = get_record(task.id, path=str(path))
    assert record.read_log("stdout") == expected
    assert record.read_log() == expected


async def test_interleaved_stdout_and_stderr_read_back_in_arrival_order(tmp_path):
    """read_log() keeps the order in which the two streams' output arrived, and each
    stream on its own is exact."""
    parts = [("stdout" if i % 2 == 0 else "stderr", f"part {i}\n".encode()) for i in range(10)]
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(writes(*parts))
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    assert record.read_log() == b"".join(data for _, data in parts)
    assert record.read_log("stdout") == b"".join(d for s, d in parts if s == "stdout")
    assert record.read_log("stderr") == b"".join(d for s, d in parts if s == "stderr")
    assert record.read_chunks() == ([(s, d) for s, d in parts], False)
    # Asked for the newest 14 bytes, it reads only the newest rows that hold them.
    assert record.read_chunks(14) == ([(s, d) for s, d in parts[-2:]], True)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_256_mib_output_is_stored_whole(tmp_path):
    """A task writing 256 MiB as fast as it can is stored complete, not just its tail."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(["head", "-c", str(256 * MIB), "/dev/zero"])
        assert await task.wait() is TaskState.COMPLETED
    assert task.output_dropped > 0  # the in-memory log kept only its tail
    assert query(path, "SELECT sum(length(data)) FROM chunks") == [(256 * MIB,)]
    data = get_record(task.id, path=str(path)).read_log()
    assert len(data) == 256 * MIB
    assert not data.strip(b"\0")


# -- the event loop and the writer ----------------------------------------------------------


async def test_storing_a_chatty_task_never_blocks_the_event_loop(tmp_path):
    """While a task writes ~100 MB that the store commits, a 10 ms ticker on the same
    loop is never woken a second late: nothing waits for the database on the loop (a
    lock is waited for up to 10 s). How late it is woken is measured by the benchmarks
    (benchmarks/views.py: the kernel loop's lag, history on), not bounded here."""
    path = tmp_path / "history.sqlite3"
    late: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.01)
            late.append(time.monotonic() - before - 0.01)

    chatty = py(
        """
        import sys
        line = b"x" * 99 + b"\\n"
        for i in range(1_000_000):
            sys.stdout.buffer.write(line)
        """
    )
    async with stored_orchestrator(path) as (orch, _), anyio.create_task_group() as group:
        group.start_soon(tick)
        task = orch.submit(chatty)
        assert await task.wait() is TaskState.COMPLETED
        group.cancel_scope.cancel()
    assert query(path, "SELECT sum(length(data)) FROM chunks") == [(100_000_000,)]
    assert len(late) > 10
    assert max(late) < 1.0, f"the loop was blocked for {max(late):.3f} s"


async def test_output_is_committed_within_a_second_without_a_flush(tmp_path):
    """Another connection sees a chunk of output within a second of its arrival, with
    no flush() and the task still running: that is all a killed kernel can lose."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path, grace=0.5) as (orch, _):
        task = orch.submit(py("import time; print('first', flush=True); time.sleep(60)"))
        await wait_until(lambda: task.bytes_written["stdout"] > 0)
        arrived = time.monotonic()
        stored = "SELECT data FROM chunks WHERE task = ?"
        await wait_until(lambda: query(path, stored, task.id) == [(b"first\n",)], timeout=1.0)
        assert time.monotonic() - arrived < 1.0
        assert task.state is TaskState.RUNNING
        task.stop()
        await task.wait()


async def test_the_process_start_time_is_kept_through_later_transitions(tmp_path):
    """Recovery tells a task's own process from a stranger with a reused pid by its
    start time: it must survive RUNNING -> IDLE -> RUNNING (it was overwritten with
    NULL, so an idle task's process outlived its dead kernel)."""
    path = tmp_path / "history.sqlite3"
    code = "import time\ntime.sleep(0.3)\nprint('again', flush=True)\ntime.sleep(60)"
    async with stored_orchestrator(path, grace=0.5) as (orch, store):
        task = orch.submit(py(code), idle_after=0.1)
        await wait_until(lambda: task.bytes_written["stdout"] > 0)
        assert [t.target for t in task.transitions] == [
            TaskState.RUNNING,
            TaskState.IDLE,
            TaskState.RUNNING,
        ]
        assert await anyio.to_thread.run_sync(store.flush)
        start = process_start_time(task.pid)
        assert start is not None
        assert query(path, "SELECT pid, pid_start FROM tasks") == [(task.pid, start)]
        task.stop()
        await task.wait()
    assert query(path, "SELECT pid, pid_start FROM tasks") == [(task.pid, start)]


@pytest.mark.anyio
async def test_a_stopped_task_is_stored_with_the_exit_code_of_its_process(tmp_path):
    """A stop makes the task INTERRUPTED at once, before its process is reaped; the
    row gets the exit code when the task settles.

    Regression: history showed a stopped task with no exit code."""
    path = tmp_path / "h.sqlite3"
    code = "import time; print('up', flush=True); time.sleep(100)"
    async with stored_orchestrator(path, grace=2) as (orch, store):
        task = orch.submit(py(code))
        await wait_until(lambda: "up\n" in task.output)
        task.stop()
        await task.wait()
        assert store.flush()
    assert task.returncode == -15
    assert query(path, "SELECT state, reason, returncode FROM tasks") == [
        ("INTERRUPTED", "stopped", -15)
    ]


# -- what the history records of where a task ran --------------------------------------------


def waits_for(path: Path) -> list[str]:
    """A command that says 'up', then exits 0 once `path` exists."""
    return py(
        f"""
        import os, time
        print('up', flush=True)
        while not os.path.exists({str(path)!r}):
            time.sleep(0.01)
        """
    )


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_history_records_each_tasks_runner_host_and_process_start(tmp_path):
    """A local task's row says runner 'local', this host, and its process's pid and
    start time (read while it ran: recovery tells the process from a later one with
    its pid by it); a task on another runner records that runner's name and the host
    its place names. Rows that always say 'local', a host taken from the kernel
    rather than the task's place, or a start time lost at the end, break this."""
    path = tmp_path / "history.sqlite3"
    elsewhere = NamedRunner("gpu-pool", host="worker-7")
    async with stored_orchestrator(path) as (orch, store):
        local = orch.submit(waits_for(tmp_path / "go-local"))
        remote = orch.submit(waits_for(tmp_path / "go-remote"), runner=elsewhere)
        await wait_for_line(local, "up")
        await wait_for_line(remote, "up")
        starts = {task.id: process_start_time(task.pid) for task in (local, remote)}
        assert None not in starts.values()
        (tmp_path / "go-local").touch()
        (tmp_path / "go-remote").touch()
        assert await orch.wait_all() == [TaskState.COMPLETED] * 2
        assert await anyio.to_thread.run_sync(store.flush)
    rows = query(path, "SELECT id, runner, host, pid, pid_start, state FROM tasks ORDER BY rowid")
    assert rows == [
        (local.id, "local", HOST, local.pid, starts[local.id], "COMPLETED"),
        (remote.id, "gpu-pool", "worker-7", remote.pid, starts[remote.id], "COMPLETED"),
    ]


def test_a_version_4_file_is_migrated_and_keeps_its_rows(tmp_path):
    """Version 5 adds the attempts, dependencies and cost of each task: a file at
    version 4 gets the columns, and its rows read back (with none of them)."""
    path = str(tmp_path / "history.sqlite3")
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for version in SCHEMA[:4]:
        for statement in filter(str.strip, version.split(";")):
            old.execute(statement)
    old.execute("PRAGMA user_version = 4")
    old.execute("INSERT INTO sessions VALUES ('s1', 1, 1, 'host', 0)")
    old.execute(
        "INSERT INTO tasks (id, session, name, command, argv, cwd, env, created_at, state,"
        " runner, pty, terminal) VALUES ('t1', 's1', 'old', 'true', 0, '/', '{}', 1,"
        " 'COMPLETED', 'local', 1, '{\"pty\": true}')"
    )
    old.close()
    Store(path).close()
    assert query(path, "PRAGMA user_version") == [(len(SCHEMA),)] == [(5,)]
    record = get_record("t1", path=path)
    assert (record.pty, record.attempts, record.after, record.cpu_seconds) == (True, [], [], None)
