"""The Dask runner with a real LocalCluster of two workers (shared by the module): the
engine's behaviours (output, states, stop, timeout, env, limit, place) as the local
runner has them, and the worker's bounded outbox."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest
from distributed import Client
from helpers import eventually, py, wait_for_line
from helpers.dask import (
    our_children,
    read_pids,
    rss_mib,
    scheduler_tasks,
    sleeper_with_child,
    worker_pids,
)
from helpers.processes import group_gone, kill_group, process_gone

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.runners import LocalRunner
from oneshot_nb.runners.dask import DaskRunner

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

GRACE = 0.5

# About 5 MB of text on stdout (ASCII and two-, three- and four-byte characters, lines
# of all lengths, some without their newline) and about 100 KB of binary on stderr,
# interleaved: the same every run.
MIXED_OUTPUT = """
import random, sys
rng = random.Random(7)
words = ["a", "h\\u00e9llo", "\\u65e5\\u672c\\u8a9e", "\\U0001f642", "x" * 100, "\\t", ""]
out, err = sys.stdout.buffer, sys.stderr.buffer
written = 0
while written < 5_000_000:
    line = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 50)))
    data = (line + ("\\n" if rng.random() < 0.9 else "")).encode()
    out.write(data)
    written += len(data)
    if rng.random() < 0.004:
        out.flush()
        err.write(rng.randbytes(rng.randrange(1, 5000)))
        err.flush()
"""


class BytesListener:
    """An orchestrator listener that keeps each task's raw output, by stream."""

    wants_text = False

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytearray] = defaultdict(bytearray)

    def __call__(self, event: TaskEvent) -> None:
        if event.kind == "output":
            assert event.stream is not None
            self.data[event.task_id, event.stream] += event.data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- output -----------------------------------------------------------------------------------


async def test_output_arrives_byte_for_byte_as_the_local_runner_gives_it(
    shared_runner: DaskRunner,
) -> None:
    """A reply lost, repeated or cut in the middle of a character between the worker's
    outbox and the kernel would change the output: it must be the bytes the command
    wrote, in the log and in the events, as the local runner gives them."""
    done = subprocess.run(py(MIXED_OUTPUT), capture_output=True, check=True)
    assert len(done.stdout) > 5_000_000
    assert 50_000 < len(done.stderr) < 300_000
    listener = BytesListener()
    async with AsyncOrchestrator(runner=shared_runner, max_log_bytes=16 << 20) as orch:
        orch.listeners.append(listener)
        remote = orch.submit(py(MIXED_OUTPUT))
        local = orch.submit(py(MIXED_OUTPUT), runner=LocalRunner())
        await remote.wait()
        await local.wait()
    for task in (remote, local):
        assert task.state is TaskState.COMPLETED, task.error
        assert sha(task.read_output("stdout").encode()) == sha(done.stdout)
        assert task.read_output("stderr") == done.stderr.decode(errors="replace")
        assert sha(listener.data[task.id, "stdout"]) == sha(done.stdout)
        assert sha(listener.data[task.id, "stderr"]) == sha(done.stderr)
        assert task.bytes_written == {"stdout": len(done.stdout), "stderr": len(done.stderr)}
    assert remote.place is not None and remote.place.runner == "dask"


