"""Tables of many tasks: %oneshot_tasks, a batch's view and %oneshot_history.

A table shows a page of rows and more on demand, makes widgets for that page only, keeps
its counts from events, shows its final state as soon as the tasks have ended, says a
task's reason only when it adds to the exit code, and escapes whatever it shows.
How fast and how small they are is measured by benchmarks/tables.py, not here.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator

import anyio
import pytest
from helpers import eventually, py, stored_orchestrator, wait_until
from IPython.core.error import UsageError
from ipywidgets.widgets import widget as widget_module

from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.notebook.history_view import HistoryTable
from oneshot_nb.notebook.views import TaskTable, TaskView, batch_view, tasks_table
from oneshot_nb.render.markup import PAGE_SIZE
from oneshot_nb.storage import records
from oneshot_nb.storage.store import Store

PAYLOAD = "<img src=x onerror=alert(1)>"


def counts(table: TaskTable) -> dict[str, int]:
    found = re.findall(r'data-state="(\w+)"[^>]*>\w+ (\d+)<', table.counts.value)
    return {state: int(n) for state, n in found}


def html_values(widget) -> Iterator[str]:
    """Every HTML value and tooltip in a widget tree."""
    value = getattr(widget, "value", None)
    if isinstance(value, str):
        yield value
    for child in getattr(widget, "children", ()):
        yield from html_values(child)


def info(row) -> str:
    """A row's info text, markup taken away."""
    found = re.search(r'class="oneshot-info"[^>]*>(.*?)</span>', row.text.value)
    assert found is not None, row.text.value
    return found.group(1)


# -- a page of rows ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_batch_of_ten_thousand_opens_widgets_for_one_page_only():
    """The view of a 10,000-line batch makes widgets for one page of rows (it used to
    make 19 per task), sends their state in well under 1 MB, and its counts follow all
    10,000 tasks to their end."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        batch = orch.submit_batch(["true"] * 10_000, limit=2)
        before = set(widget_module._instances)
        table = batch_view(batch)
        made = [w for key, w in widget_module._instances.items() if key not in before]
        assert len(table.rows_box.children) == PAGE_SIZE
        assert [row.task for row in table.rows_box.children] == batch.tasks[:PAGE_SIZE]
        assert len(made) <= 6 * PAGE_SIZE
        assert sum(len(json.dumps(w.get_state())) for w in made) < 500_000
        assert "the first 50 of 10000 tasks" in table.more_note.value
        batch.stop()
        await batch.wait()
        assert counts(table)["INTERRUPTED"] == 10_000 - counts(table)["COMPLETED"]
        assert sum(counts(table).values()) == 10_000
        assert table.progress.value == 10_000
        assert len(table.rows_box.children) == PAGE_SIZE


@pytest.mark.anyio
async def test_the_tasks_table_shows_the_newest_page_and_more_on_click():
    """%oneshot_tasks shows the newest tasks first, a page at a time; Show more adds a
    page, and once every task is shown the button goes."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        tasks = [orch.submit("true", name=f"t{i}") for i in range(25)]
        for task in tasks:
            task.stop()
        table = tasks_table(orch, page_size=10)
        assert [row.task for row in table.rows_box.children] == tasks[::-1][:10]
        assert "the newest 10 of 25 tasks" in table.more_note.value
        assert table.more_button.description == "Show 10 more"
        assert table.footer.layout.display is None
        table.more_button.click()
        assert [row.task for row in table.rows_box.children] == tasks[::-1][:20]
        assert table.more_button.description == "Show 5 more"
        table.more_button.click()
        assert [row.task for row in table.rows_box.children] == tasks[::-1]
        assert table.footer.layout.display == "none"
        assert repr(table) == "TaskTable(25 tasks)"


