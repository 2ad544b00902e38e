"""AsyncOrchestrator with real processes: limit, slots, registry, lifecycle, resources."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
from typing import Any

import anyio
import pytest
from helpers import py, wait_for_line, wait_until
from helpers.processes import group_gone, open_fds, our_zombies, reaped

from oneshot_nb import (
    AsyncOrchestrator,
    OneshotTask,
    OrchestratorClosed,
    OrchestratorStatistics,
    Slots,
    TaskEvent,
    TaskState,
)
from oneshot_nb.engine.orchestrator import Lifecycle

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

GRACE = 0.3
LONG = py("import time; print('up', flush=True); time.sleep(100)")


def host_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "oneshot_nb orchestrator"]


# -- submitting and the limit ------------------------------------------------------------


async def test_submit_returns_the_task_at_once_in_created():
    """submit is synchronous: the task is registered and CREATED before any await."""
    async with AsyncOrchestrator() as orch:
        task = orch.submit(py("print('hi')"), name="greet")
        assert isinstance(task, OneshotTask)
        assert task.state is TaskState.CREATED
        assert orch.tasks == [task]
        assert await task.wait() is TaskState.COMPLETED
    assert task.output == "hi\n"


async def test_tasks_run_at_most_limit_at_a_time():
    """With limit=2, never more than 2 tasks are RUNNING or IDLE, and 2 do run together."""
    most = 0

    async with AsyncOrchestrator(limit=2) as orch:

        def on_event(event: TaskEvent) -> None:
            nonlocal most
            if event.kind == "transition":
                most = max(most, orch.statistics().active)

        orch.listeners.append(on_event)
        for _ in range(6):
            orch.submit(py("import time; time.sleep(0.3)"))
        states = await orch.wait_all()
    assert states == [TaskState.COMPLETED] * 6
    assert most == 2


async def test_slot_numbers_are_in_range_and_never_shared():
    """ONESHOT_SLOT is in 0..limit-1 and two tasks running at once never hold the same one."""
    limit = 3
    active: dict[int, str] = {}
    clashes: list[str] = []

    async with AsyncOrchestrator(limit=limit) as orch:

        def on_event(event: TaskEvent) -> None:
            if event.kind != "transition":
                return
            task = orch.get(event.task_id)
            if (event.source, event.target) == (TaskState.CREATED, TaskState.RUNNING):
                if task.slot in active:
                    clashes.append(f"{task.id} got slot {task.slot} of {active[task.slot]}")
                active[task.slot] = task.id
            elif event.target.is_final and event.source is not TaskState.CREATED:
                del active[task.slot]

        orch.listeners.append(on_event)
        code = "import os, time; print(os.environ['ONESHOT_SLOT']); time.sleep(0.15)"
        tasks = [orch.submit(py(code)) for _ in range(9)]
        await orch.wait_all()
    assert clashes == []
    for task in tasks:
        assert task.state is TaskState.COMPLETED
        assert 0 <= task.slot < limit
        assert int(task.output) == task.slot
    assert {task.slot for task in tasks} == set(range(limit))


async def test_raising_the_limit_lets_a_waiting_task_start():
    """`orch.limit = 2` at run time gives a CREATED task a slot at once."""
    async with AsyncOrchestrator(limit=1, grace=GRACE) as orch:
        first = orch.submit(LONG)
        second = orch.submit(LONG)
        await wait_for_line(first, "up")
        assert second.state is TaskState.CREATED
        orch.limit = 2
        await wait_for_line(second, "up")
        assert (first.slot, second.slot) == (0, 1)
        with pytest.raises(ValueError, match="limit"):
            orch.limit = 0
        assert orch.limit == 2


# -- registry, waiting, stopping ---------------------------------------------------------


async def test_tasks_get_and_wait_all():
    """`tasks` keeps submission order; get() finds by id, else by name."""
    async with AsyncOrchestrator(limit=4) as orch:
        first = orch.submit(py("import time; time.sleep(0.2)"), name="job")
        second = orch.submit(py("import sys; sys.exit(1)"), name="other")
        assert orch.tasks == [first, second]
        assert list(orch) == [first, second]
        assert orch.get(first.id) is first
        assert orch.get("other") is second
        with pytest.raises(KeyError, match="nope"):
            orch.get("nope")
        assert await orch.wait_all() == [TaskState.COMPLETED, TaskState.FAILED]
        third = orch.submit(py("pass"), name="job")
        await third.wait()
        assert orch.get("job") is third  # all ended: the newest


async def test_get_by_name_prefers_the_task_that_has_not_ended():
    """Two tasks named `dup`, the newer one ended: the running one is found by name.

    Regression: get() took the newest by name even when it had ended, so the running
    one could not be stopped by its name."""
    async with AsyncOrchestrator(limit=4, grace=GRACE) as orch:
        running = orch.submit(LONG, name="dup")
        ended = orch.submit(py("pass"), name="dup")
        await ended.wait()
        assert orch.get("dup") is running
        assert orch.find("dup") == [running, ended]
        running.stop()


async def test_get_by_a_name_that_several_running_tasks_share_lists_their_ids():
    async with AsyncOrchestrator(limit=4, grace=GRACE) as orch:
        one = orch.submit(LONG, name="dup")
        two = orch.submit(LONG, name="dup")
        ids = f"{one.id}, {two.id}"
        with pytest.raises(KeyError, match=f"2 tasks named 'dup' have not ended: {ids}"):
            orch.get("dup")
        orch.stop_all()


async def test_stop_all_stops_running_and_waiting_tasks():
    """stop_all interrupts every live task (reason "stopped") and leaves ended ones alone."""
    async with AsyncOrchestrator(limit=2, grace=GRACE) as orch:
        done = orch.submit(py("pass"))
        await done.wait()
        tasks = [orch.submit(LONG) for _ in range(3)]
        await wait_until(lambda: orch.statistics().running == 2, timeout=10)
        orch.stop_all()
        assert all(task.state is TaskState.INTERRUPTED for task in tasks)
        states = await orch.wait_all()
    assert states == [TaskState.COMPLETED] + [TaskState.INTERRUPTED] * 3
    assert done.reason == "exit"
    assert [task.reason for task in tasks] == ["stopped"] * 3
    assert [task.pid is None for task in tasks] == [False, False, True]
    for task in tasks[:2]:
        assert group_gone(task.pid)


async def test_statistics_counts_tasks_by_state():
    """statistics() is a frozen snapshot: limit and how many tasks are in each state."""
    async with AsyncOrchestrator(limit=1, grace=GRACE) as orch:
        assert orch.statistics() == OrchestratorStatistics(1, 0, 0, 0, 0, 0, 0)
        first = orch.submit(LONG, idle_after=0.2)
        waiting = orch.submit(py("pass"))
        failing = orch.submit(py("import sys; sys.exit(4)"))
        await wait_until(lambda: first.state is TaskState.RUNNING, timeout=10)
        assert orch.statistics() == OrchestratorStatistics(1, 2, 1, 0, 0, 0, 0)
        await wait_until(lambda: first.state is TaskState.IDLE, timeout=10)
        stats = orch.statistics()
        assert (stats.running, stats.idle, stats.active) == (0, 1, 1)
        waiting.stop()
        first.stop()
        await orch.wait_all()
        completing = orch.submit(py("pass"))
        await completing.wait()
        assert orch.statistics() == OrchestratorStatistics(1, 0, 0, 0, 2, 1, 1)
        with pytest.raises(AttributeError):
            stats.running = 5  # type: ignore[misc]
    assert failing.state is TaskState.FAILED


# -- closing -----------------------------------------------------------------------------


async def test_leaving_the_block_stops_running_tasks():
    """Leaving `async with` interrupts live tasks (reason "shutdown") and reaps them all."""
    async with AsyncOrchestrator(limit=2, grace=GRACE) as orch:
        running = [orch.submit(LONG) for _ in range(2)]
        waiting = orch.submit(LONG)
        for task in running:
            await wait_for_line(task, "up")
    for task in [*running, waiting]:
        assert task.state is TaskState.INTERRUPTED
        assert task.reason == "shutdown"
        assert task.done
    assert waiting.pid is None
    for task in running:
        assert group_gone(task.pid)
        assert reaped(task.pid)
    assert orch.closed


async def test_leaving_the_block_by_an_exception_still_stops_tasks():
    """An error in the block propagates, and the tasks are still stopped and reaped."""
    # The block is a task group's body, so anyio may deliver the error in a group.
    with pytest.RaisesGroup(pytest.RaisesExc(LookupError, match="boom"), allow_unwrapped=True):
        async with AsyncOrchestrator(grace=GRACE) as orch:
            task = orch.submit(LONG)
            await wait_for_line(task, "up")
            raise LookupError("boom")
    assert task.state is TaskState.INTERRUPTED
    assert task.reason == "shutdown"
    assert group_gone(task.pid)


async def test_cancelling_the_block_still_stops_tasks():
    """Cancellation from outside shuts down like a normal exit: no process survives."""
    with anyio.CancelScope() as scope:
        async with AsyncOrchestrator(grace=GRACE) as orch:
            task = orch.submit(LONG)
            await wait_for_line(task, "up")
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert task.state is TaskState.INTERRUPTED
    assert task.reason == "shutdown"
    assert group_gone(task.pid)
    assert reaped(task.pid)


async def test_aclose_stops_tasks_and_is_idempotent():
    """aclose() inside the block stops everything; a second call and the block's exit are
    harmless; submit afterwards raises OrchestratorClosed saying so."""
    async with AsyncOrchestrator(grace=GRACE) as orch:
        task = orch.submit(LONG)
        await wait_for_line(task, "up")
        await orch.aclose()
        assert task.state is TaskState.INTERRUPTED
        assert task.reason == "shutdown"
        assert group_gone(task.pid)
        await orch.aclose()
        with pytest.raises(OrchestratorClosed, match="closed; create a new one"):
            orch.submit(py("pass"))
    assert orch.tasks == [task]


async def test_submit_after_the_block_raises_closed():
    """A closed orchestrator refuses work with a clear message, and cannot be re-entered."""
    async with AsyncOrchestrator() as orch:
        pass
    with pytest.raises(OrchestratorClosed, match="orchestrator is closed"):
        orch.submit(py("pass"))
    with pytest.raises(OrchestratorClosed):
        async with orch:
            pass
    assert orch.tasks == []


async def test_notebook_mode_submit_starts_a_host_and_aclose_ends_it():
    """Without `async with`, submit on a running loop starts a host task; aclose ends it."""
    orch = AsyncOrchestrator(limit=2, grace=GRACE)
    quick = orch.submit(py("print('hi')"))
    assert quick.state is TaskState.CREATED
    assert len(host_tasks()) == 1
    assert await quick.wait() is TaskState.COMPLETED
    long = orch.submit(LONG)
    await wait_for_line(long, "up")
    assert len(host_tasks()) == 1
    await orch.aclose()
    assert long.state is TaskState.INTERRUPTED
    assert long.reason == "shutdown"
    assert group_gone(long.pid)
    assert host_tasks() == []
    await orch.aclose()
    with pytest.raises(OrchestratorClosed):
        orch.submit(py("pass"))


async def test_aclose_before_any_submit_is_fine():
    """Closing an orchestrator that never ran anything just closes it."""
    orch = AsyncOrchestrator()
    await orch.aclose()
    assert orch.closed
    assert host_tasks() == []


def test_submit_without_a_running_loop_raises_a_clear_error():
    """Outside any event loop submit says what it needs instead of failing later."""
    orch = AsyncOrchestrator()
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        orch.submit(py("pass"))
    assert orch.tasks == []


# -- bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("2", TypeError),
        (None, TypeError),
    ],
)
def test_bad_limit_is_refused_naming_limit(limit, error):
    """The limit must be a whole number >= 1; booleans and floats are refused."""
    with pytest.raises(error, match="limit must be a whole number"):
        AsyncOrchestrator(limit=limit)


def test_a_huge_limit_costs_no_memory_for_the_slots_it_never_hands_out():
    """Regression: the slots were a list of the whole range, so limit=10**7 took
    350 MB and 99999999999 raised MemoryError. Now they cost what is in use."""
    orch = AsyncOrchestrator(limit=99_999_999_999)
    assert orch.limit == 99_999_999_999
    assert sys.getsizeof(orch.slots._free) < 1000


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"idle_after": -1}, "idle_after"),
        ({"idle_after": 0}, "idle_after"),
        ({"timeout": 0}, "timeout"),
        ({"grace": -0.1}, "grace"),
        ({"max_log_bytes": -1}, "max_log_bytes"),
    ],
)
def test_bad_defaults_raise_value_error_naming_them(options, named):
    """Defaults for submit are checked when the orchestrator is made, not at first submit."""
    with pytest.raises(ValueError, match=named):
        AsyncOrchestrator(**options)


@pytest.mark.parametrize(
    ("command", "options", "named"),
    [
        ("", {}, "command"),
        ([], {}, "command"),
        ("true", {"idle_after": -1}, "idle_after"),
        ("true", {"timeout": 0}, "timeout"),
        ("true", {"grace": -1}, "grace"),
        ("true", {"max_log_bytes": -5}, "max_log_bytes"),
        ("true", {"env": {"A": 1}}, "env"),
        (None, {}, "command"),
        (5, {}, "command"),
        ("true", {"name": 5}, "name"),
        ("true", {"cwd": 3}, "cwd"),
        ("true", {"slots": object()}, "slots"),
        ("true", {"slots": 3}, "slots"),
    ],
)
async def test_bad_submit_arguments_raise_and_add_nothing(command, options, named):
    """A refused submit registers no task and announces nothing."""
    async with AsyncOrchestrator() as orch:
        events: list[TaskEvent] = []
        orch.listeners.append(events.append)
        with pytest.raises((TypeError, ValueError), match=named):
            orch.submit(command, **options)
        assert orch.tasks == []
        assert events == []


async def test_submit_options_override_the_defaults():
    """Options given to submit win over the orchestrator's defaults; the rest apply."""
    async with AsyncOrchestrator(idle_after=3, grace=0.5, max_log_bytes=100) as orch:
        task = orch.submit(py("pass"), grace=0.25)
        await task.wait()
    assert (task.idle_after, task.grace, task.max_log_bytes) == (3.0, 0.25, 100)


