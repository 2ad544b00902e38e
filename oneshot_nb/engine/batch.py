"""A batch: several commands submitted together under a limit of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .events import TaskEvent
from .halt import FAIL_FAST, HaltRule, check_halt
from .machine import TaskState
from .options import (
    OPTION_NAMES,
    UNSET,
    Command,
    TaskOptions,
    check_commands,
    check_name,
    with_changes,
)
from .slots import Slots
from .task import OneshotTask


class Batch:
    """The tasks of one `submit_batch` call, in the order given.

    With a `halt` rule (see halt.py) the batch stops itself: once it is met, the tasks
    that have not started never do (INTERRUPTED, reason "halted: RULE"), and with
    `now,...` the running ones are interrupted too. `fail_fast` is `soon,fail=1`.
    """

    def __init__(self, tasks: list[OneshotTask], slots: Slots, halt: HaltRule | None) -> None:
        self.tasks = tasks
        self.slots = slots
        self.halt = halt
        self.halted = False  # the rule was met
        self._failed = self._succeeded = 0
        self.view: Any = None  # the notebook layer's widget, when there is one
        if halt is not None:
            for task in tasks:
                task.listeners.append(self._on_event)

    @property
    def fail_fast(self) -> bool:
        return self.halt == FAIL_FAST

    @classmethod
    def submit(
        cls,
        submit: Callable[..., OneshotTask],
        commands: Sequence[Command],
        defaults: TaskOptions,
        limit: int,
        halt: Any,
        runner: Any,
        options: dict[str, Any],
        names: Sequence[str | None] | None = None,
        after: Sequence[Sequence[str]] | None = None,
    ) -> Batch:
        """A batch of `commands` given to `submit` (an orchestrator's, whose options are
        `defaults`), under `limit` slots of their own; see AsyncOrchestrator.submit_batch.
        Every argument is checked before the first task is submitted."""
        commands = check_commands(commands)
        unknown = sorted(set(options) - OPTION_NAMES - {"options"})
        if unknown:
            raise TypeError(f"submit_batch() got unexpected options: {', '.join(unknown)}")
        halt = check_halt(halt)
        names = check_names(names, len(commands))
        order, after_lines = line_order(names, after, len(commands))
        slots = Slots(limit)
        base = options.pop("options", None)
        # Checked once for the whole batch, and shared by its tasks.
        shared = with_changes(defaults if base is None else base, options)
        tasks: list[OneshotTask | None] = [None] * len(commands)
        for line in order:  # a line after those it runs after
            tasks[line] = submit(
                commands[line],
                name=names[line] or UNSET,
                after=[tasks[other] for other in after_lines[line]],
                slots=slots,
                options=shared,
                runner=runner,
            )
        return cls([task for task in tasks if task is not None], slots, halt)

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
        target = event.target
        if event.kind != "transition" or target is None or self.halt is None:
            return
        if event.event == "retry" and self.halted:
            # A halt means no new start, a retry's included.
            for task in self.tasks:
                if task.id == event.task_id:
                    task.interrupt(f"halted: {self.halt}")
            return
        if self.halted or not target.is_final:
            return
        if target is TaskState.FAILED:
            self._failed += 1
        elif target is TaskState.COMPLETED:
            self._succeeded += 1
        if self.halt.met(self._failed, self._succeeded, len(self.tasks)):
            self.halted = True
            reason = f"halted: {self.halt}"
            for task in self.tasks:
                if task.state is TaskState.CREATED or self.halt.when == "now":
                    task.interrupt(reason)

    _on_event.wants_output = False  # type: ignore[attr-defined]  # see OutputWanted

    def __iter__(self) -> Iterator[OneshotTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        summary = ", ".join(f"{n} {s.value}" for s, n in self.counts().items() if n)
        return f"<Batch of {len(self.tasks)}: {summary}>"


def check_names(names: Any, count: int) -> list[str | None]:
    """The names of a batch's lines (None: a line's command names it), unique."""
    if names is None:
        return [None] * count
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != count:
        raise TypeError(f"names must be a list of {count} names (or None), one per command")
    seen: set[str] = set()
    for name in names:
        check_name(name)
        if name is not None:
            if name in seen:
                raise ValueError(f"names: two lines are named {name!r}")
            seen.add(name)
    return list(names)


def line_order(
    names: list[str | None], after: Any, count: int
) -> tuple[list[int], list[list[int]]]:
    """The lines in an order where each comes after the lines it runs after, and for
    each line those lines (by index). ValueError for a name no line has, and for a
    cycle, which it names."""
    if after is None:
        return list(range(count)), [[] for _ in range(count)]
    if isinstance(after, str) or not isinstance(after, Sequence) or len(after) != count:
        raise TypeError(f"after must be a list of {count} lists of line names, one per command")
    index = {name: line for line, name in enumerate(names) if name is not None}
    needs: list[list[int]] = []
    for line, wanted in enumerate(after):
        if isinstance(wanted, str) or not isinstance(wanted, Sequence):
            raise TypeError(f"after[{line}] must be a list of line names")
        lines = []
        for name in wanted:
            if name not in index:
                raise ValueError(f"line {line + 1} runs after {name!r}, but no line is named so")
            lines.append(index[name])
        needs.append(list(dict.fromkeys(lines)))
    return _ordered(needs, names), needs


def _ordered(needs: list[list[int]], names: list[str | None]) -> list[int]:
    """The lines, each after those it needs (a depth-first walk, without recursion: a
    chain of 10,000 lines is as good as one of 3); ValueError naming a cycle."""
    order: list[int] = []
    state = [0] * len(needs)  # 0: not seen, 1: on the path being walked, 2: placed
    for root in range(len(needs)):
        if state[root]:
            continue
        path, stack = [root], [iter(needs[root])]
        state[root] = 1
        while stack:
            line = next(stack[-1], None)
            if line is None:
                stack.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
            elif state[line] == 1:
                cycle = [*path[path.index(line) :], line]
                shown = " after ".join(names[n] or f"line {n + 1}" for n in cycle)
                raise ValueError(f"the batch's lines run after each other in a cycle: {shown}")
            elif state[line] == 0:
                state[line] = 1
                path.append(line)
                stack.append(iter(needs[line]))
    return order
