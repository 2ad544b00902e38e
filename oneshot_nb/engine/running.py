"""One run of a task's command: a slot, the runner's start, the watchers, the reap.

The half of `OneshotTask` that takes it from CREATED to its end; `Supervision` holds
what runs beside the command meanwhile. Both are mixins working on the task's state.
"""

from __future__ import annotations

import asyncio
import threading
import time

import anyio

from ..runners import Handle, RunnerLost, RunnerStopped, end_group
from .machine import TaskState
from .slots import Slots
from .supervision import Supervision

# What a runner's start must give back (see runners/base.py, Handle; `place` may fail).
HANDLE_PARTS = ("pid", "stdout", "stderr", "group", "wait", "aclose")


class Running(Supervision):
    """Running the command once (see OneshotTask for the state used)."""

    async def run(self, slots: Slots | None = None) -> TaskState:
        """Wait for the tasks it runs after, then for a slot, run the command to its
        end (again, after a delay, while it fails and has retries left), and return the
        final state.

        On cancellation the process group is terminated (SIGKILL after `grace`) and
        reaped inside a shielded scope, the task ends INTERRUPTED with reason
        "shutdown", and the cancellation propagates.
        """
        if slots is not None and not isinstance(slots, Slots):
            raise TypeError(f"slots must be a Slots, got {type(slots).__name__}")
        if self._ran:
            raise RuntimeError(f"task {self.id} has already been run")
        self._ran = True
        try:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        except RuntimeError:
            pass  # another backend: stop() must then be called from the loop's thread
        try:
            if not self.after or await self._wait_for_dependencies():
                while True:
                    if slots is None:
                        await self._run_when_allowed()
                    else:
                        await self._run_in_slot(slots)
                    retrying = self.machine.CREATED.is_active and self.attempts
                    if not retrying or not await self._wait_to_retry():
                        break
        except BaseException:
            self.interrupt("shutdown")  # cancelled before the process started
            raise
        finally:
            self._settle()
        return self.state

    async def _run_in_slot(self, slots: Slots) -> None:
        if not self.machine.CREATED.is_active:
            return  # stopped before it ran: it must not take a turn from the others
        slot = None
        with anyio.CancelScope() as self._slot_wait:
            slot = await slots.acquire()
        self._slot_wait = None
        if slot is None:
            return  # stopped while waiting
        try:
            self.slot = slot
            await self._run_when_allowed()
        finally:
            slots.release(slot)

    async def _run_when_allowed(self) -> None:
        if self.machine.CREATED.is_active:
            await self._execute()

    async def _execute(self) -> None:
        env = {**self._environ, **self.env, "ONESHOT_TASK_ID": self.id}
        env["ONESHOT_ATTEMPT"] = str(self.attempt)
        if self.slot is not None:
            env["ONESHOT_SLOT"] = str(self.slot)
        process = None
        # A stop cancels a start that takes long (a worker that does not answer).
        with anyio.CancelScope() as self._start_wait:
            try:
                process = await self.runner.start(self.command, self.cwd, env, self.options)
            except RunnerStopped as exc:  # the runner gave up on it (its client closed)
                self.error = str(exc)
                self.interrupt(exc.reason)
                return
            except Exception as exc:  # OSError, ValueError (a cwd with a NUL), a runner's
                self._start_failed(f"{type(exc).__name__}: {exc}")
                return
            except asyncio.CancelledError:
                if _cancelled_here():
                    raise  # a stop (the scope above) or a shutdown: not the runner's
                self._start_failed("CancelledError: the runner's start was cancelled")
                return
        self._start_wait = None
        if process is None:
            return  # stopped while starting
        missing = [part for part in HANDLE_PARTS if not hasattr(process, part)]
        if missing:
            self._start_failed(
                f"the {self.runner.name!r} runner gave {process!r:.80}, not a handle"
                f" (no {', '.join(missing)})"
            )
            return
        try:
            await self._supervise(process)
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()

    def _start_failed(self, error: str) -> None:
        self.error = error
        if self.machine.CREATED.is_active:
            if "spawn" in self.options.retry_on:
                self._fail_or_retry("spawn error")
            else:
                self.machine.fail(reason="spawn error")

    async def _supervise(self, process: Handle) -> None:
        self.pid = process.pid
        self._process = process
        self._group = group = process.group
        self.machine.process = group
        if not self.machine.CREATED.is_active:
            with anyio.CancelScope(shield=True):
                await end_group(group, 0)  # stopped while spawning: it never gets to run
                await self._reap()
            return
        self._attempt_started = time.time()
        if self.started_at is None:  # the first attempt's: the task's elapsed time
            self.started_at = self._attempt_started
        self.last_activity = time.monotonic()
        self._stopped = anyio.Event()
        self._stdout_done, self._stderr_done = anyio.Event(), anyio.Event()
        self.machine.start()
        self._input_started()
        try:
            # Few tasks, and none cancelled on the way out: the watchers return by
            # themselves once the state is final. This keeps the cost of a short command
            # close to that of the process itself.
            async with anyio.create_task_group() as self._watchers:
                if self.idle_after is not None:
                    self._watchers.start_soon(self._watch_silence)
                if self.timeout is not None:
                    self._watchers.start_soon(self._watch_timeout)
                if self.machine.INTERRUPTED.is_active:
                    self._watchers.start_soon(self._enforce_stop)  # stopped while starting
                # Reaped as soon as it exits, not once its pipes end: a daemon it started
                # may hold them open long after, and it would stay a zombie till then.
                self._watchers.start_soon(self._reap)
                self._watchers.start_soon(self._pump, process.stderr, "stderr", self._stderr_done)
                await self._pump(process.stdout, "stdout", self._stdout_done)
                await self._stderr_done.wait()
                if self.lost is not None:
                    await end_group(group, self.grace)  # whatever of it may still run
                await self._reap()
                if self.machine.INTERRUPTED.is_active:
                    await self._stopped.wait()
                self._conclude()
        except BaseException:
            self._watchers = None
            with anyio.CancelScope(shield=True):
                self.interrupt("shutdown")
                await end_group(group, self.grace)
                await self._reap()
            raise
        finally:
            self._watchers = None

    async def _reap(self) -> None:
        """Wait for the command's exit and keep its code. A runner that lost it (its
        worker died), or failed to say it, is kept instead, for `_conclude` to say, and
        the output streams are closed: they would not end by themselves either."""
        process = self._process
        assert process is not None
        try:
            code = await process.wait()
        except RunnerStopped as exc:
            # The runner stopped it (its worker closed): a stop, though not the user's;
            # what the command wrote still comes, and the stop ends what is left.
            self.lost = self.lost or exc
            self.error = self.error or str(exc)
            self.interrupt(exc.reason)
            return
        except Exception as exc:
            await self._runner_fault(exc)
            return
        if isinstance(code, bool) or not isinstance(code, int) or not -255 <= code <= 255:
            await self._runner_fault(RunnerLost(f"the runner gave no exit code: {code!r:.40}"))
            return
        self.returncode = code


def _cancelled_here() -> bool:
    """Whether the running asyncio task is being cancelled (a stop or a shutdown), as
    opposed to a CancelledError that a runner let out of its own work."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return task is None or cancelling is None or cancelling() > 0
