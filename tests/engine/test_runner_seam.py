"""Runners with real processes: choosing one per orchestrator, submit and batch; a runner
that loses its command or cannot start it; what the history records of where a task
ran; recovery asking each task's runner; the reason given to the state machine's
listeners; the orchestrator's lifecycle; the termination policy; and that only
oneshot_nb/runners/ signals processes or reads /proc."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import (
    eventually,
    group_gone,
    live_members,
    parent_of_a_sleeper,
    process_gone,
    py,
    query,
    stored_orchestrator,
    wait_for_line,
    wait_until,
)

import oneshot_nb
from oneshot_nb import AsyncOrchestrator, OrchestratorClosed, TaskState
from oneshot_nb.engine.orchestrator import Lifecycle
from oneshot_nb.runners import (
    Handle,
    LocalRunner,
    Orphan,
    Place,
    RunnerLost,
    end_group,
    end_groups_now,
)
from oneshot_nb.runners.local import Child
from oneshot_nb.runners.procfs import start_time as process_start_time
from oneshot_nb.runners.terminate import ProcessGroup
from oneshot_nb.storage.database import SCHEMA
from oneshot_nb.storage.recovery import RECOVERY_GRACE_CAP, recover
from oneshot_nb.storage.store import Store, connect

HOST = os.uname().nodename
GRACE = 0.3
LONG = py("import time; print('up', flush=True); time.sleep(100)")


# -- runners of our own, around the local one ------------------------------------------------


class Relabelled:
    """A local child (a `Handle`) that says it runs on another runner and host."""

    def __init__(self, child: Child, runner: NamedRunner) -> None:
        self.child = child
        self.pid = child.pid
        self.stdout = child.stdout
        self.stderr = child.stderr
        self.group = child.group
        self._runner = runner

    def place(self) -> Place:
        return dataclasses.replace(
            self.child.place(), runner=self._runner.name, host=self._runner.host
        )

    async def wait(self) -> int:
        return await self.child.wait()

    async def aclose(self) -> None:
        await self.child.aclose()


class NamedRunner(LocalRunner):
    """The local runner under another name (and host): what a Dask or ssh runner looks
    like to the engine. Keeps the commands it was asked to start."""

    handle_class: type[Relabelled] = Relabelled

    def __init__(self, name: str, host: str = HOST) -> None:
        self.name = name
        self.host = host
        self.commands: list[Any] = []

    async def start(
        self, command: Any, cwd: str | None, env: Mapping[str, str], options: Any = None
    ) -> Relabelled:
        self.commands.append(command)
        child = await super().start(command, cwd, env, options)
        return self.handle_class(child, self)

    def __repr__(self) -> str:
        return f"NamedRunner({self.name!r})"


LOST_MESSAGE = "worker 10.0.0.7 died"


class LosingHandle(Relabelled):
    """Its command runs on a "worker"; when the worker dies (the whole group is killed
    with SIGKILL, by the test), its exit status is lost with it."""

    async def wait(self) -> int:
        code = await self.child.wait()
        if code == -signal.SIGKILL:
            raise RunnerLost(LOST_MESSAGE, reason="worker lost")
        return code


class LosingRunner(NamedRunner):
    handle_class = LosingHandle


class UnstartableRunner:
    """A runner that cannot reach its worker: `start` raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.name = "unreachable"
        self.error = error
        self.calls = 0

    async def start(
        self, command: Any, cwd: str | None, env: Mapping[str, str], options: Any
    ) -> Handle:
        self.calls += 1
        raise self.error

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        return []


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


# -- processes of our own --------------------------------------------------------------------


@pytest.fixture
def spawned() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts processes in sessions of their own (as tasks run); kills what is left."""
    started: list[subprocess.Popen] = []

    def start(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def exited_pid() -> int:
    """The pid of a process that has exited and been reaped: a dead kernel's."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


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
    *,
    runner: str = "local",
    host: str | None = HOST,
    grace: float = 0.5,
) -> None:
    """A RUNNING row of the newest schema."""
    db = connect(path)
    db.execute(
        "INSERT INTO tasks (id, session, name, command, argv, env, created_at, started_at,"
        " state, pid, pid_start, grace, runner, host)"
        " VALUES (?, ?, ?, 'sleep 30', 0, '{}', ?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
        (task_id, session, task_id, time.time(), time.time(), pid, pid_start, grace,
         runner, host),
    )  # fmt: skip
    db.close()


