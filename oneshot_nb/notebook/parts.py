"""Widgets that the view of a task and the tables share: the log, a header line, Stop."""

from __future__ import annotations

import contextlib
import time

import ipywidgets as widgets

from ..engine.events import TaskEvent
from ..engine.task import OneshotTask
from ..render.tail import LogTail
from .live import Throttle

# A log changes on every chunk of a busy task; five updates a second still read as live
# and halve what a flood costs the kernel (measured by benchmarks/views.py).
LOG_UPDATE_INTERVAL = 0.2
NOTE_INTERVAL = 1.0  # how often the "N earlier lines not shown" count moves on
PENDING_CHARS = 4 << 20  # output a log view holds between two updates, at most


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
