"""Batches that run themselves: retries, dependencies and halt rules, with real
processes and a real history file."""

from __future__ import annotations

import json

import anyio
import pytest
from helpers import py, stored_orchestrator, wait_for_line
from helpers.processes import group_gone

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskState
from oneshot_nb.engine.halt import check_halt
from oneshot_nb.engine.options import RETRY_DELAY_CAP, retry_delay
from oneshot_nb.storage.records import get_record

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COMPLETED, FAILED, INTERRUPTED = TaskState.COMPLETED, TaskState.FAILED, TaskState.INTERRUPTED


def flaky(counter: object, succeed_on: int) -> list[str]:
    """Fails until its `succeed_on`-th run (counted in the file `counter`)."""
    return py(
        f"""
        import os, sys
        path = {str(counter)!r}
        runs = int(open(path).read()) + 1 if os.path.exists(path) else 1
        open(path, "w").write(str(runs))
        print("run", runs, "attempt", os.environ["ONESHOT_ATTEMPT"], flush=True)
        sys.exit(0 if runs >= {succeed_on} else 3)
        """
    )


# -- retries -------------------------------------------------------------------------------


async def test_a_command_that_fails_twice_completes_on_its_third_attempt(tmp_path):
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(flaky(tmp_path / "n", 3), retries=3, retry_delay=0.05)
        assert await task.wait() is COMPLETED
    assert task.attempt == 3
    assert [(a.number, a.returncode, a.reason) for a in task.attempts] == [
        (1, 3, "exit"),
        (2, 3, "exit"),
        (3, 0, "exit"),
    ]
    assert task.output == (
        "run 1 attempt 1\n"
        "[oneshot_nb] attempt 1 ended: exit 3; attempt 2 of 4 in 0.05s\n"
        "run 2 attempt 2\n"
        "[oneshot_nb] attempt 2 ended: exit 3; attempt 3 of 4 in 0.1s\n"
        "run 3 attempt 3\n"
    )
    events = [(t.event, t.target) for t in task.transitions]
    assert events.count(("retry", TaskState.CREATED)) == 2
    record = get_record(task.id, path=str(path))
    assert record.state is COMPLETED
    assert [(a["number"], a["returncode"]) for a in record.attempts] == [(1, 3), (2, 3), (3, 0)]
    assert record.read_log() == task.output.encode()
    retries = [t for t in record.transitions() if t[0] == "retry"]
    assert [t[4] for t in retries] == ["exit", "exit"]


async def test_a_command_that_keeps_failing_fails_after_its_last_attempt(tmp_path):
    task = OneshotTask(flaky(tmp_path / "n", 99), retries=2, retry_delay=0)
    assert await task.run() is FAILED
    assert (task.attempt, task.returncode, task.reason) == (3, 3, "exit")
    assert len(task.attempts) == 3


async def test_the_delay_doubles_up_to_a_cap():
    assert [retry_delay(1.0, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(1.0, 50) == RETRY_DELAY_CAP
    assert retry_delay(100.0, 3) == 100.0  # a first delay past the cap stays


async def test_a_stop_during_the_wait_for_a_retry_ends_the_task(tmp_path):
    task = OneshotTask(flaky(tmp_path / "n", 99), retries=5, retry_delay=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_for_line(task, "run 1 attempt 1")
        with anyio.fail_after(10):
            while task.retry_at is None:
                await anyio.sleep(0.01)
        assert task.state is TaskState.CREATED
        task.stop()
    assert (task.state, task.reason, task.attempt) == (INTERRUPTED, "stopped", 1)


async def test_a_stop_or_a_timeout_is_never_retried():
    stopped = OneshotTask("echo up; sleep 30", retries=3, grace=0.2)
    timed_out = OneshotTask("sleep 30", retries=3, timeout=0.3, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stopped.run)
        tg.start_soon(timed_out.run)
        await wait_for_line(stopped, "up")
        stopped.stop()
    assert (stopped.state, stopped.attempt) == (INTERRUPTED, 1)
    assert (timed_out.state, timed_out.reason, timed_out.attempt) == (INTERRUPTED, "timeout", 1)


async def test_a_spawn_error_is_retried_only_when_asked(tmp_path):
    missing = str(tmp_path / "no-such-program")
    plain = OneshotTask([missing], retries=2, retry_delay=0)
    asked = OneshotTask([missing], retries=2, retry_delay=0, retry_on="spawn")
    assert await plain.run() is FAILED
    assert await asked.run() is FAILED
    assert (plain.attempt, plain.reason) == (1, "spawn error")
    assert (asked.attempt, [a.reason for a in asked.attempts]) == (3, ["spawn error"] * 3)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"retries": -1}, ValueError, "retries must be 0 to 1000"),
        ({"retries": 1.5}, TypeError, "retries must be a whole number"),
        ({"retry_delay": float("inf")}, ValueError, "retry_delay must be a finite number"),
        ({"retry_on": "exit"}, ValueError, "retry_on takes spawn"),
        ({"after": "build"}, TypeError, "after must be a list of tasks"),
    ],
)
def test_bad_retry_options_are_refused_in_one_line(options, error, message):
    with pytest.raises(error, match=message):
        OneshotTask("true", **options)