async def test_a_slow_kernel_slows_the_command_not_the_workers_memory(
    shared_runner: DaskRunner,
) -> None:
    """The worker keeps at most an outbox of unsent output per stream, and stops reading
    the pipe past it: a kernel that reads nothing for seconds must leave the command
    blocked in its write, not 200 MiB in the worker's memory; and nothing is lost."""
    total = 200 << 20
    code = f"""
        import sys
        block = b"x" * 65536
        for _ in range({total // 65536}):
            sys.stdout.buffer.write(block)
    """
    pids = worker_pids(shared_runner.client)
    base = {address: rss_mib(pid) for address, pid in pids.items()}
    peak = dict(base)
    sampling = True

    def sample() -> None:
        while sampling:
            for address, pid in pids.items():
                peak[address] = max(peak[address], rss_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        async with AsyncOrchestrator(runner=shared_runner) as orch:
            task = orch.submit(py(code))
            await task.wait_for("RUNNING")
            time.sleep(2.5)  # the kernel's loop is busy: nothing is read meanwhile
            with open(f"/proc/{task.pid}/io") as f:
                written = next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
            assert written < 32 << 20, f"the command wrote {written} bytes unread"
            await task.wait()
    finally:
        sampling = False
        sampler.join()
    assert task.state is TaskState.COMPLETED, task.error
    assert task.bytes_written["stdout"] == total
    assert task.place is not None
    grown = peak[task.place.host] - base[task.place.host]
    assert grown < 32, f"the worker grew by {grown:.0f} MiB"


# -- states -----------------------------------------------------------------------------------


async def test_silence_and_output_make_idle_and_running_again(shared_runner: DaskRunner) -> None:
    """Output that comes in long polls must still mark activity as it arrives: a print,
    0.8 s of silence and a print are RUNNING, IDLE, RUNNING again, then COMPLETED."""
    code = "import time; print('a', flush=True); time.sleep(0.8); print('b', flush=True)"
    async with AsyncOrchestrator(runner=shared_runner, idle_after=0.3) as orch:
        task = orch.submit(py(code))
        await task.wait()
    moves = [(t.source, t.target) for t in task.transitions]
    assert moves == [
        (TaskState.CREATED, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.IDLE),
        (TaskState.IDLE, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.COMPLETED),
    ]
    assert task.output == "a\nb\n"


async def test_a_nonzero_exit_fails_with_its_code(shared_runner: DaskRunner) -> None:
    """The worker's exit code must reach the task: `exit 3` is FAILED, "exit", 3."""
    async with AsyncOrchestrator(runner=shared_runner) as orch:
        task = orch.submit("exit 3")
        await task.wait()
    assert (task.state, task.reason, task.returncode) == (TaskState.FAILED, "exit", 3)


async def test_a_missing_directory_fails_the_spawn_naming_the_worker(
    shared_runner: DaskRunner,
) -> None:
    """A command the worker cannot start is a spawn error, as a local one is, with the
    local exception's name and the worker it could not start on."""
    async with AsyncOrchestrator(runner=shared_runner) as orch:
        task = orch.submit("true", cwd="/nonexistent-dir")
        await task.wait()
    assert (task.state, task.reason) == (TaskState.FAILED, "spawn error")
    assert task.error is not None and task.error.startswith("FileNotFoundError:")
    assert "/nonexistent-dir" in task.error
    assert any(address in task.error for address in worker_pids(shared_runner.client))


async def test_wait_returns_the_state_and_the_place_names_the_worker(
    shared_runner: DaskRunner,
) -> None:
    """The history records where a command ran: runner "dask", the worker's address as
    its host, and the command's pid there (the group's id), with its start time."""
    async with AsyncOrchestrator(runner=shared_runner) as orch:
        task = orch.submit(py("print('hi')"))
        assert await task.wait() is TaskState.COMPLETED
    place = task.place
    assert place is not None
    assert place.runner == "dask"
    assert place.host in worker_pids(shared_runner.client)
    assert isinstance(place.pid, int) and place.pid == task.pid
    assert isinstance(place.start, int)


# -- stop and timeout -------------------------------------------------------------------------


async def test_stop_ends_a_term_ignoring_group_after_the_grace(
    shared_runner: DaskRunner, tmp_path: Path
) -> None:
    """The worker runs the termination policy: a command that ignores SIGTERM, with a
    child that does too, is killed once the grace is over, and nothing of its group is
    left when the task has ended."""
    pid_file = tmp_path / "pids"
    async with AsyncOrchestrator(runner=shared_runner, grace=GRACE) as orch:
        task = orch.submit(py(sleeper_with_child(pid_file, ignore_term=True)))
        await wait_for_line(task, "up")
        leader, child = read_pids(pid_file)
        try:
            assert leader == task.pid
            began = time.monotonic()
            task.stop()
            await task.wait()
            took = time.monotonic() - began
            assert (task.state, task.reason) == (TaskState.INTERRUPTED, "stopped")
            assert GRACE * 0.8 <= took <= 3.0
            assert group_gone(leader)
            assert process_gone(child)
        finally:
            kill_group(leader)


async def test_timeout_interrupts_the_command(shared_runner: DaskRunner) -> None:
    """The deadline is the kernel's: `timeout=0.5` on `sleep 30` is INTERRUPTED
    "timeout", well before the sleep would end."""
    async with AsyncOrchestrator(runner=shared_runner) as orch:
        task = orch.submit("sleep 30", timeout=0.5)
        with anyio.fail_after(5):
            await task.wait()
    assert (task.state, task.reason) == (TaskState.INTERRUPTED, "timeout")
    assert task.place is not None and group_gone(task.place.pid)


# -- environment and directory ----------------------------------------------------------------


async def test_the_command_gets_the_workers_environment_and_the_tasks_own(
    shared_runner: DaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote command must see where it runs (ONESHOT_WORKER = its place's host), its
    task id, slot and attempt, and the env= given; not the kernel's own environment, which means
    nothing on another machine (a variable set in the kernel after the workers started
    does not reach it)."""
    monkeypatch.setenv("ONESHOT_TEST_KERNEL_ONLY", "kernel")
    names = [
        "ONESHOT_WORKER",
        "ONESHOT_TASK_ID",
        "ONESHOT_SLOT",
        "ONESHOT_ATTEMPT",
        "ONESHOT_TEST_GIVEN",
        "ONESHOT_TEST_KERNEL_ONLY",
    ]
    code = f"import json, os; print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))"
    async with AsyncOrchestrator(limit=2, runner=shared_runner) as orch:
        task = orch.submit(py(code), env={"ONESHOT_TEST_GIVEN": "given"})
        await task.wait()
    assert task.state is TaskState.COMPLETED, task.error
    seen = json.loads(task.output)
    assert task.place is not None
    assert seen == {
        "ONESHOT_WORKER": task.place.host,
        "ONESHOT_TASK_ID": task.id,
        "ONESHOT_SLOT": str(task.slot),
        "ONESHOT_ATTEMPT": "1",
        "ONESHOT_TEST_GIVEN": "given",
        "ONESHOT_TEST_KERNEL_ONLY": None,
    }
    assert task.slot in (0, 1)


async def test_the_command_runs_in_the_directory_asked_or_the_kernels(
    shared_runner: DaskRunner, tmp_path: Path
) -> None:
    """cwd= is where the command runs; without it, the kernel's directory, when the
    worker has it (here it does: the worker is on this machine)."""
    code = py("import os; print(os.getcwd())")
    async with AsyncOrchestrator(runner=shared_runner) as orch:
        asked = orch.submit(code, cwd=str(tmp_path))
        kernels = orch.submit(code)
        await orch.wait_all()
    assert asked.output == f"{tmp_path}\n"
    assert kernels.output == f"{os.getcwd()}\n"


# -- the limit --------------------------------------------------------------------------------


async def test_the_limit_holds_across_the_workers(shared_runner: DaskRunner) -> None:
    """Six half-second tasks, limit 2, two workers: never more than two run at once,
    two do at some point, tasks that overlap have different slots, all complete."""
    most = 0
    async with AsyncOrchestrator(limit=2, runner=shared_runner) as orch:
        tasks = [orch.submit("sleep 0.5") for _ in range(6)]
        while not all(task.done for task in tasks):
            most = max(most, orch.statistics().active)
            await anyio.sleep(0.01)
    assert most == 2
    assert all(task.state is TaskState.COMPLETED for task in tasks), [t.error for t in tasks]
    for one in tasks:
        for other in tasks:
            assert one.started_at is not None and one.ended_at is not None
            assert other.started_at is not None and other.ended_at is not None
            overlap = one.started_at < other.ended_at and other.started_at < one.ended_at
            if one is not other and overlap:
                assert one.slot != other.slot


# -- the cluster named --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        ("local:0", ValueError),
        ("local:x", ValueError),
        ("local:-1", ValueError),
        ("nonsense", ValueError),
        ("tcp://host", ValueError),
        (42, TypeError),
        (None, TypeError),
    ],
)
def test_a_bad_cluster_is_one_line_error(cluster: object, error: type[Exception]) -> None:
    """A mistyped cluster must be refused before anything starts, in one line that
    shows what was given."""
    with pytest.raises(error) as caught:
        DaskRunner(cluster)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert repr(cluster) in message or type(cluster).__name__ in message


def test_an_unreachable_scheduler_is_an_oserror_within_the_timeout() -> None:
    """A scheduler that does not answer must not hold the cell for distributed's 30 s:
    OSError within the timeout given, saying it cannot reach it, and nothing left."""
    before = our_children()
    began = time.monotonic()
    with pytest.raises(OSError, match=r"^cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1"):
        DaskRunner("tcp://127.0.0.1:1", timeout=1)
    assert time.monotonic() - began < 5
    eventually(lambda: our_children() <= before)


# -- ends the kernel's way --------------------------------------------------------------------


async def test_leaving_the_orchestrator_ends_remote_commands(
    shared_runner: DaskRunner, tmp_path: Path
) -> None:
    """No process outlives the orchestrator: leaving its block interrupts a remote
    command ("shutdown") and its group, child included, is gone once it has closed."""
    pid_file = tmp_path / "pids"
    async with AsyncOrchestrator(runner=shared_runner, grace=GRACE) as orch:
        task = orch.submit(py(sleeper_with_child(pid_file)))
        await wait_for_line(task, "up")
        leader, child = read_pids(pid_file)
    try:
        assert (task.state, task.reason) == (TaskState.INTERRUPTED, "shutdown")
        assert group_gone(leader) and process_gone(child)
    finally:
        kill_group(leader)


async def test_shutdown_now_ends_remote_commands_without_the_loop(
    shared_runner: DaskRunner, tmp_path: Path
) -> None:
    """At interpreter exit the kernel's loop runs no more: shutdown_now, blocking, must
    still end a remote command that ignores SIGTERM (the client's own loop carries the
    requests), within its cap on the grace."""
    pid_file = tmp_path / "pids"
    orch = AsyncOrchestrator(runner=shared_runner)  # grace 5 s: the cap ends it sooner
    task = orch.submit(py(sleeper_with_child(pid_file, ignore_term=True)))
    await wait_for_line(task, "up")
    leader, child = read_pids(pid_file)
    try:
        began = time.monotonic()
        orch.shutdown_now(max_grace=0.5)
        eventually(lambda: group_gone(leader) and process_gone(child), timeout=3)
        assert time.monotonic() - began < 3
        assert (task.state, task.reason) == (TaskState.INTERRUPTED, "shutdown")
        await task.wait()
    finally:
        kill_group(leader)
        await orch.aclose()


async def test_a_task_stopped_while_waiting_for_a_worker_never_runs(
    shared_runner: DaskRunner, tmp_path: Path
) -> None:
    """With both workers' threads busy a third task waits in Dask's queue, CREATED: a
    stop must end it at once and cancel its Dask task, or the command would start later
    with nobody to watch or stop it."""
    marker = tmp_path / "ran"
    async with AsyncOrchestrator(runner=shared_runner, grace=GRACE) as orch:
        busy = [orch.submit("sleep 1") for _ in range(2)]
        for task in busy:
            await task.wait_for("RUNNING")
        queued = orch.submit(f"touch {marker}; sleep 30")
        await anyio.sleep(0.3)
        assert queued.state is TaskState.CREATED
        queued.stop()
        with anyio.fail_after(1):
            await queued.wait()
        await orch.wait_all()
    await anyio.sleep(0.5)  # a thread is free: a task left in the queue would run now
    assert (queued.state, queued.reason) == (TaskState.INTERRUPTED, "stopped")
    assert not marker.exists()
    assert all(task.state is TaskState.COMPLETED for task in busy)


def running_on_workers(dask_worker: Any) -> list[str]:
    return list(dask_worker.plugins["oneshot_nb"].running)


async def test_ended_tasks_leave_nothing_on_the_workers_or_the_scheduler(
    shared_runner: DaskRunner,
) -> None:
    """However a task ends (exit, failure, spawn error, timeout, stop), the worker must
    forget its command (outboxes included) and the scheduler its Dask task: a kernel
    running thousands of tasks would fill both otherwise."""
    client = shared_runner.client
    async with AsyncOrchestrator(runner=shared_runner, grace=GRACE) as orch:
        tasks = [
            orch.submit("echo hi"),
            orch.submit("echo no >&2; exit 3"),
            orch.submit("true", cwd="/nonexistent-dir"),
            orch.submit("sleep 30", timeout=0.3),
            orch.submit("sleep 30"),
        ]
        await tasks[-1].wait_for("RUNNING")
        tasks[-1].stop()
        await orch.wait_all()
    assert [task.reason for task in tasks] == ["exit", "exit", "spawn error", "timeout", "stopped"]
    eventually(lambda: scheduler_tasks(client) == [])
    eventually(lambda: all(not keys for keys in client.run(running_on_workers).values()))


# -- relaying through the scheduler -----------------------------------------------------------


async def test_output_exit_and_stop_work_relayed_through_the_scheduler(
    shared_runner: DaskRunner,
) -> None:
    """direct=False (a cluster behind a gateway, whose workers the kernel cannot reach)
    relays every request through the scheduler: output, exit code and stop must come
    through as they do directly."""
    expected = subprocess.run(["seq", "1", "200000"], capture_output=True, check=True).stdout
    with Client(shared_runner.client.scheduler.address, set_as_default=False) as client:
        relayed = DaskRunner(client, direct=False)
        async with AsyncOrchestrator(runner=relayed, grace=GRACE, max_log_bytes=4 << 20) as orch:
            counted = orch.submit("seq 1 200000; echo end >&2; exit 4")
            stubborn = orch.submit("trap '' TERM; echo up; sleep 30")
            await counted.wait()
            await wait_for_line(stubborn, "up")
            began = time.monotonic()
            stubborn.stop()
            await stubborn.wait()
            took = time.monotonic() - began
        relayed.close()
    assert (counted.state, counted.reason, counted.returncode) == (TaskState.FAILED, "exit", 4)
    assert counted.read_output("stdout").encode() == expected
    assert counted.read_output("stderr") == "end\n"
    assert (stubborn.state, stubborn.reason) == (TaskState.INTERRUPTED, "stopped")
    assert GRACE * 0.8 <= took <= 3.0


def test_a_runner_asked_to_relay_relays_though_the_cluster_is_connected(
    shared_runner: DaskRunner,
) -> None:
    """`direct` is a choice the user makes for a runner: one asking to relay (or never
    to) must get it, or be told it cannot, not silently share the choice an earlier
    runner of the same cluster made."""
    try:
        relayed = DaskRunner("local:2", direct=False)
    except ValueError as exc:
        assert "direct" in str(exc)
    else:
        assert relayed.direct is False
    assert shared_runner.direct is None


@pytest.mark.parametrize("timeout", [-1, float("nan"), "soon", True])
def test_a_bad_timeout_is_one_line_error(timeout: object) -> None:
    """A timeout that is not a number of seconds must be refused as the cluster is, in
    one line naming it, not as an error from deep inside distributed."""
    with pytest.raises((ValueError, TypeError)) as caught:
        DaskRunner("tcp://127.0.0.1:1", timeout=timeout)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "timeout" in message and "\n" not in message


def test_a_pty_or_stdin_task_is_refused_in_one_line_before_it_is_sent(
    shared_runner: DaskRunner,
) -> None:
    """A worker gives a command neither a terminal nor input: said at submit, not as a
    task that fails on the worker."""
    for options, asked in (({"pty": True}, "pty=True"), ({"stdin": True}, "stdin=True")):
        with pytest.raises(ValueError, match=f"the 'dask' runner cannot run a task with {asked}"):
            OneshotTask("true", runner=shared_runner, **options)


async def test_an_agent_runs_on_a_worker_with_its_progress_read_here(
    shared_runner: DaskRunner,
) -> None:
    """The agent's stream is read in the kernel, as any output: the summary needs
    nothing of the worker."""
    fake = str(Path(__file__).parents[2] / "agents" / "fake_agent.py")
    task = OneshotTask(
        ["python3", fake, "codex", "ok", "--delay", "0"], agent="auto", runner=shared_runner
    )
    assert await task.run() is TaskState.COMPLETED
    assert task.agent is not None and task.agent.kind == "codex"
    assert task.agent.tool_calls == 3
