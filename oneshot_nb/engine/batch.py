"""A batch: several commands submitted together under a limit of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .events import TaskEvent
from .machine import TaskState
from .options import (
    OPTION_NAMES,
    Command,
    TaskOptions,
    check_commands,
    check_flag,
    with_changes,
)
from .slots import Slots
from .task import OneshotTask


class Batch:
    """The tasks of one `submit_batch` call, in the order given.

    With `fail_fast`, the first task to fail stops every other task of the batch: those
    running are interrupted (reason "fail-fast"), those waiting never start.
    """

    def __init__(self, tasks: list[OneshotTask], slots: Slots, fail_fast: bool) -> None:
        self.tasks = tasks
        self.slots = slots
        self.fail_fast = fail_fast
        self.view: Any = None  # the notebook layer's widget, when there is one
        if fail_fast:
            for task in tasks:
                task.listeners.append(self._on_event)

    @classmethod
    def submit(
        cls,
        submit: Callable[..., OneshotTask],
        commands: Sequence[Command],
        defaults: TaskOptions,
        limit: int,
        fail_fast: bool,
        runner: Any,
        options: dict[str, Any],
    ) -> Batch:
        """A batch of `commands` given to `submit` (an orchestrator's, whose options are
        `defaults`), under `limit` slots of their own; see AsyncOrchestrator.submit_batch.
        Every argument is checked before the first task is submitted."""
        commands = check_commands(commands)
        unknown = sorted(set(options) - OPTION_NAMES - {"options"})
        if unknown:
            raise TypeError(f"submit_batch() got unexpected options: {', '.join(unknown)}")
        check_flag("fail_fast", fail_fast)
        slots = Slots(limit)
        base = options.pop("options", None)
        # Checked once for the whole batch, and shared by its tasks.
        shared = with_changes(defaults if base is None else base, options)
        tasks = [submit(c, slots=slots, options=shared, runner=runner) for c in commands]
        return cls(tasks, slots, fail_fast)

    @property
    def limit(self) -> int:
        return self.slots.limit

    def counts(self) -> dict[TaskState, int]:
        """How many tasks of the batch are in each state."""
        counts = dict.fromkeys(TaskState, 0)
        for task in self.tasks:
            counts[task.state] += 1
        return counts

    @property
    def done(self) -> bool:
        return all(task.state.is_final for task in self.tasks)

    def stop(self) -> None:
        """Stop every task of the batch that has not ended."""
        for task in self.tasks:
            task.stop()

    async def wait(self) -> list[TaskState]:
        """Wait until every task has ended; return their final states in order."""
        return [await task.wait() for task in self.tasks]

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == "transition" and event.target is TaskState.FAILED:
            for task in self.tasks:
                task.interrupt("fail-fast")

    _on_event.wants_output = False  # type: ignore[attr-defined]  # see OutputWanted

    def __iter__(self) -> Iterator[OneshotTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        summary = ", ".join(f"{n} {s.value}" for s, n in self.counts().items() if n)
        return f"<Batch of {len(self.tasks)}: {summary}>"