# -- dependencies ---------------------------------------------------------------------------


async def test_a_diamond_with_a_failing_branch_runs_what_it_may_and_spawns_nothing_else():
    """build -> (test, lint) -> deploy, lint failing: test runs, deploy never spawns and
    fails 'dependency failed: lint', and so does what comes after it."""
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch(
            ["echo build", "echo test", "exit 1", "echo deploy", "echo notify"],
            names=["build", "test", "lint", "deploy", "notify"],
            after=[[], ["build"], ["build"], ["test", "lint"], ["deploy"]],
        )
        states = await batch.wait()
    build, test, lint, deploy, notify = batch.tasks
    assert states == [COMPLETED, COMPLETED, FAILED, FAILED, FAILED]
    assert (deploy.reason, notify.reason) == (
        "dependency failed: lint",
        "dependency failed: deploy",
    )
    assert (deploy.pid, notify.pid) == (None, None)
    assert test.started_at >= build.ended_at and lint.started_at >= build.ended_at


async def test_a_task_waits_in_created_saying_for_what_and_holds_no_slot():
    async with AsyncOrchestrator(limit=1) as orch:
        first = orch.submit("sleep 0.5", name="first")
        later = orch.submit("echo later", after=["first"])
        other = orch.submit("echo other")  # queued for the slot before `later`, which
        await anyio.sleep(0.2)  # waits for `first` outside the queue
        assert later.state is TaskState.CREATED
        assert later.waiting_for == ["first"]
        assert await later.wait() is COMPLETED
        assert await other.wait() is COMPLETED
    assert later.waiting_for == []
    assert later.started_at >= first.ended_at
    assert other.started_at <= later.started_at


async def test_after_a_task_that_ended_already_runs_or_fails_at_once():
    async with AsyncOrchestrator() as orch:
        ok = orch.submit("true")
        bad = orch.submit("false")
        await orch.wait_all()
        after_ok = orch.submit("echo go", after=[ok])
        after_bad = orch.submit("echo no", after=[bad.id])
        assert await after_ok.wait() is COMPLETED
        assert await after_bad.wait() is FAILED
    assert after_bad.reason == f"dependency failed: {bad.name}"


async def test_a_stop_while_waiting_for_a_dependency_ends_it():
    async with AsyncOrchestrator() as orch:
        first = orch.submit("sleep 30", grace=0.1)
        later = orch.submit("echo later", after=[first])
        await anyio.sleep(0.1)
        later.stop()
        assert await later.wait() is INTERRUPTED
        first.stop()
    assert later.pid is None


async def test_a_cycle_among_a_batchs_lines_is_refused_and_nothing_starts():
    async with AsyncOrchestrator() as orch:
        with pytest.raises(ValueError, match="in a cycle: a after c after b after a"):
            orch.submit_batch(["true"] * 3, names=["a", "b", "c"], after=[["c"], ["a"], ["b"]])
        with pytest.raises(ValueError, match="in a cycle: a after a"):
            orch.submit_batch(["true"], names=["a"], after=[["a"]])
        with pytest.raises(ValueError, match="runs after 'x', but no line is named so"):
            orch.submit_batch(["true"], names=["a"], after=[["x"]])
        assert orch.tasks == []


async def test_dependencies_are_kept_in_the_history(tmp_path):
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        first = orch.submit("true")
        second = orch.submit("true", after=[first])
        await orch.wait_all()
    assert get_record(second.id, path=str(path)).after == [first.id]


# -- halt rules -----------------------------------------------------------------------------

FAIL_SOON = "sh -c 'sleep 0.3; exit 1'"


async def test_fail_fast_is_halt_soon_fail_1_running_tasks_finish():
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch(
            [FAIL_SOON, "sh -c 'sleep 0.8; echo done'", "echo never", "echo never"],
            limit=2,
            fail_fast=True,
        )
        states = await batch.wait()
    assert states == [FAILED, COMPLETED, INTERRUPTED, INTERRUPTED]
    assert batch.tasks[1].output == "done\n"
    assert [t.reason for t in batch.tasks[2:]] == ["halted: soon,fail=1"] * 2
    assert [t.pid for t in batch.tasks[2:]] == [None, None]


async def test_halt_now_fail_1_stops_the_running_tasks_too():
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch(
            [FAIL_SOON, "sleep 30", "echo never"], limit=2, halt="now,fail=1", grace=0.2
        )
        states = await batch.wait()
    assert states == [FAILED, INTERRUPTED, INTERRUPTED]
    assert batch.tasks[1].reason == "halted: now,fail=1" and batch.tasks[1].pid is not None
    assert group_gone(batch.tasks[1].pid)
    assert batch.tasks[2].pid is None


