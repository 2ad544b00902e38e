"""Widgets that the views and the tables share: the log, a header line, Stop, a table
row's frame, and the line of input to a task that takes it."""

from __future__ import annotations

import contextlib
import html
import time

import ipywidgets as widgets
from ipywidgets.widgets.widget_bool import ToggleButtonStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from ..engine.events import TaskEvent
from ..engine.machine import TaskState
from ..engine.task import OneshotTask
from ..render.markup import STATE_COLOURS, shortened, waiting_html
from ..render.tail import LogTail
from .input_line import InputLine
from .live import Throttle

# A log changes on every chunk of a busy task; five updates a second still read as live
# and halve what a flood costs the kernel (measured by benchmarks/views.py).
LOG_UPDATE_INTERVAL = 0.2
NOTE_INTERVAL = 1.0  # how often the "N earlier lines not shown" count moves on
PENDING_CHARS = 4 << 20  # output a log view holds between two updates, at most
NOTE_CHARS = 200  # of why a task refused input, shown beside the input box


def header(children: list[widgets.Widget], layout: widgets.Layout | None = None) -> widgets.HBox:
    """Widgets side by side and centred; a title box among them takes the room left."""
    if layout is None:
        layout = widgets.Layout(align_items="center", grid_gap="8px")
    row = widgets.HBox(children, layout=layout)
    row.add_class("oneshot-head")
    return row


def show_stop(button: widgets.Button, live: bool) -> None:
    """A Stop button is red while there is something to stop; disabled and plain after,
    since a faded red button still looks live. Every Stop of every view follows this."""
    with button.hold_sync():
        button.disabled = not live
        button.button_style = "danger" if live else ""


class RowParts:
    """The layouts and styles that every row of one table shares.

    Each widget otherwise brings a layout of its own and often a style, about 1 KB each
    on the wire: rows that share them open five widgets each instead of thirteen.
    """

    def __init__(self) -> None:
        self.row = widgets.Layout()
        self.line = widgets.Layout(align_items="center", grid_gap="8px")
        self.text = widgets.Layout()
        self.stop = widgets.Layout(width="70px")
        self.log = widgets.Layout(width="60px")
        self.text_style = HTMLStyle()
        self.button_style = widgets.ButtonStyle()
        self.toggle_style = ToggleButtonStyle()


class Row(widgets.VBox):
    """One line of a table, its text (badge, title, info) in one HTML widget beside its
    buttons, and under it the log once the Log toggle is on."""

    def __init__(self, parts: RowParts, buttons: list[widgets.Widget], log_tooltip: str) -> None:
        self.text = widgets.HTML(layout=parts.text, style=parts.text_style)
        self.text.add_class("oneshot-title-box")
        self.log_button = widgets.ToggleButton(
            description="Log", tooltip=log_tooltip, layout=parts.log, style=parts.toggle_style
        )
        self.log_button.observe(self._toggle_log, "value")
        self.buttons = [*buttons, self.log_button]
        self.line = header([self.text, *self.buttons], parts.line)
        self.log_view: widgets.Widget | None = None
        super().__init__([self.line], layout=parts.row)
        self.add_class("oneshot-row")

    def make_log(self) -> widgets.Widget:
        raise NotImplementedError

    def _toggle_log(self, change: dict) -> None:
        # Made on opening and closed on shutting, so closed rows cost no traffic.
        if change["new"]:
            if self.log_view is None:
                self.log_view = self.make_log()
            self.children = (self.line, self.log_view)
        else:
            self.children = (self.line,)
            self._close_log()

    def _close_log(self) -> None:
        if self.log_view is not None:
            self.log_view.close()
            self.log_view = None

    def close(self) -> None:
        """Close the row's own widgets; the layouts and styles stay for the other rows."""
        self._close_log()
        for widget in (*self.buttons, self.text, self.line):
            widget.close()
        super().close()


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
            if event.stream == "stdin" and self.task.options.pty:
                return  # a terminal echoes its input: it comes again as stdout
            self._pending.append((event.stream or "stdout", event.text))
            self._pending_chars += len(event.text)
            if self._pending_chars > PENDING_CHARS:
                self._take_pending()  # the loop is not flushing: keep memory bounded
            self._throttle.poke()
        elif event.kind == "settled" or (
            event.kind == "transition" and event.target is not None and event.target.is_final
        ):
            # At once: what `await task.wait()` returns to is shown. Settled: a stopped
            # task's last words (a SIGTERM handler's) are read by then.
            self._throttle.now()

    def close(self) -> None:
        """Stop following the task and close the widgets: a log that is not shown costs
        neither decoding nor traffic."""
        with contextlib.suppress(ValueError):
            self.task.listeners.remove(self._on_event)
        self._throttle.cancel()
        for widget in (self.note.style, self.note.layout, self.note, self.output.layout):
            widget.close()
        self.output.close()
        self.layout.close()
        super().close()

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


class InputBar(widgets.HBox):
    """A line of input to a task that takes it (`pty` or `stdin`): a text box that Enter
    sends, Send, EOF (end the input), "waiting for input" while the task is IDLE for
    that reason, and why the task refused the last line. Shown while the task accepts
    input; `refresh` (the view's update) follows it.
    """

    def __init__(self, task: OneshotTask) -> None:
        self.task = task
        self.line = InputLine(on_send=self.send, on_eof=self.end_input)
        self.waiting = widgets.HTML()
        self.note = widgets.HTML()
        super().__init__(
            [self.line, self.waiting, self.note],
            layout=widgets.Layout(align_items="center", grid_gap="8px"),
        )
        self.add_class("oneshot-input")
        self.refresh()

    def send(self, text: str) -> None:
        """Send a line and a newline (an empty line: the newline alone, for a "press
        Enter"); when the task refuses, give the line back to the box and say why
        beside it. A message from the page has no cell to raise into."""
        try:
            self.task.send(text + "\n")
        except (ValueError, BufferError) as exc:
            self.line.give_back(text)
            self._say(str(exc) or type(exc).__name__)
        else:
            self._say("")
        self.refresh()

    def end_input(self) -> None:
        """Close the task's input (its command reads end-of-file once it has read what
        was sent); the bar then hides."""
        try:
            self.task.close_stdin()
        except ValueError as exc:
            self._say(str(exc))
        self.refresh()

    def refresh(self) -> None:
        self.waiting.value = waiting_html(self.task.state, self.task.reason)
        self.layout.display = None if self.task.accepts_input else "none"

    def _say(self, text: str) -> None:
        if text:
            colour = STATE_COLOURS[TaskState.FAILED]
            text = html.escape(shortened(" ".join(text.split()), NOTE_CHARS))
            text = f'<span class="oneshot-input-note" style="color:{colour}">{text}</span>'
        self.note.value = text