# -- resources ---------------------------------------------------------------------------


async def run_batch(count: int, limit: int) -> list[OneshotTask]:
    async with AsyncOrchestrator(limit=limit) as orch:
        tasks = [orch.submit(["true"]) for _ in range(count)]
        states = await orch.wait_all()
    assert states == [TaskState.COMPLETED] * count
    return tasks


@pytest.mark.timeout(60)
async def test_many_tasks_leave_no_file_descriptors_or_zombies_behind():
    """200 tasks at limit 8 all complete; fds return to their count and no zombie stays."""
    await run_batch(16, 8)  # warm-up: the loop creates its lazy resources here
    before = open_fds()
    tasks = await run_batch(200, 8)
    after = open_fds()
    assert after <= before + 3, f"{after - before} file descriptors leaked"
    assert len({task.pid for task in tasks}) == 200
    for task in tasks:
        assert reaped(task.pid)
    assert our_zombies() == []


async def test_spawn_errors_leave_no_file_descriptors_behind():
    """A spawn that fails (missing cwd, missing program) closes both ends of the pipes
    it made for the command's output."""
    await run_batch(4, 4)
    before = open_fds()
    async with AsyncOrchestrator(limit=4) as orch:
        for _ in range(20):
            orch.submit(["true"], cwd="/nonexistent-oneshot-nb-dir")
            orch.submit(["oneshot-nb-no-such-program-1f3a"])
        states = await orch.wait_all()
    assert states == [TaskState.FAILED] * 40
    assert open_fds() <= before + 3