# -- which runner runs a task ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_orchestrators_runner_runs_every_task_unless_a_submit_or_batch_names_another():
    """`AsyncOrchestrator(runner=...)` runs every task that names none; `submit(runner=)`
    and `submit_batch(runner=)` override it for that task or batch. Each task's `runner`
    and the place it ran (`task.place.runner`) say which; a task put on the wrong
    runner, or a place that names the local runner whatever ran it, breaks this."""
    default, other, for_batch = NamedRunner("pool-a"), NamedRunner("pool-b"), NamedRunner("pool-c")

    def says(word: str) -> list[str]:
        return py(f"print({word!r})")

    async with AsyncOrchestrator(runner=default) as orch:
        assert orch.runner is default
        first = orch.submit(says("first"))
        overridden = orch.submit(says("overridden"), runner=other)
        batch = orch.submit_batch([says("b1"), says("b2")], runner=for_batch)
        last = orch.submit(says("last"))
        assert await orch.wait_all() == [TaskState.COMPLETED] * 5
    expected = {
        first: default, overridden: other, batch.tasks[0]: for_batch,
        batch.tasks[1]: for_batch, last: default,
    }  # fmt: skip
    for task, runner in expected.items():
        assert task.runner is runner
        assert task.place is not None
        assert (task.place.runner, task.place.host, task.place.pid) == (runner.name, HOST, task.pid)
    assert default.commands == [first.command, last.command]
    assert other.commands == [overridden.command]
    assert for_batch.commands == [task.command for task in batch]
    assert [task.output for task in expected] == ["first\n", "overridden\n", "b1\n", "b2\n",
                                                   "last\n"]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_task_whose_runner_loses_it_fails_with_the_runners_reason(tmp_path):
    """When the worker dies (its whole process group killed with SIGKILL) the runner's
    `wait` raises RunnerLost: the task ends FAILED with the exception's reason and its
    message as the error, no process of it is left, `await task.wait()` returns, and
    the orchestrator goes on running the others. A RunnerLost that escapes the task,
    or a task reported as killed by a signal ("signal"), breaks this."""
    pid_file = tmp_path / "grandchild.pid"
    runner = LosingRunner("workers")
    async with AsyncOrchestrator(grace=GRACE) as orch:
        sibling = orch.submit(LONG)  # on the local runner
        task = orch.submit(py(parent_of_a_sleeper(pid_file)), runner=runner)
        await wait_until(pid_file.exists, timeout=10)
        await wait_for_line(sibling, "up")
        grandchild = int(pid_file.read_text())
        os.killpg(task.pid, signal.SIGKILL)  # the worker dies
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.FAILED
        assert (task.reason, task.error) == ("worker lost", LOST_MESSAGE)
        assert task.returncode is None  # lost with the worker
        assert task.transitions[-1].reason == "worker lost"
        # The kill is the test's, and may still be taking effect (the pipes close
        # before the dying grandchild is a zombie): what matters is nothing outlives it.
        await wait_until(lambda: group_gone(task.pid) and process_gone(grandchild), timeout=2)
        assert sibling.state is TaskState.RUNNING
        after = orch.submit(py("print('after')"), runner=runner)
        assert await after.wait() is TaskState.COMPLETED
        assert after.output == "after\n"
        sibling.stop()
        assert await sibling.wait() is TaskState.INTERRUPTED


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("error", "text"),
    [
        (OSError("no route to worker 10.0.0.7"), "OSError: no route to worker 10.0.0.7"),
        (ValueError("bad worker address"), "ValueError: bad worker address"),
    ],
)
async def test_a_runner_that_cannot_start_the_command_fails_the_task_with_spawn_error(error, text):
    """A runner whose `start` raises OSError or ValueError makes the task FAILED,
    "spawn error", with the exception as its error: it never ran, has no process and
    no place, and the orchestrator runs the next task. An exception that escapes into
    the engine (logged, the task left CREATED) breaks this."""
    runner = UnstartableRunner(error)
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py("print('never')"), runner=runner)
        assert await task.wait() is TaskState.FAILED
        assert (task.reason, task.error) == ("spawn error", text)
        assert runner.calls == 1
        assert (task.pid, task.place, task.started_at, task.returncode) == (None,) * 4
        assert [(t.source, t.target) for t in task.transitions] == [
            (TaskState.CREATED, TaskState.FAILED)
        ]
        assert task.output == ""
        next_one = orch.submit(py("print('next')"))
        assert await next_one.wait() is TaskState.COMPLETED


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
    add_task(path, "far", "dead", process.pid, start, runner="elsewhere", grace=30.0)

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


# -- the reason, as an argument of the machine's events -------------------------------------


