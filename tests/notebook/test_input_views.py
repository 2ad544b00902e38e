"""The views of tasks that take input (a terminal, a pipe) and of agent CLIs: real
processes, widgets inspected without a frontend (see test_views.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import ipywidgets as widgets
import pytest
from helpers import py, stored_orchestrator, wait_until

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.engine.events import notify
from oneshot_nb.notebook.history_view import HistoryTable, log_tail
from oneshot_nb.notebook.input_line import InputLine
from oneshot_nb.notebook.views import UPDATE_INTERVAL, LogView, TaskTable, TaskView, batch_view
from oneshot_nb.render.markup import tokens_text
from oneshot_nb.storage import records

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

FAKE_AGENT = str(Path(__file__).parents[1] / "agents" / "fake_agent.py")
ASK = 'x = input("continue? "); print("got", x)'


def shown_lines(view: LogView) -> list[str]:
    outputs = view.output.outputs
    assert {o["name"] for o in outputs} <= {"stdout", "stderr"}  # what a notebook shows
    return [line for o in outputs for line in o["text"].splitlines()]


def widgets_in(widget: widgets.Widget) -> list[widgets.Widget]:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += widgets_in(child)
    return found


def submit(view: TaskView, text: str) -> None:
    """Type `text` and press Enter (or Send), as the page does: one message with the text."""
    assert view.input_bar is not None
    view.input_bar.line._handle_custom_msg({"event": "send", "text": text}, [])


def end_input(view: TaskView) -> None:
    """Press EOF, as the page does."""
    assert view.input_bar is not None
    view.input_bar.line._handle_custom_msg({"event": "eof"}, [])


def fake_agent(kind: str = "claude", scenario: str = "ok", delay: float = 0.01) -> list[str]:
    return [sys.executable, FAKE_AGENT, kind, scenario, "--delay", str(delay)]


# -- input ----------------------------------------------------------------------------


async def test_a_terminal_waiting_for_input_says_so_and_send_answers_it():
    """A pty task blocked in input() shows "waiting for input" beside the box; Send
    writes the line and a newline (the page empties the box); the log shows the line
    once (the terminal's echo), not again as the stdin it was sent as; the box hides
    once the task has ended."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py(ASK), pty=True, idle_after=0.3)
        view = TaskView(task)
        bar = view.input_bar
        assert bar is not None and bar.layout.display is None
        await wait_until(lambda: "waiting for input" in bar.waiting.value, timeout=10)
        assert task.state is TaskState.IDLE
        submit(view, "yes")
        assert bar.note.value == ""
        assert await task.wait() is TaskState.COMPLETED
        assert shown_lines(view.log_view) == ["continue? yes", "got yes"]
        assert bar.layout.display == "none"
        assert bar.waiting.value == ""


async def test_a_pipe_task_shows_its_input_in_its_log_and_eof_ends_it():
    """Enter in the box sends to a `stdin` task; the input shows in the log in line with
    the output (here `cat`'s copy of it), in a live view and in one made afterwards from
    what the task kept; EOF closes the input, which ends `cat` and hides the box."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit(py("import sys; sys.stdout.write(sys.stdin.read())"), stdin=True)
        view = TaskView(task)
        submit(view, "hello")
        submit(view, "<b>there</b>")
        assert view.input_bar is not None
        end_input(view)
        assert view.input_bar.layout.display == "none"  # at once, not at the next tick
        assert await task.wait() is TaskState.COMPLETED
        expected = ["hello", "<b>there</b>", "hello", "<b>there</b>"]
        await wait_until(lambda: shown_lines(view.log_view) == expected)
        assert shown_lines(LogView(task)) == expected


async def test_a_refused_send_is_said_beside_the_box_and_raises_nothing(monkeypatch):
    """A line the task cannot take (more than 1 MiB unread waits already) goes back to
    the box (which the page emptied on sending) and why is said in one line."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit(py("import time; time.sleep(30)"), stdin=True)
        await task.wait_for("RUNNING")
        view = TaskView(task)
        assert view.input_bar is not None
        with pytest.raises(BufferError):
            for _ in range(20):
                task.send(b"x" * (256 << 10))
        to_page: list[dict] = []
        monkeypatch.setattr(view.input_bar.line, "send", to_page.append)
        line = "y" * (300 << 10)
        submit(view, line)
        assert to_page == [{"event": "refused", "text": line}]
        note = view.input_bar.note.value
        assert "has not read" in note and "oneshot-input-note" in note
        assert len(note) < 400 and "\n" not in note
        task.stop()
        await task.wait()
        submit(view, "z")  # the task has ended: refused, said
        assert "has ended" in view.input_bar.note.value
        assert to_page[-1] == {"event": "refused", "text": "z"}


async def test_a_task_without_input_has_no_input_box():
    """Only a task started with pty or stdin gets a line of input."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py("print('hi')"))
        view = TaskView(task)
        await task.wait()
        assert view.input_bar is None
        assert not any(isinstance(w, InputLine) for w in widgets_in(view))


async def test_a_batch_row_says_its_task_waits_for_input():
    """A row of a table says "waiting for input" while its task is IDLE for it, and
    no more once it has been answered."""
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch([py(ASK)], pty=True, idle_after=0.3)
        table = batch_view(batch)
        row = table.rows_box.children[0]
        await wait_until(lambda: "waiting for input" in row.text.value, timeout=10)
        batch.tasks[0].send("ok\n")
        await batch.wait()
        await wait_until(lambda: "waiting for input" not in row.text.value)


# -- agents ---------------------------------------------------------------------------


async def test_an_agent_task_shows_its_progress_line_above_the_log():
    """The agent's line (turns, tools, message, tokens, cost, its end) shows in the
    view, escaped, and says the run is done once it is; a plain task has none."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(fake_agent(), agent="claude")
        plain = TaskView(orch.submit(py("print('<b>')")))
        view = TaskView(task)
        await task.wait()
        await plain.task.wait()
    assert task.agent is not None
    value = view.agent_line.value
    assert "✓ done in 42.1s" in value and "4 turns" in value and "$0.0412" in value
    assert "`add_range`" in value and "<b>" not in value
    assert view.agent_line.layout.display is None
    assert view.children.index(view.agent_line) < view.children.index(view.log_view)
    assert plain.agent_line.value == "" and plain.agent_line.layout.display == "none"


async def test_agent_updates_are_paced_by_the_throttle():
    """Hundreds of summary changes (a turn a line) make a handful of updates of the
    agent line, the last one the final count."""
    lines = 300
    code = f"""
        import json, sys, time
        for n in range({lines}):
            message = {{"id": f"m{{n}}", "content": [{{"type": "text", "text": f"step {{n}}"}}]}}
            print(json.dumps({{"type": "assistant", "message": message}}), flush=True)
            time.sleep(0.001)
        print(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                           "num_turns": {lines}}}), flush=True)
    """
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py(code), agent="claude")
        view = TaskView(task)
        events: list[float] = []
        task.listeners.append(lambda e: events.append(e.time) if e.kind == "agent" else None)
        updates: list[str] = []
        view.agent_line.observe(lambda change: updates.append(change["new"]), "value")
        started = time.monotonic()
        await task.wait()
        took = time.monotonic() - started
    assert len(events) > 50
    assert len(updates) <= took / UPDATE_INTERVAL + 3
    assert f"{lines} turns" in updates[-1] and "✓ done" in updates[-1]