@pytest.mark.anyio
async def test_a_task_that_leaves_the_page_gives_its_row_to_the_newcomer():
    """A task submitted later takes the top row; the oldest task shown leaves the page:
    its row shows the new task (the frontend changes a text instead of building views),
    and its open log is closed and no longer listens to the task."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        first = orch.submit(py("print('hello')"))
        await first.wait()
        table = tasks_table(orch, page_size=1)
        [row] = table.rows_box.children
        row.log_button.value = True
        log = row.log_view
        assert log is not None and log._on_event in first.listeners
        second = orch.submit(py("pass"))
        await wait_until(lambda: [r.task for r in table.rows_box.children] == [second])
        assert table.rows_box.children == (row,) and row.comm is not None
        assert row.log_view is None and not row.log_button.value
        assert log.output.comm is None and log._on_event not in first.listeners
        assert second.id in row.text.value and first.id not in row.text.value
        await orch.wait_all()


@pytest.mark.anyio
async def test_a_stream_of_new_tasks_opens_no_widgets_once_the_page_is_full():
    """Regression: each task submitted under a shown newest-first table got a row of
    five widgets that was closed again when the next came, and a steady stream of
    tasks froze the browser. Now the rows of a full page are given the new tasks."""
    from ipywidgets.widgets.widget import _instances

    async with AsyncOrchestrator(idle_after=None) as orch:
        for _ in range(3):
            orch.submit(["true"])
        table = tasks_table(orch, page_size=3)
        rows = table.rows_box.children
        before = set(_instances)
        tasks = []
        for _ in range(20):
            tasks.append(orch.submit(["true"]))
            await anyio.sleep(0.02)
        await wait_until(lambda: [r.task for r in table.rows_box.children] == tasks[:-4:-1])
        assert table.rows_box.children == rows
        assert set(_instances) - before == set()
        await orch.wait_all()


@pytest.mark.anyio
async def test_an_open_log_moves_down_with_its_task():
    """A log opened on the newest task stays open, on the row its task moves to."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        first = orch.submit(py("print('first')"))
        table = tasks_table(orch, page_size=2)
        [top] = table.rows_box.children
        top.log_button.value = True
        log = top.log_view
        second = orch.submit(["true"])
        await wait_until(lambda: len(table.rows_box.children) == 2)
        top, below = table.rows_box.children
        assert (top.task, below.task) == (second, first)
        assert below.log_view is log and below.log_button.value
        assert below.children[-1] is log and top.log_view is None
        await orch.wait_all()


@pytest.mark.anyio
async def test_a_log_that_is_shut_stops_following_its_task(tmp_path):
    """Shutting a row's log closes it: it neither decodes output nor sends updates until
    it is opened again, from what the task has kept."""
    go = tmp_path / "go"  # 'two' is printed once this exists: with the log shut
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit(
            py(
                "import os, time; print('one', flush=True)\n"
                f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
                "print('two')"
            )
        )
        table = tasks_table(orch)
        [row] = table.rows_box.children
        row.log_button.value = True
        log = row.log_view
        await wait_until(lambda: "one" in str(log.output.outputs))
        row.log_button.value = False
        assert row.log_view is None and log._on_event not in task.listeners
        assert log.comm is None
        go.touch()
        await task.wait()
        row.log_button.value = True
        await wait_until(lambda: "two" in str(row.log_view.output.outputs))


# -- final at once, controls as in the batch view --------------------------------------------


