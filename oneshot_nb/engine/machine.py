"""The task lifecycle: six states, seven events, and nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from statemachine import State, StateMachine

if TYPE_CHECKING:
    from ..runners import Group


logger = logging.getLogger("oneshot_nb")


class TaskState(str, Enum):
    """The state of a task, as its `OneshotStateMachine` holds it."""

    CREATED = "CREATED"  # waiting for a slot, its dependencies or a retry; no process
    RUNNING = "RUNNING"  # process alive and writing output
    IDLE = "IDLE"  # process alive but silent for longer than `idle_after`
    INTERRUPTED = "INTERRUPTED"  # stopped by the user, a timeout or a shutdown
    COMPLETED = "COMPLETED"  # process exited with code 0
    FAILED = "FAILED"  # non-zero exit, death by signal, or the spawn failed

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.INTERRUPTED, TaskState.COMPLETED, TaskState.FAILED})


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded change of state."""

    event: str
    source: TaskState
    target: TaskState
    time: float
    reason: str | None = None


class OneshotStateMachine(StateMachine):
    """Lifecycle of one task.

    Entering INTERRUPTED asks `process` (the command's process group) to terminate;
    that is the only side effect a transition has. Everything else (views, the store,
    the task's own bookkeeping) learns of transitions through listeners with
    `after_transition(event, source, target)`, which may also take `reason`: the events
    that end a task are given it (`machine.interrupt(reason="timeout")`). An event that
    is not allowed from the current state raises `TransitionNotAllowed`.
    """

    CREATED = State(initial=True)
    RUNNING = State()
    IDLE = State()
    INTERRUPTED = State(final=True)
    COMPLETED = State(final=True)
    FAILED = State(final=True)

    start = CREATED.to(RUNNING)
    # From IDLE too, to say a new reason for the silence (the command began, or
    # stopped, waiting for input) without leaving it.
    detect_silence = RUNNING.to(IDLE) | IDLE.to.itself()
    detect_activity = IDLE.to(RUNNING)
    # A failed attempt of a task given retries: back to waiting for the next one (from
    # CREATED itself when it failed to spawn).
    retry = CREATED.from_(CREATED, RUNNING, IDLE)
    interrupt = INTERRUPTED.from_(CREATED, RUNNING, IDLE)
    finish = COMPLETED.from_(RUNNING, IDLE)
    fail = FAILED.from_(CREATED, RUNNING, IDLE)

    def __init__(self, task_id: str, process: Group | None = None, **kwargs: Any) -> None:
        self.task_id = task_id
        self.process = process
        super().__init__(**kwargs)

    @property
    def task_state(self) -> TaskState:
        return TaskState(self.current_state_value)

    def on_enter_INTERRUPTED(self) -> None:
        if self.process is not None:
            try:
                self.process.terminate()
            except Exception:
                # A runner's fault must not undo the stop: the task is INTERRUPTED, and
                # the termination policy goes on (and kills) after the grace.
                logger.exception("oneshot_nb: could not terminate task %s", self.task_id)


class TaskMachine(OneshotStateMachine):
    """A task's machine: it hands its after_transition callbacks to the task.

    A method of the machine rather than a listener object: python-statemachine resolves
    a listener's callbacks anew for every machine made, which cost about a quarter of
    the machine's share of a short task.
    """

    def __init__(self, task: Any) -> None:
        self.task = task  # an OneshotTask: it has _on_transition
        super().__init__(task.id)

    def after_transition(
        self, event: Any, source: Any, target: Any, reason: str | None = None
    ) -> None:
        """`reason`: why a task ended, given to the event that ends it (machine.fail(
        reason="spawn error")); None gives "stopped" for INTERRUPTED, else "exit"."""
        self.task._on_transition(str(event), TaskState(source.id), TaskState(target.id), reason)
