"""Settling the tasks of kernels that died, and kernels sharing one database: recover()
against processes of our own, then real kernels started with jupyter_client."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import eventually, group_gone, live_members, process_gone, query
from jupyter_client.manager import KernelManager, start_new_kernel

from oneshot_nb import TaskState, history
from oneshot_nb.runners.procfs import start_time as process_start_time
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.recovery import recover
from oneshot_nb.storage.store import Store, connect

pytestmark = pytest.mark.timeout(90)

HOST = os.uname().nodename




def gone_for_good(pid: int) -> bool:
    """The process is gone (or a zombie) and no process is left in its group."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return process_gone(pid)
    return False


# -- recover() against processes of our own -------------------------------------------------


@pytest.fixture
def sleepers() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts processes in sessions of their own, as tasks run; kills what is left."""
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        process = subprocess.Popen(argv or ("sleep", "30"), start_new_session=True)
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


def add_session(path: str, session: str, pid: int, pid_start: int | None, host: str = HOST):
    db = connect(path)
    db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (session, pid, pid_start, host, 0))
    db.close()


def add_task(path: str, task_id: str, session: str, pid: int | None, pid_start: int | None,
             state: str = "RUNNING", grace: float = 0.5) -> None:
    db = connect(path)
    db.execute(
        "INSERT INTO tasks (id, session, name, command, argv, env, created_at, started_at,"
        " state, pid, pid_start, grace) VALUES (?, ?, ?, 'sleep 30', 0, '{}', ?, ?, ?, ?, ?, ?)",
        (task_id, session, task_id, time.time(), time.time(), state, pid, pid_start, grace),
    )
    db.close()


def recover_with_a_new_store(path: str) -> list[str]:
    store = Store(path)
    try:
        return recover(store)
    finally:
        store.close()


def test_recovery_stops_a_dead_kernels_task_and_marks_it_kernel_died(tmp_path, sleepers):
    """A live task of a session whose kernel is gone: its process group is terminated,
    and the task ends INTERRUPTED, "kernel died", with the transition recorded."""
    path = str(tmp_path / "history.sqlite3")
    orphan = sleepers()
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


def test_recovery_kills_a_group_that_ignores_sigterm_after_its_grace(tmp_path, sleepers):
    """SIGTERM first; whatever outlives the task's grace gets SIGKILL."""
    path = str(tmp_path / "history.sqlite3")
    stubborn = sleepers("sh", "-c", "trap '' TERM; sleep 30 & wait")
    eventually(lambda: len(live_members(stubborn.pid)) == 2, timeout=10)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "stubborn", "dead", stubborn.pid, process_start_time(stubborn.pid), grace=0.3)
    assert recover_with_a_new_store(path) == ["stubborn"]
    assert stubborn.wait(5) == -signal.SIGKILL
    eventually(lambda: group_gone(stubborn.pid), timeout=10)


def test_recovery_stops_a_group_whose_leader_has_already_exited(tmp_path, sleepers):
    """When no process has the task's pid any more, the group it led (a child left
    behind) is still terminated: the system cannot give that id to another group."""
    path = str(tmp_path / "history.sqlite3")
    leader = sleepers("sh", "-c", "sleep 30 & echo $!")
    leader_pid = leader.pid
    eventually(lambda: len(live_members(leader_pid)) == 1 and leader.poll() is not None, timeout=10)
    [child] = live_members(leader_pid)
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "left-behind", "dead", leader_pid, 12345)
    assert recover_with_a_new_store(path) == ["left-behind"]
    eventually(lambda: process_gone(child) and group_gone(leader_pid), timeout=10)


def test_recovery_never_signals_a_process_that_reused_the_pid(tmp_path, sleepers):
    """A dead kernel's task whose pid now belongs to an unrelated process (another start
    time) is settled "kernel died", and that process is left alone."""
    path = str(tmp_path / "history.sqlite3")
    stranger = sleepers()
    add_session(path, "dead", exited_pid(), 1)
    add_task(path, "reused", "dead", stranger.pid, process_start_time(stranger.pid) - 1)
    assert recover_with_a_new_store(path) == ["reused"]
    with pytest.raises(subprocess.TimeoutExpired):
        stranger.wait(0.3)
    record = get_record("reused", path=path)
    assert (record.state, record.reason) == (TaskState.INTERRUPTED, "kernel died")


def test_recovery_leaves_the_tasks_of_a_live_kernel_alone(tmp_path, sleepers):
    """Tasks of a session whose kernel still runs (same pid and start time), or that
    ran on another host, are neither settled nor signalled."""
    path = str(tmp_path / "history.sqlite3")
    ours, elsewhere = sleepers(), sleepers()
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




# -- real kernels ---------------------------------------------------------------------------


