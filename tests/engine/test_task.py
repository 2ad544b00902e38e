"""OneshotTask with real processes: spawning, output, exit, stop, idle, records, arguments."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import string
import time
from typing import Any

import anyio
import pytest
from helpers import eventually, parent_of_a_sleeper, py, wait_for_line, wait_until
from helpers.processes import (
    group_exists,
    group_gone,
    pid_exists,
    process_gone,
    process_state,
    reaped,
)

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.engine.supervision import DRAIN_LIMIT, DRAIN_POLL, OUTPUT_CUT_NOTE
from oneshot_nb.engine.task import DEFAULT_MAX_LOG_BYTES
from oneshot_nb.runners import LocalRunner

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

# Ignores SIGTERM, says "ready", sleeps: only the SIGKILL after `grace` ends it.
STUBBORN = py(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(100)
    """
)

GRACE = 0.3


def record(task: OneshotTask) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    task.listeners.append(events.append)
    return events


def stream_bytes(events: list[TaskEvent], stream: str) -> bytes:
    return b"".join(e.data for e in events if e.kind == "output" and e.stream == stream)


def edges(task: OneshotTask) -> list[tuple[TaskState, TaskState]]:
    return [(t.source, t.target) for t in task.transitions]


# -- commands, cwd, env, stdin, session ----------------------------------------------------


async def test_shell_string_runs_through_the_shell():
    """A string is a shell command line, like IPython's `!`: expansion and `&&` work."""
    task = OneshotTask("x=4; echo $((x + 1)) && echo second")
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "5\nsecond\n"


async def test_argv_list_runs_without_a_shell():
    """A list is an argv: an argument with spaces and `$` arrives verbatim."""
    task = OneshotTask([*py("import sys; print(sys.argv[1])"), "a  b $HOME"])
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "a  b $HOME\n"


async def test_cwd_sets_the_working_directory(tmp_path):
    """`cwd=` is where the process runs (a PathLike is accepted)."""
    task = OneshotTask(py("import os; print(os.getcwd())"), cwd=tmp_path)
    assert task.cwd == str(tmp_path)
    assert await task.run() is TaskState.COMPLETED
    assert task.output.strip() == os.path.realpath(tmp_path)


async def test_env_is_merged_over_the_parent_environment(monkeypatch):
    """`env=` adds and overrides variables; the parent's others stay visible."""
    monkeypatch.setenv("ONESHOT_TEST_INHERITED", "from parent")
    monkeypatch.setenv("ONESHOT_TEST_SHADOWED", "from parent")
    code = """
        import json, os
        keys = ["ONESHOT_TEST_INHERITED", "ONESHOT_TEST_SHADOWED", "ONESHOT_TEST_ADDED",
                "ONESHOT_TASK_ID"]
        print(json.dumps({k: os.environ.get(k) for k in keys}))
    """
    task = OneshotTask(
        py(code), env={"ONESHOT_TEST_SHADOWED": "override", "ONESHOT_TEST_ADDED": "added"}
    )
    assert await task.run() is TaskState.COMPLETED
    assert json.loads(task.output) == {
        "ONESHOT_TEST_INHERITED": "from parent",
        "ONESHOT_TEST_SHADOWED": "override",
        "ONESHOT_TEST_ADDED": "added",
        "ONESHOT_TASK_ID": task.id,
    }


async def test_task_id_is_in_the_environment_without_env():
    """ONESHOT_TASK_ID is set even when no `env=` is given."""
    task = OneshotTask(py("import os; print(os.environ['ONESHOT_TASK_ID'])"), task_id="abc123")
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "abc123\n"


async def test_stdin_is_closed_so_a_reader_gets_eof():
    """A command that reads stdin must see EOF at once, not hang waiting for input."""
    task = OneshotTask(py("import sys; print(repr(sys.stdin.read()))"))
    with anyio.fail_after(10):
        assert await task.run() is TaskState.COMPLETED
    assert task.output == "''\n"


async def test_process_gets_its_own_session_and_group():
    """The child leads a new session and group, so a signal to the group reaches only it."""
    task = OneshotTask(py("import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"))
    assert await task.run() is TaskState.COMPLETED
    pid, pgid, sid = map(int, task.output.split())
    assert pid == task.pid
    assert pgid == pid
    assert sid == pid
    assert sid != os.getsid(0)


# -- stopping ---------------------------------------------------------------------------


