"""Many tasks on one asyncio event loop: a task group, a capacity limit, a registry,
events. It runs on asyncio (anyio's asyncio backend): the loop of a Jupyter kernel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..runners import LocalRunner, Runner, end_groups_now
from .batch import Batch
from .events import EventHub, Listener, Subscription, TaskEvent
from .halt import FAIL_FAST
from .lifecycle import Lifecycle, OrchestratorClosed, OrchestratorStatistics
from .machine import TaskState
from .options import (
    UNSET,
    Command,
    TaskOptions,
    check_flag,
    check_runner,
    with_changes,
)
from .policies import tasks_named
from .slots import Slots
from .task import OneshotTask
from .usage import UsageMeter

__all__ = ["AsyncOrchestrator", "Lifecycle", "OrchestratorClosed", "OrchestratorStatistics"]

logger = logging.getLogger("oneshot_nb")


class AsyncOrchestrator:
    """Runs tasks in an anyio task group on the running asyncio event loop, `limit` at
    a time. It needs asyncio (anyio on its asyncio backend), which is what a Jupyter
    kernel runs: tasks progress between cells and while a cell awaits.

    Use it as `async with AsyncOrchestrator() as orch:` (leaving the block stops every
    task), or, where no block can span the work (a notebook, where each cell returns),
    just call `submit` from a coroutine or a callback on the loop: the first submit
    starts the task group in a background task of the running asyncio loop, and
    `await orch.aclose()` ends it. Either way no process outlives `aclose`.

    `options` (a TaskOptions) holds the defaults of `submit`; `idle_after`, `timeout`,
    `grace` and `max_log_bytes` given here replace its own. `runner` says where
    commands run (by default on this machine); `submit(runner=...)` overrides it.
    """

    def __init__(
        self,
        limit: int = 8,
        *,
        idle_after: float | None = UNSET,
        timeout: float | None = UNSET,
        grace: float = UNSET,
        max_log_bytes: int = UNSET,
        options: TaskOptions | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.slots = Slots(limit)
        given = {
            "idle_after": idle_after,
            "timeout": timeout,
            "grace": grace,
            "max_log_bytes": max_log_bytes,
        }
        self._options = with_changes(options, given)
        self._runner: Runner = LocalRunner() if runner is None else check_runner(runner)
        self._hub = EventHub()
        # Given to each task submitted from now on (see OneshotTask.output_gate).
        self.output_gate: Callable[[], Awaitable[None]] | None = None
        self._tasks: dict[str, OneshotTask] = {}
        self._state = Lifecycle.UNOPENED
        self._group: TaskGroup | None = None
        self._pending: list[tuple[OneshotTask, Slots | None]] = []
        self._host: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        # One timer samples what every running task costs (CPU, memory).
        self.usage_meter = UsageMeter()

    # -- registry and state -----------------------------------------------------------

    @property
    def options(self) -> TaskOptions:
        """The defaults of every task submitted from now on; may be replaced."""
        return self._options

    @options.setter
    def options(self, options: TaskOptions) -> None:
        if not isinstance(options, TaskOptions):
            raise TypeError(f"options must be a TaskOptions, got {type(options).__name__}")
        self._options = options

    @property
    def runner(self) -> Runner:
        """Where the tasks submitted from now on run, unless a submit names another."""
        return self._runner

    @runner.setter
    def runner(self, runner: Runner) -> None:
        self._runner = check_runner(runner)

    @property
    def limit(self) -> int:
        return self.slots.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self.slots.limit = value

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        return self.slots.limiter

    @property
    def tasks(self) -> list[OneshotTask]:
        """Every task submitted, oldest first."""
        return list(self._tasks.values())

    def get(self, key: str) -> OneshotTask:
        """The task with this id or, failing that, with this name: the one that has not
        ended, else the newest. KeyError when there is none, and when several tasks that
        have not ended share the name (its message lists their ids)."""
        found = self.find(key)
        if not found:
            raise KeyError(f"no task with id or name {key!r}")
        live = [task for task in found if not task.state.is_final]
        if len(live) > 1:
            ids = ", ".join(task.id for task in live)
            raise KeyError(f"{len(live)} tasks named {key!r} have not ended: {ids}; give an id")
        return live[0] if live else found[-1]

    def find(self, key: str) -> list[OneshotTask]:
        """The task with this id, or else every task with this name, oldest first."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a task id or name (str), got {type(key).__name__}")
        if key in self._tasks:
            return [self._tasks[key]]
        return [task for task in self._tasks.values() if task.name == key]

    def statistics(self) -> OrchestratorStatistics:
        return OrchestratorStatistics.count(self.limit, self._tasks.values())

    @property
    def closed(self) -> bool:
        return self._state is Lifecycle.CLOSED

    @property
    def lifecycle(self) -> Lifecycle:
        return self._state

    def _check_open(self) -> None:
        if self._state is Lifecycle.CLOSED:
            raise OrchestratorClosed("orchestrator is closed; create a new one")

    # -- events -----------------------------------------------------------------------

    @property
    def listeners(self) -> list[Listener]:
        """Sync callables given every event of every task, on the loop's thread.

        They must return quickly; one that raises is logged and skipped.
        """
        return self._hub.listeners

    def events(self, maxsize: int = 1000) -> Subscription:
        """Subscribe to the events of every task: `async for event in orch.events()`.

        Subscribes at once, so no event after this call is missed. At most `maxsize`
        output events wait in the queue; beyond that they are dropped, counted in the
        subscription's `dropped`, and announced by a `dropped` event. Iteration ends when
        the orchestrator closes or the subscription is closed.
        """
        return self._hub.subscribe(maxsize)

    # -- submitting and running -------------------------------------------------------

    def submit(
        self,
        command: Command,
        *,
        name: str | None = UNSET,
        idle_after: float | None = UNSET,
        timeout: float | None = UNSET,
        grace: float = UNSET,
        cwd: str | os.PathLike[str] | None = UNSET,
        env: Mapping[str, str] | None = UNSET,
        max_log_bytes: int = UNSET,
        pty: bool = UNSET,
        cols: int = UNSET,
        rows: int = UNSET,
        stdin: bool = UNSET,
        agent: str | None = UNSET,
        retries: int = UNSET,
        retry_delay: float = UNSET,
        retry_on: tuple[str, ...] = UNSET,
        after: Sequence[OneshotTask | str] = (),
        slots: Slots | None = None,
        options: TaskOptions | None = None,
        runner: Runner | None = None,
    ) -> OneshotTask:
        """Create a task and schedule it; return it at once, in CREATED.

        Synchronous, so a magic running on the loop's thread can call it. Arguments are
        checked before anything is scheduled; a bad one raises ValueError naming it.
        The task's options are `options` (by default the orchestrator's own) with any
        given here replacing theirs. `slots` runs the task under another limit than the
        orchestrator's (a batch's); `runner` runs it elsewhere than the orchestrator's
        runner does. `after` names tasks (objects, ids or names, see `get`) that must
        COMPLETE before it runs.
        """
        self._check_open()
        if slots is not None and not isinstance(slots, Slots):
            raise TypeError(f"slots must be a Slots, got {type(slots).__name__}")
        task = OneshotTask(
            command,
            name=name,
            idle_after=idle_after,
            timeout=timeout,
            grace=grace,
            cwd=cwd,
            env=env,
            max_log_bytes=max_log_bytes,
            pty=pty,
            cols=cols,
            rows=rows,
            stdin=stdin,
            agent=agent,
            retries=retries,
            retry_delay=retry_delay,
            retry_on=retry_on,
            after=tasks_named(after, self.get),
            options=self.options if options is None else options,
            runner=self.runner if runner is None else runner,
        )
        task.output_gate = self.output_gate
        self._start_host()
        task.bind_to_running_loop()
        self._tasks[task.id] = task
        publish = self._hub.publish
        task.listeners.append(publish)
        task.output_wanted = self._hub.wanted_with(task.listeners, publish)
        self.usage_meter.watch(task)
        self._hub.publish(TaskEvent(task.id, "submitted", time.time()))
        if self._group is not None:
            self._group.start_soon(self._run, task, slots, name=f"oneshot {task.id}")
        else:
            self._pending.append((task, slots))
        return task

    def submit_batch(
        self,
        commands: Sequence[Command],
        *,
        limit: int | None = None,
        fail_fast: bool = False,
        halt: str | None = None,
        names: Sequence[str | None] | None = None,
        after: Sequence[Sequence[str]] | None = None,
        runner: Runner | None = None,
        **options: Any,
    ) -> Batch:
        """Submit several commands that run at most `limit` at a time (by default the
        orchestrator's limit), under slots of their own: each sees ONESHOT_SLOT in
        0 .. limit-1. `options` are those of `submit` (but `slots` and `after`) and
        apply to every task. `halt` is a rule such as "now,fail=1" (see halt.py;
        `fail_fast` is "soon,fail=1"). `names` names the lines (None for one its command
        names), and `after` gives each line the names of the lines it runs after; a
        cycle is refused. Every argument is checked before any task is submitted.
        """
        self._check_open()
        limit = self.limit if limit is None else limit
        check_flag("fail_fast", fail_fast)
        if fail_fast and halt is not None:
            raise ValueError("give fail_fast or halt, not both (fail_fast is halt='soon,fail=1')")
        rule = FAIL_FAST if fail_fast else halt
        return Batch.submit(
            self.submit, commands, self.options, limit, rule, runner, options, names, after
        )

    async def _run(self, task: OneshotTask, slots: Slots | None) -> None:
        try:
            await task.run(slots or self.slots)
        except (Exception, GeneratorExit):
            # A fault in one task must not cancel its siblings through the task group.
            logger.exception("oneshot_nb task %s failed inside the engine", task.id)

    def _start_host(self) -> None:
        if self._state is not Lifecycle.UNOPENED or self._host is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncOrchestrator needs a running asyncio event loop: submit from a "
                "coroutine, or use 'async with AsyncOrchestrator() as orch'"
            ) from None
        self._host = loop.create_task(self._host_main(), name="oneshot_nb orchestrator")

    async def _host_main(self) -> None:
        async with anyio.create_task_group() as group:
            self._open(group)
            await self._closing.wait()
            await self._shutdown()

    def _open(self, group: TaskGroup) -> None:
        if self._state is Lifecycle.UNOPENED:
            self._state = Lifecycle.OPENED
        self._group = group
        pending, self._pending = self._pending, []
        for task, slots in pending:
            group.start_soon(self._run, task, slots, name=f"oneshot {task.id}")

    async def __aenter__(self) -> AsyncOrchestrator:
        self._check_open()
        if self._state is Lifecycle.OPENED or self._host is not None:
            raise RuntimeError("orchestrator is already running")
        self._cm = anyio.create_task_group()
        self._open(await self._cm.__aenter__())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._state = Lifecycle.CLOSED
        with anyio.CancelScope(shield=exc is not None):
            await self._shutdown()
        return await self._cm.__aexit__(exc_type, exc, tb)

    # -- waiting and stopping ---------------------------------------------------------

    async def wait_all(self) -> list[TaskState]:
        """Wait until every task submitted so far has ended; return their states."""
        return [await task.wait() for task in list(self._tasks.values())]

    def stop_all(self) -> None:
        """Stop every task that has not ended (see `OneshotTask.stop`)."""
        for task in list(self._tasks.values()):
            task.stop()

    async def _shutdown(self) -> None:
        for task in list(self._tasks.values()):
            task.interrupt("shutdown")
        for task in list(self._tasks.values()):
            await task.wait()
        self._hub.close()

    async def aclose(self) -> None:
        """Stop every task with reason "shutdown", wait until each process is reaped,
        and close. Idempotent. If cancelled, the shutdown still completes in the
        background task that hosts the group."""
        self._state = Lifecycle.CLOSED
        if self._host is not None:
            self._closing.set()
            await asyncio.shield(self._host)
        elif self._group is not None:
            await self._shutdown()
        else:
            for task in list(self._tasks.values()):
                task.interrupt("shutdown")
            self._hub.close()

    def shutdown_now(self, reason: str = "shutdown", max_grace: float = 2.0) -> None:
        """Stop every task without the event loop, blocking; for interpreter exit.

        When a kernel shuts down its loop no longer runs, so `aclose` cannot. This sends
        SIGTERM to every live task's process group, waits up to the longest `grace` but
        at most `max_grace` for the groups to go, then SIGKILLs what is left. Each task
        ends INTERRUPTED with `reason`.

        Why the cap: jupyter_client gives a kernel that is shutting down half of its
        5 s wait before it sends SIGTERM, which would end this wait before its SIGKILL
        and leave a stubborn process behind.
        """
        self._state = Lifecycle.CLOSED
        live = [task for task in self._tasks.values() if not task.done]
        for task in live:
            # A listener may touch the closed loop and raise; the state has moved anyway.
            with contextlib.suppress(RuntimeError):
                task.interrupt(reason)
        groups = {task._group: task.grace for task in live if task._group is not None}
        end_groups_now(groups, max_grace)

    def __iter__(self) -> Iterator[OneshotTask]:
        return iter(self.tasks)
