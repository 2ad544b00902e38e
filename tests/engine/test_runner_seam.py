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
