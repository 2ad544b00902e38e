"""Tables of many tasks (%oneshot_tasks, a batch's view), a page of rows at a time.

A table over ten thousand tasks costs about what one page costs: rows are widgets only
for the tasks shown (`PAGE_SIZE` at first, a page more per click), a row's log only once
it is opened, the counts per state are kept from transition events instead of counted
again, and a refresh touches only the rows whose task changed. Rows share their layouts
and styles, and tick their elapsed times in the ticker's turns, not all at once.

Rows stay in their places and are given other tasks when the page moves (a new task on
top of a newest-first table): the frontend then changes the text of a row instead of
building and dropping views for every task that passes through, which froze a browser
under a steady stream of new tasks. The page moves at most once per PAGE_INTERVAL.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable

import ipywidgets as widgets

from ..engine.events import TaskEvent
from ..engine.machine import TaskState
from ..engine.task import OneshotTask
from ..render.markup import (
    CSS,
    PAGE_SIZE,
    STATE_COLOURS,
    agent_html,
    agents_total,
    badge_html,
    info_html,
    line_html,
    title_html,
    waiting_html,
)
from .live import Throttle, _Live, ticker
from .parts import LogView, Row, RowParts, show_stop

PAGE_INTERVAL = 1.0  # seconds between two moves of a page that new tasks push on


def _moving(task: OneshotTask) -> bool:
    """Whether a task's row shows something that moves on its own, refreshed on each
    tick: an elapsed time and what it costs (it has started, and may wait to retry), a
    retry's countdown, or the tasks it waits for (a dependency ends with no event of
    its own task)."""
    if task.state.is_final:
        return False
    return task.started_at is not None or bool(task.waiting_for)


class TaskRow(Row, _Live):
    """A task in a table: badge, name and command, info (as a task's view has it, what
    it costs and waits for included), Stop, and its log on demand.

    `bind` gives the row another task; open logs are kept in `logs` by task id, so that
    a log stays open with its task when the task moves to another row.
    """

    def __init__(
        self,
        task: OneshotTask,
        parts: RowParts | None = None,
        logs: dict[str, LogView] | None = None,
    ) -> None:
        self.task = task
        self._logs = {} if logs is None else logs
        self._binding = False
        parts = parts or RowParts()
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop this task",
            layout=parts.stop,
            style=parts.button_style,
        )
        self.stop_button.on_click(lambda _: self.task.stop())
        super().__init__(parts, [self.stop_button], "Show the log")
        self._title = title_html(task.name, task.command, task.id)
        self._closed = False
        self._show_its_log()
        self.refresh()
        if not task.state.is_final:
            ticker.add(self)

    def bind(self, task: OneshotTask) -> None:
        """Show `task` in this row instead, with its log if that is open."""
        if task is self.task:
            return
        self.task = task
        self._title = title_html(task.name, task.command, task.id)
        self._show_its_log()
        self.refresh()
        if not task.state.is_final:
            ticker.add(self)

    def _show_its_log(self) -> None:
        view = self._logs.get(self.task.id)
        self._binding = True
        try:
            self.log_button.value = view is not None
        finally:
            self._binding = False
        self.log_view = view
        children = (self.line,) if view is None else (self.line, view)
        if children != self.children:
            self.children = children

    def _toggle_log(self, change: dict) -> None:
        if self._binding:
            return
        if change["new"]:
            view = self._logs.get(self.task.id)
            if view is None:
                view = self._logs[self.task.id] = LogView(self.task)
            self.log_view = view
            self.children = (self.line, view)
        else:
            self.children = (self.line,)
            self.log_view = None
            view = self._logs.pop(self.task.id, None)
            if view is not None:
                view.close()

    def refresh(self) -> None:
        if self._closed:
            return  # its task left the page while its exit code was on the way
        task = self.task
        waiting = waiting_html(task.state, task.reason)
        line = line_html(badge_html(task), self._title, waiting, info_html(task))
        # An agent's progress goes under its row, in the same widget: one value per row.
        self.text.value = line + agent_html(task.agent)
        # A row's Stop stays plain: a column of red buttons would shout over the badges.
        self.stop_button.disabled = self.task.state.is_final

    def tick(self) -> bool:
        if self._closed:
            return False
        if _moving(self.task):
            self.refresh()
        return not self.task.state.is_final

    def make_log(self) -> LogView:
        return LogView(self.task)

    def close(self) -> None:
        self._closed = True
        ticker.discard(self)
        view = self._logs.pop(self.task.id, None)
        if view is not None:
            view.close()
        super().close()


class TaskTable(widgets.VBox):
    """Counts per state, a Stop-all button, and a page of task rows with more on demand.

    The rows shown are the first `page_size` of the tasks in order, or with
    `newest_first` the newest; tasks submitted later come in through `add`, and every
    transition of every task through `on_event`.
    """

    def __init__(
        self,
        tasks: Iterable[OneshotTask],
        stop_all: Callable[[], None],
        *,
        progress: bool = False,
        newest_first: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._tasks = list(tasks)
        self._newest_first = newest_first
        self.page_size = self._shown = page_size
        # Counted once here; from now on each transition moves one task between states.
        self._counts = dict.fromkeys(TaskState, 0)
        for task in self._tasks:
            self._counts[task.state] += 1
        # Agent tasks, whose tokens and cost the header adds up (again only on a change).
        self._agents = {task.id: task for task in self._tasks if task.options.agent}
        self._totals = ""
        self._totals_stale = bool(self._agents)
        self._rows: dict[str, TaskRow] = {}  # by the id of the task each shows
        self._row_list: list[TaskRow] = []  # in their places, top first
        self._logs: dict[str, LogView] = {}  # open logs, by task id
        self._dirty: set[str] = set()  # ids of shown tasks whose row is out of date
        self._page_stale = True  # which tasks are shown, or their order, has changed
        self._parts = RowParts()
        self.counts = widgets.HTML()
        self.progress = widgets.IntProgress(
            min=0, max=1, value=0, bar_style="info", layout=widgets.Layout(width="180px")
        )
        self.progress.layout.display = None if progress else "none"
        self.stop_all_button = widgets.Button(
            description="Stop all", icon="stop", button_style="danger", tooltip="Stop all"
        )
        self.stop_all_button.on_click(lambda _: stop_all())
        head = widgets.HBox(
            [self.counts, self.progress, self.stop_all_button],
            layout=widgets.Layout(align_items="center", grid_gap="10px"),
        )
        self.rows_box = widgets.VBox()
        self.more_note = widgets.HTML()
        self.more_button = widgets.Button(tooltip="Show more rows")
        self.more_button.on_click(lambda _: self.show_more())
        self.footer = widgets.HBox(
            [self.more_note, self.more_button],
            layout=widgets.Layout(align_items="center", grid_gap="10px"),
        )
        super().__init__([widgets.HTML(CSS), head, self.rows_box, self.footer])
        self.add_class("oneshot-table")
        self._throttle = Throttle(self._flush)
        self._page_throttle = Throttle(self._flush_page, PAGE_INTERVAL)
        self._show_page()
        self._flush()

    def __repr__(self) -> str:
        return f"TaskTable({len(self._tasks)} tasks)"

    @property
    def live(self) -> int:
        """How many tasks have not ended."""
        return sum(n for state, n in self._counts.items() if not state.is_final)

    def add(self, task: OneshotTask) -> None:
        """A task submitted after the table was made."""
        self._tasks.append(task)
        self._counts[task.state] += 1
        if task.options.agent:
            self._agents[task.id] = task
            self._totals_stale = True
        if self._newest_first or len(self._tasks) <= self._shown:
            self._page_stale = True
            self._page_throttle.poke()
        self._throttle.poke()

    def on_event(self, event: TaskEvent) -> None:
        # "usage" is left to the ticks: a running task's row is refreshed on each, and
        # an ended task's last figures come before its final transition and settled.
        if event.kind == "agent":  # as often as a line of its output: paced
            if event.task_id in self._rows:
                self._dirty.add(event.task_id)
            self._totals_stale = True
            self._throttle.poke()
            return
        if event.kind == "settled":  # a stopped task's exit code is known now
            row = self._rows.get(event.task_id)
            if row is not None:
                row.refresh()
            return
        if event.kind != "transition" or event.source is None or event.target is None:
            return
        self._counts[event.source] -= 1
        self._counts[event.target] += 1
        row = self._rows.get(event.task_id)
        if event.target.is_final:
            # At once, as a task's own view does: a task ends once, and the last one to
            # end leaves Stop all enabled for a moment otherwise.
            if row is not None:
                row.refresh()
            if not self.live:
                self._throttle.now()
                return
        elif row is not None:
            self._dirty.add(event.task_id)
        self._throttle.poke()

    on_event.wants_output = False  # type: ignore[attr-defined]  # see OutputWanted

    def show_more(self) -> None:
        """Show one page more."""
        self._shown += self.page_size
        self._show_page()
        self._throttle.now()

    def show_page(self, size: int) -> None:
        """Show `size` rows again, and `size` more per click from now on."""
        self.page_size = self._shown = size
        self._show_page()
        self._throttle.now()

    def _page(self) -> list[OneshotTask]:
        if self._newest_first:
            return self._tasks[-self._shown :][::-1]
        return self._tasks[: self._shown]

    def _flush_page(self) -> None:
        # The page moves on its own, slower turn; a click or a new page size moves it now.
        if self._page_stale:
            self._show_page()
        self._show_counts()

    def _flush(self) -> None:
        for task_id in self._dirty:
            row = self._rows.get(task_id)
            if row is not None:
                row.refresh()
        self._dirty.clear()
        self._show_counts()

    def _show_page(self) -> None:
        page = self._page()
        shown = {task.id for task in page}
        for task_id in [t for t in self._logs if t not in shown]:
            self._logs.pop(task_id).close()  # its task has left the page
        rows = self._row_list
        for row in rows[len(page) :]:
            row.close()
        del rows[len(page) :]
        for row, task in zip(rows, page, strict=False):
            row.bind(task)
        rows += [TaskRow(task, self._parts, self._logs) for task in page[len(rows) :]]
        self._rows = {row.task.id: row for row in rows}
        children = tuple(rows)
        if children != self.rows_box.children:
            self.rows_box.children = children
        self._page_stale = False

    def _show_counts(self) -> None:
        self.counts.value = (
            "".join(
                f'<span class="oneshot-count" data-state="{s.value}" style="margin-right:10px;'
                f'white-space:nowrap;color:{STATE_COLOURS[s] if n else "#aaa"};font-weight:600">'
                f"{s.value} {n}</span>"
                for s, n in self._counts.items()
            )
            + self._agent_totals()
        )
        total = len(self._tasks)
        finished = total - self.live
        with self.progress.hold_sync():
            self.progress.max = max(1, total)
            self.progress.value = finished
            self.progress.description = f"{finished}/{total}"
            self.progress.bar_style = "danger" if self._counts[TaskState.FAILED] else "info"
        show_stop(self.stop_all_button, finished < total)
        shown = len(self._rows)
        if shown < total:
            which = "newest" if self._newest_first else "first"
            self.more_note.value = (
                f'<span style="color:#555">the {which} {shown} of {total} tasks</span>'
            )
            self.more_button.description = f"Show {min(self.page_size, total - shown)} more"
            self.footer.layout.display = None
        else:
            self.footer.layout.display = "none"

    def _agent_totals(self) -> str:
        """The tokens and cost of the agent tasks, summed over those that report them."""
        if self._totals_stale:
            self._totals_stale = False
            text = agents_total(t.agent for t in self._agents.values() if t.agent is not None)
            self._totals = text and (
                f'<span class="oneshot-totals" style="color:#555;white-space:nowrap">'
                f"{html.escape(text)}</span>"
            )
        return self._totals
