"""An orchestrator's life and what it holds: its lifecycle, the error of a submit after
its close, and a snapshot of its tasks' states."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .machine import TaskState


class Lifecycle(enum.Enum):
    """Where an orchestrator is in its life; it goes one way only."""

    UNOPENED = "unopened"  # made; nothing submitted, no task group yet
    OPENED = "opened"  # a task group runs its tasks (its own, or a background one's)
    CLOSED = "closed"  # aclose, shutdown_now or the end of `async with`: no more submits


class OrchestratorClosed(RuntimeError):
    """Raised by `submit` once the orchestrator has been closed."""


@dataclass(frozen=True)
class OrchestratorStatistics:
    """A snapshot of what an orchestrator holds."""

    limit: int  # how many tasks may run at once
    created: int  # waiting for a slot (or about to spawn)
    running: int  # RUNNING
    idle: int  # IDLE: alive but silent
    interrupted: int
    completed: int
    failed: int

    @property
    def active(self) -> int:
        """Tasks holding a slot: RUNNING or IDLE."""
        return self.running + self.idle

    @classmethod
    def count(cls, limit: int, tasks: Iterable[Any]) -> OrchestratorStatistics:
        counts = dict.fromkeys(TaskState, 0)
        for task in tasks:
            counts[task.state] += 1
        return cls(limit, *(counts[state] for state in TaskState))
