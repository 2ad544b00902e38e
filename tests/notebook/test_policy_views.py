"""The views of what tasks cost and of the batch policies, with real processes: a task's
view, its row in a table, the history's rows and text. No kernel is needed; the tests
run on a loop so that the throttles and the ticker work as in one."""

from __future__ import annotations

import html
import re

import anyio
import pytest
from helpers import eventually, oneshot, py, stored_orchestrator, wait_until

from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.notebook.history_view import HistoryTable
from oneshot_nb.notebook.views import TaskView, tasks_table
from oneshot_nb.render.markup import task_text_row
from oneshot_nb.storage import records

pytestmark = pytest.mark.timeout(30)

RUNNING_COST = re.compile(r"CPU \d+% · [\d.]+ [kMG]B")
ENDED_COST = re.compile(r"peak [\d.]+ [kMG]B · [\d.,]+ CPU s")
# Fails its first attempt at once, then runs a while and fails again.
FLAKY = py(
    """
    import os, sys, time
    if os.environ["ONESHOT_ATTEMPT"] != "1":
        time.sleep(1.5)
    sys.exit(int(os.environ["ONESHOT_ATTEMPT"]))
    """
)


def busy_for(seconds: float) -> list[str]:
    return py(f"import time\nwhile time.process_time() < {seconds}: pass")


def row_text(table, task) -> str:
    """What `task`'s row in `table` says, markup taken away."""
    for row in table.rows_box.children:
        if row.task is task:
            return html.unescape(re.sub(r"<[^>]+>", " ", row.text.value))
    raise AssertionError(f"no row for {task}")


async def seen_while(task, *views) -> list[str]:
    """Every value the views' text took (a TaskView's info, a row's line) until `task`
    has ended, looked at every 10 ms."""
    seen: list[str] = []
    while not task.done:
        for view in views:
            text = view() if callable(view) else view.info.value
            if not seen or seen[-1] != text:
                seen.append(text)
        await anyio.sleep(0.01)
    return seen


@pytest.mark.anyio
async def test_a_task_says_what_it_costs_while_it_runs_and_what_it_cost_once_it_ended():
    """In its view, as soon as a sample comes, and in its table row, on the next tick."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(busy_for(2.2), name="busy")
        view, table = TaskView(task), tasks_table(orch)
        await wait_until(lambda: RUNNING_COST.search(view.info.value), 3)
        await wait_until(lambda: RUNNING_COST.search(row_text(table, task)), 3)
        assert not ENDED_COST.search(view.info.value)
        await task.wait()
        for text in (view.info.value, row_text(table, task)):
            assert ENDED_COST.search(text) and not RUNNING_COST.search(text), text


@pytest.mark.anyio
async def test_a_task_that_waits_for_others_says_so_until_they_have_completed():
    async with AsyncOrchestrator() as orch:
        build = orch.submit(py("import time; time.sleep(1.5)"), name="build")
        lint = orch.submit(py("import time; time.sleep(2.5)"), name="lint")
        test = orch.submit(["true"], name="test", after=[build, lint])
        view, table = TaskView(test), tasks_table(orch)
        seen = await seen_while(test, view, lambda: row_text(table, test))
    said = [text for text in seen if "waiting for" in text]
    assert any("waiting for build, lint" in text for text in said)
    assert any("waiting for lint" in text and "build" not in text for text in said)
    assert "waiting for" not in view.info.value and test.state is TaskState.COMPLETED


@pytest.mark.anyio
async def test_a_retried_task_says_when_it_retries_which_attempt_it_is_on_and_its_attempts():
    async with AsyncOrchestrator() as orch:
        task = orch.submit(FLAKY, name="flaky", retries=2, retry_delay=0.5)
        view, table = TaskView(task), tasks_table(orch)
        seen = await seen_while(task, view, lambda: row_text(table, task))
    text = "\n".join(seen)
    assert re.search(r"retry 2/3 in [01]s · exit code 1", text)
    assert re.search(r"retry 3/3 in [01]s · exit code 2", text)
    assert "attempt 2/3" in text and "attempt 3/3" in text
    assert task.state is TaskState.FAILED
    assert "exit code 3 · 3 attempts" in view.info.value
    assert "3 attempts" in row_text(table, task)
    tooltip = re.search(r'title="([^"]*)"', view.info.value)
    assert tooltip is not None
    lines = html.unescape(tooltip.group(1)).splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        "attempt 1: exit code 1",
        "attempt 2: exit code 2",
        "attempt 3: exit code 3",
    ]


@pytest.mark.anyio
async def test_the_history_says_what_a_task_cost_and_how_many_attempts_it_took(tmp_path):
    db = tmp_path / "history.sqlite3"
    async with stored_orchestrator(db) as (orch, _):
        busy = orch.submit(busy_for(1.5), name="busy")
        flaky = orch.submit(FLAKY, name="flaky", retries=1, retry_delay=0)
        await orch.wait_all()
    found = {record.name: record for record in records.history(path=str(db))}
    assert found["busy"].cpu_seconds == busy.usage.cpu_seconds
    table = HistoryTable(list(found.values()), lambda offset, limit: [])
    rows = {row.record.name: row.text.value for row in table.rows_box.children}
    assert ENDED_COST.search(rows["busy"]) and "attempts" not in rows["busy"]
    assert "2 attempts" in rows["flaky"] and ENDED_COST.search(rows["flaky"])
    assert "attempt 1: exit code 1" in html.unescape(rows["flaky"])
    assert flaky.state is TaskState.FAILED


def test_text_rows_say_the_cost_and_the_attempts(ip, magics, capsys):
    """%oneshot_history's rows, from the history, and a live task's (%oneshot_tasks)."""
    sleeper = oneshot(ip, "--quiet --name sleeper sleep 1.5")
    flaky = oneshot(ip, "--quiet --name flaky --retries 1 --retry-delay 0 exit 1")
    eventually(lambda: sleeper.done and flaky.done, 10)
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "")
    lines = {line.split()[2]: line for line in capsys.readouterr().out.splitlines()}
    assert ENDED_COST.search(lines["sleeper"]), lines["sleeper"]
    assert lines["flaky"].endswith("exit 1  2 attempts"), lines["flaky"]  # too short to sample
    assert ENDED_COST.search(task_text_row(sleeper))
    assert task_text_row(flaky).endswith("exit 1  2 attempts")