async def test_halt_counts_failures_to_a_threshold_or_a_share():
    async with AsyncOrchestrator() as orch:
        # The first failure frees a slot for the third line, which runs on; the
        # second meets the rule (2 failures; half of 4 lines) before the fourth starts.
        lines = ["false", "sh -c 'sleep 0.2; false'", "sleep 0.6", "echo never"]
        two = orch.submit_batch(lines, limit=2, halt="soon,fail=2")
        share = orch.submit_batch(lines, limit=2, halt="soon,fail=50%")
        one_third = orch.submit_batch(lines, limit=2, halt="soon,fail=34%")
        assert await two.wait() == [FAILED, FAILED, COMPLETED, INTERRUPTED]
        assert await share.wait() == [FAILED, FAILED, COMPLETED, INTERRUPTED]
        # 34% of 4 lines is 2 failures too: a share rounds up to whole tasks.
        assert await one_third.wait() == [FAILED, FAILED, COMPLETED, INTERRUPTED]


async def test_halt_on_success_stops_the_rest_once_enough_have_completed():
    async with AsyncOrchestrator() as orch:
        soon = orch.submit_batch(
            ["true", "sh -c 'sleep 0.3'", "echo never"], limit=2, halt="soon,success=1"
        )
        now = orch.submit_batch(
            ["true", "sleep 30", "echo never"], limit=2, halt="now,success=1", grace=0.2
        )
        assert await soon.wait() == [COMPLETED, COMPLETED, INTERRUPTED]
        assert await now.wait() == [COMPLETED, INTERRUPTED, INTERRUPTED]


async def test_after_a_halt_a_failed_attempt_is_not_retried(tmp_path):
    """A halt means no new start: a running task whose attempt fails after it is not
    run again (INTERRUPTED, the halt's reason), though it has retries left."""
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch(
            [flaky(tmp_path / "n", 99), [str(tmp_path / "no-such-program")]],
            limit=2,
            halt="soon,fail=1",
            retries=5,
            retry_delay=10,
        )
        assert await batch.wait() == [INTERRUPTED, FAILED]
    task = batch.tasks[0]
    assert (task.attempt, task.reason) == (1, "halted: soon,fail=1")
    assert task.output.startswith("run 1 attempt 1\n")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("fail=1", "halt takes WHEN,fail=N"),
        ("later,fail=1", "halt takes WHEN,fail=N"),
        ("now,fail=0", "a whole number of tasks >= 1"),
        ("now,fail=1.5", "a whole number of tasks >= 1"),
        ("soon,fail=150%", "a percentage in"),
    ],
)
def test_bad_halt_rules_are_refused_in_one_line(rule, message):
    with pytest.raises(ValueError, match=message):
        check_halt(rule)


async def test_fail_fast_and_halt_together_are_refused():
    async with AsyncOrchestrator() as orch:
        with pytest.raises(ValueError, match="give fail_fast or halt, not both"):
            orch.submit_batch(["true"], fail_fast=True, halt="now,fail=1")
        assert orch.tasks == []


async def test_the_batchs_named_lines_are_named_tasks(tmp_path):
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        batch = orch.submit_batch(["echo a", "echo b"], names=["first", None])
        await batch.wait()
    assert [t.name for t in batch] == ["first", "echo b"]
    assert json.loads(json.dumps(get_record(batch.tasks[0].id, path=str(path)).name)) == "first"


# -- found by a hostile probe ---------------------------------------------------------------


async def test_a_stop_while_waiting_to_retry_adds_no_attempt(tmp_path):
    task = OneshotTask("false", retries=3, retry_delay=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        with anyio.fail_after(10):
            while task.retry_at is None:
                await anyio.sleep(0.01)
        task.stop()
    assert [(a.number, a.reason) for a in task.attempts] == [(1, "exit")]


async def test_each_attempt_has_its_own_input_and_input_sent_between_waits_for_the_next():
    """An input closed (EOF) on attempt 1 is open again on attempt 2, and what is sent
    while the task waits to retry goes to it."""
    task = OneshotTask("cat; exit 1", stdin=True, retries=1, retry_delay=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await task.wait_for(TaskState.RUNNING)
        task.send("one\n")
        task.close_stdin()
        with anyio.fail_after(10):
            while task.retry_at is None:
                await anyio.sleep(0.01)
        assert task.accepts_input
        task.send("two\n")
        task.close_stdin()
    assert task.state is FAILED and task.attempt == 2
    assert task.read_output("stdout") == "one\ntwo\n"


async def test_a_chain_of_ten_thousand_lines_is_ordered_without_recursion():
    from oneshot_nb.engine.batch import line_order

    count = 10_000
    names = [f"n{i}" for i in range(count)]
    after = [[f"n{i + 1}"] for i in range(count - 1)] + [[]]  # each after the next
    order, _ = line_order(names, after, count)
    assert order == list(range(count - 1, -1, -1))


async def test_after_a_task_never_submitted_is_refused():
    async with AsyncOrchestrator() as orch:
        with pytest.raises(ValueError, match="was never submitted nor run"):
            orch.submit("true", after=[OneshotTask("true")])
        assert orch.tasks == []


def test_a_retry_delay_past_a_day_is_refused():
    with pytest.raises(ValueError, match="retry_delay must be at most a day"):
        OneshotTask("true", retries=1, retry_delay=1e308)
    assert OneshotTask("true", retry_delay=-0.0).options.retry_delay == 0.0
