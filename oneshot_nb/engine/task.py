"""One task: one shell command from spawn to reap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..agents import AgentSummary, AgentWatch
from ..runners import Group, Handle, LocalRunner, Place, Runner, RunnerLost
from .events import Listener, OutputWanted, TaskEvent, notify
from .input import Input
from .machine import OneshotStateMachine, TaskMachine, TaskState, Transition
from .options import (
    DEFAULT_GRACE,
    DEFAULT_IDLE_AFTER,
    DEFAULT_MAX_LOG_BYTES,
    UNSET,
    Command,
    TaskOptions,
    check_command,
    check_cwd,
    check_features,
    check_runner,
    check_task_id,
    default_name,
    environ_now,
    with_changes,
)
from .output import BoundedLog
from .policies import Attempt, Policies, check_after
from .running import Running
from .usage import Usage

__all__ = ["DEFAULT_GRACE", "DEFAULT_IDLE_AFTER", "DEFAULT_MAX_LOG_BYTES", "OneshotTask"]

logger = logging.getLogger("oneshot_nb")
LOCAL = LocalRunner()  # what a task runs on when it is given no runner


class OneshotTask(Running, Input, Policies):
    """A shell command (or argv list) run in the background, with a lifecycle.

    `machine` is the single source of truth for the state; `state`, `reason` and the
    recorded `transitions` follow from its callbacks. `await task.wait()` (or `await
    task`) returns the final state once the process is reaped and its output drained.
    A failed spawn, a non-zero exit and a stop are states, not exceptions.

    The options come from `options` (a TaskOptions, checked once), with any of `name`,
    `idle_after`, `timeout`, `grace`, `cwd`, `env`, `max_log_bytes`, `pty`, `stdin` and
    `agent`, `retries`, `retry_delay` and `retry_on` given here replacing its own (see
    TaskOptions for their defaults and why). `runner` says where the command runs: by
    default, on this machine. `after` holds tasks it waits for: it runs once each has
    COMPLETED, and fails without running ("dependency failed: NAME") if one did not.
    """

    def __init__(
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
        after: Sequence[OneshotTask] = (),
        task_id: str | None = None,
        options: TaskOptions | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.command: Command = check_command(command)
        given = {
            "name": name,
            "idle_after": idle_after,
            "timeout": timeout,
            "grace": grace,
            "cwd": cwd,
            "env": env,
            "max_log_bytes": max_log_bytes,
            "pty": pty,
            "cols": cols,
            "rows": rows,
            "stdin": stdin,
            "agent": agent,
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_on": retry_on,
        }
        self.options = with_changes(options, given)
        self.after: list[OneshotTask] = check_after(after)
        self.runner: Runner = LOCAL if runner is None else check_runner(runner)
        check_features(self.runner, self.options)
        # Fixed now, not at spawn: a task that waits for a slot runs where, and with the
        # environment that, the kernel had when it was submitted.
        self.cwd = self.options.cwd if self.options.cwd is not None else check_cwd(None)
        self._environ = environ_now()
        self.id = check_task_id(task_id) or secrets.token_hex(4)
        self.name = self.options.name or default_name(self.command)
        self.created_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.pid: int | None = None
        self.slot: int | None = None
        self.returncode: int | None = None
        self.reason: str | None = None
        self.error: str | None = None
        self.transitions: list[Transition] = []
        self.listeners: list[Listener] = []
        self.view: Any = None  # the notebook layer's widget, when there is one
        # Awaited after each chunk read: lets a slow consumer (the store's disk) slow
        # the reading down, and so the process, instead of queueing without bound.
        self.output_gate: Callable[[], Awaitable[None]] | None = None
        # Asked before each chunk is decoded and sent out as an event: the orchestrator
        # answers whether anyone listens and wants text, so that unwatched output costs
        # no event and output only stored costs no decoding. None: text for all.
        self.output_wanted: Callable[[], OutputWanted] | None = None
        self.bytes_written = {"stdout": 0, "stderr": 0}
        self.bytes_sent = 0  # input given to `send`
        self.usage: Usage | None = None  # its CPU and memory, sampled while it runs
        self.attempt = 1  # which run of its command this is (see `retries`)
        self.attempts: list[Attempt] = []  # those that ended, for a task with retries
        self.retry_at: float | None = None  # when the next attempt starts, while it waits
        self._attempt_started: float | None = None
        # Input sent before the command started, in order (None: an end of input asked
        # for then), written once it has.
        self._early_input: list[bytes | None] = []
        self._early_bytes = 0
        self._early_close = False  # close_stdin was called (for a pipe: no more input)
        self._agent_watch = AgentWatch(self.options.agent) if self.options.agent else None
        # True when a stop closed pipes that a process outside the group held open.
        self.output_cut = False
        self.last_activity = time.monotonic()
        self._log = BoundedLog(self.options.max_log_bytes)
        self._ran = False
        self._settled = False
        self._idle = False  # machine.IDLE.is_active, kept by _on_transition: read per chunk
        self._done: anyio.Event | None = None
        self._watchers: TaskGroup | None = None
        self._group: Group | None = None
        self._process: Handle | None = None
        self._place: Place | None = None
        self.lost: RunnerLost | None = None  # set when the runner lost the command
        self._stdout_done: anyio.Event | None = None
        self._stderr_done: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._gated = 0  # pumps waiting at the output gate: they will read again
        self._state_waiters: list[anyio.Event] = []
        self._slot_wait: anyio.CancelScope | None = None
        self._start_wait: anyio.CancelScope | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.machine: OneshotStateMachine = TaskMachine(self)

    # -- its options ------------------------------------------------------------------

    @property
    def idle_after(self) -> float | None:
        return self.options.idle_after

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @property
    def grace(self) -> float:
        return self.options.grace

    @property
    def env(self) -> Mapping[str, str]:
        return self.options.env

    @property
    def max_log_bytes(self) -> int:
        return self.options.max_log_bytes

    @property
    def place(self) -> Place | None:
        """Where the command runs (runner, host, pid, start time), once it has started."""
        if self._place is None and self._process is not None:
            try:
                place = self._process.place()
                if not isinstance(place, Place):
                    raise TypeError(f"place() gave {place!r:.60}, not a Place")
                self._place = place
            except Exception:  # a runner's fault: the history does without it
                logger.exception("oneshot_nb: task %s: where does it run?", self.id)
                return None
        return self._place

    # -- what the task is -------------------------------------------------------------

    @property
    def state(self) -> TaskState:
        return self.machine.task_state

    @property
    def output(self) -> str:
        """The retained output, stdout and stderr in arrival order (the newest
        `max_log_bytes` of it; `output_dropped` counts what was let go). A task given
        `stdin` has its input there too, where it was sent, as a terminal would show it
        (a `pty` task's terminal echoes it into stdout by itself)."""
        return self._log.text()

    def output_chunks(self, final: bool = True) -> list[tuple[str, str]]:
        """The retained output as (stream, text) pieces in arrival order; with `final`
        false, without a character cut by the last read (see BoundedLog.chunks)."""
        return self._log.chunks(final)

    @property
    def output_dropped(self) -> int:
        return self._log.dropped_bytes

    def read_output(self, stream: str | None = None) -> str:
        """The retained output of one stream ("stdout", "stderr", or "stdin": the
        input sent to a `stdin` task), or of all."""
        return self._log.text(stream)

    @property
    def agent(self) -> AgentSummary | None:
        """The progress of an agent CLI (a task given `agent`) as its output tells it:
        turns, tool calls, the last tool and message, tokens, cost, its result. None for
        other tasks, and until an `agent="auto"` task's output is recognised."""
        return self._agent_watch.summary if self._agent_watch is not None else None

    @property
    def done(self) -> bool:
        """True once the task has ended and its process has been reaped."""
        return self._settled

    @property
    def elapsed(self) -> float | None:
        """Seconds since the process started; frozen once the task has ended."""
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    @property
    def silent_for(self) -> float:
        """Seconds since the last output (or since the start, before any)."""
        return time.monotonic() - self.last_activity

    def __repr__(self) -> str:
        return f"<OneshotTask {self.id} {self.name!r} {self.state.value}>"

    # -- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Interrupt the task: SIGTERM to its process group, SIGKILL after `grace`.

        Synchronous and idempotent, so a button callback can call it; a no-op on a task
        that has ended. A task stopped while waiting for a slot never starts. Output the
        process wrote before it died is still read and kept. From a thread other than
        the event loop's, the stop is handed to the loop and happens there.
        """
        if self.state.is_final:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs
                self._loop.call_soon_threadsafe(self.interrupt, "stopped")
        else:
            self.interrupt("stopped")

    def bind_to_running_loop(self) -> None:
        """Note the running loop as the task's own, so that stop() from another thread
        is handed to it even before the task has started."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def interrupt(self, reason: str) -> None:
        """Fire the `interrupt` transition with `reason`, unless the task has ended."""
        if self.state.is_final:
            return
        self.machine.interrupt(reason=reason)

    async def wait(self) -> TaskState:
        """Wait until the task has ended and its process is reaped; return the state.

        Cancelling the wait leaves the task running. From another event loop than the
        task's (a terminal IPython cell, while tasks run on a loop thread), the wait
        happens on the task's loop.
        """
        elsewhere = self._elsewhere()
        if elsewhere is not None:
            return await elsewhere(self.wait())
        if not self._settled:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()
        return self.state

    async def wait_for(self, *states: TaskState | str) -> TaskState:
        """Wait until the task is in one of `states` (or has ended); return its state.

        `await task.wait_for("RUNNING")` waits for the process to have started.
        """
        wanted = {TaskState(state) for state in states}
        elsewhere = self._elsewhere()
        if elsewhere is not None:
            return await elsewhere(self.wait_for(*wanted))
        while self.state not in wanted and not self.state.is_final:
            changed = anyio.Event()
            self._state_waiters.append(changed)
            await changed.wait()
        return self.state

    def _elsewhere(self) -> Callable[[Coroutine[Any, Any, TaskState]], Awaitable[TaskState]] | None:
        """How to await on the task's own loop, when the caller runs another one (its
        events are set there, and would never wake this loop); None when it need not."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            return None  # another backend: as before, on this loop
        task_loop = self._loop
        if task_loop is None or task_loop is here or task_loop.is_closed():
            return None

        def run_there(waiting: Coroutine[Any, Any, TaskState]) -> Awaitable[TaskState]:
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(waiting, task_loop))

        return run_there

    def __await__(self) -> Generator[Any, None, TaskState]:
        return self.wait().__await__()

    # -- callbacks from the state machine ----------------------------------------------

    def _on_transition(
        self, event: str, source: TaskState, target: TaskState, reason: str | None
    ) -> None:
        now = time.time()
        if target.is_final:
            reason = reason or ("stopped" if target is TaskState.INTERRUPTED else "exit")
            self.reason = reason
            self.ended_at = now
        else:
            # IDLE may say why ("waiting for input"), and a retry why the attempt failed;
            # RUNNING has none.
            reason = reason if target is TaskState.IDLE or event == "retry" else None
            self.reason = reason
        if event == "retry" or target.is_final:
            self._note_attempt(reason or "", now)
        self.transitions.append(Transition(event, source, target, now, reason))
        self._idle = target is TaskState.IDLE
        if self.listeners:
            notify(
                self.listeners,
                TaskEvent(self.id, "transition", now, event, source, target, reason),
            )
        # What follows schedules work on the loop; at interpreter exit the loop is closed
        # and refuses, but the transition above has been made and told all the same.
        with contextlib.suppress(RuntimeError):
            if target is TaskState.INTERRUPTED:
                if self._watchers is not None:
                    self._watchers.start_soon(self._enforce_stop)
                if self._slot_wait is not None:
                    self._slot_wait.cancel()
                if self._start_wait is not None:
                    self._start_wait.cancel()
            waiters, self._state_waiters = self._state_waiters, []
            for waiter in waiters:
                waiter.set()
        if target.is_final and not self._ran:
            self._settle()  # never run, so no run() will settle it

    def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        if self.listeners:
            notify(
                self.listeners,
                TaskEvent(self.id, "settled", time.time(), target=self.state, reason=self.reason),
            )
        if self._done is not None:
            self._done.set()
