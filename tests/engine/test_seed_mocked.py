"""The seed plan's three tests, with mocks and no real process."""

from __future__ import annotations

import time
from unittest.mock import Mock

import anyio
import pytest
from helpers import wait_until

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.engine.task import DEFAULT_IDLE_AFTER

# Above any pid_max Linux allows, so no real process or group can have it.
NO_SUCH_PID = 1 << 30


def test_interrupt_from_running_terminates_the_process_exactly_once():
    """Transition integrity: INTERRUPTED is entered and `terminate` is called once."""
    task = OneshotTask("sleep 100")
    task.machine.process = Mock()
    task.machine.start()
    task.machine.interrupt()
    assert task.state is TaskState.INTERRUPTED
    task.machine.process.terminate.assert_called_once_with()
    assert [(t.source, t.target) for t in task.transitions] == [
        (TaskState.CREATED, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.INTERRUPTED),
    ]


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_health_monitor_detects_silence_and_goes_idle():
    """Silence detection: 15 s without output (idle_after 10) makes a running task IDLE."""
    task = OneshotTask("sleep 100")
    assert task.idle_after == DEFAULT_IDLE_AFTER == 10
    task.machine.process = Mock()
    task.machine.start()
    task.last_activity = time.monotonic() - 15
    async with anyio.create_task_group() as tg:
        tg.start_soon(task._watch_silence)
        await wait_until(lambda: task.state is TaskState.IDLE, timeout=2)
        tg.cancel_scope.cancel()
    assert task.transitions[-1].event == "detect_silence"
    task.machine.process.terminate.assert_not_called()


class BlockingStream:
    """An anyio-like receive stream with no data: blocks until released, then ends."""

    def __init__(self, released: anyio.Event) -> None:
        self._released = released

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await self._released.wait()
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        pass


class FakeProcess:
    """Stands in for a runner's handle: a pid nobody has, streams that block until
    released, and a mocked process group."""

    def __init__(self, released: anyio.Event, group: Mock) -> None:
        self.pid = NO_SUCH_PID
        self.stdout = BlockingStream(released)
        self.stderr = BlockingStream(released)
        self.group = group
        self.returncode: int | None = None

    async def wait(self) -> int:
        self.returncode = 0
        return 0

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_orchestrator_runs_at_most_limit_tasks_and_keeps_the_rest_created():
    """Concurrency limit: with limit=2 and 5 tasks, exactly 2 run while 3 wait in CREATED."""
    released = anyio.Event()
    spawned: list[FakeProcess] = []
    group = Mock()
    group.alive.return_value = False  # no real group to wait for
    runner = Mock()
    runner.name = "fake"

    async def fake_start(command: object, cwd: object, env: object, options: object):
        process = FakeProcess(released, group)
        spawned.append(process)
        return process

    runner.start = fake_start
    snapshots: list[tuple[int, int]] = []

    async with AsyncOrchestrator(limit=2, runner=runner) as orch:
        assert isinstance(orch.limiter, anyio.CapacityLimiter)
        assert orch.limiter.total_tokens == 2

        def on_event(event: TaskEvent) -> None:
            if event.kind == "transition":
                stats = orch.statistics()
                snapshots.append((stats.running, stats.created))

        orch.listeners.append(on_event)
        tasks = [orch.submit(f"job {i}") for i in range(5)]
        await wait_until(lambda: orch.statistics().running == 2)
        # Give the other three every chance to (wrongly) start before looking.
        for _ in range(20):
            await anyio.sleep(0)
        assert [t.state for t in tasks].count(TaskState.RUNNING) == 2
        assert [t.state for t in tasks].count(TaskState.CREATED) == 3
        assert len(spawned) == 2
        released.set()
        states = await orch.wait_all()

    assert states == [TaskState.COMPLETED] * 5
    assert len(spawned) == 5
    assert max(running for running, _ in snapshots) == 2
    # Whenever two ran, every other unfinished task was still waiting in CREATED.
    assert (2, 3) in snapshots
    assert all(running <= 2 for running, _ in snapshots)
    group.terminate.assert_not_called()
    for task in tasks:
        assert task.reason == "exit"
        assert task.pid == NO_SUCH_PID
