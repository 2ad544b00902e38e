"""What running tasks cost, sampled by the orchestrator's UsageMeter with real processes:
CPU and memory while they run, peak memory and CPU seconds once they have ended, one
timer for all of them."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import anyio
import pytest
from helpers import py, wait_for_line, wait_until

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.runners import LocalRunner

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MiB = 1 << 20
BUSY = py("while True: pass")
SLEEPER = py("import time; print('ready', flush=True); time.sleep(30)")
ALLOCATE_200 = py(
    """
    import time
    b = bytearray(200 * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
    print("ready", flush=True)
    time.sleep(30)
    """
)


def busy_for(seconds: float) -> list[str]:
    return py(f"import time\nwhile time.process_time() < {seconds}: pass")


async def sampled(task: OneshotTask, after: float) -> None:
    """Wait until `task` has a sample taken at least `after` seconds into its run."""
    await task.wait_for(TaskState.RUNNING)
    start = time.monotonic()
    await anyio.sleep(after)
    usage = task.usage
    await wait_until(lambda: task.usage is not usage and task.usage is not None, 3)
    assert time.monotonic() - start >= after


async def test_a_busy_loop_reads_about_one_core_and_sleep_about_none():
    async with AsyncOrchestrator() as orch:
        busy, sleeper = orch.submit(BUSY), orch.submit(["sleep", "5"])
        await sampled(busy, 1.5)
        assert busy.usage is not None and sleeper.usage is not None
        assert 70 <= busy.usage.cpu_percent <= 130
        assert sleeper.usage.cpu_percent < 10
        orch.stop_all()


async def test_the_rss_of_a_task_that_allocates_200_mib_reads_within_a_fifth_of_it():
    """Beyond what a bare interpreter holds, measured by a task beside it."""
    async with AsyncOrchestrator() as orch:
        bare, big = orch.submit(SLEEPER), orch.submit(ALLOCATE_200)
        await wait_for_line(bare, "ready")
        await wait_for_line(big, "ready")
        await sampled(big, 0.0)
        assert bare.usage is not None and big.usage is not None
        assert bare.usage.rss is not None and big.usage.rss is not None
        assert abs(big.usage.rss - bare.usage.rss - 200 * MiB) <= 0.2 * 200 * MiB
        assert big.usage.peak_rss >= big.usage.rss
        orch.stop_all()


async def test_peak_rss_and_cpu_seconds_are_kept_once_a_task_has_ended():
    """What it cost stays on the task; what it costs now (CPU %, RSS) goes."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(busy_for(2.2))
        assert await task.wait() is TaskState.COMPLETED
    usage = task.usage
    assert usage is not None
    assert usage.cpu_percent is None and usage.rss is None
    assert 1.0 <= usage.cpu_seconds <= 2.5  # the last second before the exit is not seen
    assert usage.peak_rss > 1 * MiB


async def test_a_stopped_task_keeps_its_figures_and_they_come_before_its_end_is_told():
    seen: list[Any] = []

    def listen(event: TaskEvent) -> None:
        if event.kind in ("transition", "settled") and task.state.is_final:
            seen.append((event.kind, task.usage))

    async with AsyncOrchestrator() as orch:
        orch.listeners.append(listen)
        task = orch.submit(BUSY, grace=0.5)
        await sampled(task, 1.2)
        task.stop()
        await task.wait()
    assert [kind for kind, _ in seen] == ["transition", "settled"]
    usage = seen[-1][1]
    assert usage is not None and usage.cpu_seconds >= 0.7 and usage.peak_rss > 0


async def test_one_timer_samples_every_task_whatever_their_number():
    """A round of samples a second, for one task as for sixteen: not a timer each."""
    rates = []
    for count in (1, 16):
        async with AsyncOrchestrator(limit=16) as orch:
            tasks = [orch.submit(["sleep", "10"]) for _ in range(count)]
            for task in tasks:
                await task.wait_for(TaskState.RUNNING)
            meter = orch.usage_meter
            rounds, start = meter.rounds, time.monotonic()
            await anyio.sleep(3.2)
            rates.append((meter.rounds - rounds) / (time.monotonic() - start))
            assert meter.watching == count
            assert all(task.usage is not None for task in tasks)
            orch.stop_all()
    assert all(0.6 <= rate <= 1.3 for rate in rates), rates


async def test_the_timer_stops_when_no_task_runs():
    async with AsyncOrchestrator() as orch:
        meter = orch.usage_meter
        await orch.submit(busy_for(1.3)).wait()
        assert meter.watching == 0
        rounds = meter.rounds
        await anyio.sleep(1.5)
        assert meter.rounds == rounds


async def test_listeners_hear_of_a_sample_only_when_it_says_something_new():
    """A busy task's figures move every second; a sleeping one's not after its first."""
    events: dict[str, int] = {}

    def count(event: TaskEvent) -> None:
        if event.kind == "usage":
            events[event.task_id] = events.get(event.task_id, 0) + 1

    async with AsyncOrchestrator() as orch:
        orch.listeners.append(count)
        busy, sleeper = orch.submit(BUSY), orch.submit(["sleep", "10"])
        await busy.wait_for(TaskState.RUNNING)
        await anyio.sleep(3.5)
        orch.stop_all()
    assert events[busy.id] >= 2
    assert events[sleeper.id] <= 2


async def test_a_retried_task_adds_up_what_its_attempts_cost():
    async with AsyncOrchestrator() as orch:
        task = orch.submit(
            py("import os, time\nwhile time.process_time() < 1.3: pass\nraise SystemExit(1)"),
            retries=1,
            retry_delay=0,
        )
        assert await task.wait() is TaskState.FAILED
    assert len(task.attempts) == 2
    assert task.usage is not None and task.usage.cpu_seconds >= 1.5


class Unmeasured:
    """A runner whose groups cannot say what they cost (as the Dask runner's)."""

    name = "unmeasured"

    def __init__(self, fault: Exception | None = None) -> None:
        self.local = LocalRunner()
        self.fault = fault

    async def start(self, command: Any, cwd: Any, env: Any, options: Any) -> Any:
        handle = await self.local.start(command, cwd, env, options)
        handle.group = Group(handle.group, self.fault)
        return handle

    def settle(self, orphans: Any) -> list[Any]:
        return []


class Group:
    def __init__(self, group: Any, fault: Exception | None) -> None:
        self.group = group
        if fault is not None:
            self.usage = self._raise
        self.fault = fault

    def _raise(self) -> None:
        assert self.fault is not None
        raise self.fault

    def terminate(self) -> None:
        self.group.terminate()

    def kill(self) -> None:
        self.group.kill()

    def alive(self) -> bool:
        return self.group.alive()


async def test_a_runner_that_cannot_say_gives_no_usage_and_no_timer():
    async with AsyncOrchestrator(runner=Unmeasured()) as orch:
        task = orch.submit(busy_for(1.5))
        assert await task.wait() is TaskState.COMPLETED
        assert task.usage is None
        assert orch.usage_meter.rounds == 0


async def test_a_group_whose_usage_raises_is_said_once_and_the_task_runs_on(caplog):
    caplog.set_level(logging.ERROR, logger="oneshot_nb")
    async with AsyncOrchestrator(runner=Unmeasured(RuntimeError("no /proc here"))) as orch:
        task = orch.submit(busy_for(2.5))
        assert await task.wait() is TaskState.COMPLETED
    said = [r for r in caplog.records if "could not read what it costs" in r.getMessage()]
    assert len(said) == 1 and task.usage is None


async def test_a_meter_turned_off_samples_nothing():
    async with AsyncOrchestrator() as orch:
        orch.usage_meter.enabled = False
        task = orch.submit(busy_for(1.5))
        assert await task.wait() is TaskState.COMPLETED
    assert task.usage is None and orch.usage_meter.rounds == 0


async def test_the_cpu_after_the_last_sample_is_counted_from_the_reaping():
    """Burning CPU after its last sample, just before it exits: the task's CPU seconds
    still count it (what its reaping said), not only what the samples saw."""
    burn = "import time\nend = time.process_time() + 0.8\nwhile time.process_time() < end: pass"
    async with AsyncOrchestrator() as orch:
        task = orch.submit(f"sleep 1.2; {sys.executable} -c '{burn}'")
        assert await task.wait() is TaskState.COMPLETED
    assert task.usage is not None and task.usage.cpu_seconds is not None
    assert task.usage.cpu_seconds >= 0.8
