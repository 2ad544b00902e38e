"""The engine through the runner seam, with real processes: choosing a runner per
orchestrator, submit and batch; a runner that loses its command or cannot start it."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pytest
from helpers import parent_of_a_sleeper, py, wait_for_line, wait_until
from helpers.processes import group_gone, process_gone
from helpers.runners import HOST, NamedRunner, Relabelled

from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.runners import Handle, Orphan, RunnerLost

GRACE = 0.3
LONG = py("import time; print('up', flush=True); time.sleep(100)")


# -- runners of our own, around the local one ------------------------------------------------


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


# -- a runner's faults are contained -----------------------------------------------------------


class FaultyHandle(Relabelled):
    """A local child behind a handle whose `fails` methods raise, as a buggy runner's
    (or one whose worker stopped answering) would."""

    fails: frozenset[str] = frozenset()

    def __init__(self, child: Any, runner: NamedRunner) -> None:
        super().__init__(child, runner)
        real = self.group
        fails = self.fails

        class Group:
            def terminate(self) -> None:
                if "terminate" in fails:
                    raise OSError("terminate failed")
                real.terminate()

            def kill(self) -> None:
                real.kill()

            def alive(self) -> bool:
                return real.alive()

        self.group = Group()

    async def wait(self) -> int:
        if "wait" in self.fails:
            await self.child.wait()  # a worker that reports nothing sensible at the end
            raise ValueError("no exit status in the worker's answer")
        return await self.child.wait()

    def place(self) -> Any:
        if "place" in self.fails:
            raise OSError("the worker does not say where")
        return super().place()


def faulty_runner(*fails: str) -> NamedRunner:
    handle = type("Faulty", (FaultyHandle,), {"fails": frozenset(fails)})
    runner = NamedRunner("faulty")
    runner.handle_class = handle
    return runner


STUBBORN = py(
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\n"
    "time.sleep(100)"
)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_stop_whose_terminate_raises_still_ends_the_task_and_its_process(caplog):
    """The group's `terminate` raising inside the INTERRUPTED transition: `stop()` does
    not raise, the task is INTERRUPTED and settles, and the policy's SIGKILL after the
    grace still ends the process. The exception used to escape from stop() and leave
    the task RUNNING for ever, its process with it."""
    async with AsyncOrchestrator(grace=GRACE) as orch:
        task = orch.submit(STUBBORN, runner=faulty_runner("terminate"))
        await wait_for_line(task, "up")
        task.stop()
        assert task.state is TaskState.INTERRUPTED
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.INTERRUPTED
        await wait_until(lambda: group_gone(task.pid), timeout=2)
    assert "could not terminate" in caplog.text


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_wait_that_fails_ends_the_task_as_lost_and_its_process_too():
    """A handle whose `wait` raises another error than RunnerLost: the task ends FAILED
    "runner lost" with the error, and what still runs of its group is ended by the
    policy. The error used to end the run with the task's state undecided."""
    code = "import time, subprocess, sys; print('up', flush=True)"
    async with AsyncOrchestrator(grace=GRACE) as orch:
        task = orch.submit(py(code), runner=faulty_runner("wait"))
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.FAILED
        assert task.reason == "runner lost"
        assert task.error == "ValueError: no exit status in the worker's answer"
        assert task.output == "up\n"
        assert group_gone(task.pid)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_handle_that_cannot_say_where_it_runs_still_runs_and_is_stored(tmp_path, caplog):
    """`place()` raising (asked by the history at the start): the task runs and
    completes, its `place` is None, and the history has its row and every transition.
    The error used to break the store's listener and lose the start transition."""
    from oneshot_nb.storage.records import get_record
    from oneshot_nb.storage.store import Store

    store = Store(str(tmp_path / "h.sqlite3"))
    try:
        async with AsyncOrchestrator() as orch:
            store.attach(orch)
            task = orch.submit(py("print('hi')"), runner=faulty_runner("place"))
            assert await task.wait() is TaskState.COMPLETED
        assert task.place is None
        assert store.flush()
        record = get_record(task.id, path=store.path)
        assert record.state is TaskState.COMPLETED
        assert [target for _, _, target, *_ in record.transitions()] == ["RUNNING", "COMPLETED"]
    finally:
        store.close()
    assert "where does it run?" in caplog.text


class HangingRunner(NamedRunner):
    """A runner whose start never returns: a worker that does not answer."""

    async def start(self, *args: Any) -> Any:
        self.commands.append(args[0])
        await anyio.sleep_forever()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_stop_cancels_a_start_that_does_not_return():
    """A task whose runner's `start` hangs: stop() ends it (INTERRUPTED, settled), its
    slot goes to the next task, and closing the orchestrator returns. It used to keep
    its slot, never settle, and hang aclose() and the interpreter's exit."""
    async with AsyncOrchestrator(limit=1) as orch:
        stuck = orch.submit(py("print('never')"), runner=HangingRunner("hangs"))
        queued = orch.submit(py("print('next')"))
        await wait_until(lambda: stuck.runner.commands)
        stuck.stop()
        with anyio.fail_after(10):
            assert await stuck.wait() is TaskState.INTERRUPTED
            assert await queued.wait() is TaskState.COMPLETED
        assert queued.output == "next\n"
        with anyio.fail_after(10):
            shutdown = orch.submit(py("print('x')"), runner=HangingRunner("hangs"))
            await wait_until(lambda: shutdown.runner.commands)
    assert shutdown.state is TaskState.INTERRUPTED and shutdown.reason == "shutdown"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_start_that_gives_no_handle_fails_the_task_saying_so():
    """A runner whose start returns something that is not a handle: FAILED "spawn
    error", the error naming the runner and what it gave. It used to end INTERRUPTED
    "shutdown" with no error, the AttributeError only in the log."""

    class Confused(NamedRunner):
        async def start(self, *args: Any) -> Any:
            return 42

    async with AsyncOrchestrator() as orch:
        task = orch.submit("true", runner=Confused("confused"))
        assert await task.wait() is TaskState.FAILED
    assert task.reason == "spawn error"
    assert task.error.startswith("the 'confused' runner gave 42, not a handle (no pid, stdout")