class ReasonListener:
    """A listener of the state machine: what each transition was given as `reason`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def after_transition(self, event: Any, source: Any, target: Any, reason: Any = None) -> None:
        self.seen.append((target.id, reason))


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_machines_listeners_get_why_a_task_ended_as_the_events_reason(tmp_path):
    """The events that end a task carry `reason` as an argument, so a listener added
    with `machine.add_listener` learns why: "timeout", "stopped", "exit" and "spawn
    error". An engine that set the reason on the task only, or gave the events none,
    breaks this."""
    async with AsyncOrchestrator(grace=GRACE) as orch:
        timed_out = orch.submit(LONG, timeout=0.3)
        stopped = orch.submit(LONG)
        exited = orch.submit(py("print('bye')"))
        unstartable = orch.submit(py("pass"), cwd=tmp_path / "missing")
        listeners = {}
        for task in (timed_out, stopped, exited, unstartable):
            listeners[task] = ReasonListener()
            task.machine.add_listener(listeners[task])
        await wait_for_line(stopped, "up")
        stopped.stop()
        await orch.wait_all()
    assert listeners[timed_out].seen == [("RUNNING", None), ("INTERRUPTED", "timeout")]
    assert listeners[stopped].seen == [("RUNNING", None), ("INTERRUPTED", "stopped")]
    assert listeners[exited].seen == [("RUNNING", None), ("COMPLETED", "exit")]
    assert listeners[unstartable].seen == [("FAILED", "spawn error")]
    assert [task.reason for task in listeners] == ["timeout", "stopped", "exit", "spawn error"]


# -- the orchestrator's lifecycle ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_an_orchestrator_used_as_a_block_is_unopened_then_opened_then_closed():
    """UNOPENED when made, OPENED inside `async with` while tasks run, CLOSED after;
    a submit after that raises OrchestratorClosed saying to create a new one."""
    orch = AsyncOrchestrator(grace=GRACE)
    assert orch.lifecycle is Lifecycle.UNOPENED
    async with orch:
        assert orch.lifecycle is Lifecycle.OPENED
        task = orch.submit(LONG)
        await wait_for_line(task, "up")
        assert orch.lifecycle is Lifecycle.OPENED
    assert orch.lifecycle is Lifecycle.CLOSED and orch.closed
    assert task.state is TaskState.INTERRUPTED and task.reason == "shutdown"
    with pytest.raises(OrchestratorClosed, match=r"^orchestrator is closed; create a new one$"):
        orch.submit(py("pass"))


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_hosted_orchestrator_is_unopened_then_opened_then_closed_by_aclose():
    """The notebook's form: the first submit from a coroutine opens it (a background
    task hosts its task group), `await orch.aclose()` closes it; then a submit raises
    OrchestratorClosed saying to create a new one."""
    orch = AsyncOrchestrator(grace=GRACE)
    assert orch.lifecycle is Lifecycle.UNOPENED
    task = orch.submit(LONG)
    await wait_for_line(task, "up")
    assert orch.lifecycle is Lifecycle.OPENED
    await orch.aclose()
    assert orch.lifecycle is Lifecycle.CLOSED and orch.closed
    assert task.state is TaskState.INTERRUPTED and task.done
    assert group_gone(task.pid)
    with pytest.raises(OrchestratorClosed, match=r"^orchestrator is closed; create a new one$"):
        orch.submit(py("pass"))
    with pytest.raises(OrchestratorClosed, match="create a new one"):
        orch.submit_batch([py("pass")])


# -- the termination policy ------------------------------------------------------------------


def stubborn_group(
    spawned: Callable[..., subprocess.Popen], where: Path
) -> tuple[subprocess.Popen, int, Path]:
    """A process group: a parent that SIGTERM ends, and a child of it that notes SIGTERM
    (in `where`/termed) and goes on. Returns the parent, the child's pid once its
    handler is set, and the note's path."""
    where.mkdir()
    pid_file, termed = where / "child.pid", where / "termed"
    child = f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *_: open({str(termed)!r}, "w").close())
        with open({str(pid_file) + ".tmp"!r}, "w") as f:
            f.write(str(os.getpid()))
        os.rename({str(pid_file) + ".tmp"!r}, {str(pid_file)!r})
        while True:
            time.sleep(1)
    """
    parent = spawned(py(f"import subprocess, time\nsubprocess.Popen({py(child)!r})\n"
                        "time.sleep(100)"))  # fmt: skip
    eventually(pid_file.exists, timeout=10)
    return parent, int(pid_file.read_text()), termed


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_end_group_terminates_then_kills_what_outlives_the_grace(tmp_path, spawned):
    """end_group sends SIGTERM to the whole group (the parent dies of it), leaves the
    child that ignores it running through the grace, then kills it: once it returns
    nothing of the group runs. Killing at once, not signalling the whole group, or
    returning before the kill took effect, breaks this."""
    grace = 1.0
    parent, child, termed = stubborn_group(spawned, tmp_path / "g")
    seen_alive = 0.0
    began = time.monotonic()

    async def watch() -> None:
        nonlocal seen_alive
        while not process_gone(child):
            seen_alive = time.monotonic() - began
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await end_group(ProcessGroup(parent.pid), grace)
        assert live_members(parent.pid) == []
        assert process_gone(child)
    assert termed.exists()  # it was asked first
    assert seen_alive >= grace / 2
    assert parent.wait(5) == -signal.SIGTERM


@pytest.mark.timeout(30)
def test_end_groups_now_ends_many_groups_in_one_wait_of_the_grace(tmp_path, spawned):
    """end_groups_now gives three groups that ignore SIGTERM one wait of the grace
    together (well under three graces), SIGKILLs what is left, and nothing of them
    runs after. A wait per group, or no wait at all, breaks this."""
    grace = 1.0
    groups = [stubborn_group(spawned, tmp_path / f"g{i}") for i in range(3)]
    began = time.monotonic()
    end_groups_now({ProcessGroup(parent.pid): grace for parent, _, _ in groups})
    took = time.monotonic() - began
    assert grace / 2 <= took < 1.5 * grace
    eventually(lambda: all(group_gone(parent.pid) for parent, _, _ in groups), timeout=1)
    for parent, child, termed in groups:
        assert process_gone(child)
        assert termed.exists()
        assert parent.wait(5) == -signal.SIGTERM


BALLAST_MIB = 256  # a killed process frees its memory before it is gone: ~20 ms for this


def slow_to_exit(ready: Path) -> list[str]:
    """A process that ignores SIGTERM and holds BALLAST_MIB of memory it has touched, as
    a training job does: after SIGKILL it still runs while the system frees it."""
    return py(
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ballast = bytearray({BALLAST_MIB} << 20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(1)
        """
    )


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["end_group", "end_groups_now"])
async def test_a_killed_group_slow_to_exit_is_gone_when_the_policy_returns(
    policy, tmp_path, spawned
):
    """SIGKILL only queues the kill: a process holding much memory runs on while it is
    freed. Both forms of the termination policy return only once what they killed is
    gone (end_group waits up to KILL_WAIT for it), so that a task, or a dead kernel's
    task, is not called ended while its process still runs."""
    ready = tmp_path / "ready"
    process = spawned(slow_to_exit(ready))
    await wait_until(ready.exists, timeout=20)
    group = ProcessGroup(process.pid)
    if policy == "end_group":
        await end_group(group, 0.1)
    else:
        end_groups_now({group: 0.1})
    assert live_members(process.pid) == []


