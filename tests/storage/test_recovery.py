"""Settling the tasks of kernels that died: recover() against processes of our own, a
file of an older schema migrated then recovered, and recovery handing each task to the
runner named in its row. Real kernels sharing a database are in
notebook/test_kernel_history.py."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, py, query
from helpers.processes import exited_pid, group_gone, live_members, process_gone
from helpers.runners import HOST

from oneshot_nb import TaskState, history
from oneshot_nb.runners import Handle, LocalRunner, Orphan, Place
from oneshot_nb.runners.procfs import start_time as process_start_time
from oneshot_nb.storage.database import SCHEMA
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.recovery import RECOVERY_GRACE_CAP, recover
from oneshot_nb.storage.store import Store, connect

pytestmark = pytest.mark.timeout(90)

SLEEPER = ["sleep", "30"]


def add_session(path: str, session: str, pid: int, pid_start: int | None, host: str = HOST):
    db = connect(path)
    db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (session, pid, pid_start, host, 0))
    db.close()


def add_task(
    path: str,
    task_id: str,
    session: str,
    pid: int | None,
    pid_start: int | None,
    state: str = "RUNNING",
    grace: float = 0.5,
    *,
    runner: str | None = None,
    host: str | None = None,
) -> None:
    """A row of the newest schema; runner and host NULL unless given."""
    db = connect(path)
    db.execute(
        "INSERT INTO tasks (id, session, name, command, argv, env, created_at, started_at,"
        " state, pid, pid_start, grace, runner, host)"
        " VALUES (?, ?, ?, 'sleep 30', 0, '{}', ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, session, task_id, time.time(), time.time(), state, pid, pid_start, grace,
         runner, host),
    )  # fmt: skip
    db.close()


# -- recover() against processes of our own -------------------------------------------------


def recover_with_a_new_store(path: str) -> list[str]:
    store = Store(path)
    try:
        return recover(store)
    finally:
        store.close()


def test_recovery_stops_a_dead_kernels_task_and_marks_it_kernel_died(tmp_path, spawned):
    """A live task of a session whose kernel is gone: its process group is terminated,
    and the task ends INTERRUPTED, "kernel died", with the transition recorded."""
    path = str(tmp_path / "history.sqlite3")
    orphan = spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "orphan", "dead", orphan.pid, process_start_time(orphan.pid), state="IDLE")
    before = time.time()
    assert recover_with_a_new_store(path) == ["orphan"]
    assert orphan.wait(5) == -signal.SIGTERM
    record = get_record("orphan", path=path)
    assert (record.state, record.reason) == (TaskState.INTERRUPTED, "kernel died")
    assert before <= record.ended_at <= time.time()
    assert record.transitions() == [
        ("interrupt", "IDLE", "INTERRUPTED", record.ended_at, "kernel died")
    ]


def test_recovery_kills_a_group_that_ignores_sigterm_after_its_grace(tmp_path, spawned):
    """SIGTERM first; whatever outlives the task's grace gets SIGKILL."""
    path = str(tmp_path / "history.sqlite3")
    stubborn = spawned(["sh", "-c", "trap '' TERM; sleep 30 & wait"])
    eventually(lambda: len(live_members(stubborn.pid)) == 2, timeout=10)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "stubborn", "dead", stubborn.pid, process_start_time(stubborn.pid), grace=0.3)
    assert recover_with_a_new_store(path) == ["stubborn"]
    assert stubborn.wait(5) == -signal.SIGKILL
    eventually(lambda: group_gone(stubborn.pid), timeout=10)


def test_recovery_stops_a_group_whose_leader_has_already_exited(tmp_path, spawned):
    """When no process has the task's pid any more, the group it led (a child left
    behind) is still terminated: the system cannot give that id to another group."""
    path = str(tmp_path / "history.sqlite3")
    leader = spawned(["sh", "-c", "sleep 30 & echo $!"])
    leader_pid = leader.pid
    eventually(lambda: len(live_members(leader_pid)) == 1 and leader.poll() is not None, timeout=10)
    [child] = live_members(leader_pid)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "left-behind", "dead", leader_pid, 12345)
    assert recover_with_a_new_store(path) == ["left-behind"]
    eventually(lambda: process_gone(child) and group_gone(leader_pid), timeout=10)