F_GETPIPE_SZ = 1032


def pipe_sizes_until(stop_file: str) -> list[str]:
    """A command that prints the size of its stdout pipe every 20 ms until `stop_file`
    exists."""
    return py(
        "import fcntl, os, time\n"
        f"while not os.path.exists({stop_file!r}):\n"
        f"    print(fcntl.fcntl(1, {F_GETPIPE_SZ}), flush=True); time.sleep(0.02)"
    )


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="pipe sizes are set on Linux")
@pytest.mark.timeout(30)
async def test_pipes_share_a_budget_among_the_commands_running_at_once(tmp_path):
    """A command running alone gets a 64 KiB pipe; sixteen at once get 16 KiB each, so
    that commands flooding the kernel with output wait sooner instead of taking the
    CPUs from the loop that reads them."""
    stop = tmp_path / "stop"
    async with AsyncOrchestrator(limit=16) as orch:
        alone = orch.submit(pipe_sizes_until(str(stop)))
        await wait_until(lambda: len(alone.output.split()) >= 5)
        stop.touch()
        await alone.wait()
        stop.unlink()
        many = [orch.submit(pipe_sizes_until(str(stop))) for _ in range(16)]
        await wait_until(lambda: all("16384" in task.output.split() for task in many), 10)
        stop.touch()
        await orch.wait_all()
    assert set(alone.output.split()) == {"65536"}