@pytest.mark.timeout(15)
async def test_stop_kills_grandchildren(tmp_path):
    """Stopping kills the whole process group, including a child's own children."""
    pid_file = tmp_path / "grandchild.pid"
    child = parent_of_a_sleeper(pid_file)
    task = OneshotTask(py(child), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(pid_file.exists, timeout=10)
        grandchild_pid = int(pid_file.read_text())
        assert not process_gone(grandchild_pid)
        task.stop()
        assert await task.wait() is TaskState.INTERRUPTED
    assert task.pid is not None
    assert group_gone(task.pid)
    assert process_gone(grandchild_pid)


@pytest.mark.timeout(15)
async def test_stop_kills_background_jobs_of_a_shell_command(tmp_path):
    """A shell's `&` job is in the task's group and dies with it."""
    pid_file = tmp_path / "job.pid"
    task = OneshotTask(f"sleep 100 & echo $! > {pid_file}; wait", grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10)
        job_pid = int(pid_file.read_text())
        task.stop()
        await task.wait()
    assert task.state is TaskState.INTERRUPTED
    assert process_gone(job_pid)
    assert group_gone(task.pid)


@pytest.mark.timeout(15)
async def test_process_ignoring_sigterm_is_killed_after_grace():
    """SIGTERM ignored: SIGKILL follows once `grace` has passed, and the task is INTERRUPTED."""
    task = OneshotTask(STUBBORN, grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "ready")
        started = time.monotonic()
        task.stop()
        await task.wait()
        took = time.monotonic() - started
    assert task.returncode == -9
    assert task.state is TaskState.INTERRUPTED
    assert task.reason == "stopped"
    assert GRACE - 0.05 <= took < GRACE + 2.0


@pytest.mark.timeout(15)
async def test_process_handling_sigterm_gets_to_clean_up_before_grace():
    """SIGTERM handled: the handler's last words are kept and no SIGKILL waits for grace."""
    code = """
        import signal, sys, time
        def bye(signum, frame):
            sys.stdout.write("bye\\n"); sys.stdout.flush()
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        time.sleep(100)
    """
    grace = 5.0
    task = OneshotTask(py(code), grace=grace)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "ready")
        started = time.monotonic()
        task.stop()
        await task.wait()
        took = time.monotonic() - started
    assert task.output == "ready\nbye\n"
    assert task.returncode == 0
    assert task.state is TaskState.INTERRUPTED
    assert took < grace - 1.0


async def test_stop_is_synchronous_idempotent_and_keeps_output():
    """stop(): INTERRUPTED at once, one transition however often called, output kept, reaped."""
    task = OneshotTask(py("import time; print('before', flush=True); time.sleep(100)"), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "before")
        task.stop()
        assert task.state is TaskState.INTERRUPTED
        task.stop()
        await task.wait()
    task.stop()
    assert task.state is TaskState.INTERRUPTED
    assert [t.target for t in task.transitions].count(TaskState.INTERRUPTED) == 1
    assert task.reason == "stopped"
    assert task.output == "before\n"
    assert task.returncode == -15
    assert task.done
    assert reaped(task.pid)
    assert process_gone(task.pid)


async def test_stop_on_a_finished_task_is_a_no_op():
    """A completed task stays COMPLETED with its reason; stop() changes nothing."""
    task = OneshotTask(py("print('done')"))
    await task.run()
    before = list(task.transitions)
    task.stop()
    assert task.state is TaskState.COMPLETED
    assert task.reason == "exit"
    assert task.transitions == before


async def test_stop_from_another_thread_is_handed_to_the_loop():
    """A button callback on another thread may call stop(); the loop carries it out."""
    task = OneshotTask(py("import time; print('up', flush=True); time.sleep(100)"), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "up")
        await anyio.to_thread.run_sync(task.stop)
        with anyio.fail_after(5):
            assert await task.wait() is TaskState.INTERRUPTED
    assert task.reason == "stopped"


async def test_task_stopped_while_waiting_for_a_slot_never_spawns():
    """A CREATED task that is stopped gives up its place: no pid, no RUNNING, INTERRUPTED."""
    async with AsyncOrchestrator(limit=1, grace=GRACE) as orch:
        ahead = orch.submit(py("import time; print('busy', flush=True); time.sleep(100)"))
        waiting = orch.submit(py("print('must not run')"))
        await wait_for_line(ahead, "busy")
        assert waiting.state is TaskState.CREATED
        waiting.stop()
        assert await waiting.wait() is TaskState.INTERRUPTED
        ahead.stop()
        await ahead.wait()
        # The abandoned wait must not have leaked the only slot.
        after = orch.submit(py("print('next')"))
        assert await after.wait() is TaskState.COMPLETED
        assert after.slot == 0
    assert waiting.pid is None
    assert waiting.started_at is None
    assert edges(waiting) == [(TaskState.CREATED, TaskState.INTERRUPTED)]
    assert waiting.reason == "stopped"
    assert waiting.output == ""


async def test_stop_before_run_ends_the_task_without_a_process():
    """A task stopped before it ever ran is INTERRUPTED and settled; run() then spawns nothing."""
    task = OneshotTask(py("print('must not run')"))
    task.stop()
    assert task.done
    assert await task.wait() is TaskState.INTERRUPTED
    assert await task.run() is TaskState.INTERRUPTED
    assert task.pid is None
    assert edges(task) == [(TaskState.CREATED, TaskState.INTERRUPTED)]


