"""Settling the tasks of kernels that died: recover() against processes of our own, a
file of an older schema migrated then recovered, and recovery handing each task to the
runner named in its row. Real kernels sharing a database are in
notebook/test_kernel_history.py."""

from __future__ import annotations

import contextlib
import logging
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


def add_session(path: str, session: str, pid: object, pid_start: object, host: str = HOST):
    db = connect(path)
    db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (session, pid, pid_start, host, 0))
    db.close()


def add_task(
    path: str,
    task_id: str | None,
    session: str,
    pid: object,
    pid_start: object,
    state: str = "RUNNING",
    grace: object = 0.5,
    *,
    runner: str | None = None,
    host: str | None = None,
) -> None:
    """A row of the newest schema; runner and host NULL unless given. Any value goes
    in as given (SQLite keeps text in an INTEGER column as text)."""
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


def recover_with_a_new_store(path: str, runners: Any = None) -> list[str]:
    store = Store(path)
    try:
        return recover(store, runners)
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
        assert query(path, "PRAGMA user_version") == [(len(SCHEMA),)]
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


def a_dead_kernels_live_process(
    tmp_path: Path, spawned: Any
) -> tuple[str, subprocess.Popen, Path, int | None]:
    """A history file with a session whose kernel is dead, and a live process that
    records the signals it gets: the file, the process, its report, its start time."""
    path = str(tmp_path / "history.sqlite3")
    ready, report = tmp_path / "ready", tmp_path / "report"
    process = spawned(signal_recorder(ready, report))
    eventually(ready.exists, timeout=10)
    add_session(path, "dead", exited_pid(), 1)
    return path, process, report, process_start_time(process.pid)


@pytest.mark.timeout(30)
def test_recovery_hands_each_orphan_to_the_runner_named_in_its_row(tmp_path, spawned):
    """A dead kernel's RUNNING task that ran on a runner named 'elsewhere' is left
    RUNNING by recover() with the default runners, and its process gets no signal: the
    local runner must not end what it did not start. Given a runner named 'elsewhere',
    recover() hands it the orphan (its place as recorded, its grace capped at
    RECOVERY_GRACE_CAP) and marks what it settles 'kernel died'."""
    path, process, report, start = a_dead_kernels_live_process(tmp_path, spawned)
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


def test_recovery_marks_a_dead_kernels_dask_task_and_signals_no_local_pid(tmp_path, spawned):
    """A dead kernel's task that ran on a Dask worker is settled there (the scheduler
    releases the kernel's tasks, the worker's reaper ends a dead worker's), so the
    default recover() marks it 'kernel died' and sends no signal to the pid it
    recorded, which on this machine is some other process (here, a live one with the
    very pid and start time)."""
    path, process, report, start = a_dead_kernels_live_process(tmp_path, spawned)
    worker = "tcp://10.0.0.7:39211"
    add_task(path, "far", "dead", process.pid, start, grace=1.0, runner="dask", host=worker)
    assert recover_with_a_new_store(path) == ["far"]
    assert query(path, "SELECT state, reason, runner, host FROM tasks") == [
        ("INTERRUPTED", "kernel died", "dask", worker)
    ]
    assert still_running(process)
    assert signals_received(process, report) == []


# -- rows no kernel of ours wrote: pids, start times and graces no process can have --------


def still_running(process: subprocess.Popen) -> bool:
    """True when `process` is still running 0.3 s on (no signal has ended it)."""
    try:
        process.wait(0.3)
    except subprocess.TimeoutExpired:
        return True
    return False


def running_ids(path: str) -> list[str | None]:
    return [row[0] for row in query(path, "SELECT id FROM tasks WHERE state = 'RUNNING'")]