def test_recovery_never_signals_a_process_that_reused_the_pid(tmp_path, spawned):
    """A dead kernel's task whose pid now belongs to an unrelated process (another start
    time) is settled "kernel died", and that process is left alone."""
    path = str(tmp_path / "history.sqlite3")
    stranger = spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "reused", "dead", stranger.pid, process_start_time(stranger.pid) - 1)
    assert recover_with_a_new_store(path) == ["reused"]
    with pytest.raises(subprocess.TimeoutExpired):
        stranger.wait(0.3)
    record = get_record("reused", path=path)
    assert (record.state, record.reason) == (TaskState.INTERRUPTED, "kernel died")


def test_recovery_leaves_the_tasks_of_a_live_kernel_alone(tmp_path, spawned):
    """Tasks of a session whose kernel still runs (same pid and start time), or that
    ran on another host, are neither settled nor signalled."""
    path = str(tmp_path / "history.sqlite3")
    ours, elsewhere = spawned(SLEEPER), spawned(SLEEPER)
    add_session(path, "live", os.getpid(), process_start_time(os.getpid()))
    add_task(path, "live-task", "live", ours.pid, process_start_time(ours.pid))
    add_session(path, "remote", exited_pid(), 1, host="another-host")
    add_task(path, "remote-task", "remote", elsewhere.pid, process_start_time(elsewhere.pid))
    assert recover_with_a_new_store(path) == []
    for process in (ours, elsewhere):
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.3)
    assert [(r.id, r.state, r.reason) for r in history(path=path)] == [
        ("remote-task", TaskState.RUNNING, None),
        ("live-task", TaskState.RUNNING, None),
    ]


def test_recovery_settles_a_task_that_never_started(tmp_path):
    """A task still waiting for a slot when its kernel died has no process: it is only
    marked "kernel died"."""
    path = str(tmp_path / "history.sqlite3")
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "queued", "dead", None, None, state="CREATED")
    assert recover_with_a_new_store(path) == ["queued"]
    record = get_record("queued", path=path)
    assert (record.state, record.reason) == (TaskState.INTERRUPTED, "kernel died")


# -- an older schema, and runners other than the local one ---------------------------------


