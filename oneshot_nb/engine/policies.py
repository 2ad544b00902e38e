"""What a task does around its runs: the tasks it waits for, and its retries.

A mixin of `OneshotTask`, working on its state. A task given `after` waits in CREATED
until each of those tasks has COMPLETED, and fails ("dependency failed: NAME") without
running when one ends otherwise. A task given `retries` that fails goes back to CREATED
(the machine's `retry`), waits, and runs again as the same task: one view, one log,
one row in the history, with each attempt recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from .machine import TaskState
from .options import retry_delay

# Between the output of two attempts, in the log (and its history), on stderr.
ATTEMPT_NOTE = "[oneshot_nb] attempt {number} ended: {why}; attempt {next} of {total} in {delay}\n"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task's command: when, and how it ended."""

    number: int
    started_at: float | None
    ended_at: float
    returncode: int | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_after(after: object) -> list[Any]:
    """The tasks a task runs after: a sequence of tasks (a cycle cannot be made of tasks
    that exist already; a batch orders its own lines, see batch.py)."""
    # Policies is a base of OneshotTask, which imports this module.
    if isinstance(after, (str, bytes, Policies)) or not isinstance(after, Sequence):
        raise TypeError(f"after must be a list of tasks, got {type(after).__name__}")
    for task in after:
        if not isinstance(task, Policies):
            raise TypeError(f"after must be a list of tasks, got {type(task).__name__}")
    return list(dict.fromkeys(after))


def tasks_named(after: Any, get: Callable[[str], Any]) -> list[Any]:
    """`after` as tasks: each a task, or an id or name that `get` (an orchestrator's)
    finds; one that was never submitted nor run is refused: it would wait for ever."""
    if isinstance(after, (str, Policies)):
        after = [after]
    if not isinstance(after, Sequence):
        raise TypeError(f"after must be a list of tasks, ids or names, got {type(after).__name__}")
    tasks = []
    for item in after:
        if isinstance(item, str):
            try:
                item = get(item)
            except KeyError as exc:
                raise ValueError(f"after: {exc.args[0]}") from None
        elif isinstance(item, Policies) and item._loop is None and not item._ran:
            raise ValueError(f"after: task {item.id} was never submitted nor run")
        tasks.append(item)
    return tasks


class Policies:
    """Dependencies and retries (see OneshotTask for the state used)."""

    @property
    def waiting_for(self) -> list[str]:
        """The names of the tasks it still waits for (while CREATED, before its first
        run); empty once it has run, or has none."""
        if not self.after or not self.machine.CREATED.is_active or self.attempts:
            return []
        return [task.name for task in self.after if task.state is not TaskState.COMPLETED]

    async def _wait_for_dependencies(self) -> bool:
        """Wait until every task it runs after has ended; True when all COMPLETED. When
        one did not, the task fails without running; a stop meanwhile ends the wait."""
        with anyio.CancelScope() as self._slot_wait:
            for task in self.after:
                await task.wait()
                if task.state is not TaskState.COMPLETED:
                    if self.machine.CREATED.is_active:
                        self.machine.fail(reason=f"dependency failed: {task.name}")
                    return False
        self._slot_wait = None
        return self.machine.CREATED.is_active

    def _fail_or_retry(self, reason: str) -> None:
        """End the attempt that failed: the task FAILED, or CREATED again for the next
        attempt when it has retries left."""
        if self.attempt <= self.options.retries:
            self.machine.retry(reason=reason)
        else:
            self.machine.fail(reason=reason)

    def _note_attempt(self, reason: str, now: float) -> None:
        """Record the attempt that just ended (for a task that has retries): one that
        ran, or failed to spawn; not one stopped before it began."""
        if self._attempt_started is None and reason != "spawn error":
            return
        if self.options.retries:
            self.attempts.append(
                Attempt(self.attempt, self._attempt_started, now, self.returncode, reason)
            )
        self._attempt_started = None  # noted: a stop while it waits to retry is not one

    async def _wait_to_retry(self) -> bool:
        """After a failed attempt: say so in the log, wait the retry's delay (a stop
        ends the wait, and the task), and ready the next attempt. True to run it."""
        delay = retry_delay(self.options.retry_delay, self.attempt)
        last = self.attempts[-1] if self.attempts else None
        why = _why(last)
        note = ATTEMPT_NOTE.format(
            number=self.attempt,
            why=why,
            next=self.attempt + 1,
            total=self.options.retries + 1,
            delay=f"{delay:g}s",
        )
        self._log.append("stderr", note.encode())
        self._emit_output("stderr", note.encode(), note)
        self._new_attempt()  # input sent while it waits is for the next one
        self.retry_at = time.time() + delay
        with anyio.CancelScope() as self._slot_wait:
            await anyio.sleep(delay)
        self._slot_wait = None
        self.retry_at = None
        if not self.machine.CREATED.is_active:
            return False  # stopped meanwhile
        self.attempt += 1
        return True

    def _new_attempt(self) -> None:
        """Forget what the last attempt's process left: the next one has its own, and
        its own input (what is sent meanwhile waits for it)."""
        self.pid = None
        self.returncode = None
        self.error = None
        self.lost = None
        self._process = None
        self._group = None
        self._place = None
        self._attempt_started = None
        self._early_input, self._early_bytes, self._early_close = [], 0, False
        self.machine.process = None
        if self._agent_watch is not None:  # a new session of the agent: its own summary
            self._agent_watch = type(self._agent_watch)(self.options.agent)


def _why(attempt: Attempt | None) -> str:
    if attempt is None:
        return "failed"
    if attempt.returncode is not None and attempt.reason in ("exit", "signal"):
        return f"exit {attempt.returncode}" if attempt.returncode >= 0 else attempt.reason
    return attempt.reason