async def test_stop_while_spawning_kills_the_whole_group_before_wait_returns(monkeypatch, tmp_path):
    """A stop that lands while the process is being spawned: the task never becomes RUNNING,
    and its group, children included, is gone by the time wait() returns.

    Regression: this path sent SIGKILL and returned at once, so a child that had not been
    scheduled since could still be alive after `await task.wait()`.
    """

    pid_file = tmp_path / "child.pid"
    parent = parent_of_a_sleeper(pid_file)

    class StopWhileSpawning(LocalRunner):
        async def start(self, *args: Any) -> Any:
            process = await super().start(*args)
            await wait_until(pid_file.exists, timeout=10)
            task.stop()
            return process

    task = OneshotTask(py(parent), grace=GRACE, runner=StopWhileSpawning())
    with anyio.fail_after(10):
        assert await task.run() is TaskState.INTERRUPTED
    child_pid = int(pid_file.read_text())
    assert edges(task) == [(TaskState.CREATED, TaskState.INTERRUPTED)]
    assert task.started_at is None
    assert task.pid is not None
    assert process_gone(child_pid)
    assert group_gone(task.pid)
    assert reaped(task.pid)


async def test_cancelled_run_kills_the_process_and_ends_in_shutdown():
    """Cancelling run() terminates the group (SIGKILL after grace), reaps, and re-raises."""
    task = OneshotTask(STUBBORN, grace=GRACE)
    with anyio.fail_after(10), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(task.run)
            await wait_for_line(task, "ready")
            scope.cancel()
    assert scope.cancelled_caught
    assert task.state is TaskState.INTERRUPTED
    assert task.reason == "shutdown"
    assert task.returncode == -9
    assert task.done
    assert group_gone(task.pid)
    assert reaped(task.pid)


async def test_cancelling_wait_leaves_the_task_running():
    """wait() is only a wait: giving up on it must not stop the task."""
    task = OneshotTask(py("import time; print('up', flush=True); time.sleep(100)"), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "up")
        with anyio.move_on_after(0.05) as scope:
            await task.wait()
        assert scope.cancelled_caught
        assert task.state is TaskState.RUNNING
        assert not task.done
        task.stop()
    assert task.state is TaskState.INTERRUPTED


async def test_timeout_interrupts_with_reason_timeout():
    """`timeout=` ends a task that runs too long as INTERRUPTED, reason "timeout"."""
    task = OneshotTask(py("import time; time.sleep(100)"), timeout=0.3, grace=GRACE)
    with anyio.fail_after(10):
        assert await task.run() is TaskState.INTERRUPTED
    assert task.reason == "timeout"
    assert group_gone(task.pid)


async def test_timeout_does_not_touch_a_task_that_ends_first():
    """A task that finishes within its timeout completes normally."""
    task = OneshotTask(py("print('quick')"), timeout=30)
    assert await task.run() is TaskState.COMPLETED
    assert task.reason == "exit"


# -- output ------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_stdout_and_stderr_are_drained_concurrently_byte_exact():
    """2 MiB to each stream, interleaved in blocks larger than a pipe: no deadlock, no loss."""
    code = """
        import random, sys
        size, step = 2 * 1024 * 1024, 100_000
        out = random.Random(1).randbytes(size)
        err = random.Random(2).randbytes(size)
        for i in range(0, size, step):
            sys.stderr.buffer.write(err[i:i + step]); sys.stderr.buffer.flush()
            sys.stdout.buffer.write(out[i:i + step]); sys.stdout.buffer.flush()
    """
    task = OneshotTask(py(code))
    events = record(task)
    with anyio.fail_after(15):
        assert await task.run() is TaskState.COMPLETED
    size = 2 * 1024 * 1024
    assert stream_bytes(events, "stdout") == random.Random(1).randbytes(size)
    assert stream_bytes(events, "stderr") == random.Random(2).randbytes(size)
    assert task.bytes_written == {"stdout": size, "stderr": size}


PAYLOAD_CODE = """
    import string, sys
    alphabet = (string.ascii_letters + string.digits).encode()
    sys.stdout.buffer.write((alphabet * (10_000_000 // len(alphabet) + 1))[:10_000_000])
"""