def test_recovery_settles_every_good_row_whatever_odd_rows_sit_beside_it(tmp_path, spawned):
    """One odd row made recover() raise (a text grace: TypeError; a kernel pid too big
    for kill(2): OverflowError; a text one: TypeError; a NULL task id: sorting failed),
    so no orphan was ever settled and every %load_ext said it would try again. Now the
    good row's process is stopped and its row marked; the odd task rows are marked
    without a signal (the bystander that one names with a garbled start time lives);
    the tasks of kernels whose pid no process can have are left, as is the NULL id."""
    path = str(tmp_path / "history.sqlite3")
    good, bystander = spawned(SLEEPER), spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "good", "dead", good.pid, process_start_time(good.pid))
    odd = {
        "pid-minus-1": (-1, 5, 0.5),
        "pid-text": ("abc", 5, 0.5),
        "pid-float": (bystander.pid + 0.5, process_start_time(bystander.pid), 0.5),
        "pid-huge": (2**63 - 1, 5, 0.5),
        "start-text": (bystander.pid, "xyz", 0.5),
        "grace-text": (None, None, "lots"),
        "grace-infinite": (None, None, float("inf")),
    }
    for task_id, (pid, start, grace) in odd.items():
        add_task(path, task_id, "dead", pid, start, grace=grace)
    add_task(path, None, "dead", None, None)
    for n, kernel in enumerate([2**40, "abc", -5]):
        add_session(path, f"unreadable-{n}", kernel, None)
        add_task(path, f"of-unreadable-{n}", f"unreadable-{n}", bystander.pid, None)
    add_session(path, "no-pid", None, None)
    add_task(path, "of-no-pid", "no-pid", None, None)

    assert recover_with_a_new_store(path) == sorted(["good", "of-no-pid", *odd])
    assert good.wait(5) == -signal.SIGTERM
    assert still_running(bystander)
    assert sorted(running_ids(path), key=str) == [
        None,  # sorted as "None"
        "of-unreadable-0",
        "of-unreadable-1",
        "of-unreadable-2",
    ]


@pytest.mark.parametrize(
    ("pid", "start", "read_pid", "read_start"),
    [
        pytest.param(-1, 5, None, 5, id="pid-minus-1"),
        pytest.param(0, 5, None, 5, id="pid-0"),
        pytest.param(1, 5, None, 5, id="pid-1-init"),
        pytest.param(4194305, 5, None, 5, id="pid-past-linux-pid-max"),
        pytest.param(2**63 - 1, 5, None, 5, id="pid-huge"),
        pytest.param(str(1 << 70), 5, None, 5, id="pid-1<<70-stored-as-real"),
        pytest.param("abc", 5, None, 5, id="pid-text"),
        pytest.param(4242.5, 5, None, 5, id="pid-float"),
        pytest.param(4242, "xyz", 4242, None, id="start-text"),
        pytest.param(4242, -1, 4242, None, id="start-negative"),
        pytest.param(4242, 1.5, 4242, None, id="start-float"),
    ],
)
def test_recovery_reads_a_pid_or_start_time_no_process_can_have_as_none(
    tmp_path, pid, start, read_pid, read_start
):
    """A task's pid outside 2..4194304 (Linux's largest pid_max) or not an integer, or
    a start time below 0 or not an integer, went to the runner as it was stored (a
    negative pid is a process group to kill(2), 0 our own, 1 init). Now it reaches the
    runner as None, which it cannot signal, and the task, still an orphan, is marked;
    the good row beside it is handed over intact and marked too."""
    path = str(tmp_path / "history.sqlite3")
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "odd", "dead", pid, start, grace=1.0)
    add_task(path, "good", "dead", 4243, 6, grace=1.0)
    runner = SettlingRecorder("local")
    assert recover_with_a_new_store(path, [runner]) == ["good", "odd"]
    assert {orphan.task_id: orphan for orphan in runner.given} == {
        "good": Orphan("good", Place("local", HOST, 4243, 6), 1.0),
        "odd": Orphan("odd", Place("local", HOST, read_pid, read_start), 1.0),
    }