# -- listeners ---------------------------------------------------------------------------


async def test_a_raising_listener_is_logged_and_does_not_break_the_engine(caplog):
    """A listener that raises is logged; the task still completes and others still hear."""
    heard: list[str] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("listener bug")

    caplog.set_level(logging.ERROR, logger="oneshot_nb")
    async with AsyncOrchestrator() as orch:
        orch.listeners.append(broken)
        orch.listeners.append(lambda event: heard.append(event.kind))
        task = orch.submit(py("print('fine')"))
        assert await task.wait() is TaskState.COMPLETED
    assert task.output == "fine\n"
    assert heard.count("transition") == 2
    assert "output" in heard
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert failures
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


async def test_a_listener_of_the_task_gets_output_when_the_orchestrator_has_none():
    """Output is not decoded when nobody listens; a view listening to one task is
    somebody, even with no orchestrator listener (history off): its log must fill."""
    async with AsyncOrchestrator(grace=0.3) as orch:
        task = orch.submit(py("print('hello')"))
        seen: list[str] = []
        task.listeners.append(lambda event: seen.append(event.text))
        await task.wait()
    assert "".join(seen) == "hello\n"


# -- slots and batches: arguments and memory ---------------------------------------------


async def test_slots_hand_out_the_lowest_free_number_across_limit_changes():
    """With numbers listed only as they are given back, the lowest free one still goes
    first, a number above a lowered limit is not handed out again while the limit is
    low, and one still held is never handed out twice when the limit goes back up."""
    slots = Slots(4)
    releases: dict[int, anyio.Event] = {}

    async def hold(*, task_status: Any) -> None:
        # The limiter lends one token per anyio task: each holder is a task of its own.
        slot = await slots.acquire()
        releases[slot] = release = anyio.Event()
        task_status.started(slot)
        await release.wait()
        slots.release(slot)

    async def give_back(tg: Any, *numbers: int) -> None:
        for number in numbers:
            releases.pop(number).set()
        await wait_until(lambda: slots.limiter.borrowed_tokens == len(releases))

    async with anyio.create_task_group() as tg:
        assert [await tg.start(hold) for _ in range(4)] == [0, 1, 2, 3]
        await give_back(tg, 1)
        assert await tg.start(hold) == 1
        slots.limit = 2
        await give_back(tg, 3, 0, 1)  # 3 is above the new limit: gone for now
        assert await tg.start(hold) == 0  # 2 is still held: the limit allows one more
        with anyio.move_on_after(0.1):
            await tg.start(hold)
            pytest.fail("a third slot was handed out under a limit of 2")
        slots.limit = 5
        assert [await tg.start(hold) for _ in range(3)] == [1, 3, 4]  # 2: still held
        assert slots.held == {0, 1, 2, 3, 4}
        await give_back(tg, *list(releases))


