"""Real kernels on one history database, started with jupyter_client: a kernel that is
killed leaves its tasks to the next one to settle, two kernels write at once, and the
history magics and the store's warnings as a frontend sees them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import sys
from collections.abc import Iterator

import pytest
from helpers import eventually, query
from helpers.kernel import text
from helpers.processes import group_exists, kill_group, process_gone

from oneshot_nb import TaskState, history

pytestmark = pytest.mark.timeout(90)


def gone_for_good(pid: int) -> bool:
    """The process is gone (or a zombie) and no process is left in its group."""
    return not group_exists(pid) and process_gone(pid)


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Process groups to kill if a test fails before they are gone."""
    pgids: list[int] = []
    yield pgids
    for pgid in pgids:
        kill_group(pgid)


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
def test_tasks_of_a_killed_kernel_are_stopped_and_settled_by_the_next(tmp_path, kernels, leftovers):
    """SIGKILL a kernel with chatty and idle tasks: they outlive it; the next kernel on
    the same database stops them all at %load_ext, every task reads back INTERRUPTED,
    "kernel died", and each log is a byte-exact, non-empty prefix of what it wrote."""
    db = str(tmp_path / "history.sqlite3")
    count = 60_000
    first = kernels(db=db)
    first.ok("%load_ext oneshot_nb")
    lines = [f"--quiet --name chat{i} {chatty(f'chat{i}', count)}" for i in range(3)]
    lines.append("--quiet --name silent --idle 0.2 sleep 60")
    first.ok(
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

    second = kernels(db=db)
    outputs = second.ok("%load_ext oneshot_nb").messages
    assert text(outputs, "stderr") == (
        "oneshot_nb: 4 task(s) left running by a kernel that died were stopped and marked"
        " 'kernel died' (see %oneshot_history)\n"
    )
    for _, pid in tasks.values():
        eventually(lambda pid=pid: gone_for_good(pid), timeout=10)
        assert not group_exists(pid)
    found = {r.name: r for r in history(path=db)}
    assert sorted(found) == sorted(tasks)
    for name, (task_id, _) in tasks.items():
        record = found[name]
        assert (record.id, record.state, record.reason) == (
            task_id,
            TaskState.INTERRUPTED,
            "kernel died",
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
    third = kernels(db=db)
    assert text(third.ok("%load_ext oneshot_nb").messages, "stderr") == ""


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
    pair = {label: kernels(db=db) for label in ("a", "b")}
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
        outputs += kernel.ok("%load_ext oneshot_nb").messages
        kernel.ok(
            f"""
            import asyncio
            from oneshot_nb.storage import records
            tasks = [get_ipython().run_line_magic("oneshot", line) for line in {lines!r}]
            """
        )
    for kernel in pair.values():
        outputs += kernel.ok(
            """
            await asyncio.wait_for(asyncio.gather(*(t.wait() for t in tasks)), 60)
            assert records.active_store.flush()
            print(records.active_store.error, records.active_store.lost_records)
            """
        ).messages
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
    kernel = kernels(db=db)
    kernel.ok("%load_ext oneshot_nb")
    kernel.ok(
        """
        ok = %oneshot --quiet echo hello
        bad = %oneshot --quiet sh -c 'echo oops >&2; exit 1'
        await ok.wait(); await bad.wait()
        """
    )
    shown = kernel.ok("%oneshot_history").messages
    [display] = [m for m in shown if m["msg_type"] == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in display["content"]["data"]
    assert display["content"]["data"]["text/plain"] == "HistoryTable(2 tasks)"
    shown = kernel.ok("%oneshot_history --failed").messages
    [failed] = [m for m in shown if m["msg_type"] == "display_data"]
    assert failed["content"]["data"]["text/plain"] == "HistoryTable(1 tasks)"
    assert kernel.stdout("%oneshot_log {ok.id}") == "hello\n"
    assert kernel.stdout("%oneshot_log {bad.id}") == "oops\n"


def test_a_store_fault_is_said_once_in_the_cell_of_the_next_magic(tmp_path, kernels):
    """In a kernel, the warning the store logged on its thread printed into whatever
    cell happened to run, and the next magic printed it again. Now a cell without a
    magic shows nothing, and the next magic's cell says it once."""
    db = str(tmp_path / "history.sqlite3")
    kernel = kernels(db=db)
    kernel.ok(
        """
        from oneshot_nb.storage import database, writer
        database.BUSY_TIMEOUT_MS = 100
        writer.RETRY_INTERVAL = 0.1
        """
    )
    kernel.ok("%load_ext oneshot_nb")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = kernel.ok("t = %oneshot --quiet echo locked\nawait t.wait()").messages
        unrelated = kernel.ok(
            """
            import asyncio
            from oneshot_nb.storage import records
            while records.active_store.fault is None:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            """
        ).messages
        assert text(started, "stderr") + text(unrelated, "stderr") == ""
        assert text(kernel.ok("%oneshot_tasks").messages, "stderr") == (
            f"oneshot_nb: task history cannot be saved to {db} for now (OperationalError:"
            " database is locked); tasks run on, and it tries again every 0.1 s\n"
        )
        assert text(kernel.ok("%oneshot_tasks").messages, "stderr") == ""
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