@pytest.mark.parametrize(
    "grace",
    [
        pytest.param("lots", id="text"),
        pytest.param(b"\x01", id="blob"),
        pytest.param(-1.0, id="negative"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(float("-inf"), id="minus-infinite"),
    ],
)
def test_recovery_reads_a_grace_that_is_not_a_finite_number_of_seconds_as_zero(tmp_path, grace):
    """A text or blob grace made recover() raise TypeError (min() of str and float), a
    negative or infinite one went to the runner as it was. Now the runner gets 0: no
    grace, where none can be read. The good row beside it keeps its own."""
    path = str(tmp_path / "history.sqlite3")
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "odd", "dead", None, None, grace=grace)
    add_task(path, "good", "dead", None, None, grace=1.5)
    runner = SettlingRecorder("local")
    assert recover_with_a_new_store(path, [runner]) == ["good", "odd"]
    assert {orphan.task_id: orphan.grace for orphan in runner.given} == {
        "good": 1.5,
        "odd": 0.0,
    }


@pytest.mark.parametrize(
    ("kernel_pid", "kernel_start"),
    [
        pytest.param(2**40, None, id="huge"),
        pytest.param(2**40, 5, id="huge-with-start"),
        pytest.param("abc", None, id="text"),
        pytest.param("abc", 5, id="text-with-start"),
        pytest.param(-5, 5, id="negative"),
        pytest.param(0, 5, id="zero"),
        pytest.param(4194305, 5, id="past-linux-pid-max"),
        pytest.param(4242.5, 5, id="float"),
    ],
)
def test_recovery_leaves_the_tasks_of_a_kernel_whose_pid_no_process_can_have(
    tmp_path, spawned, kernel_pid, kernel_start
):
    """Whether such a kernel still runs cannot be told from its pid. kill(2) raised on
    a huge or text one (and nothing was settled), and with a start time it read as a
    dead kernel, whose tasks were stopped. Now its tasks are neither signalled nor
    marked, and a good row of a dead kernel beside them is still settled."""
    path = str(tmp_path / "history.sqlite3")
    theirs, good = spawned(SLEEPER), spawned(SLEEPER)
    add_session(path, "unreadable", kernel_pid, kernel_start)
    add_task(path, "theirs", "unreadable", theirs.pid, process_start_time(theirs.pid))
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "good", "dead", good.pid, process_start_time(good.pid))
    assert recover_with_a_new_store(path) == ["good"]
    assert good.wait(5) == -signal.SIGTERM
    assert still_running(theirs)
    assert running_ids(path) == ["theirs"]


@pytest.mark.parametrize("kernel_start", ["xyz", -1, 1.5])
def test_recovery_leaves_the_tasks_of_a_live_kernel_whose_start_time_is_garbled(
    tmp_path, spawned, kernel_start
):
    """A live kernel's session whose start time is not one (text, negative, a float)
    was read as a dead kernel: its task was stopped and marked "kernel died" under it.
    Now that start time counts as none, so any process with the kernel's pid keeps it
    alive, and its task is left running."""
    path = str(tmp_path / "history.sqlite3")
    ours = spawned(SLEEPER)
    add_session(path, "live", os.getpid(), kernel_start)
    add_task(path, "live-task", "live", ours.pid, process_start_time(ours.pid))
    assert recover_with_a_new_store(path) == []
    assert still_running(ours)
    assert running_ids(path) == ["live-task"]


# -- what recover() is given as runners, and what they give back -----------------------------


class Nameless:
    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        return list(orphans)


class SettleLess:
    name = "elsewhere"


class NamedByNumber(SettlingRecorder):
    def __init__(self) -> None:
        super().__init__("local")
        self.name = 5