@pytest.mark.parametrize(
    ("commands", "options", "error", "message"),
    [
        ("true", {}, TypeError, "commands must be a list of commands .* got str"),
        (None, {}, TypeError, "commands must be a list"),
        ([], {}, ValueError, "commands must not be empty"),
        (["true", 5], {}, TypeError, r"commands\[1\] must be a str"),
        (["true"], {"limit": 0}, ValueError, "limit"),
        (["true"], {"fail_fast": "yes"}, TypeError, "fail_fast must be True or False"),
        (["true"], {"slots": Slots(1)}, TypeError, "unexpected options: slots"),
        (["true"], {"colour": 1}, TypeError, "unexpected options: colour"),
        (["true"], {"name": 5}, TypeError, "name must be a str"),
        (["true"], {"cwd": 3}, TypeError, "cwd must be a str or a path"),
        (["true"], {"grace": float("inf")}, ValueError, "grace must be a finite number"),
    ],
)
async def test_bad_batch_arguments_are_refused_and_start_nothing(commands, options, error, message):
    """Regression: submit_batch("true") ran four tasks t, r, u, e."""
    async with AsyncOrchestrator() as orch:
        with pytest.raises(error, match=message):
            orch.submit_batch(commands, **options)
        assert orch.tasks == []


async def test_a_queued_task_runs_in_the_directory_it_was_submitted_from(tmp_path, monkeypatch):
    """The cwd is read at submit, not at spawn: with the limit taken, a task submitted
    in A that starts after the kernel moved to B still runs in A, and a relative cwd
    is taken relative to where it was submitted."""
    a, b = tmp_path / "A", tmp_path / "B"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    monkeypatch.chdir(a)
    monkeypatch.setenv("ONESHOT_PROBE", "at submit")
    async with AsyncOrchestrator(limit=1, grace=GRACE) as orch:
        blocker = orch.submit(LONG)
        code = "import os; print(os.getcwd(), os.environ['ONESHOT_PROBE'])"
        here = orch.submit(py(code))
        relative = orch.submit(py(code), cwd="sub")
        assert (here.cwd, relative.cwd) == (str(a), str(a / "sub"))
        monkeypatch.chdir(b)
        monkeypatch.setenv("ONESHOT_PROBE", "later")
        await wait_for_line(blocker, "up")
        blocker.stop()
        await orch.wait_all()
    assert here.output == f"{a} at submit\n"
    assert relative.output == f"{a / 'sub'} at submit\n"


