"""What a running task costs the machine: its process group's CPU and memory, sampled
about once a second on one shared timer (see UsageMeter)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import TaskEvent, notify
from .machine import TaskState

if TYPE_CHECKING:
    from ..runners import GroupUsage
    from .task import OneshotTask

logger = logging.getLogger("oneshot_nb")

SAMPLE_INTERVAL = 1.0
Reader = Callable[[], "GroupUsage | None"]  # a group's optional usage()
# Each group's reading (or what it raised), and when it was taken (time.monotonic()).
Readings = list[tuple["GroupUsage | Exception | None", float]]


@dataclass(slots=True)
class Usage:
    """A task's cost as last sampled: `cpu_percent` (of one core, over the last
    interval) and `rss` (bytes, summed over its process group) while it runs;
    `peak_rss` (the highest of the samples: a spike between two is not seen) and
    `cpu_seconds` (the group's total, over all its attempts) kept once it has ended. A
    task that ended before its first sample has none (task.usage is None), and so has
    one whose runner cannot say (the Dask runner)."""

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
    have; a task whose group has none is not sampled) in a thread of the loop's
    executor, one round at a time, then sets `task.usage` on the loop and tells the
    task's listeners with a "usage" event (not when nothing changed: a task asleep).
    Why a thread: reading 64 groups takes 5-7 ms of psutil's reads of /proc, which
    would all be the loop's, the loop that runs the kernel's cells; in a thread the
    loop's share is about 0.7 ms a round, most of it the two wake-ups that any timer and
    thread round cost (benchmarks/usage.py). Why not anyio.to_thread: its limiter and
    task took four more turns of the loop per round, about 0.3 ms more here.

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
        self._round: asyncio.Future[Readings] | None = None  # a round in its thread
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
            self._loop, self._handle, self._round = loop, None, None
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
            cpu = usage.cpu_seconds
            reaped = getattr(task._process, "exit_usage", None)
            if isinstance(reaped, tuple) and len(reaped) == 2:
                # What its reaping said: the CPU of its last second before it exited,
                # and of children that lived and were reaped between two samples.
                cpu = attempt.before + max(attempt.cpu, float(reaped[0]))
            task.usage = Usage(None, None, usage.peak_rss, cpu)
        if not self._running and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        attempts = list(self._running.values())
        loop = self._loop
        if not attempts or loop is None:
            return
        self.rounds += 1
        reads = [attempt.read for attempt in attempts]
        if not self.off_loop:
            self._apply_all(attempts, _read_all(reads))
            self._schedule()
            return
        try:
            self._round = loop.run_in_executor(None, _read_all, reads)
        except RuntimeError:  # the loop is closing, and its executor with it
            return
        self._round.add_done_callback(functools.partial(self._round_done, attempts))

    def _round_done(self, attempts: list[_Attempt], done: asyncio.Future[Readings]) -> None:
        self._round = None
        if done.cancelled():
            return
        self._apply_all(attempts, done.result())
        self._schedule()

    def _schedule(self) -> None:
        """The next tick, an interval after the last one was due (later when a round
        took longer than that)."""
        loop = self._loop
        if not self._running or self._handle is not None or loop is None or loop.is_closed():
            return
        self._next = max(self._next + self.interval, loop.time())
        self._handle = loop.call_at(self._next, self._tick)

    def _apply_all(self, attempts: list[_Attempt], readings: Readings) -> None:
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
        task, old = attempt.task, attempt.task.usage
        cpu, rss = reading.cpu_seconds, reading.rss
        elapsed, before = when - attempt.when, attempt.cpu
        attempt.cpu, attempt.when = cpu, when
        if old is not None and cpu == before and rss == old.rss and old.cpu_percent == 0:
            return False  # the common case of many tasks: checked before making anything
        percent = max(0.0, cpu - before) / elapsed * 100 if elapsed > 0 else None
        peak = max(old.peak_rss or 0, rss) if old is not None else rss
        task.usage = Usage(percent, rss, peak, attempt.before + cpu)
        return True


# -- in the worker thread (or on the loop with off_loop false) ---------------------------


def _read(read: Reader) -> GroupUsage | Exception | None:
    try:
        return read()
    except Exception as exc:  # a runner's fault: said once, and the task not sampled again
        return exc


def _read_all(reads: list[Reader]) -> Readings:
    return [(_read(read), time.monotonic()) for read in reads]


def _say_fault(task: OneshotTask, exc: Exception) -> None:
    logger.error("oneshot_nb: task %s: could not read what it costs", task.id, exc_info=exc)