@pytest.mark.parametrize(
    "runners",
    [
        pytest.param("x", id="a-string"),
        pytest.param(5, id="not-iterable"),
        pytest.param([object()], id="an-object"),
        pytest.param([LocalRunner], id="the-class"),
        pytest.param([LocalRunner(), SettleLess()], id="one-without-settle"),
        pytest.param((LocalRunner(), Nameless()), id="one-without-name"),
        pytest.param([LocalRunner(), NamedByNumber()], id="a-name-not-text"),
    ],
)
def test_recover_refuses_runners_that_are_not_a_sequence_of_runners(tmp_path, spawned, runners):
    """recover(store, runners) took whatever it was given: a raw AttributeError or
    TypeError, once the runners before the bad one had already signalled their tasks.
    Now one line says what it wants, before anything is read or signalled."""
    path = str(tmp_path / "history.sqlite3")
    orphan = spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "orphan", "dead", orphan.pid, process_start_time(orphan.pid))
    with pytest.raises(TypeError) as raised:
        recover_with_a_new_store(path, runners)
    message = str(raised.value)
    assert message.startswith(
        "runners must be a sequence of runners (each with a name and a settle method), got "
    )
    assert "\n" not in message
    assert still_running(orphan)
    assert running_ids(path) == ["orphan"]


class Misbehaving(SettlingRecorder):
    """A runner whose settle does what it is told to."""

    def __init__(self, name: str, settle: Any) -> None:
        super().__init__(name)
        self._settle = settle

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        self.given.extend(orphans)
        return self._settle(orphans)


def settle_boom(orphans: Sequence[Orphan]) -> list[Orphan]:
    raise RuntimeError("settle boom")


@pytest.mark.parametrize(
    ("settle", "error"),
    [
        pytest.param(settle_boom, "RuntimeError: settle boom", id="raises"),
        pytest.param(lambda orphans: None, "TypeError: ", id="returns-None"),
        pytest.param(lambda orphans: [42], "AttributeError: ", id="returns-no-orphans"),
    ],
)
def test_a_runner_whose_settle_fails_is_logged_and_the_others_still_settle(
    tmp_path, spawned, caplog, settle, error
):
    """One runner's settle raising (or returning what is no list of orphans) made
    recover() raise, and no task of any runner was marked, the local runner's included
    after it had stopped their processes. Now that runner is logged once, by name with
    its error, its tasks are left, and the local runner's are stopped and marked."""
    path = str(tmp_path / "history.sqlite3")
    near = spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "far", "dead", None, None, runner="elsewhere", host="far-host")
    add_task(path, "near", "dead", near.pid, process_start_time(near.pid))
    failing = Misbehaving("elsewhere", settle)
    caplog.set_level(logging.WARNING, logger="oneshot_nb")
    assert recover_with_a_new_store(path, [failing, LocalRunner()]) == ["near"]
    assert [orphan.task_id for orphan in failing.given] == ["far"]
    assert near.wait(5) == -signal.SIGTERM
    assert running_ids(path) == ["far"]
    [warning] = [r for r in caplog.records if r.name == "oneshot_nb"]
    assert warning.levelno == logging.WARNING
    assert "'elsewhere'" in warning.getMessage()
    assert error in warning.getMessage()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(Orphan("nobody", Place("elsewhere", HOST, None, None), 0.0), id="unknown"),
        pytest.param(Orphan("near", Place("local", HOST, None, None), 0.0), id="another-runners"),
    ],
)
def test_recovery_marks_only_the_orphans_a_runner_was_given(tmp_path, spawned, extra):
    """What a runner's settle returned was marked whatever it was: an id no row has
    made recover() raise KeyError (nothing marked), and another runner's task was
    marked "kernel died" though its process ran on, untouched. Now only the orphans in
    the list that runner was given are marked, by task id."""
    path = str(tmp_path / "history.sqlite3")
    near = spawned(SLEEPER)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "far", "dead", None, None, runner="elsewhere", host="far-host")
    add_task(path, "near", "dead", near.pid, process_start_time(near.pid))
    greedy = Misbehaving("elsewhere", lambda orphans: [*orphans, extra])
    assert recover_with_a_new_store(path, [greedy]) == ["far"]
    assert [orphan.task_id for orphan in greedy.given] == ["far"]
    assert still_running(near)
    assert running_ids(path) == ["near"]
