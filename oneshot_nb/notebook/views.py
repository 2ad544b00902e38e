"""ipywidgets views of tasks: rendering only, driven by the tasks' events.

The view of one task, and the one table of a batch or of a kernel's tasks, are made
here; the table itself is in `tables`, the log and other shared widgets in `parts`,
update pacing in `live` and the strings they all show in `render`.
"""

from __future__ import annotations

import weakref

import ipywidgets as widgets

from ..engine.batch import Batch
from ..engine.events import TaskEvent
from ..engine.orchestrator import AsyncOrchestrator
from ..engine.task import OneshotTask
from ..render.markup import CSS, STATE_COLOURS, agent_html, badge_html, info_html, title_html
from .live import UPDATE_INTERVAL, Throttle, _Live, ticker
from .parts import InputBar, LogView, header, show_stop
from .tables import PAGE_SIZE, TaskRow, TaskTable

__all__ = [
    "PAGE_SIZE",
    "STATE_COLOURS",
    "UPDATE_INTERVAL",
    "InputBar",
    "LogView",
    "TaskRow",
    "TaskTable",
    "TaskView",
    "batch_view",
    "task_view",
    "tasks_table",
]


class TaskView(widgets.VBox, _Live):
    """A task's badge, name and command, elapsed time, exit code, Stop button and log;
    in its info, what it waits for or which attempt it is on, and what it costs (CPU
    and memory while it runs, peak memory and CPU seconds once it has ended); an agent
    task's progress line above the log, and a task that takes input its input line
    under it."""

    def __init__(self, task: OneshotTask) -> None:
        self.task = task
        self.badge = widgets.HTML()
        self.title = widgets.HTML(title_html(task.name, task.command, task.id))
        self.title.add_class("oneshot-title-box")
        self.info = widgets.HTML()
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", button_style="danger", tooltip="Stop this task"
        )
        self.stop_button.layout.width = "80px"
        self.stop_button.on_click(lambda _: task.stop())
        self.agent_line = widgets.HTML()
        self.agent_line.add_class("oneshot-title-box")  # cut with an ellipsis, not wrapped
        self.log_view = LogView(task)
        self.input_bar = InputBar(task) if task.takes_input else None
        head = header([self.badge, self.title, self.info, self.stop_button])
        children = [widgets.HTML(CSS), head, self.agent_line, self.log_view]
        super().__init__(children if self.input_bar is None else [*children, self.input_bar])
        self.add_class("oneshot-task")
        self._throttle = Throttle(self._flush)
        self._flush()
        task.listeners.append(self._on_event)
        if not task.state.is_final:
            ticker.add(self)

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == "settled" or (
            event.kind == "transition" and event.target is not None and event.target.is_final
        ):
            # At once: the state is final by the time `await task.wait()` returns, and
            # a view still showing Stop enabled then would be wrong; a task ends once.
            # Settled: a stopped task's exit code comes when its process is reaped.
            self._throttle.now()
        elif event.kind in ("transition", "agent", "usage"):
            # An agent's summary may change with every line it prints, and what the task
            # costs once a second: paced like the rest.
            self._throttle.poke()

    _on_event.wants_output = False  # type: ignore[attr-defined]  # the log view has its own

    def __repr__(self) -> str:
        # The text a notebook stores beside the widget: stable, so nbval can compare it.
        return f"TaskView({self.task.name!r})"

    def tick(self) -> bool:
        self._throttle.poke()
        return not self.task.state.is_final

    def _flush(self) -> None:
        self.badge.value = badge_html(self.task)
        self.info.value = info_html(self.task)
        show_stop(self.stop_button, not self.task.state.is_final)
        agent = agent_html(self.task.agent)
        self.agent_line.value = agent
        self.agent_line.layout.display = None if agent else "none"
        if self.input_bar is not None:
            self.input_bar.refresh()


def task_view(task: OneshotTask) -> TaskView:
    """The one view of a task, made on first use."""
    if not isinstance(task.view, TaskView):
        task.view = TaskView(task)
    return task.view


def batch_view(batch: Batch) -> TaskTable:
    """The one view of a batch, its rows in the order of its commands, made on first use."""
    if not isinstance(batch.view, TaskTable):
        table = TaskTable(batch.tasks, batch.stop, progress=True)
        for task in batch.tasks:
            task.listeners.append(table.on_event)
        batch.view = table
    return batch.view


_tables: weakref.WeakKeyDictionary[AsyncOrchestrator, TaskTable] = weakref.WeakKeyDictionary()


def tasks_table(orchestrator: AsyncOrchestrator, page_size: int | None = None) -> TaskTable:
    """The live table of every task the orchestrator has, the newest first, including
    ones yet to come; with `page_size`, showing that many rows at first.

    One per orchestrator, shown again on each call: a listener per call would stay on
    the orchestrator for the kernel's life, each refreshing its own copy of the table.
    """
    table = _tables.get(orchestrator)
    if table is None:
        # Weakly, or the entry in _tables would keep its own key alive.
        ref = weakref.ref(orchestrator)

        def stop_all() -> None:
            orch = ref()
            if orch is not None:
                orch.stop_all()

        table = TaskTable(
            orchestrator.tasks, stop_all, newest_first=True, page_size=page_size or PAGE_SIZE
        )

        def follow(event: TaskEvent) -> None:
            if event.kind == "submitted":
                orch = ref()
                if orch is not None:
                    table.add(orch.get(event.task_id))
            else:
                table.on_event(event)

        follow.wants_output = False  # type: ignore[attr-defined]  # see OutputWanted
        orchestrator.listeners.append(follow)
        _tables[orchestrator] = table
    elif page_size is not None:
        table.show_page(page_size)
    return table