class Kernel:
    """A real IPython kernel whose history database is `db`."""

    def __init__(self, db: str) -> None:
        env = {**os.environ, "ONESHOT_NB_DB": db}
        self.manager: KernelManager
        self.manager, self.client = start_new_kernel(
            startup_timeout=60, kernel_name="python3", env=env
        )

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Run a cell; fail the test if it raises. Returns its output messages."""
        outputs: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(
            textwrap.dedent(code), timeout=timeout, output_hook=outputs.append
        )
        content = reply["content"]
        assert content["status"] == "ok", "\n".join(content.get("traceback", []))
        return outputs

    def stdout(self, code: str, timeout: float = 60) -> str:
        return text(self.run(code, timeout), "stdout")

    def close(self) -> None:
        self.client.stop_channels()
        with contextlib.suppress(Exception):
            self.manager.shutdown_kernel(now=True)


def text(outputs: list[dict[str, Any]], name: str) -> str:
    """What a cell wrote to one stream."""
    return "".join(
        m["content"]["text"]
        for m in outputs
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


@pytest.fixture
def kernels() -> Iterator[Callable[[str], Kernel]]:
    started: list[Kernel] = []

    def start(db: str) -> Kernel:
        kernel = Kernel(db)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        kernel.close()


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Process groups to kill if a test fails before they are gone."""
    pgids: list[int] = []
    yield pgids
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def chatty(label: str, count: int) -> str:
    """A command printing `count` numbered lines, 1 ms apart. It ignores SIGPIPE and
    write errors, so it outlives a kernel that is killed."""
    code = f"""
import signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
for j in range({count}):
    try:
        sys.stdout.write(f"{label} {{j}}\\n")
        sys.stdout.flush()
    except OSError:
        pass
    time.sleep(0.001)
"""
    return shlex.join([sys.executable, "-c", code])


def chatty_output(label: str, count: int) -> bytes:
    return "".join(f"{label} {j}\n" for j in range(count)).encode()


@pytest.mark.slow
def test_tasks_of_a_killed_kernel_are_stopped_and_settled_by_the_next(
    tmp_path, kernels, leftovers
):
    """SIGKILL a kernel with chatty and idle tasks: they outlive it; the next kernel on
    the same database stops them all at %load_ext, every task reads back INTERRUPTED,
    "kernel died", and each log is a byte-exact, non-empty prefix of what it wrote."""
    db = str(tmp_path / "history.sqlite3")
    count = 60_000
    first = kernels(db)
    first.run("%load_ext oneshot_nb")
    lines = [f"--quiet --name chat{i} {chatty(f'chat{i}', count)}" for i in range(3)]
    lines.append("--quiet --name silent --idle 0.2 sleep 60")
    first.run(
        f"""
        import asyncio, json
        from oneshot_nb.storage import records
        tasks = [get_ipython().run_line_magic("oneshot", line) for line in {lines!r}]
        async def ready():
            while not all(t.bytes_written["stdout"] > 1000 for t in tasks[:3]):
                await asyncio.sleep(0.02)
            await tasks[3].wait_for("IDLE")
        await asyncio.wait_for(ready(), 20)
        assert records.active_store.flush()
        """
    )
    tasks = json.loads(first.stdout("print(json.dumps({t.name: [t.id, t.pid] for t in tasks}))"))
    leftovers.extend(pid for _, pid in tasks.values())
    os.kill(first.pid, signal.SIGKILL)
    first.manager.provisioner.process.wait(10)
    for _, pid in tasks.values():
        assert not process_gone(pid), "the task died with its kernel: nothing to recover"

    second = kernels(db)
    outputs = second.run("%load_ext oneshot_nb")
    assert text(outputs, "stderr") == (
        "oneshot_nb: 4 task(s) left running by a kernel that died were stopped and marked"
        " 'kernel died' (see %oneshot_history)\n"
    )
    for _, pid in tasks.values():
        eventually(lambda pid=pid: gone_for_good(pid), timeout=10)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    found = {r.name: r for r in history(path=db)}
    assert sorted(found) == sorted(tasks)
    for name, (task_id, _) in tasks.items():
        record = found[name]
        assert (record.id, record.state, record.reason) == (
            task_id, TaskState.INTERRUPTED, "kernel died"
        )
        if name != "silent":
            log = record.read_log()
            assert 0 < len(log) < len(chatty_output(name, count))
            assert log == chatty_output(name, count)[: len(log)]
    assert found["silent"].read_log() == b""
    assert [t[:3] for t in found["silent"].transitions()] == [
        ("start", "CREATED", "RUNNING"),
        ("detect_silence", "RUNNING", "IDLE"),
        ("interrupt", "IDLE", "INTERRUPTED"),
    ]
    # The next kernel after that has nothing left to settle.
    third = kernels(db)
    assert text(third.run("%load_ext oneshot_nb"), "stderr") == ""


def burst(label: str, seconds: int) -> str:
    """A command writing numbered lines to stdout and stderr in bursts, for `seconds`."""
    code = f"""
import sys, time
for j in range({seconds * 10}):
    for k in range(300):
        sys.stdout.write(f"{label} out {{j}} {{k}} " + "x" * 60 + "\\n")
    sys.stderr.write(f"{label} err {{j}}\\n")
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.1)
"""
    return shlex.join([sys.executable, "-c", code])


