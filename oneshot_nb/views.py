"""ipywidgets views of tasks: rendering only, driven by the tasks' events.

Every view learns of changes from its task's listeners (state-machine callbacks and
output events), never by polling, and sends at most one update per widget per
`UPDATE_INTERVAL`: events only mark it dirty, a timer on the loop flushes.
"""

from __future__ import annotations

import asyncio
import html
import signal
import time
import weakref
from collections.abc import Callable, Iterable

import ipywidgets as widgets

from .batch import Batch
from .events import TaskEvent
from .machine import TaskState
from .options import default_name
from .orchestrator import AsyncOrchestrator
from .tail import LogTail
from .task import OneshotTask

UPDATE_INTERVAL = 0.1  # at most ~10 updates a second per widget
# A log changes on every chunk of a busy task; five updates a second still read as live
# and halve what a flood costs the kernel (measured by benchmarks/views.py).
LOG_UPDATE_INTERVAL = 0.2
NOTE_INTERVAL = 1.0  # how often the "N earlier lines not shown" count moves on
PENDING_CHARS = 4 << 20  # output a log view holds between two updates, at most
TICK_INTERVAL = 1.0  # how often elapsed times move on
TICK_SLICES = 10  # views tick in this many turns spread over TICK_INTERVAL

# Layout the widgets' own properties cannot express: the log keeps its newest line in
# view, and a long command gives way (with an ellipsis) instead of crushing the buttons.
CSS = """<style>
.oneshot-log { display: flex; flex-direction: column-reverse; }
.oneshot-log > .jp-OutputArea { flex: none; }
.oneshot-head > * { flex: none; }
.oneshot-head > .oneshot-title-box { flex: 1 1 0; min-width: 0; overflow: hidden; }
.oneshot-title-box > .widget-html-content { min-width: 0; overflow: hidden; }
.oneshot-title { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.oneshot-badge { display: inline-block; min-width: 11ch; text-align: center; }
</style>"""

STATE_COLOURS = {
    TaskState.CREATED: "#616161",
    TaskState.RUNNING: "#1565c0",
    TaskState.IDLE: "#b26a00",
    TaskState.INTERRUPTED: "#6a1b9a",
    TaskState.COMPLETED: "#2e7d32",
    TaskState.FAILED: "#c62828",
}


class Throttle:
    """Calls `flush` soon after `poke`, but never twice within `interval` seconds."""

    def __init__(self, flush: Callable[[], None], interval: float = UPDATE_INTERVAL) -> None:
        self._flush = flush
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._last = float("-inf")
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # no loop, nothing to wait on: flush at once

    def poke(self) -> None:
        if self._loop is None or self._loop.is_closed():
            self._flush()
        elif self._handle is None:
            delay = max(0.0, self._last + self._interval - self._loop.time())
            self._handle = self._loop.call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        assert self._loop is not None
        self._last = self._loop.time()
        self._flush()


