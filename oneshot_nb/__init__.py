"""Run shell commands in the background from a notebook, each with a live lifecycle.

The layers, each a subpackage, import downwards only (checked by `lint-imports`):
`notebook` (the extension, magics, widgets) over `storage` (SQLite history) and
`render` (what any front end shows), over `engine` (tasks, orchestrator), over
`runners` (where a command runs). Only `notebook` imports IPython or ipywidgets; it
loads with `%load_ext oneshot_nb`. See docs/architecture.md.
"""

from __future__ import annotations

import sys
from typing import Any

from .engine import (
    AsyncOrchestrator,
    Batch,
    OneshotStateMachine,
    OneshotTask,
    OrchestratorClosed,
    OrchestratorStatistics,
    Slots,
    Subscription,
    TaskEvent,
    TaskState,
    Transition,
    batch,
    events,
    machine,
    orchestrator,
    slots,
    task,
)
from .storage import records
from .storage.records import TaskRecord, history

# Where the public names lived before the package was split into layers: imports of
# those modules (`from oneshot_nb.task import OneshotTask`) keep working.
for _module in (batch, events, machine, orchestrator, records, slots, task):
    sys.modules.setdefault(f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}", _module)
del _module

from ._version import __version__ as __version__  # noqa: E402


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext oneshot_nb`: register the magics (the only place IPython is imported)."""
    from .notebook.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext oneshot_nb`: take the magics away; running tasks keep running, and
    `%load_ext oneshot_nb` brings them back within reach."""
    from .notebook.extension import unload

    unload(ipython)


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


def __getattr__(name: str) -> Any:
    # The Dask runner needs the `dask` extra (distributed): imported when asked for.
    if name == "DaskRunner":
        from .runners.dask import DaskRunner

        return DaskRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