@pytest.mark.anyio
async def test_a_table_is_final_as_soon_as_its_tasks_have_ended():
    """When `await batch.wait()` returns, the batch's table already shows every task
    ended: counts, progress, each row's Stop disabled, and Stop all disabled and plain."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        batch = orch.submit_batch(["true", "true", "exit 1"], limit=3)
        table = batch_view(batch)
        await batch.wait()
        assert counts(table) | {"COMPLETED": 2, "FAILED": 1} == counts(table)
        assert table.progress.value == 3
        assert all(row.stop_button.disabled for row in table.rows_box.children)
        assert table.stop_all_button.disabled
        assert table.stop_all_button.button_style == ""


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_stop_all_of_the_tasks_table_is_plain_once_every_task_has_ended():
    """%oneshot_tasks' Stop all behaves as the batch view's: red while a task can be
    stopped, disabled and plain (not a faded red that still looks live) once every task
    has ended, and red again when a new task comes."""
    async with AsyncOrchestrator(idle_after=None, grace=0.5) as orch:
        table = tasks_table(orch)
        orch.submit("true")
        await orch.wait_all()
        assert table.stop_all_button.disabled
        assert table.stop_all_button.button_style == ""
        sleeper = orch.submit("sleep 30")
        await wait_until(lambda: not table.stop_all_button.disabled)
        assert table.stop_all_button.button_style == "danger"
        table.stop_all_button.click()
        assert await sleeper.wait() is TaskState.INTERRUPTED
        assert table.stop_all_button.disabled
        assert table.stop_all_button.button_style == ""


# -- what a row says -------------------------------------------------------------------------


ENDINGS = {  # name: (command, options, exit code said, reason said)
    "ok": ("true", {}, "exit code 0", ""),
    "failed": ("exit 3", {}, "exit code 3", ""),
    "killed": ("kill -9 $$", {}, "exit code -9", "killed by SIGKILL"),
    "stopped": ("sleep 30", {}, "exit code -15", "stopped"),
    "timeout": ("sleep 30", {"timeout": 0.2}, "exit code -15", "timeout"),
    "unborn": (["/nonexistent/program"], {}, "", "spawn error: FileNotFoundError"),
}


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_reason_is_shown_only_when_it_adds_to_the_exit_code(tmp_path):
    """A live row, a task's view, a history row and the history's text all say how a
    task ended the same way: the exit code, then the reason only when it says more
    ("exit code 0 · exit" said the same thing twice). A stopped task's exit code,
    which comes once its process is reaped, is shown too."""
    db = tmp_path / "history.sqlite3"
    async with stored_orchestrator(db, idle_after=None, grace=0.5) as (orch, _):
        tasks = {
            name: orch.submit(command, name=name, **options)
            for name, (command, options, _, _) in ENDINGS.items()
        }
        table = tasks_table(orch)
        views = {name: TaskView(task) for name, task in tasks.items()}
        await wait_until(lambda: tasks["stopped"].state is TaskState.RUNNING)
        tasks["stopped"].stop()
        await orch.wait_all()
        rows = {row.task.name: row for row in table.rows_box.children}
        for name in ("stopped", "timeout"):
            await wait_until(
                lambda n=name: (
                    "exit code -15" in views[n].info.value and "exit code -15" in info(rows[n])
                )
            )
        live = {name: info(row) for name, row in rows.items()}
    found = {r.name: r for r in records.history(path=str(db))}
    stored = HistoryTable(list(found.values()), lambda offset, limit: [])
    shown = {row.record.name: info(row) for row in stored.rows_box.children}
    for name, (_, _, code, reason) in ENDINGS.items():
        said = " · ".join(part for part in (code, reason) if part)
        assert said in live[name] and said in views[name].info.value
        assert reason in shown[name]
        if found[name].returncode is not None:
            assert said in shown[name]
        for text in (live[name], views[name].info.value, shown[name]):
            assert not re.search(r"· exit(?! code)", text)
    text = {name: _text_row(record).split(None, 3)[3] for name, record in found.items()}
    assert text["ok"] == "exit 0"
    assert text["failed"] == "exit 3"
    assert text["killed"] == "exit -9 killed by SIGKILL"
    assert text["unborn"].startswith("spawn error: FileNotFoundError")


def _text_row(record: records.TaskRecord) -> str:
    from oneshot_nb.render.markup import text_row

    return text_row(
        record.id, record.state, record.name, record.returncode, record.reason, record.error
    )


@pytest.mark.anyio
async def test_every_value_read_back_from_the_history_is_escaped(tmp_path):
    """Markup in any stored value (id, name, command, reason, error) shows as text in
    the history table, and in the note under a long log that names the id for
    %oneshot_log, which was put into HTML as it was."""
    db = tmp_path / "history.sqlite3"
    async with stored_orchestrator(db, idle_after=None) as (orch, _):
        task = orch.submit(py("for i in range(300): print(i)"))
        await task.wait()
    edit = sqlite3.connect(db, isolation_level=None)
    edit.execute(
        "UPDATE tasks SET id = ?, name = ?, command = ?, argv = 0, reason = ?, error = ?",
        (PAYLOAD, PAYLOAD, f"echo '{PAYLOAD}'", PAYLOAD, PAYLOAD),
    )
    edit.execute("UPDATE chunks SET task = ?", (PAYLOAD,))
    edit.close()
    table = HistoryTable(records.history(path=str(db)), lambda offset, limit: [])
    [row] = table.rows_box.children
    row.log_button.value = True
    note = row.log_view.children[0].value
    assert "earlier lines not shown; %oneshot_log &lt;img" in note
    values = list(html_values(table))
    assert all("<img" not in value for value in values)
    assert any("&lt;img src=x onerror=alert(1)&gt;" in value for value in values)


# -- %oneshot_history: a page from the database ----------------------------------------------


@pytest.mark.anyio
async def test_the_history_table_reads_one_page_and_the_next_on_click(tmp_path):
    """The history table shows the page it was given and reads a page more on each
    click, from where it left off: a task started in between shows no row twice."""
    db = str(tmp_path / "history.sqlite3")
    async with stored_orchestrator(db, idle_after=None) as (orch, store):
        for i in range(5):
            await orch.submit(["true"], name=f"t{i}").wait()
        assert store.flush()

        def more(offset: int, limit: int) -> list[records.TaskRecord]:
            return records.history(limit, offset=offset, path=db)

        table = HistoryTable(more(0, 3), more, page_size=2)
        assert [r.name for r in table.records] == ["t4", "t3"]
        assert table.more_button.layout.display is None
        await orch.submit(["true"], name="t5").wait()
        assert store.flush()
        table.more_button.click()
        assert [r.name for r in table.records] == ["t4", "t3", "t2", "t1"]
        table.more_button.click()
        assert [r.name for r in table.records] == ["t4", "t3", "t2", "t1", "t0"]
        assert table.more_button.layout.display == "none"
        shown = [row.record.name for row in table.rows_box.children]
        assert shown == ["t4", "t3", "t2", "t1", "t0"]
        assert repr(table) == "HistoryTable(5 tasks)"


@pytest.mark.anyio
async def test_a_page_that_cannot_be_read_is_said_in_the_table(tmp_path):
    """A click whose page cannot be read (the database was overwritten meanwhile) says
    so in the table's title rather than raising into no cell; the rows shown stay."""
    db = str(tmp_path / "history.sqlite3")
    async with stored_orchestrator(db, idle_after=None) as (orch, _):
        for i in range(2):
            await orch.submit(["true"], name=f"t{i}").wait()
    found = records.history(2, path=db)
    table = HistoryTable(
        found, lambda offset, limit: records.history(limit, offset=offset, path=db), 1
    )
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    with open(db, "wb") as f:
        f.write(b"this is not a database\n" * 100)
    table.more_button.click()
    assert "cannot read more of the history" in table.title.value
    assert [row.record.name for row in table.rows_box.children] == ["t1"]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["overwritten", "deleted"])