def burst_output(label: str, seconds: int) -> tuple[bytes, bytes]:
    out = "".join(
        f"{label} out {j} {k} " + "x" * 60 + "\n" for j in range(seconds * 10) for k in range(300)
    )
    err = "".join(f"{label} err {j}\n" for j in range(seconds * 10))
    return out.encode(), err.encode()


@pytest.mark.slow
def test_two_kernels_write_to_one_database_at_once_without_losing_anything(tmp_path, kernels):
    """Two kernels, each with chatty and quick tasks, write the same database for
    seconds: every task is there with its final state and its exact log, and neither
    kernel saw an error or a locked database."""
    db = str(tmp_path / "history.sqlite3")
    seconds = 4
    pair = {label: kernels(db) for label in ("a", "b")}
    expected: dict[str, tuple[str, bytes, bytes]] = {}
    outputs = []
    for label, kernel in pair.items():
        lines = []
        for i in range(3):
            name = f"{label}-burst{i}"
            lines.append(f"--quiet --name {name} {burst(name, seconds)}")
            expected[name] = ("COMPLETED", *burst_output(name, seconds))
        for i in range(10):
            name = f"{label}-quick{i}"
            lines.append(f"--quiet --name {name} echo {name}")
            expected[name] = ("COMPLETED", f"{name}\n".encode(), b"")
        name = f"{label}-fails"
        lines.append(f"--quiet --name {name} sh -c 'echo {name} >&2; exit 3'")
        expected[name] = ("FAILED", b"", f"{name}\n".encode())
        # The second kernel loads while the first one's tasks run: it must leave them be.
        outputs += kernel.run("%load_ext oneshot_nb")
        kernel.run(
            f"""
            import asyncio
            from oneshot_nb.storage import records
            tasks = [get_ipython().run_line_magic("oneshot", line) for line in {lines!r}]
            """
        )
    for kernel in pair.values():
        outputs += kernel.run(
            """
            await asyncio.wait_for(asyncio.gather(*(t.wait() for t in tasks)), 60)
            assert records.active_store.flush()
            print(records.active_store.error, records.active_store.lost_records)
            """
        )
    assert text(outputs, "stdout") == "None 0\nNone 0\n"
    assert text(outputs, "stderr") == ""
    assert [m for m in outputs if m["msg_type"] == "error"] == []
    found = {r.name: r for r in history(path=db)}
    assert sorted(found) == sorted(expected)
    for name, (state, out, err) in expected.items():
        record = found[name]
        assert record.state.value == state, name
        assert record.read_log("stdout") == out, name
        assert record.read_log("stderr") == err, name
    assert query(db, "SELECT count(DISTINCT session) FROM tasks") == [(2,)]
    assert query(db, "SELECT count(*) FROM transitions WHERE reason = 'kernel died'") == [(0,)]


def test_oneshot_history_shows_a_widget_table_in_a_kernel(tmp_path, kernels):
    """In a kernel %oneshot_history displays a widget table of the tasks (with a stable
    text form), its filters apply, and %oneshot_log prints a stored log."""
    db = str(tmp_path / "history.sqlite3")
    kernel = kernels(db)
    kernel.run("%load_ext oneshot_nb")
    kernel.run(
        """
        ok = %oneshot --quiet echo hello
        bad = %oneshot --quiet sh -c 'echo oops >&2; exit 1'
        await ok.wait(); await bad.wait()
        """
    )
    shown = kernel.run("%oneshot_history")
    [display] = [m for m in shown if m["msg_type"] == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in display["content"]["data"]
    assert display["content"]["data"]["text/plain"] == "HistoryTable(2 tasks)"
    shown = kernel.run("%oneshot_history --failed")
    [failed] = [m for m in shown if m["msg_type"] == "display_data"]
    assert failed["content"]["data"]["text/plain"] == "HistoryTable(1 tasks)"
    assert kernel.stdout("%oneshot_log {ok.id}") == "hello\n"
    assert kernel.stdout("%oneshot_log {bad.id}") == "oops\n"


def test_a_store_fault_is_said_once_in_the_cell_of_the_next_magic(tmp_path, kernels):
    """In a kernel, the warning the store logged on its thread printed into whatever
    cell happened to run, and the next magic printed it again. Now a cell without a
    magic shows nothing, and the next magic's cell says it once."""
    db = str(tmp_path / "history.sqlite3")
    kernel = kernels(db)
    kernel.run(
        """
        from oneshot_nb.storage import database, writer
        database.BUSY_TIMEOUT_MS = 100
        writer.RETRY_INTERVAL = 0.1
        """
    )
    kernel.run("%load_ext oneshot_nb")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = kernel.run("t = %oneshot --quiet echo locked\nawait t.wait()")
        unrelated = kernel.run(
            """
            import asyncio
            from oneshot_nb.storage import records
            while records.active_store.fault is None:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            """
        )
        assert text(started, "stderr") + text(unrelated, "stderr") == ""
        assert text(kernel.run("%oneshot_tasks"), "stderr") == (
            f"oneshot_nb: task history cannot be saved to {db} for now (OperationalError:"
            " database is locked); tasks run on, and it tries again every 0.1 s\n"
        )
        assert text(kernel.run("%oneshot_tasks"), "stderr") == ""
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
