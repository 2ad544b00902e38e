"""The widgets: rendering only, driven by task events.

No kernel is needed (ipywidgets 8 falls back to a dummy comm); the tests run on a loop
so that the update throttle and the ticker work as in a kernel.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator

import anyio
import ipywidgets as widgets
import pytest
from helpers import py, wait_until
from helpers.processes import group_gone

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.engine.events import notify
from oneshot_nb.notebook.views import (
    STATE_COLOURS,
    UPDATE_INTERVAL,
    LogView,
    TaskRow,
    TaskTable,
    TaskView,
    batch_view,
    task_view,
    tasks_table,
)
from oneshot_nb.render.tail import MAX_CHARS, MAX_LINES

pytestmark = pytest.mark.anyio

PAYLOAD = "<img src=x onerror=alert(1)>"


def feed(task: OneshotTask, text: str, stream: str = "stdout") -> None:
    """Hand an output event to the task's listeners, as its pump would."""
    event = TaskEvent(task.id, "output", time.time(), stream=stream, data=text.encode(), text=text)
    notify(task.listeners, event)


def move_to(task: OneshotTask, state: TaskState) -> None:
    """Drive a task that runs no process through its machine to `state`."""
    if state is TaskState.CREATED:
        return
    task.machine.start()
    if state is TaskState.IDLE:
        task.machine.detect_silence()
    elif state is TaskState.COMPLETED:
        task.returncode = 0
        task.machine.finish()
    elif state is TaskState.FAILED:
        task.returncode = 2
        task.machine.fail()
    elif state is TaskState.INTERRUPTED:
        task.interrupt("stopped")


def shown_lines(view: LogView) -> list[str]:
    return [line for o in view.output.outputs for line in o["text"].splitlines()]


def html_values(widget: widgets.Widget) -> Iterator[str]:
    """The value of every HTML widget in a widget tree."""
    if isinstance(widget, widgets.HTML):
        yield widget.value
    for child in getattr(widget, "children", ()):
        yield from html_values(child)


def counts(table: TaskTable) -> dict[str, int]:
    found = re.findall(r'data-state="(\w+)"[^>]*>\w+ (\d+)<', table.counts.value)
    return {state: int(n) for state, n in found}


@pytest.mark.parametrize("state", list(TaskState))
async def test_badge_shows_each_state_in_its_own_colour(state: TaskState):
    """The badge names the state and is drawn in that state's colour; Stop is disabled
    exactly when the state is final."""
    task = OneshotTask("true", idle_after=None)
    view = TaskView(task)
    move_to(task, state)
    await wait_until(lambda: f'data-state="{state.value}"' in view.badge.value)
    assert f">{state.value}" in view.badge.value
    assert f"background:{STATE_COLOURS[state]}" in view.badge.value
    assert view.stop_button.disabled is state.is_final


async def test_idle_badge_says_how_long_the_task_has_been_silent():
    """An IDLE badge gives the time since the last output."""
    task = OneshotTask("true")
    move_to(task, TaskState.IDLE)
    task.last_activity = time.monotonic() - 75
    view = TaskView(task)
    assert "IDLE · silent 1m15s" in view.badge.value


@pytest.mark.timeout(10)
async def test_idle_silence_moves_on_without_events():
    """The silent time of an IDLE task grows on its own, with no event to trigger it."""
    task = OneshotTask("true")
    move_to(task, TaskState.IDLE)
    task.last_activity = time.monotonic() - 3
    view = TaskView(task)
    assert "silent 3." in view.badge.value
    await wait_until(lambda: "silent 4." in view.badge.value, timeout=3)


