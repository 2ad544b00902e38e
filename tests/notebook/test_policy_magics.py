"""--retries, --after, --halt and a batch's named lines, through the magics in a plain
InteractiveShell (tasks on the magics' loop thread): parsing and one-line errors."""

from __future__ import annotations

import pytest
from helpers import eventually, oneshot
from IPython.core.error import UsageError

from oneshot_nb import TaskState
from oneshot_nb.notebook.parsing import batch_line

pytestmark = pytest.mark.timeout(30)


def test_retries_run_a_failing_command_again_with_its_attempt_number(ip, magics):
    task = oneshot(
        ip, "--quiet --retries 2 --retry-delay 0 sh -c 'echo try $ONESHOT_ATTEMPT; false'"
    )
    eventually(lambda: task.done)
    assert (task.state, task.attempt) == (TaskState.FAILED, 3)
    assert [line for line in task.output.splitlines() if line.startswith("try")] == [
        "try 1",
        "try 2",
        "try 3",
    ]


def test_after_names_tasks_by_name_or_id_and_a_failed_one_fails_it(ip, magics):
    good = oneshot(ip, "--quiet --name good sleep 0.3")
    bad = oneshot(ip, "--quiet --name bad false")
    both = oneshot(ip, f"--quiet --after good,{bad.id} echo both")
    only_good = oneshot(ip, "--quiet --after good echo good-only")
    eventually(lambda: both.done and only_good.done)
    assert (both.state, both.reason) == (TaskState.FAILED, "dependency failed: bad")
    assert (only_good.state, only_good.output) == (TaskState.COMPLETED, "good-only\n")
    assert both.pid is None
    assert only_good.started_at >= good.ended_at


def test_a_batchs_line_prefixes_name_lines_and_order_them(ip, magics):
    batch = ip.run_cell_magic(
        "oneshot_parallel",
        "--quiet",
        "build: sh -c 'sleep 0.2; echo built'\n"
        "test after build: echo tested\n"
        "after test: echo last\n"
        "echo a:b http://example.org",
    )
    eventually(lambda: batch.done)
    assert [t.name for t in batch] == ["build", "test", "echo last", "echo a:b http://example.org"]
    assert [t.state for t in batch] == [TaskState.COMPLETED] * 4
    build, test, last, plain = batch.tasks
    assert test.started_at >= build.ended_at and last.started_at >= test.ended_at
    assert plain.output == "a:b http://example.org\n"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("build: make", ("make", "build", [])),
        ("test after build, lint: make test", ("make test", "test", ["build", "lint"])),
        ("after build: echo x", ("echo x", None, ["build"])),
        ("echo a:b", ("echo a:b", None, [])),
        ("python -c 'x: int = 1'", ("python -c 'x: int = 1'", None, [])),
        ("https://example.org/x", ("https://example.org/x", None, [])),
        ("x: make: all", ("make: all", "x", [])),
    ],
)
def test_a_line_prefix_is_a_word_a_colon_and_a_space(text, parsed):
    assert batch_line(text) == parsed


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("--halt soon", "true", "halt takes WHEN,fail=N"),
        ("--halt now,fail=0", "true", "a whole number of tasks >= 1"),
        ("--fail-fast --halt now,fail=1", "true", "give --fail-fast or --halt, not both"),
        ("", "a: true\na: false", "two lines are named 'a'"),
        ("", "x after y: true", "runs after 'y', but no line is named so"),
        ("", "a after b: true\nb after a: true", "in a cycle: a after b after a"),
        ("--after x", "true", "--after is for %oneshot"),
        ("--retries many", "true", "expected 0 to 1000 retries"),
    ],
)
def test_bad_batch_policies_are_one_usage_error_and_start_nothing(ip, magics, line, cell, message):
    before = len(magics.session.orchestrator.tasks)
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("oneshot_parallel", line, cell)
    assert len(magics.session.orchestrator.tasks) == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--after nosuch true", "after: no task with id or name 'nosuch'"),
        ("--retries -1 true", "expected 0 to 1000 retries"),
        ("--retry-on exit true", "invalid choice: 'exit'"),
        ("--retry-delay -1 true", "expected a finite number of seconds >= 0"),
    ],
)
def test_bad_task_policies_are_one_usage_error_and_start_nothing(ip, magics, line, message):
    before = len(magics.session.orchestrator.tasks)
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("oneshot", line)
    assert len(magics.session.orchestrator.tasks) == before


@pytest.mark.parametrize(
    "cell",
    [
        "b after a,: echo b",
        "a after b c: x",
        "a after : x",
        "a after b after c: x",
        "a: ",
    ],
)
def test_a_line_that_starts_like_a_prefix_and_is_not_one_is_refused(ip, magics, cell):
    before = len(magics.session.orchestrator.tasks)
    with pytest.raises(UsageError, match="cannot read the line"):
        ip.run_cell_magic("oneshot_parallel", "", f"a: true\nb: true\n{cell}")
    assert len(magics.session.orchestrator.tasks) == before


@pytest.mark.parametrize("value", [",", "''", "a,,b"])
def test_after_with_an_empty_name_is_refused(ip, magics, value):
    with pytest.raises(UsageError, match="--after takes task ids or names"):
        ip.run_line_magic("oneshot", f"--after {value} true")