@pytest.mark.parametrize(
    ("name", "error"),
    [(None, TypeError), ("", ValueError), ("a\0b", ValueError), ("x" * 101, ValueError)],
)
def test_a_runner_with_a_bad_name_is_refused_before_anything_runs(name, error):
    """A runner's name goes into every history row of its tasks: one short printable
    line, refused otherwise, at submit and when set on the orchestrator."""
    runner = NamedRunner("ok")
    runner.name = name
    orch = AsyncOrchestrator()
    with pytest.raises(error, match="runner"):
        orch.submit("true", runner=runner)
    with pytest.raises(error, match="runner"):
        orch.runner = runner
    with pytest.raises(TypeError, match="runner must be a runner"):
        orch.runner = "local"
    assert orch.tasks == [] and orch.runner.name == "local"


def test_a_task_on_another_loop_can_be_awaited_from_this_one():
    """A task running on a loop thread (terminal IPython runs tasks so) awaited from
    another loop (the cell's): the wait returns when the task ends, not never. Its
    events are set on its own loop, which never woke the caller's."""
    import asyncio

    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        orch = portal.call(AsyncOrchestrator)
        task = portal.call(lambda: (orch.submit(py("import time; time.sleep(0.5)")),))[0]

        async def in_a_cell() -> tuple[TaskState, TaskState]:
            running = await task.wait_for("RUNNING")
            return running, await asyncio.wait_for(task.wait(), 10)

        assert asyncio.run(in_a_cell()) == (TaskState.RUNNING, TaskState.COMPLETED)
        portal.call(orch.aclose)


class OddHandle(Relabelled):
    """A local child whose `wait` gives something that is not an exit code, or whose
    stdout raises: a runner's fault, and only the runner's."""

    odd_code: Any = None
    stdout_fault: Exception | None = None

    def __init__(self, child: Any, runner: NamedRunner) -> None:
        super().__init__(child, runner)
        if self.stdout_fault is not None:
            fault = self.stdout_fault

            class Broken:
                async def receive(self, max_bytes: int = 65536) -> bytes:
                    raise fault

                async def aclose(self) -> None:
                    await child.stdout.aclose()

            self.stdout = Broken()

    async def wait(self) -> Any:
        code = await self.child.wait()
        return code if self.odd_code is None else self.odd_code


def odd_runner(**attributes: Any) -> NamedRunner:
    runner = NamedRunner("odd")
    runner.handle_class = type("Odd", (OddHandle,), attributes)
    return runner


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", ["0", 3.5, True, 10**30])
async def test_a_wait_that_gives_no_exit_code_fails_the_task_saying_so(code):
    """`wait()` giving a str, a float, a bool or an int no exit status can be: FAILED
    "runner lost", the error showing what it gave. A "0" used to end the task
    INTERRUPTED "shutdown" with a traceback in the log; 3.5 was stored as an exit code."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py("print('hi')"), runner=odd_runner(odd_code=code))
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.FAILED
        assert task.reason == "runner lost" and task.returncode is None
        assert task.error == f"the runner gave no exit code: {code!r:.40}"
        after = orch.submit(py("print('after')"))
        assert await after.wait() is TaskState.COMPLETED


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_stream_that_raises_fails_the_task_and_ends_its_process():
    """An output stream whose `receive` raises: FAILED "runner lost" with the error, and
    the command (which would run for 100 s) ended by the policy. It used to end
    INTERRUPTED "shutdown" with no error."""
    async with AsyncOrchestrator(grace=GRACE) as orch:
        runner = odd_runner(stdout_fault=OSError("connection to the worker reset"))
        task = orch.submit(LONG, runner=runner)
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.FAILED
        assert (task.reason, task.error) == (
            "runner lost",
            "OSError: connection to the worker reset",
        )
        assert group_gone(task.pid)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_cancelled_error_from_a_runners_start_fails_that_task_only():
    """A runner whose start lets out a CancelledError of its own (a future something
    else cancelled): that task is FAILED "spawn error", and the orchestrator goes on.
    It used to take the orchestrator's task group down: every task "shutdown", every
    later submit refused."""
    import asyncio

    class Cancelling(NamedRunner):
        async def start(self, *args: Any) -> Any:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            return await future

    async with AsyncOrchestrator() as orch:
        sibling = orch.submit(LONG)
        await wait_for_line(sibling, "up")
        task = orch.submit("true", runner=Cancelling("cancelling"))
        with anyio.fail_after(10):
            assert await task.wait() is TaskState.FAILED
        assert task.reason == "spawn error" and "cancelled" in task.error
        assert sibling.state is TaskState.RUNNING
        after = orch.submit(py("print('after')"))
        assert await after.wait() is TaskState.COMPLETED
        sibling.stop()


def test_the_orchestrators_options_refuse_none():
    """Setting `orch.options = None` is refused, not taken as "the defaults"."""
    orch = AsyncOrchestrator(grace=1)
    with pytest.raises(TypeError, match="options must be a TaskOptions"):
        orch.options = None  # type: ignore[assignment]
    assert orch.options.grace == 1.0