class _Ticker:
    """One timer for all live views, so that elapsed times tick without a timer each.

    Each view ticks once every TICK_INTERVAL, in one of TICK_SLICES turns handed out in
    order: sixteen views started by one cell would otherwise all update in the same
    loop callback, a burst that the event loop's lag shows once a second.
    """

    def __init__(self) -> None:
        self._views: weakref.WeakKeyDictionary[_Live, int] = weakref.WeakKeyDictionary()
        self._turn = 0  # the turn the next tick serves
        self._next_turn = 0  # the turn the next view added gets
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, view: _Live) -> None:
        if view not in self._views:  # a view added again keeps its turn
            self._views[view] = self._next_turn
            self._next_turn = (self._next_turn + 1) % TICK_SLICES
        # A timer left on a loop that has since closed never fires: start one on this loop.
        if self._handle is None or (self._loop is not None and self._loop.is_closed()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._loop = loop
            self._handle = loop.call_later(TICK_INTERVAL / TICK_SLICES, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        turn, self._turn = self._turn, (self._turn + 1) % TICK_SLICES
        for view, view_turn in list(self._views.items()):
            if view_turn == turn and not view.tick():
                del self._views[view]
        if self._views and not loop.is_closed():
            self._handle = loop.call_later(TICK_INTERVAL / TICK_SLICES, self._tick, loop)


ticker = _Ticker()


class _Live:
    def tick(self) -> bool:
        """Move elapsed times on; False once there is nothing left to tick."""
        raise NotImplementedError


def badge_html(task: OneshotTask) -> str:
    extra = f" · silent {seconds_text(task.silent_for)}" if task.state is TaskState.IDLE else ""
    return state_badge(task.state, extra)


def state_badge(state: TaskState, extra: str = "") -> str:
    """A coloured label for a state; `extra` follows the state's name inside it."""
    return (
        f'<span class="oneshot-badge oneshot-{state.value.lower()}" data-state="{state.value}"'
        f' style="background:{STATE_COLOURS[state]};color:white;padding:1px 7px;'
        f'border-radius:4px;font-weight:600;font-family:monospace;white-space:nowrap">'
        f"{state.value}{html.escape(extra)}</span>"
    )


def info_html(task: OneshotTask) -> str:
    """Elapsed time while it runs; exit code and reason once it has ended."""
    parts = []
    if task.elapsed is not None:
        parts.append(seconds_text(task.elapsed))
    if task.state.is_final:
        code = task.returncode
        if code is not None:
            parts.append(f"exit code {code}")
        if code is not None and code < 0 and task.reason == "signal":
            parts.append(f"killed by {_signal_name(-code)}")
        elif task.reason and task.reason != "exit":  # "exit" says no more than the code
            parts.append(task.reason)
        if task.error:
            parts.append(task.error)
    text = " · ".join(html.escape(p) for p in parts)
    return f'<span class="oneshot-info" style="color:#555">{text}</span>'


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def title_html(task: OneshotTask) -> str:
    """Name, command and id; the command once when the name is only its short form."""
    command = task.command if isinstance(task.command, str) else " ".join(task.command)
    code = html.escape(command if len(command) <= 500 else command[:499] + "…")
    if task.name == default_name(task.command):
        label = f"<code><b>{code}</b></code>"
    else:
        label = f'<b>{html.escape(task.name)}</b> <code style="color:#555">{code}</code>'
    return (
        f'<span class="oneshot-title" title="{html.escape(command, quote=True)}">{label}'
        f' <span style="color:#999">#{html.escape(task.id)}</span></span>'
    )


def title_widget(task: OneshotTask) -> widgets.HTML:
    title = widgets.HTML(title_html(task))
    title.add_class("oneshot-title-box")
    return title


def header(children: list[widgets.Widget]) -> widgets.HBox:
    row = widgets.HBox(children, layout=widgets.Layout(align_items="center", grid_gap="8px"))
    row.add_class("oneshot-head")
    return row


def seconds_text(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class LogView(widgets.VBox):
    """The tail of a task's log in an Output widget, which renders ANSI colours and
    sets stderr apart the way the notebook does. Only the tail is ever sent."""

    def __init__(self, task: OneshotTask) -> None:
        self.task = task
        self.tail = LogTail()
        # Made after the task began: start from what the task kept of its output.
        self._seeded_dropped = task.output_dropped > 0
        self.tail.feed_many(task.output_chunks(final=task.done))
        # Output waits here until the next update: most of a flood scrolls out of the
        # tail before anyone could see it, and feed_many only counts those lines.
        self._pending: list[tuple[str, str]] = []
        self._pending_chars = 0
        self._note_time = float("-inf")
        self.note = widgets.HTML(layout=widgets.Layout(margin="0"))
        self.output = widgets.Output(
            layout=widgets.Layout(max_height="320px", overflow="auto", border="1px solid #ddd")
        )
        self.output.add_class("oneshot-log")
        super().__init__([self.note, self.output])
        self._throttle = Throttle(self._flush, LOG_UPDATE_INTERVAL)
        self._flush()
        task.listeners.append(self._on_event)

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == "output" and event.text:
            self._pending.append((event.stream or "stdout", event.text))
            self._pending_chars += len(event.text)
            if self._pending_chars > PENDING_CHARS:
                self._take_pending()  # the loop is not flushing: keep memory bounded
            self._throttle.poke()
        elif event.kind == "transition" and event.target is not None and event.target.is_final:
            self._throttle.poke()

    def _take_pending(self) -> None:
        if self._pending:
            self.tail.feed_many(self._pending)
            self._pending = []
            self._pending_chars = 0

    def _flush(self) -> None:
        self._take_pending()
        self._flush_note()
        outputs = self.tail.outputs()
        if outputs != self.output.outputs:
            self.output.outputs = outputs
        # An empty box would show as a thin line under a task that prints nothing.
        self.output.layout.display = None if outputs else "none"

    def _flush_note(self) -> None:
        """The count of hidden lines changes at every update during a flood; sending it
        once a second is enough (at once when the note appears or the task ends)."""
        now = time.monotonic()
        if (
            self.note.value
            and now - self._note_time < NOTE_INTERVAL
            and not self.task.state.is_final
        ):
            self._throttle.poke()  # come back for it, even if no more output comes
            return
        self._note_time = now
        if self.tail.hidden_lines:
            note = f"{self.tail.hidden_lines} earlier lines not shown"
        elif self._seeded_dropped:
            note = "earlier output not shown"
        else:
            note = ""
        if note:
            note = f'<span class="oneshot-hidden" style="color:#999">{note}</span>'
        self.note.value = note


class TaskView(widgets.VBox, _Live):
    """A task's badge, name and command, elapsed time, exit code, Stop button and log."""

    def __init__(self, task: OneshotTask) -> None:
        self.task = task
        self.badge = widgets.HTML()
        self.title = title_widget(task)
        self.info = widgets.HTML()
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", button_style="danger", tooltip="Stop this task"
        )
        self.stop_button.layout.width = "80px"
        self.stop_button.on_click(lambda _: task.stop())
        self.log_view = LogView(task)
        head = header([self.badge, self.title, self.info, self.stop_button])
        super().__init__([widgets.HTML(CSS), head, self.log_view])
        self.add_class("oneshot-task")
        self._throttle = Throttle(self._flush)
        self._flush()
        task.listeners.append(self._on_event)
        if not task.state.is_final:
            ticker.add(self)

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == "transition":
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
        self.stop_button.disabled = self.task.state.is_final
        if self.task.state.is_final:
            self.stop_button.button_style = ""  # a faded red button still looks live


class TaskRow(widgets.VBox):
    """One line of a table: badge, name, info, Stop, and a toggle that opens the log."""

    def __init__(self, task: OneshotTask) -> None:
        self.task = task
        self.badge = widgets.HTML()
        self.title = title_widget(task)
        self.info = widgets.HTML()
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="Stop")
        self.stop_button.layout.width = "70px"
        self.stop_button.on_click(lambda _: task.stop())
        self.log_button = widgets.ToggleButton(description="Log", tooltip="Show the log")
        self.log_button.layout.width = "60px"
        self.log_button.observe(self._toggle_log, "value")
        line = header([self.badge, self.title, self.info, self.stop_button, self.log_button])
        self.log_view: LogView | None = None
        super().__init__([line])
        self.add_class("oneshot-row")
        self.refresh()

    def refresh(self) -> None:
        self.badge.value = badge_html(self.task)
        self.info.value = info_html(self.task)
        self.stop_button.disabled = self.task.state.is_final

    def _toggle_log(self, change: dict) -> None:
        # The log view is made on first opening, so closed rows cost no traffic.
        if change["new"]:
            if self.log_view is None:
                self.log_view = LogView(self.task)
            self.children = (self.children[0], self.log_view)
        else:
            self.children = (self.children[0],)


class TaskTable(widgets.VBox, _Live):
    """Rows of tasks with counts per state, and a Stop-all button.

    `tasks` is asked for the current list on each refresh, so a table of every task in
    the kernel grows as tasks are submitted.
    """

    def __init__(
        self,
        tasks: Callable[[], Iterable[OneshotTask]],
        stop_all: Callable[[], None],
        *,
        progress: bool = False,
    ) -> None:
        self._tasks = tasks
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
        self._rows: dict[str, TaskRow] = {}
        super().__init__([widgets.HTML(CSS), head, self.rows_box])
        self.add_class("oneshot-table")
        self._throttle = Throttle(self._flush)
        self._flush()
        ticker.add(self)

    def __repr__(self) -> str:
        return f"TaskTable({len(self._rows)} tasks)"

    def on_event(self, event: TaskEvent) -> None:
        if event.kind in ("transition", "submitted"):
            self._throttle.poke()
            ticker.add(self)  # ticking again if it had stopped with every task ended

    on_event.wants_output = False  # type: ignore[attr-defined]  # see EventHub.wanted

    def tick(self) -> bool:
        self._throttle.poke()
        return not all(task.state.is_final for task in self._tasks())

    def _flush(self) -> None:
        tasks = list(self._tasks())
        for task in tasks:
            if task.id not in self._rows:
                self._rows[task.id] = TaskRow(task)
        if len(self.rows_box.children) != len(self._rows):
            self.rows_box.children = tuple(self._rows[t.id] for t in tasks)
        counts = dict.fromkeys(TaskState, 0)
        for task in tasks:
            counts[task.state] += 1
            self._rows[task.id].refresh()
        self.counts.value = "".join(
            f'<span class="oneshot-count" data-state="{s.value}" style="margin-right:10px;'
            f'white-space:nowrap;color:{STATE_COLOURS[s] if n else "#aaa"};font-weight:600">'
            f"{s.value} {n}</span>"
            for s, n in counts.items()
        )
        finished = sum(n for s, n in counts.items() if s.is_final)
        self.progress.max = max(1, len(tasks))
        self.progress.value = finished
        self.progress.description = f"{finished}/{len(tasks)}"
        self.progress.bar_style = "danger" if counts[TaskState.FAILED] else "info"
        self.stop_all_button.disabled = finished == len(tasks)


def task_view(task: OneshotTask) -> TaskView:
    """The one view of a task, made on first use."""
    if not isinstance(task.view, TaskView):
        task.view = TaskView(task)
    return task.view


def batch_view(batch: Batch) -> TaskTable:
    if not isinstance(batch.view, TaskTable):
        table = TaskTable(lambda: batch.tasks, batch.stop, progress=True)
        for task in batch.tasks:
            task.listeners.append(table.on_event)
        batch.view = table
    return batch.view


_tables: weakref.WeakKeyDictionary[AsyncOrchestrator, TaskTable] = weakref.WeakKeyDictionary()


def tasks_table(orchestrator: AsyncOrchestrator) -> TaskTable:
    """The live table of every task the orchestrator has, including ones yet to come.

    One per orchestrator, shown again on each call: a listener per call would stay on
    the orchestrator for the kernel's life, each refreshing its own copy of the table.
    """
    table = _tables.get(orchestrator)
    if table is None:
        # Weakly, or the entry in _tables would keep its own key alive.
        ref = weakref.ref(orchestrator)

        def tasks() -> list[OneshotTask]:
            orch = ref()
            return [] if orch is None else orch.tasks

        def stop_all() -> None:
            orch = ref()
            if orch is not None:
                orch.stop_all()

        table = _tables[orchestrator] = TaskTable(tasks, stop_all)
        orchestrator.listeners.append(table.on_event)
    return table
