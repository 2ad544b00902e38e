"""The engine: tasks, their state machine and options, the orchestrator, batches, events.

No IPython, ipywidgets or sqlite3 here, and no runner in particular: commands run
through the runner protocol of `oneshot_nb.runners`. The package's top level
re-exports the names most code needs; `TaskOptions` and `Lifecycle` are here.
"""

from .batch import Batch
from .events import Subscription, TaskEvent
from .machine import OneshotStateMachine, TaskState, Transition
from .options import TaskOptions
from .orchestrator import AsyncOrchestrator, Lifecycle, OrchestratorClosed, OrchestratorStatistics
from .slots import Slots
from .task import OneshotTask

__all__ = [
    "AsyncOrchestrator",
    "Batch",
    "Lifecycle",
    "OneshotStateMachine",
    "OneshotTask",
    "OrchestratorClosed",
    "OrchestratorStatistics",
    "Slots",
    "Subscription",
    "TaskEvent",
    "TaskOptions",
    "TaskState",
    "Transition",
]
