"""Widgets for the history: past tasks a page at a time, each with its log on demand."""

from __future__ import annotations

import datetime as dt
import html
import sqlite3
from collections.abc import Callable

import ipywidgets as widgets

from ..engine.output import StreamDecoder
from ..render.markup import (
    CSS,
    PAGE_SIZE,
    agent_brief,
    attempts_parts,
    attempts_title,
    cost_parts,
    info_span,
    line_html,
    outcome,
    seconds_text,
    state_badge,
    title_html,
    where,
)
from ..render.tail import LogTail
from ..storage.database import StoreError
from ..storage.records import TaskRecord, get_record
from .parts import Row, RowParts

# Enough of the newest output for the tail a view shows, with room for long lines.
TAIL_BYTES = 1 << 20


def record_info(record: TaskRecord) -> list[str]:
    """When it started, how long it ran, its exit code and what the reason adds, how
    many attempts it took, an agent's turns and cost, and what it cost the machine."""
    parts = []
    if record.started_at is not None:
        parts.append(dt.datetime.fromtimestamp(record.started_at).strftime("%Y-%m-%d %H:%M:%S"))
        if record.ended_at is not None:
            parts.append(seconds_text(record.ended_at - record.started_at))
    brief = agent_brief(record.agent)
    return (
        parts
        + where(record.runner, record.host)
        + outcome(record.returncode, record.reason, record.error)
        + attempts_parts(record.attempts)
        + ([brief] if brief else [])
        + cost_parts(record.peak_rss, record.cpu_seconds)
    )


def log_tail(record: TaskRecord) -> tuple[LogTail, bool]:
    """The tail of a stored log, as a live view would show it (a pipe task's input in
    line with its output), and whether older output was not even read."""
    tail = LogTail()
    decoders: dict[str, StreamDecoder] = {}
    chunks, cut = record.read_chunks(TAIL_BYTES)
    for stream, data in chunks:
        decoder = decoders.setdefault(stream, StreamDecoder())
        tail.feed(stream, decoder.decode(data))
    for stream, decoder in decoders.items():
        tail.feed(stream, decoder.decode(b"", final=True))
    return tail, cut


class RecordRow(Row):
    """A past task: badge, name and command, when and how it ended, and a Log toggle."""

    def __init__(self, record: TaskRecord, parts: RowParts | None = None) -> None:
        self.record = record
        super().__init__(parts or RowParts(), [], "Show the stored log")
        self.text.value = line_html(
            state_badge(record.state),
            title_html(record.name, record.command, record.id),
            info_span(record_info(record), attempts_title(record.attempts)),
        )

    def make_log(self) -> widgets.VBox:
        # A click handler that raises only reaches the kernel's log: say it in the row.
        try:
            tail, cut = log_tail(self.record)
            if not tail.outputs() and not _still_stored(self.record):
                return _note_box("this task is no longer in the history", error=True)
        except (StoreError, sqlite3.Error) as exc:
            return _note_box(f"cannot read this log: {exc}", error=True)
        note = ""
        if cut or tail.hidden_lines:
            hidden = "earlier output" if cut else f"{tail.hidden_lines} earlier lines"
            note = f"{hidden} not shown; %oneshot_log {self.record.id} prints it all"
        output = widgets.Output(
            layout=widgets.Layout(max_height="320px", overflow="auto", border="1px solid #ddd")
        )
        output.add_class("oneshot-log")
        output.outputs = tail.outputs()
        return widgets.VBox(
            [
                widgets.HTML(
                    f'<span class="oneshot-hidden" style="color:#999">{html.escape(note)}</span>'
                ),
                output,
            ]
        )


def _still_stored(record: TaskRecord) -> bool:
    try:
        get_record(record.id, path=record.path)
    except KeyError:
        return False
    return True


def _note_box(text: str, error: bool = False) -> widgets.VBox:
    colour = "#c62828" if error else "#999"
    span = f'<span class="oneshot-hidden" style="color:{colour}">{html.escape(text)}</span>'
    return widgets.VBox([widgets.HTML(span)])


class HistoryTable(widgets.VBox):
    """Past tasks, newest first, a page at a time; each row opens its stored log.

    `found` is the first page as read, with one record more when there are more (that
    one is not shown); `more(offset, limit)` reads further pages for the "Show more"
    button.
    """

    def __init__(
        self,
        found: list[TaskRecord],
        more: Callable[[int, int], list[TaskRecord]],
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.records: list[TaskRecord] = []
        self.page_size = page_size
        self._more = more
        self._ids: set[str] = set()
        self._parts = RowParts()
        self.title = widgets.HTML()
        self.rows_box = widgets.VBox()
        self.more_button = widgets.Button(
            description=f"Show {page_size} more", tooltip="Show older tasks"
        )
        self.more_button.on_click(lambda _: self.show_more())
        super().__init__([widgets.HTML(CSS), self.title, self.rows_box, self.more_button])
        self.add_class("oneshot-history")
        self._show(found[:page_size], len(found) > page_size)

    def __repr__(self) -> str:
        # Stable text beside the widget, so that nbval can compare it.
        return f"HistoryTable({len(self.records)} tasks)"

    def show_more(self) -> None:
        """Add a page of older tasks. Tasks started since the last page move every older
        one down: those shown already come again, and are skipped for the next ones."""
        new: list[TaskRecord] = []
        offset, more = len(self.records), True
        try:
            while more and len(new) < self.page_size:
                want = self.page_size - len(new)
                found = self._more(offset, want + 1)
                more = len(found) > want
                offset += want
                new += [r for r in found[:want] if r.id not in self._ids]
                self._ids.update(r.id for r in new)
        except (StoreError, sqlite3.Error, OSError) as exc:
            # A click has no cell to raise into: say it where the user looks.
            self.title.value = (
                f'<b style="color:#c62828">cannot read more of the history:'
                f" {html.escape(str(exc))}</b>"
            )
            return
        self._show(new, more)

    def _show(self, new: list[TaskRecord], more: bool) -> None:
        self.records += new
        self._ids.update(r.id for r in new)
        if new:
            rows = [RecordRow(record, self._parts) for record in new]
            self.rows_box.children = (*self.rows_box.children, *rows)
        older = ", older ones by the button below" if more else ""
        self.title.value = f"<b>{len(self.records)} tasks</b>, newest first{older}"
        self.more_button.layout.display = None if more else "none"