def ten_megabytes() -> str:
    alphabet = string.ascii_letters + string.digits
    return (alphabet * (10_000_000 // len(alphabet) + 1))[:10_000_000]


@pytest.mark.timeout(20)
async def test_ten_megabyte_line_without_newline_is_kept_whole_when_it_fits():
    """A huge line with no newline arrives exactly and, under a large bound, is kept whole."""
    task = OneshotTask(py(PAYLOAD_CODE), max_log_bytes=16 << 20)
    events = record(task)
    assert await task.run() is TaskState.COMPLETED
    expected = ten_megabytes()
    assert stream_bytes(events, "stdout") == expected.encode()
    assert task.output == expected
    assert task.output_dropped == 0


@pytest.mark.timeout(20)
async def test_ten_megabyte_line_keeps_its_tail_under_the_default_bound():
    """With the default 1 MiB bound the log is the newest 1 MiB and the rest is counted."""
    task = OneshotTask(py(PAYLOAD_CODE))
    events = record(task)
    assert await task.run() is TaskState.COMPLETED
    expected = ten_megabytes()
    assert sum(len(e.data) for e in events if e.kind == "output") == 10_000_000
    assert task.output == expected[-DEFAULT_MAX_LOG_BYTES:]
    assert task.output_dropped == 10_000_000 - DEFAULT_MAX_LOG_BYTES


async def test_multibyte_character_split_across_writes_is_decoded_whole():
    """A character whose bytes arrive in separate reads is decoded once, never as U+FFFD."""
    code = """
        import sys, time
        for byte in "é€😀".encode():
            sys.stdout.buffer.write(bytes([byte])); sys.stdout.buffer.flush()
            time.sleep(0.02)
    """
    task = OneshotTask(py(code))
    events = record(task)
    assert await task.run() is TaskState.COMPLETED
    outputs = [e for e in events if e.kind == "output"]
    assert "".join(e.text for e in outputs) == "é€😀"
    assert task.output == "é€😀"
    assert "\ufffd" not in task.output

    def whole(data: bytes) -> bool:
        try:
            data.decode()
        except UnicodeDecodeError:
            return False
        return True

    # The test means something only if some read did cut a character.
    assert not all(whole(e.data) for e in outputs)


async def test_invalid_utf8_becomes_replacement_characters():
    """Bytes that are not UTF-8 are shown as U+FFFD and do not stop the task."""
    code = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')"
    task = OneshotTask(py(code))
    events = record(task)
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "ok \ufffd\ufffd end\n"
    assert stream_bytes(events, "stdout") == b"ok \xff\xfe end\n"


async def test_nul_bytes_survive_in_data_and_text():
    """NUL bytes in output are ordinary characters: kept in `data` and `text`."""
    code = "import sys; sys.stdout.buffer.write(b'a\\x00b\\x00'); sys.stderr.write('c\\0')"
    task = OneshotTask(py(code))
    events = record(task)
    assert await task.run() is TaskState.COMPLETED
    assert stream_bytes(events, "stdout") == b"a\x00b\x00"
    assert task.read_output("stdout") == "a\x00b\x00"
    assert task.read_output("stderr") == "c\x00"


async def test_output_is_bounded_and_accounted_at_every_chunk():
    """`output` never exceeds max_log_bytes and retained + dropped is all that was written."""
    code = """
        import sys
        for i in range(400):
            sys.stdout.write(chr(97 + i % 26) * ((i * 53) % 300 + (2500 if i % 97 == 0 else 0)))
            sys.stdout.flush()
    """
    expected = "".join(
        chr(97 + i % 26) * ((i * 53) % 300 + (2500 if i % 97 == 0 else 0)) for i in range(400)
    )
    bound = 1000
    task = OneshotTask(py(code), max_log_bytes=bound)
    seen = 0
    problems: list[str] = []

    def check(event: TaskEvent) -> None:
        nonlocal seen
        if event.kind != "output":
            return
        seen += len(event.data)
        retained = len(task.output)
        if retained > bound or retained + task.output_dropped != seen:
            problems.append(f"retained {retained} dropped {task.output_dropped} seen {seen}")

    task.listeners.append(check)
    assert await task.run() is TaskState.COMPLETED
    assert problems == []
    assert seen == len(expected)
    assert task.output == expected[-bound:]
    assert task.output_dropped == len(expected) - bound


# -- how a task ends ---------------------------------------------------------------------


async def test_exit_zero_completes_with_reason_exit():
    """Exit status 0 is COMPLETED, reason "exit"."""
    task = OneshotTask(py("pass"))
    assert await task.run() is TaskState.COMPLETED
    assert (task.returncode, task.reason) == (0, "exit")


async def test_nonzero_exit_fails_with_its_returncode():
    """Exit status 3 is FAILED, returncode 3, reason "exit"."""
    task = OneshotTask(py("import sys; sys.exit(3)"))
    assert await task.run() is TaskState.FAILED
    assert (task.returncode, task.reason) == (3, "exit")


async def test_death_by_signal_fails_with_reason_signal():
    """A process killed by a signal (not by us) is FAILED, returncode -signal, reason "signal"."""
    task = OneshotTask(py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert await task.run() is TaskState.FAILED
    assert (task.returncode, task.reason) == (-9, "signal")


async def test_missing_cwd_fails_from_created_without_raising(tmp_path):
    """A spawn error is a FAILED state straight from CREATED with the error kept, no raise."""
    missing = tmp_path / "no" / "such" / "dir"
    task = OneshotTask(py("pass"), cwd=missing)
    assert await task.run() is TaskState.FAILED
    assert await task.wait() is TaskState.FAILED
    assert edges(task) == [(TaskState.CREATED, TaskState.FAILED)]
    assert task.reason == "spawn error"
    assert task.error is not None
    assert "FileNotFoundError" in task.error
    assert task.pid is None
    assert task.returncode is None
    assert task.ended_at is not None
    assert task.done


async def test_missing_program_in_argv_mode_fails_from_created():
    """An argv whose program does not exist cannot spawn: FAILED, reason "spawn error"."""
    task = OneshotTask(["oneshot-nb-no-such-program-1f3a", "--flag"])
    assert await task.run() is TaskState.FAILED
    assert edges(task) == [(TaskState.CREATED, TaskState.FAILED)]
    assert task.reason == "spawn error"
    assert "oneshot-nb-no-such-program-1f3a" in (task.error or "")


async def test_missing_program_in_shell_mode_fails_with_exit_127():
    """Through the shell the spawn succeeds and the shell reports 127: a normal FAILED exit."""
    task = OneshotTask("oneshot-nb-no-such-program-1f3a")
    assert await task.run() is TaskState.FAILED
    assert (task.returncode, task.reason) == (127, "exit")
    assert "not found" in task.read_output("stderr")


async def test_await_task_is_wait():
    """`await task` returns the final state like `await task.wait()`."""
    task = OneshotTask(py("print('x')"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        assert await task is TaskState.COMPLETED
    assert await task is TaskState.COMPLETED
    assert await task.wait() is TaskState.COMPLETED


async def test_a_cwd_that_is_not_a_directory_is_a_spawn_error(tmp_path):
    """A cwd the OS cannot enter fails the task; it does not raise from run()."""
    (tmp_path / "file").write_text("")
    task = OneshotTask(py("pass"), cwd=tmp_path / "file")
    assert await task.run() is TaskState.FAILED
    assert task.reason == "spawn error"
    assert edges(task) == [(TaskState.CREATED, TaskState.FAILED)]


async def test_wait_for_returns_once_the_task_reaches_a_state():
    """wait_for("RUNNING") returns when the process has started; on a final task at once."""
    task = OneshotTask(py("import time; time.sleep(100)"), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        with anyio.fail_after(10):
            assert await task.wait_for("RUNNING") is TaskState.RUNNING
        assert task.pid is not None
        task.stop()
    assert await task.wait_for(TaskState.RUNNING) is TaskState.INTERRUPTED


async def test_a_task_runs_only_once():
    """Running a task a second time is a programming error, not a second process."""
    task = OneshotTask(py("pass"))
    await task.run()
    with pytest.raises(RuntimeError, match="already been run"):
        await task.run()


# -- idle detection ----------------------------------------------------------------------


async def test_silence_goes_idle_on_time_and_output_resumes_running(tmp_path):
    """No output for idle_after: IDLE, not before, and without more output to wait for;
    output again: RUNNING, on the very chunk that came."""
    idle_after = 0.3
    go = tmp_path / "go"
    code = f"""
        import os, time
        print("first", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        print("second", flush=True)
    """
    task = OneshotTask(py(code), idle_after=idle_after)
    events = record(task)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(lambda: task.state is TaskState.IDLE, timeout=idle_after + 5)
        go.touch()
    assert await task.wait() is TaskState.COMPLETED
    assert (TaskState.RUNNING, TaskState.IDLE) in edges(task)
    assert (TaskState.IDLE, TaskState.RUNNING) in edges(task)
    first = next(e for e in events if e.kind == "output" and "first" in e.text)
    second = next(e for e in events if e.kind == "output" and "second" in e.text)
    went_idle = next(
        e
        for e in events
        if e.kind == "transition" and e.target is TaskState.IDLE and e.time > first.time
    )
    assert idle_after - 0.02 <= went_idle.time - first.time
    woke = next(e for e in events if e.kind == "transition" and e.time > went_idle.time)
    assert (woke.source, woke.target, woke.event) == (
        TaskState.IDLE,
        TaskState.RUNNING,
        "detect_activity",
    )
    assert events[events.index(woke) + 1] is second  # woken by that output, at once
    assert edges(task)[-1] == (TaskState.RUNNING, TaskState.COMPLETED)


async def test_task_that_exits_while_idle_completes_from_idle(tmp_path):
    """A silent process that then exits 0 goes IDLE -> COMPLETED."""
    go = tmp_path / "go"  # it exits once this exists
    task = OneshotTask(
        py(f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)"),
        idle_after=0.2,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(lambda: task.state is TaskState.IDLE)
        go.touch()
    assert await task.wait() is TaskState.COMPLETED
    assert edges(task)[-1] == (TaskState.IDLE, TaskState.COMPLETED)


async def test_idle_after_none_disables_idle_detection():
    """idle_after=None means a silent task stays RUNNING."""
    task = OneshotTask(py("import time; time.sleep(0.4)"), idle_after=None)
    assert await task.run() is TaskState.COMPLETED
    assert edges(task) == [
        (TaskState.CREATED, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.COMPLETED),
    ]


# -- records -----------------------------------------------------------------------------


async def test_task_records_what_happened(tmp_path):
    """id, name, command, cwd, timestamps in order, returncode, reason, timed transitions."""
    command = py("import sys; sys.exit(2)")
    task = OneshotTask(command, cwd=tmp_path)
    assert isinstance(task.id, str) and task.id
    assert task.command == command
    assert task.cwd == str(tmp_path)
    assert (task.started_at, task.ended_at, task.returncode, task.reason) == (
        None,
        None,
        None,
        None,
    )
    assert task.state is TaskState.CREATED
    assert await task.run() is TaskState.FAILED
    assert task.created_at <= task.started_at <= task.ended_at
    assert task.returncode == 2
    assert task.reason == "exit"
    assert task.elapsed == task.ended_at - task.started_at
    assert [(t.event, t.source, t.target, t.reason) for t in task.transitions] == [
        ("start", TaskState.CREATED, TaskState.RUNNING, None),
        ("fail", TaskState.RUNNING, TaskState.FAILED, "exit"),
    ]
    start, fail = task.transitions
    assert task.started_at <= start.time <= fail.time
    assert fail.time == task.ended_at


def test_default_name_is_derived_from_the_command():
    """Without `name=`, the command's words (whitespace collapsed, 40 characters at most)."""
    assert OneshotTask("echo   hello\n  world").name == "echo hello world"
    assert OneshotTask(["ls", "-l", "/tmp"]).name == "ls -l /tmp"
    long = OneshotTask("echo " + "x" * 100).name
    assert len(long) == 40 and long.endswith("…") and long.startswith("echo xxx")
    assert OneshotTask("true", name="mine", task_id="id-1").name == "mine"
    assert OneshotTask("true", task_id="id-1").id == "id-1"


def test_task_ids_are_unique():
    """Ids key the registry and the store; two tasks must never share one."""
    assert len({OneshotTask("true").id for _ in range(200)}) == 200


# -- bad arguments -----------------------------------------------------------------------


V, T = ValueError, TypeError


@pytest.mark.parametrize(
    ("command", "options", "error", "message"),
    [
        ("", {}, V, "command must not be empty"),
        ("   \n", {}, V, "command must not be empty"),
        ([], {}, V, "command must not be empty"),
        (["ls", 3], {}, T, "command arguments must be str, got 3"),
        (b"ls", {}, T, "command must be a str or a sequence of str, got bytes"),
        (None, {}, T, "command must be a str or a sequence of str, got NoneType"),
        (5, {}, T, "command must be a str or a sequence of str, got int"),
        ("true", {"idle_after": -1}, V, "idle_after must be a number of seconds > 0"),
        ("true", {"idle_after": 0}, V, "idle_after"),
        ("true", {"idle_after": float("nan")}, V, "idle_after .* got nan"),
        ("true", {"idle_after": True}, T, "idle_after .* got bool"),
        ("true", {"timeout": -0.5}, V, "timeout"),
        ("true", {"timeout": 0}, V, "timeout"),
        ("true", {"timeout": "5"}, T, "timeout .* got str"),
        ("true", {"timeout": float("nan")}, V, r"timeout must be .* \(None or inf: never\)"),
        ("true", {"grace": -1}, V, "grace must be a finite number of seconds >= 0, got -1"),
        ("true", {"grace": None}, T, "grace"),
        ("true", {"grace": float("inf")}, V, "grace must be a finite number .* got inf"),
        ("true", {"grace": 1e400}, V, "grace must be a finite number .* got inf"),
        ("true", {"grace": float("nan")}, V, "grace must be a finite number .* got nan"),
        ("true", {"grace": 10**400}, V, "grace must be a finite number .* int of 401 digits"),
        ("true", {"timeout": -(10**400)}, V, "timeout must be .* int of 401 digits"),
        ("true", {"max_log_bytes": -1}, V, "max_log_bytes"),
        ("true", {"max_log_bytes": 1.5}, T, "max_log_bytes"),
        ("true", {"env": {1: "x"}}, T, "env"),
        ("true", {"env": {"KEY": 1}}, T, "env"),
        ("true", {"env": {"": "x"}}, V, "env"),
        ("true", {"env": {"A=B": "x"}}, V, "env"),
        ("true", {"env": ["A"]}, T, "env must be a mapping"),
        ("true", {"name": 5}, T, "name must be a str, got int"),
        ("true", {"name": " "}, V, "name must not be empty"),
        ("true", {"cwd": 3}, T, "cwd must be a str or a path, got int"),
        ("true", {"cwd": "a\0b"}, V, "cwd must not contain a NUL"),
        ("true", {"task_id": 7}, T, "task_id"),
        ("echo a\0b", {}, V, "command"),
        (["echo", "a\0b"], {}, V, "command"),
    ],
)
def test_bad_arguments_raise_naming_them(command, options, error, message):
    """A bad argument is refused up front: TypeError for a wrong type, ValueError for a
    value out of range, the message naming the argument and the rule."""
    with pytest.raises(error, match=message):
        OneshotTask(command, **options)


def test_none_disables_and_zero_grace_is_allowed():
    """idle_after/timeout None mean "never"; grace 0 means SIGKILL at once."""
    task = OneshotTask("true", idle_after=None, timeout=None, grace=0, max_log_bytes=0)
    assert (task.idle_after, task.timeout, task.grace, task.max_log_bytes) == (None, None, 0, 0)


def test_bad_arguments_start_nothing():
    """Refused arguments must not spawn a process."""
    calls = []

    class Recording(LocalRunner):
        async def start(self, *args: Any) -> Any:
            calls.append(args)

    for bad in ({"idle_after": -1}, {"env": {"K": 2}}, {"grace": -1}):
        with pytest.raises((TypeError, ValueError)):
            OneshotTask("true", runner=Recording(), **bad)
    assert calls == []


def test_a_group_of_zombies_only_counts_as_gone():
    """A stop waits for the group to go; members that have exited and only wait to be
    reaped (late, by a slow init) must not make it wait out the whole grace."""
    import subprocess

    from oneshot_nb.runners.terminate import ProcessGroup

    child = subprocess.Popen(["true"], start_new_session=True)
    try:
        eventually(lambda: process_gone(child.pid))  # exited, not reaped: a zombie
        assert group_exists(child.pid)  # the group still exists for the kernel...
        assert not ProcessGroup(child.pid).alive()  # ...but nothing in it runs
    finally:
        child.wait()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_stop_ends_even_when_a_daemon_outside_the_group_holds_the_pipes(tmp_path):
    """A command that starts a daemon in a session of its own leaves our pipes open in a
    process we may not signal; a stop must still end the task instead of hanging."""
    pidfile = tmp_path / "daemon.pid"
    command = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & echo started; sleep 30"
    task = OneshotTask(command, grace=0.3)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(task.run)
            await wait_for_line(task, "started")
            await wait_until(pidfile.exists)
            task.stop()
            with anyio.fail_after(10):
                assert await task.wait() is TaskState.INTERRUPTED
        assert task.output == "started\n"
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# -- waiting for exit without a pidfd ------------------------------------------------------


@pytest.fixture
def no_pidfd(monkeypatch):
    """A system without pidfds (macOS, a Linux before 5.3, a sandbox that refuses)."""

    def refuse(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refuse, raising=False)


async def test_without_a_pidfd_exit_codes_and_stops_still_hold(no_pidfd):
    """Where the loop cannot watch a pidfd a thread waits for the process: exit codes
    come back, a stopped process group dies and is reaped."""
    failing = OneshotTask(py("import sys; sys.exit(3)"))
    assert await failing.run() is TaskState.FAILED
    assert failing.returncode == 3
    stubborn = OneshotTask(STUBBORN, grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stubborn.run)
        await wait_until(lambda: "ready" in stubborn.output)
        stubborn.stop()
    assert stubborn.state is TaskState.INTERRUPTED
    assert stubborn.returncode == -signal.SIGKILL
    assert reaped(stubborn.pid) and group_gone(stubborn.pid)


@pytest.mark.timeout(20)
async def test_without_a_pidfd_a_quick_task_is_not_held_up_by_40_slow_ones(no_pidfd):
    """One waiting thread per process, not anyio's default 40: the 41st process to run
    is reaped when it exits, not when one of the 40 before it does. (A process is
    waited for once its output has ended: these close theirs and go on.)"""
    async with AsyncOrchestrator(limit=50, grace=GRACE) as orch:
        slow = [orch.submit(["sh", "-c", "exec >&- 2>&-; sleep 60"]) for _ in range(40)]
        await wait_until(lambda: all(t.state is TaskState.RUNNING for t in slow), 10)
        await anyio.sleep(1)  # their output ends: each task now waits for its process
        quick = orch.submit(["true"])
        with anyio.fail_after(5):
            assert await quick.wait() is TaskState.COMPLETED
        orch.stop_all()


@pytest.mark.timeout(15)
async def test_the_command_is_reaped_when_it_exits_though_a_daemon_holds_its_pipes(tmp_path):
    """A command that leaves a daemon (own session) holding its output pipes is reaped
    as soon as it exits, not left a zombie until the pipes end; the task ends with its
    exit code once they do."""
    go = tmp_path / "go"  # the daemon ends once this exists
    daemon = shlex.quote(f"until [ -e {shlex.quote(str(go))} ]; do sleep 0.01; done")
    task = OneshotTask(f"setsid sh -c {daemon} & echo started; exit 3")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(task.run)
            await wait_until(lambda: "started" in task.output)
            # Reaped, its /proc entry is gone (asked without waitpid, which would reap it).
            await wait_until(lambda: not pid_exists(task.pid))
            assert task.state is TaskState.RUNNING  # the daemon still holds the pipes
            go.touch()
    finally:
        go.touch()
    assert task.state is TaskState.FAILED
    assert task.returncode == 3


@pytest.mark.timeout(15)
async def test_a_stop_keeps_output_still_in_the_pipe_while_the_store_holds_the_reader(
    tmp_path,
):
    """A stop while the reader waits at the output gate (the store's disk lagging) and
    the pipe still holds output: that output is read once the gate opens, not thrown
    away because nothing was read for a while after the group died."""
    marker = tmp_path / "second part written"
    task = OneshotTask(
        py(
            "import os, sys, time; out = sys.stdout.buffer\n"
            "out.write(b'a' * 1024); out.flush(); time.sleep(0.2)\n"
            "out.write(b'b' * 40960); out.flush()\n"
            f"open({str(marker)!r}, 'w').close(); time.sleep(100)"
        ),
        grace=GRACE,
    )
    gate_open = anyio.Event()

    async def slow_disk() -> None:
        await gate_open.wait()

    task.output_gate = slow_disk
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(marker.exists)
        task.stop()
        await wait_until(lambda: group_gone(task.pid))
        await anyio.sleep(2 * DRAIN_POLL)  # the reader has been held this long: no output
        gate_open.set()
    assert task.state is TaskState.INTERRUPTED
    assert task.bytes_written["stdout"] == 1024 + 40960


# -- stops that something outside the group or a stopped process would hold up ------------


async def test_a_stop_ends_while_a_setsid_daemon_keeps_writing_to_the_pipes(tmp_path):
    """`setsid` takes a daemon out of the task's group: a stop cannot reach it, and
    it keeps the pipes open and busy. The stop must still end within grace plus a
    bounded drain, say that the output was cut, and leave the daemon alone.

    Regression: the stop waited for the pipes to fall silent, so wait() and leaving
    `async with AsyncOrchestrator()` never returned."""
    pid_file = tmp_path / "daemon.pid"
    daemon = f"""
        import os, sys, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        while True:
            print("d", flush=True)
            time.sleep(0.05)
    """
    command = py(
        f"""
        import subprocess, time
        subprocess.Popen({py(daemon)!r}, start_new_session=True)
        print("parent up", flush=True)
        time.sleep(100)
        """
    )
    try:
        async with AsyncOrchestrator(grace=GRACE) as orch:
            task = orch.submit(command)
            await wait_for_line(task, "parent up")
            await wait_until(lambda: "d\nd\n" in task.output)
            task.stop()
            with anyio.fail_after(GRACE + DRAIN_LIMIT + 3):
                assert await task.wait() is TaskState.INTERRUPTED
        assert task.output_cut
        assert task.output.endswith(OUTPUT_CUT_NOTE.decode())
        daemon_pid = int(pid_file.read_text())
        assert not process_gone(daemon_pid)  # outside the group: not ours to stop
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def test_a_stop_that_drains_in_time_says_nothing_was_cut():
    task = OneshotTask(py("import time; print('up', flush=True); time.sleep(100)"), grace=GRACE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "up")
        task.stop()
    assert task.state is TaskState.INTERRUPTED
    assert not task.output_cut
    assert task.output == "up\n"


async def test_a_stopped_process_gets_sigcont_and_acts_on_sigterm_before_the_grace():
    """A process stopped with SIGSTOP holds SIGTERM pending; the stop sends SIGCONT
    after SIGTERM so that it runs its handler (exit 7 here) instead of being killed
    once the grace runs out."""
    task = OneshotTask(
        py(
            """
            import signal, sys, time
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
            print("ready", flush=True)
            time.sleep(100)
            """
        ),
        grace=5,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "ready")
        os.kill(task.pid, signal.SIGSTOP)
        await wait_until(lambda: process_state(task.pid) == "T")
        started = time.monotonic()
        task.stop()
        with anyio.fail_after(3):  # well before the grace's SIGKILL
            await task.wait()
    assert task.returncode == 7
    assert time.monotonic() - started < 3


async def test_run_with_a_bad_slots_object_raises_and_leaves_the_task_unrun():
    """Regression: a bad `slots` object killed the task with an engine traceback and
    ended it INTERRUPTED/shutdown. Now it is a TypeError naming `slots`, and the task
    can still be run."""
    task = OneshotTask(py("pass"))
    with pytest.raises(TypeError, match="slots must be a Slots, got object"):
        await task.run(object())  # type: ignore[arg-type]
    assert task.state is TaskState.CREATED
    assert await task.run() is TaskState.COMPLETED


async def test_a_stop_is_not_held_up_by_a_flooding_daemon_while_the_store_lags(tmp_path):
    """A setsid daemon writing as fast as it can, and a reader slowed at the output gate
    (a lagging disk): once everything the group wrote is read, the pipes are closed,
    instead of reading the daemon's flood for as long as the gate keeps the reader
    waiting. Regression: such a stop took several seconds and stored ~800 MB."""
    pid_file = tmp_path / "daemon.pid"
    daemon = f"""
        import os, sys
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        line = b"flood " * 1000 + b"\\n"
        while True:
            sys.stdout.buffer.write(line)
    """
    command = py(
        f"""
        import subprocess, time
        subprocess.Popen({py(daemon)!r}, start_new_session=True)
        print("parent up", flush=True)
        time.sleep(100)
        """
    )
    task = OneshotTask(command, grace=0)

    async def slow_disk() -> None:
        await anyio.sleep(0.02)

    task.output_gate = slow_disk
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(task.run)
            await wait_until(lambda: pid_file.exists() and "flood" in task.output)
            task.stop()
            with anyio.fail_after(DRAIN_LIMIT):
                await task.wait()
        assert task.output_cut
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_relative_cwd_when_the_current_directory_is_gone_is_refused(tmp_path, monkeypatch):
    """Regression: abspath() of a relative cwd raised a raw FileNotFoundError once the
    current directory had been deleted. Without a cwd the task inherits it."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(ValueError, match=r"cwd '\.' is relative and the current directory"):
        OneshotTask("true", cwd=".")
    assert OneshotTask("true").cwd is None


def test_tasks_submitted_in_the_same_environment_share_one_snapshot(monkeypatch):
    """The kernel's environment is fixed at submit; while it does not change, queued
    tasks share one copy of it instead of holding one each."""
    first, second = OneshotTask("true"), OneshotTask("true")
    assert first._environ is second._environ
    monkeypatch.setenv("ONESHOT_PROBE", "changed")
    third = OneshotTask("true")
    assert third._environ is not first._environ
    assert third._environ["ONESHOT_PROBE"] == "changed"
    assert "ONESHOT_PROBE" not in first._environ