@pytest.mark.timeout(10)
async def test_views_started_together_tick_once_a_second_in_different_turns():
    """Twenty views made at once each tick about once a second, spread over the second
    rather than all in one loop callback (a burst the kernel's loop lag would show)."""
    import asyncio

    from oneshot_nb.notebook.live import TICK_INTERVAL, TICK_SLICES, _Live, ticker

    loop = asyncio.get_running_loop()
    ticks: dict[int, list[float]] = {}

    class Clock(_Live):
        def __init__(self, number: int) -> None:
            self.number = number

        def tick(self) -> bool:
            ticks.setdefault(self.number, []).append(loop.time())
            return len(ticks[self.number]) < 2

    clocks = [Clock(number) for number in range(20)]
    for clock in clocks:
        ticker.add(clock)
    await wait_until(lambda: all(len(ticks.get(n, [])) == 2 for n in range(20)), timeout=4)
    for times in ticks.values():
        assert TICK_INTERVAL - 0.05 <= times[1] - times[0] < TICK_INTERVAL + 1
    # Ticks in one callback are microseconds apart; turns are TICK_INTERVAL/TICK_SLICES
    # apart at least (each is timed from the one before).
    first_ticks = sorted(times[0] for times in ticks.values())
    bursts = [[first_ticks[0]]]
    for when in first_ticks[1:]:
        if when - bursts[-1][-1] < TICK_INTERVAL / TICK_SLICES / 2:
            bursts[-1].append(when)
        else:
            bursts.append([when])
    assert len(bursts) == TICK_SLICES
    assert {len(burst) for burst in bursts} == {20 // TICK_SLICES}


@pytest.mark.timeout(10)
async def test_a_view_added_to_the_ticker_again_keeps_ticking_once_a_second():
    """A table adds itself again on every event; that must neither speed its ticks up
    nor move it to a turn that never comes."""
    import asyncio

    from oneshot_nb.notebook.live import TICK_INTERVAL, _Live, ticker

    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    class Clock(_Live):
        def tick(self) -> bool:
            ticks.append(loop.time())
            return True

    clock = Clock()
    ticker.add(clock)
    with anyio.fail_after(3 * TICK_INTERVAL + 2):
        while len(ticks) < 3:
            ticker.add(clock)
            await anyio.sleep(0.03)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) >= 3
    assert all(TICK_INTERVAL - 0.05 <= gap < TICK_INTERVAL + 1 for gap in gaps)
    ticker.discard(clock)


async def test_text_from_the_task_is_escaped_in_every_html_widget():
    """A name, command, output, reason or error with markup shows as text, never as HTML;
    the log is only ever stream outputs."""
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    code = f"import sys; print({PAYLOAD!r}); print({PAYLOAD!r}, file=sys.stderr); sys.exit(3)"
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit(py(code), name=PAYLOAD)
        stopped = orch.submit(f"echo '{PAYLOAD}'", name=PAYLOAD)
        unborn = orch.submit("true", cwd=f"/nonexistent/{PAYLOAD}")
        table = tasks_table(orch)
        views = [task_view(task), task_view(stopped), task_view(unborn)]
        stopped.interrupt(PAYLOAD)
        await orch.wait_all()
        [row] = [row for row in table.rows_box.children if row.task is task]
        row.log_button.value = True
        view = views[0]
        await wait_until(lambda: len(view.log_view.output.outputs) == 2)
        await wait_until(lambda: "exit code 3" in view.info.value)
        await wait_until(lambda: escaped in views[1].info.value)
        await wait_until(lambda: escaped in views[2].info.value)
    for widget in [*views, table]:
        for value in html_values(widget):
            assert "<img" not in value
    assert escaped in view.title.value
    assert f'<code style="color:#555">echo &#x27;{escaped}&#x27;</code>' in views[1].title.value
    for log in (view.log_view, row.log_view):
        assert [o["output_type"] for o in log.output.outputs] == ["stream", "stream"]
        assert {o["text"] for o in log.output.outputs} == {PAYLOAD + "\n"}


async def test_stderr_is_set_apart():
    """stderr lines are outputs of their own with name "stderr", in arrival order."""
    task = OneshotTask("true")
    view = LogView(task)
    feed(task, "out 1\n")
    feed(task, "err 1\nerr 2\n", "stderr")
    feed(task, "out 2\n")
    await wait_until(lambda: len(view.output.outputs) == 3)
    assert [(o["name"], o["text"]) for o in view.output.outputs] == [
        ("stdout", "out 1\n"),
        ("stderr", "err 1\nerr 2\n"),
        ("stdout", "out 2\n"),
    ]


async def test_a_progress_bar_shows_one_line_with_its_latest_state():
    """tqdm-style "\\r" updates collapse to one line; "\\r\\n" split across chunks is a
    newline; a long line is capped."""
    task = OneshotTask("true")
    view = TaskView(task).log_view
    for percent in range(10, 101, 10):
        feed(task, f"\r{percent:3d}%", "stderr")
    await wait_until(lambda: shown_lines(view) == ["100%"])
    feed(task, "\r", "stderr")
    feed(task, "\nnext\r", "stderr")
    feed(task, "\n" + "x" * 100_000 + "\n", "stderr")
    await wait_until(lambda: len(shown_lines(view)) == 3)
    lines = shown_lines(view)
    assert lines[:2] == ["100%", "next"]
    assert len(lines[2]) == view.tail.max_line_chars