class SettlingRecorder:
    """A runner named `name` whose settle keeps what it was given and calls it all its
    own, without signalling anything (its processes are elsewhere)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.given: list[Orphan] = []

    async def start(
        self, command: Any, cwd: str | None, env: Mapping[str, str], options: Any
    ) -> Handle:
        raise OSError("not for starting")

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        self.given.extend(orphans)
        return list(orphans)


def signal_recorder(ready: Path, report: Path) -> list[str]:
    """A Python process that survives SIGTERM, SIGCONT, SIGHUP and SIGINT, noting each,
    and writes what it noted to `report` on SIGRTMIN: Python runs the handlers of the
    signals it has received in numeric order, so a report asked for after another
    signal was sent includes it."""
    return py(
        f"""
        import os, signal, time
        seen = []
        def note(signum, frame):
            seen.append(signum)
        def report(signum, frame):
            with open({str(report) + ".tmp"!r}, "w") as f:
                f.write(" ".join(map(str, seen)))
            os.rename({str(report) + ".tmp"!r}, {str(report)!r})
        for signum in (signal.SIGTERM, signal.SIGCONT, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, note)
        signal.signal(signal.SIGRTMIN, report)
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(1)
        """
    )


def signals_received(process: subprocess.Popen, report: Path) -> list[int]:
    """The signals `process` (a signal_recorder) has received so far."""
    with contextlib.suppress(FileNotFoundError):
        report.unlink()
    os.kill(process.pid, signal.SIGRTMIN)
    eventually(lambda: report.exists() or process.poll() is not None, timeout=10)
    if not report.exists():
        pytest.fail(f"the process was ended (exit status {process.returncode})")
    return [int(s) for s in report.read_text().split()]


def version_2_file(path: str) -> sqlite3.Connection:
    """A history file as version 2 of the schema made it, open for filling."""
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for schema in SCHEMA[:2]:
        for statement in filter(str.strip, schema.split(";")):
            old.execute(statement)
    old.execute("PRAGMA user_version = 2")
    return old


@pytest.mark.timeout(30)
def test_a_version_2_file_is_migrated_and_its_dead_kernels_task_is_recovered(tmp_path, spawned):
    """A version 2 file (no runner or host columns) holding a RUNNING task of a kernel
    that died on this host, whose process still runs: opening it migrates it to
    version 3, the old row running on 'local' at its kernel's host, and recover() then
    terminates the process and marks the task 'kernel died'. A migration that leaves
    the runner NULL (or names another runner) would leave the process running."""
    path = str(tmp_path / "history.sqlite3")
    sleeper = spawned(["sleep", "30"])
    start = process_start_time(sleeper.pid)
    assert start is not None
    old = version_2_file(path)
    old.execute("INSERT INTO sessions VALUES ('dead', ?, 1, ?, 0)", (exited_pid(), HOST))
    old.execute(
        "INSERT INTO tasks VALUES ('t1', 'dead', 'sleeper', 'sleep 30', 0, '/', '{}',"
        " 1, 2, NULL, 'RUNNING', NULL, NULL, NULL, ?, ?, 0.5, NULL)",
        (sleeper.pid, start),
    )
    old.close()
    store = Store(path)
    try:
        assert query(path, "PRAGMA user_version") == [(3,)]
        assert query(path, "SELECT id, state, runner, host FROM tasks") == [
            ("t1", "RUNNING", "local", HOST)
        ]
        assert recover(store) == ["t1"]
    finally:
        store.close()
    assert sleeper.wait(5) == -signal.SIGTERM
    assert query(path, "SELECT state, reason FROM tasks") == [("INTERRUPTED", "kernel died")]
    assert query(path, "SELECT event, source, target, reason FROM transitions") == [
        ("interrupt", "RUNNING", "INTERRUPTED", "kernel died")
    ]


@pytest.mark.timeout(30)
def test_recovery_hands_each_orphan_to_the_runner_named_in_its_row(tmp_path, spawned):
    """A dead kernel's RUNNING task that ran on a runner named 'elsewhere' is left
    RUNNING by recover() with the default runners, and its process gets no signal: the
    local runner must not end what it did not start. Given a runner named 'elsewhere',
    recover() hands it the orphan (its place as recorded, its grace capped at
    RECOVERY_GRACE_CAP) and marks what it settles 'kernel died'."""
    path = str(tmp_path / "history.sqlite3")
    ready, report = tmp_path / "ready", tmp_path / "report"
    process = spawned(signal_recorder(ready, report))
    eventually(ready.exists, timeout=10)
    start = process_start_time(process.pid)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "far", "dead", process.pid, start, grace=30.0, runner="elsewhere", host=HOST)

    def settle_with(runners: list[Any] | None) -> list[str]:
        store = Store(path)
        try:
            return recover(store, runners)
        finally:
            store.close()

    assert settle_with(None) == []
    assert query(path, "SELECT state, reason FROM tasks") == [("RUNNING", None)]
    assert signals_received(process, report) == []
    assert process.poll() is None

    runner = SettlingRecorder("elsewhere")
    assert settle_with([LocalRunner(), runner]) == ["far"]
    assert runner.given == [
        Orphan("far", Place("elsewhere", HOST, process.pid, start), RECOVERY_GRACE_CAP)
    ]
    assert query(path, "SELECT state, reason FROM tasks") == [("INTERRUPTED", "kernel died")]
    assert signals_received(process, report) == []  # that runner's processes are elsewhere
