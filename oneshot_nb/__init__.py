"""Run shell commands in the background from a notebook, each with a live lifecycle.

The engine (this package's top level) uses neither IPython nor ipywidgets; the
notebook layer loads with `%load_ext oneshot_nb`.
"""

from __future__ import annotations

from .events import Subscription, TaskEvent
from .machine import OneshotStateMachine, TaskState
from .orchestrator import AsyncOrchestrator, OrchestratorClosed, OrchestratorStatistics
from .slots import Slots
from .task import OneshotTask, Transition

__version__ = "0.1.0"

__all__ = [
    "AsyncOrchestrator",
    "OneshotStateMachine",
    "OneshotTask",
    "OrchestratorClosed",
    "OrchestratorStatistics",
    "Slots",
    "Subscription",
    "TaskEvent",
    "TaskState",
    "Transition",
]