# -- the orchestrator's lifecycle ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_an_orchestrator_used_as_a_block_is_unopened_then_opened_then_closed():
    """UNOPENED when made, OPENED inside `async with` while tasks run, CLOSED after;
    a submit after that raises OrchestratorClosed saying to create a new one."""
    orch = AsyncOrchestrator(grace=GRACE)
    assert orch.lifecycle is Lifecycle.UNOPENED
    async with orch:
        assert orch.lifecycle is Lifecycle.OPENED
        task = orch.submit(LONG)
        await wait_for_line(task, "up")
        assert orch.lifecycle is Lifecycle.OPENED
    assert orch.lifecycle is Lifecycle.CLOSED and orch.closed
    assert task.state is TaskState.INTERRUPTED and task.reason == "shutdown"
    with pytest.raises(OrchestratorClosed, match=r"^orchestrator is closed; create a new one$"):
        orch.submit(py("pass"))


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_hosted_orchestrator_is_unopened_then_opened_then_closed_by_aclose():
    """The notebook's form: the first submit from a coroutine opens it (a background
    task hosts its task group), `await orch.aclose()` closes it; then a submit raises
    OrchestratorClosed saying to create a new one."""
    orch = AsyncOrchestrator(grace=GRACE)
    assert orch.lifecycle is Lifecycle.UNOPENED
    task = orch.submit(LONG)
    await wait_for_line(task, "up")
    assert orch.lifecycle is Lifecycle.OPENED
    await orch.aclose()
    assert orch.lifecycle is Lifecycle.CLOSED and orch.closed
    assert task.state is TaskState.INTERRUPTED and task.done
    assert group_gone(task.pid)
    with pytest.raises(OrchestratorClosed, match=r"^orchestrator is closed; create a new one$"):
        orch.submit(py("pass"))
    with pytest.raises(OrchestratorClosed, match="create a new one"):
        orch.submit_batch([py("pass")])