async def test_a_batch_of_agents_shows_each_line_and_the_total_cost_and_tokens():
    """Each row of an agent task carries its progress line; the header adds up the
    tokens and the cost of the batch."""
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch([fake_agent(), fake_agent()], agent="claude")
        table = batch_view(batch)
        assert "oneshot-totals" not in table.counts.value  # nothing reported yet
        await batch.wait()
        await anyio.sleep(2 * UPDATE_INTERVAL)
    tokens = sum(task.agent.tokens for task in batch.tasks if task.agent is not None)
    assert tokens > 1000
    assert f"{tokens_text(tokens)} · $0.0824" in table.counts.value
    for row in table.rows_box.children:
        assert 'class="oneshot-agent"' in row.text.value and "✓ done" in row.text.value


async def test_a_table_row_and_its_totals_follow_agent_events():
    """An "agent" event refreshes the row of its task and the header's totals, paced by
    the table's throttle (a task in CREATED: nothing else would refresh them)."""
    task = OneshotTask("true", agent="claude")
    table = TaskTable([task], lambda: None, progress=True)
    task.listeners.append(table.on_event)
    row = table.rows_box.children[0]
    assert "oneshot-totals" not in table.counts.value
    assert task._agent_watch is not None
    result = {"type": "result", "subtype": "success", "num_turns": 2, "total_cost_usd": 0.5}
    task._agent_watch.feed(json.dumps(result).encode() + b"\n")
    notify(task.listeners, TaskEvent(task.id, "agent", time.time()))
    await wait_until(lambda: "2 turns" in row.text.value)
    assert "$0.5000" in table.counts.value


async def test_a_row_of_a_plain_task_has_no_agent_line():
    """No agent, no second line and no totals."""
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch([py("print(1)")])
        table = batch_view(batch)
        await batch.wait()
    assert "oneshot-agent" not in table.rows_box.children[0].text.value
    assert "oneshot-totals" not in table.counts.value


# -- history --------------------------------------------------------------------------


async def test_the_history_shows_a_pipe_tasks_input_and_an_agents_turns_and_cost(tmp_path):
    """A stored pipe task's log shows its input in line with its output, a stored pty
    task's once (its echo); a stored agent task's row says its turns and cost."""
    db = tmp_path / "history.sqlite3"
    async with stored_orchestrator(db, idle_after=None) as (orch, _):
        pipe = orch.submit(py("import sys; print(sys.stdin.read().upper())"), stdin=True)
        pipe.send("piped in\n")
        pipe.close_stdin()
        terminal = orch.submit(py(ASK), pty=True)
        await wait_until(lambda: "continue? " in terminal.output)  # not typed ahead
        terminal.send("typed\n")
        agent = orch.submit(fake_agent(delay=0), agent="claude")
        for task in (pipe, terminal, agent):
            await task.wait()
    found = {r.id: r for r in records.history(path=str(db))}

    def lines(task: OneshotTask) -> list[str]:
        tail, _ = log_tail(found[task.id])
        assert {o["name"] for o in tail.outputs()} == {"stdout"}
        return [line for o in tail.outputs() for line in o["text"].splitlines()]

    assert lines(pipe) == ["piped in", "PIPED IN", ""]
    assert lines(terminal) == ["continue? typed", "got typed"]
    table = HistoryTable(list(found.values()), lambda offset, limit: [])
    texts = {row.record.id: row.text.value for row in table.rows_box.children}
    assert "4 turns · $0.0412" in texts[agent.id]
    assert "turns" not in texts[pipe.id]


async def test_colour_escapes_of_a_pty_task_reach_the_view_intact():
    """A program that colours only a terminal does so in a pty task, and the log view
    hands the escapes to the frontend as they are (it renders ANSI)."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit("ls --color=auto -d /", pty=True)
        view = TaskView(task)
        assert await task.wait() is TaskState.COMPLETED
    text = "".join(o["text"] for o in view.log_view.output.outputs)
    assert text.startswith("\x1b[") and "/" in text
    assert text == task.output
