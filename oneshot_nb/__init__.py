"""Run shell commands in the background from a notebook, each with a live lifecycle.

The engine (this package's top level) uses neither IPython nor ipywidgets; the
notebook layer loads with `%load_ext oneshot_nb`.
"""

from __future__ import annotations

from typing import Any

from .batch import Batch
from .events import Subscription, TaskEvent
from .machine import OneshotStateMachine, TaskState, Transition
from .orchestrator import AsyncOrchestrator, OrchestratorClosed, OrchestratorStatistics
from .records import TaskRecord, history
from .slots import Slots
from .task import OneshotTask

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext oneshot_nb`: register the magics (the only place IPython is imported)."""
    from .magics import load

    load(ipython)


__all__ = [
    "AsyncOrchestrator",
    "Batch",
    "OneshotStateMachine",
    "OneshotTask",
    "OrchestratorClosed",
    "OrchestratorStatistics",
    "Slots",
    "Subscription",
    "TaskEvent",
    "TaskRecord",
    "TaskState",
    "Transition",
    "history",
]