@pytest.mark.parametrize("width", [6, 300])
async def test_the_log_payload_stays_bounded_after_100000_lines(width: int):
    """After 100,000 lines the widget holds at most MAX_LINES lines and MAX_CHARS
    characters, and says how many earlier lines it does not show."""
    task = OneshotTask("true")
    view = TaskView(task).log_view
    for start in range(0, 100_000, 1000):
        feed(task, "".join(f"{i:0{width}d}\n" for i in range(start, start + 1000)))
    await wait_until(lambda: shown_lines(view) and int(shown_lines(view)[-1]) == 99_999)
    lines = shown_lines(view)
    assert len(lines) <= MAX_LINES
    assert sum(len(o["text"]) for o in view.output.outputs) <= MAX_CHARS
    assert f"{100_000 - len(lines)} earlier lines not shown" in view.note.value


@pytest.mark.timeout(20)
async def test_log_updates_are_throttled_to_about_ten_a_second():
    """2,000 output events in about a second reach the widget as at most ~10 updates a
    second, and the last event is still shown."""
    task = OneshotTask("true")
    view = TaskView(task).log_view
    changes = []
    view.output.observe(lambda change: changes.append(time.monotonic()), "outputs")
    begin = time.monotonic()
    for batch in range(20):
        for i in range(100):
            feed(task, f"line {batch * 100 + i}\n")
        await wait_until(lambda b=batch: time.monotonic() >= begin + 0.05 * (b + 1))
    await wait_until(lambda: shown_lines(view)[-1:] == ["line 1999"])
    elapsed = time.monotonic() - begin
    assert 3 <= len(changes) <= elapsed / UPDATE_INTERVAL + 2
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert min(gaps) >= UPDATE_INTERVAL * 0.9


async def test_a_view_made_late_starts_from_the_output_kept_so_far():
    """A log opened after the task wrote output shows that output, then what follows."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit(py("print('early')"))
        await task.wait()
        row = TaskRow(task)
        assert row.log_view is None
        row.log_button.value = True
        assert row.log_view is not None and row.children[-1] is row.log_view
        assert shown_lines(row.log_view) == ["early"]
        row.log_button.value = False
        assert row.children == (row.children[0],)


@pytest.mark.parametrize("listening", ["nobody", "a text subscriber"])
async def test_a_view_made_between_the_halves_of_a_character_shows_it_whole(
    listening: str, tmp_path
):
    """A view opened while the last read ended inside a character shows that character
    once and whole when its last byte comes, whether the output was being decoded
    (a subscriber) or not (nobody listening) until then."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        subscription = orch.events() if listening == "a text subscriber" else None
        go = tmp_path / "go"  # the second half is written once this exists
        task = orch.submit(
            py(
                "import os, sys, time; out = sys.stdout.buffer\n"
                "out.write(b'caf\\xc3'); out.flush()\n"
                f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
                "out.write(b'\\xa9 ok\\n'); out.flush()"
            )
        )
        await wait_until(lambda: task.bytes_written["stdout"] == 4)
        view = TaskView(task).log_view
        go.touch()
        await task.wait()
        await wait_until(lambda: shown_lines(view) == ["caf\u00e9 ok"])
        if subscription is not None:
            subscription.close()


@pytest.mark.timeout(20)
async def test_stop_button_stops_the_task_and_is_then_disabled():
    """Clicking Stop interrupts the task (reason "stopped"), its whole process group
    goes, and the button is disabled once the task has ended."""
    async with AsyncOrchestrator(grace=0.5) as orch:
        task = orch.submit("sleep 60 & sleep 60; wait")
        view = task_view(task)
        await wait_until(lambda: task.state is TaskState.RUNNING)
        assert not view.stop_button.disabled
        view.stop_button.click()
        assert await task.wait() is TaskState.INTERRUPTED
        assert task.reason == "stopped"
        await wait_until(lambda: view.stop_button.disabled)
        assert 'data-state="INTERRUPTED"' in view.badge.value
        assert "stopped" in view.info.value
    assert task.pid is not None
    await wait_until(lambda: group_gone(task.pid))


