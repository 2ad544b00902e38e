"""Widgets for the history: a table of past tasks, each with its log on demand."""

from __future__ import annotations

import datetime as dt
import html

import ipywidgets as widgets

from .log import StreamDecoder
from .records import TaskRecord
from .tail import LogTail
from .views import CSS, header, seconds_text, state_badge


def record_info(record: TaskRecord) -> str:
    parts = []
    if record.started_at is not None:
        parts.append(dt.datetime.fromtimestamp(record.started_at).strftime("%Y-%m-%d %H:%M:%S"))
        if record.ended_at is not None:
            parts.append(seconds_text(record.ended_at - record.started_at))
    if record.returncode is not None:
        parts.append(f"exit code {record.returncode}")
    if record.reason:
        parts.append(record.reason)
    return " · ".join(parts)


# Enough of the newest output for the tail a view shows, with room for long lines.
TAIL_BYTES = 1 << 20


def log_tail(record: TaskRecord) -> tuple[LogTail, bool]:
    """The tail of a stored log, as a live view would show it, and whether older
    output was not even read."""
    tail = LogTail()
    decoders: dict[str, StreamDecoder] = {}
    chunks, cut = record.read_chunks(TAIL_BYTES)
    for stream, data in chunks:
        decoder = decoders.setdefault(stream, StreamDecoder())
        tail.feed(stream, decoder.decode(data))
    for stream, decoder in decoders.items():
        tail.feed(stream, decoder.decode(b"", final=True))
    return tail, cut


class RecordRow(widgets.VBox):
    """A past task: badge, name and command, when and how it ended, and a Log toggle."""

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        command = record.command if isinstance(record.command, str) else " ".join(record.command)
        title = (
            f'<span class="oneshot-title"><b>{html.escape(record.name)}</b>'
            f' <code style="color:#555">{html.escape(command[:200])}</code>'
            f' <span style="color:#999">#{html.escape(record.id)}</span></span>'
        )
        info = html.escape(record_info(record))
        info = f'<span class="oneshot-info" style="color:#555">{info}</span>'
        self.log_button = widgets.ToggleButton(description="Log", tooltip="Show the stored log")
        self.log_button.layout.width = "60px"
        self.log_button.observe(self._toggle_log, "value")
        title_box = widgets.HTML(title)
        title_box.add_class("oneshot-title-box")
        line = header(
            [
                widgets.HTML(state_badge(record.state)),
                title_box,
                widgets.HTML(info),
                self.log_button,
            ]
        )
        self.log_view: widgets.VBox | None = None
        super().__init__([line])
        self.add_class("oneshot-row")

    def _toggle_log(self, change: dict) -> None:
        if not change["new"]:
            self.children = self.children[:1]
            return
        if self.log_view is None:
            tail, cut = log_tail(self.record)
            hidden = "earlier output" if cut else f"{tail.hidden_lines} earlier lines"
            note = (
                f"{hidden} not shown; %oneshot_log {self.record.id} prints it all"
                if cut or tail.hidden_lines
                else ""
            )
            output = widgets.Output(
                layout=widgets.Layout(max_height="320px", overflow="auto", border="1px solid #ddd")
            )
            output.add_class("oneshot-log")
            output.outputs = tail.outputs()
            self.log_view = widgets.VBox(
                [
                    widgets.HTML(f'<span class="oneshot-hidden" style="color:#999">{note}</span>'),
                    output,
                ]
            )
        self.children = (self.children[0], self.log_view)


class HistoryTable(widgets.VBox):
    """Past tasks, newest first; each row opens its stored log."""

    def __init__(self, records: list[TaskRecord]) -> None:
        self.records = records
        title = widgets.HTML(f"<b>{len(records)} tasks</b>, newest first")
        super().__init__([widgets.HTML(CSS), title, *(RecordRow(record) for record in records)])
        self.add_class("oneshot-history")

    def __repr__(self) -> str:
        # Stable text beside the widget, so that nbval can compare it.
        return f"HistoryTable({len(self.records)} tasks)"