# -- only the runners signal processes or read /proc -----------------------------------------

SIGNALLING_CALLS = {("os", "killpg"), ("os", "kill"), ("signal", "pidfd_send_signal")}


def signalling_and_proc(source: str) -> list[tuple[int, str]]:
    """(line, what) for each os.killpg/os.kill/signal.pidfd_send_signal call (or
    import of those names) and each string constant starting with '/proc'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in SIGNALLING_CALLS
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "signal"):
            for alias in node.names:
                if (node.module, alias.name) in SIGNALLING_CALLS:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("/proc")
        ):
            found.append((node.lineno, repr(node.value)))
    return found


def test_the_scan_finds_signalling_and_proc_reading():
    """The scan below would pass vacuously if it found nothing anywhere."""
    source = (
        "import os, signal\nfrom os import killpg\nos.killpg(1, 9)\nos.kill(1, 0)\n"
        "signal.pidfd_send_signal(3, 9)\nopen(f'/proc/{pid}/stat')\n"
    )
    assert [what for _, what in signalling_and_proc(source)] == [
        "from os import killpg", "os.killpg", "os.kill", "signal.pidfd_send_signal", "'/proc/'"
    ]  # fmt: skip


def test_nothing_outside_the_runners_signals_processes_or_reads_proc():
    """Only oneshot_nb/runners/ sends signals or reads /proc: the engine and storage go
    through a runner, so that one that runs commands elsewhere can stand in for it.
    Lists each offender by file and line."""
    package = Path(oneshot_nb.__file__).parent
    runners = package / "runners"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if runners in path.parents:
            continue
        for line, what in signalling_and_proc(path.read_text()):
            offenders.append(f"{path.relative_to(package.parent)}:{line}: {what}")
    assert offenders == []
    inside = [
        what for path in runners.rglob("*.py") for _, what in signalling_and_proc(path.read_text())
    ]
    assert "os.killpg" in inside  # the scan sees the runners' own