async def test_a_view_is_final_as_soon_as_wait_returns():
    """When `await task.wait()` returns, the view already shows the final state with
    Stop disabled and plain: the throttle used to hold the last update back for up to
    UPDATE_INTERVAL after the state had changed (here, after the update for RUNNING)."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        task = orch.submit("true")
        view = task_view(task)
        assert await task.wait() is TaskState.COMPLETED
        assert 'data-state="COMPLETED"' in view.badge.value
        assert "exit code 0" in view.info.value
        assert view.stop_button.disabled
        assert view.stop_button.button_style == ""


async def test_a_stopped_task_s_view_shows_its_last_words_once_wait_returns():
    """What a SIGTERM handler prints is read after the stop's INTERRUPTED transition:
    the log shows it as soon as `await task.wait()` returns, not an update later."""
    code = """
        import signal, sys, time
        def bye(*_):
            print("bye", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, bye)
        print("go", flush=True)
        time.sleep(100)
    """
    async with AsyncOrchestrator(idle_after=None, grace=5) as orch:
        task = orch.submit(py(code))
        view = task_view(task)
        await wait_until(lambda: "go\n" in task.output)
        task.stop()
        await task.wait()
        assert task.returncode == 7
        assert "bye" in str(view.log_view.output.outputs)


@pytest.mark.timeout(20)
async def test_batch_view_counts_and_progress_follow_the_tasks():
    """A batch's table counts tasks per state, fills its progress bar as they end, turns
    it red on a failure, and disables Stop all once every task has ended."""
    async with AsyncOrchestrator(idle_after=None, grace=0.5) as orch:
        batch = orch.submit_batch(
            [py("pass"), py("import sys; sys.exit(1)"), py("import time; time.sleep(60)")],
            limit=1,
        )
        table = batch_view(batch)
        assert batch_view(batch) is table
        assert counts(table)["CREATED"] == 3
        assert (table.progress.value, table.progress.max) == (0, 3)
        assert len(table.rows_box.children) == 3
        running = batch.tasks[2]
        await wait_until(lambda: running.state is TaskState.RUNNING)
        ended = {"CREATED": 0, "IDLE": 0, "COMPLETED": 1, "FAILED": 1}
        await wait_until(lambda: counts(table) == ended | {"RUNNING": 1, "INTERRUPTED": 0})
        assert table.progress.value == 2
        assert table.progress.bar_style == "danger"
        assert not table.stop_all_button.disabled
        table.stop_all_button.click()
        await batch.wait()
        await wait_until(lambda: counts(table) == ended | {"RUNNING": 0, "INTERRUPTED": 1})
        assert table.progress.value == 3
        assert table.stop_all_button.disabled


async def test_the_tasks_table_is_one_per_orchestrator():
    """%oneshot_tasks run again shows the same table: one listener on the orchestrator,
    not one more per call for the rest of the kernel's life."""
    import gc
    import weakref

    async with AsyncOrchestrator() as orch:
        before = len(orch.listeners)
        table = tasks_table(orch)
        assert tasks_table(orch) is table
        assert len(orch.listeners) == before + 1
        other = AsyncOrchestrator()
        assert tasks_table(other) is not table
    gone = weakref.ref(other)
    del other
    gc.collect()
    assert gone() is None  # the table does not keep its orchestrator alive


async def test_tasks_table_grows_as_tasks_are_submitted():
    """The table of every task gains a row for each task submitted after it was made,
    the newest at the top."""
    async with AsyncOrchestrator(idle_after=None) as orch:
        table = tasks_table(orch)
        assert table.rows_box.children == ()
        first = orch.submit(py("pass"))
        second = orch.submit(py("pass"))
        await wait_until(lambda: len(table.rows_box.children) == 2)
        assert [row.task for row in table.rows_box.children] == [second, first]
        await orch.wait_all()
        await wait_until(lambda: counts(table)["COMPLETED"] == 2)
        assert table.stop_all_button.disabled


def test_a_task_has_one_view():
    """task_view makes the view on first use and returns the same one after."""
    task = OneshotTask("true", name="build")
    view = task_view(task)
    assert task_view(task) is view is task.view
    assert repr(view) == "TaskView('build')"