async def test_a_log_that_cannot_be_read_is_said_in_its_row(tmp_path, fault):
    """Regression: opening a row's log raised StoreError into the click handler (only
    the kernel's log saw it) when the file was overwritten, and showed an empty box
    when it was deleted. Now the row says it in one line."""
    db = str(tmp_path / "history.sqlite3")
    async with stored_orchestrator(db, idle_after=None) as (orch, _):
        await orch.submit(["echo", "hi"], name="t0").wait()
    table = HistoryTable(records.history(1, path=db), lambda offset, limit: [], 1)
    for suffix in ("-wal", "-shm", ""):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    if fault == "overwritten":
        with open(db, "wb") as f:
            f.write(b"this is not a database\n" * 100)
    else:
        Store(db).close()  # an empty history, as the writer makes it again
    [row] = table.rows_box.children
    row.log_button.value = True
    note = row.log_view.children[0].value
    expected = "cannot read this log" if fault == "overwritten" else "no longer in the history"
    assert expected in note


# -- the magics' options, as text (no kernel) ------------------------------------------------


@pytest.mark.timeout(60)
def test_limit_prints_the_newest_tasks_and_says_what_the_default_page_left_out(ip, magics, capsys):
    """As text, %oneshot_tasks --limit N prints the newest N (oldest of them first) and
    %oneshot_history --limit N the newest N (newest first); past the default page each
    says in one line how to see more."""
    tasks = [
        ip.run_line_magic("oneshot", f"--quiet --name t{i} true") for i in range(PAGE_SIZE + 2)
    ]
    eventually(lambda: all(task.done for task in tasks), timeout=30)
    capsys.readouterr()
    ip.run_line_magic("oneshot_tasks", "--limit 2")
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == [
        f"t{PAGE_SIZE}",
        f"t{PAGE_SIZE + 1}",
    ]
    ip.run_line_magic("oneshot_tasks", "")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(2 older tasks not shown: %oneshot_tasks --limit N)"
    assert len(lines) == PAGE_SIZE + 1
    ip.run_line_magic("oneshot_history", "--limit 2")
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == [
        f"t{PAGE_SIZE + 1}",
        f"t{PAGE_SIZE}",
    ]
    ip.run_line_magic("oneshot_history", "")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == PAGE_SIZE + 1
    assert lines[-1] == f"(the newest {PAGE_SIZE}; %oneshot_history --limit N shows more)"


