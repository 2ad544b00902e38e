"""What a running task costs the machine: its process group's CPU and memory, sampled
about once a second on one shared timer (see UsageMeter)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .events import TaskEvent, notify
from .machine import TaskState

if TYPE_CHECKING:
    from ..runners import GroupUsage
    from .task import OneshotTask

logger = logging.getLogger("oneshot_nb")

SAMPLE_INTERVAL = 1.0
Reader = Callable[[], "GroupUsage | None"]  # a group's optional usage()


@dataclass(slots=True)
class Usage:
    """A task's cost as last sampled: `cpu_percent` (of one core, over the last
    interval) and `rss` (bytes, summed over its process group) while it runs;
    `peak_rss` and `cpu_seconds` (the group's total, over all its attempts) kept once
    it has ended. A task that ended before its first sample has none (task.usage is
    None), and so has one whose runner cannot say (the Dask runner)."""

    cpu_percent: float | None = None
    rss: int | None = None
    peak_rss: int | None = None
    cpu_seconds: float | None = None


class _Attempt:
    """One run of a watched task's command, as the meter follows it."""

    __slots__ = ("before", "cpu", "read", "task", "when")

    def __init__(self, task: OneshotTask, read: Reader, before: float) -> None:
        self.task = task
        self.read = read  # its group's usage()
        self.before = before  # CPU seconds of the task's earlier attempts
        self.cpu = 0.0  # its group's CPU seconds at the last sample...
        self.when = time.monotonic()  # ...and when it was taken


class UsageMeter:
    """Samples the tasks it watches while they run: one timer on the running asyncio
    loop for all of them, ticking every `interval` while one runs.

    Each tick reads every running task's group (`usage()`, which a runner's group may
    have; a task whose group has none is not sampled) in a worker thread, one round at
    a time, and sets `task.usage` on the loop, telling the task's listeners with a
    "usage" event. Why a thread: reading 64 groups takes about 5 ms (a look at /proc
    and psutil's reads), which would lag the loop that runs the kernel's cells; the
    loop's share is then about 0.1 ms a tick (benchmarks/usage.py measures both).

    An attempt is sampled from its start until the task has settled (a stopped task's
    group may run through its grace) or goes back to CREATED to retry; then once more,
    on the loop, so that its end's figures come before the events that tell it (the
    history writes them at `settled`). Its group is usually gone by then, and that last
    read costs nothing. `enabled = False` before tasks are watched turns it off.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL, *, off_loop: bool = True) -> None:
        self.interval = interval
        self.off_loop = off_loop  # False: read on the loop itself (benchmarks/usage.py)
        self.enabled = True
        self.rounds = 0  # ticks that sampled: one per interval however many tasks run
        self._running: dict[str, _Attempt] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._round: asyncio.Task[None] | None = None  # a round in its thread
        self._limiter: anyio.CapacityLimiter | None = None
        self._next = 0.0  # when the next tick is due, on the loop's clock

    def watch(self, task: OneshotTask) -> None:
        """Sample `task` while it runs, from now on. Its listener comes first, so that
        whoever hears of its end finds the figures of its end."""
        if not self.enabled:
            return

        def on_event(event: TaskEvent) -> None:
            if event.kind == "settled":
                self._end(task)
            elif event.kind == "transition" and event.source is not event.target:
                if event.target is TaskState.RUNNING and event.source is TaskState.CREATED:
                    self._begin(task)
                elif event.target is TaskState.CREATED:  # a retry: this attempt is over
                    self._end(task)

        on_event.wants_output = False  # type: ignore[attr-defined]  # see OutputWanted
        task.listeners.insert(0, on_event)

    @property
    def watching(self) -> int:
        """How many tasks are sampled now."""
        return len(self._running)

    # -- on the loop ------------------------------------------------------------------

    def _begin(self, task: OneshotTask) -> None:
        read = getattr(task._group, "usage", None)
        if not callable(read):
            return  # a runner that cannot say (the Dask runner's)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no asyncio loop (another anyio backend): no timer to run on
        # A retry's attempt adds to what the earlier ones cost.
        before = (task.usage.cpu_seconds or 0.0) if task.usage is not None else 0.0
        self._running[task.id] = _Attempt(task, read, before)
        if loop is not self._loop:
            self._loop, self._handle, self._round, self._limiter = loop, None, None, None
        if self._handle is None and self._round is None:
            self._next = loop.time() + self.interval
            self._handle = loop.call_at(self._next, self._tick)

    def _end(self, task: OneshotTask) -> None:
        """The attempt's last sample, and the task no longer sampled."""
        attempt = self._running.pop(task.id, None)
        if attempt is None:
            return
        reading = _read(attempt.read)
        if isinstance(reading, Exception):
            _say_fault(task, reading)
        elif reading is not None:
            self._apply(attempt, reading, time.monotonic())
        usage = task.usage
        if usage is not None:
            task.usage = Usage(None, None, usage.peak_rss, usage.cpu_seconds)
        if not self._running and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        attempts = list(self._running.values())
        if not attempts or self._loop is None:
            return
        self.rounds += 1
        if self.off_loop:
            self._round = self._loop.create_task(self._sample_off_loop(attempts))
        else:
            self._apply_all(attempts, _read_all([a.read for a in attempts]))
            self._schedule()

    async def _sample_off_loop(self, attempts: list[_Attempt]) -> None:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        try:
            readings = await anyio.to_thread.run_sync(
                _read_all, [a.read for a in attempts], limiter=self._limiter
            )
        finally:
            self._round = None
        self._apply_all(attempts, readings)
        self._schedule()

    def _schedule(self) -> None:
        """The next tick, an interval after the last one was due (later when a round
        took longer than that)."""
        loop = self._loop
        if not self._running or self._handle is not None or loop is None or loop.is_closed():
            return
        self._next = max(self._next + self.interval, loop.time())
        self._handle = loop.call_at(self._next, self._tick)

    def _apply_all(
        self, attempts: list[_Attempt], readings: list[tuple[GroupUsage | Exception | None, float]]
    ) -> None:
        now = time.time()
        for attempt, (reading, when) in zip(attempts, readings, strict=True):
            task = attempt.task
            if self._running.get(task.id) is not attempt:
                continue  # it ended meanwhile, and was sampled then
            if isinstance(reading, Exception):
                _say_fault(task, reading)
                del self._running[task.id]
            elif reading is not None and self._apply(attempt, reading, when) and task.listeners:
                notify(task.listeners, TaskEvent(task.id, "usage", now))

    def _apply(self, attempt: _Attempt, reading: GroupUsage, when: float) -> bool:
        """Set the task's usage from its group's `reading`, taken at `when`; False when
        it is what it was (a task asleep): nothing to tell."""
        task = attempt.task
        cpu = reading.cpu_seconds
        elapsed = when - attempt.when
        percent = max(0.0, cpu - attempt.cpu) / elapsed * 100 if elapsed > 0 else None
        attempt.cpu, attempt.when = cpu, when
        old = task.usage
        peak = max(old.peak_rss or 0, reading.rss) if old is not None else reading.rss
        usage = Usage(percent, reading.rss, peak, attempt.before + cpu)
        if usage == old:
            return False
        task.usage = usage
        return True


# -- in the worker thread (or on the loop with off_loop false) ---------------------------


def _read(read: Reader) -> GroupUsage | Exception | None:
    try:
        return read()
    except Exception as exc:  # a runner's fault: said once, and the task not sampled again
        return exc


def _read_all(reads: list[Reader]) -> list[tuple[GroupUsage | Exception | None, float]]:
    """Each group's reading, and when it was taken."""
    return [(_read(read), time.monotonic()) for read in reads]


def _say_fault(task: OneshotTask, exc: Exception) -> None:
    logger.error("oneshot_nb: task %s: could not read what it costs", task.id, exc_info=exc)