@pytest.mark.parametrize(
    ("magic", "line", "message"),
    [
        ("oneshot_tasks", "--limit 0", "expected a whole number of 1 or more, got '0'"),
        ("oneshot_tasks", "--limit many", "expected a whole number, got 'many'"),
        ("oneshot_tasks", "--limit", "argument --limit: expected one argument"),
        ("oneshot_tasks", "everything", "unrecognized arguments: everything"),
        ("oneshot_history", "--limit -3", "expected a whole number of 1 or more, got '-3'"),
        ("oneshot_history", "--limit '2 3'", "expected a whole number, got '2 3'"),
    ],
)
def test_a_bad_limit_is_a_one_line_usage_error(ip, magics, magic, line, message):
    """A limit that is not a whole number of 1 or more, or a stray word, is refused
    with one line that says what was wrong."""
    with pytest.raises(UsageError) as error:
        ip.run_line_magic(magic, line)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# -- the magics in a kernel: a page, and the next one with the same filters ----------------


@pytest.mark.timeout(60)
def test_the_magics_show_a_page_in_a_kernel_and_more_with_the_same_filters(tmp_path, kernels):
    """In a kernel, `%oneshot_history --limit 2 --grep keep` shows two rows and its
    Show more reads the next page with the same filter; `%oneshot_tasks --limit 2`
    shows the two newest tasks of all five."""
    kernel = kernels(db=str(tmp_path / "history.sqlite3"))

    def run(code: str) -> list[dict]:
        return kernel.ok(code, timeout=30).messages

    def shown(messages: list[dict]) -> list[str]:
        return [
            m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"
        ]

    def printed(messages: list[dict]) -> str:
        return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")

    run(
        "%load_ext oneshot_nb\n"
        "import asyncio, ipywidgets\n"
        "names = ['keep0', 'keep1', 'other', 'keep2', 'keep3']\n"
        "tasks = [get_ipython().run_line_magic('oneshot', f'--quiet --name {n} true')"
        " for n in names]\n"
        "await asyncio.gather(*(t.wait() for t in tasks))\n"
        "def shown(kind):\n"
        "    return [w for w in list(ipywidgets.widgets.widget._instances.values())"
        " if type(w).__name__ == kind][-1]\n"
    )
    assert shown(run("%oneshot_history --limit 2 --grep keep")) == ["HistoryTable(2 tasks)"]
    more = run(
        "table = shown('HistoryTable')\n"
        "print([r.name for r in table.records])\n"
        "table.more_button.click()\n"
        "print([r.name for r in table.records], table.more_button.layout.display)"
    )
    assert printed(more).splitlines() == [
        "['keep3', 'keep2']",
        "['keep3', 'keep2', 'keep1', 'keep0'] none",
    ]
    assert shown(run("%oneshot_tasks --limit 2")) == ["TaskTable(5 tasks)"]
    rows = run("print([row.task.name for row in shown('TaskTable').rows_box.children])")
    assert printed(rows).strip() == "['keep3', 'keep2']"
