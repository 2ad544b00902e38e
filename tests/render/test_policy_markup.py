"""What the views and text rows say of a task's cost and of its batch policies (what it
waits for, its retries and attempts), as markup without widgets."""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Any

import pytest

from oneshot_nb import TaskState
from oneshot_nb.engine.policies import Attempt
from oneshot_nb.engine.usage import Usage
from oneshot_nb.render.markup import (
    attempts_parts,
    attempts_title,
    cost_parts,
    countdown_text,
    cpu_text,
    info_span,
    policy_parts,
    size_text,
    text_row,
    usage_parts,
)

MB = 1_000_000


@pytest.mark.parametrize(
    ("nbytes", "said"),
    [
        (0, "0 kB"),
        (840_000, "840 kB"),
        (999_499, "999 kB"),
        (999_500, "1.0 MB"),
        (3_240_000, "3.2 MB"),
        (9_949_999, "9.9 MB"),
        (9_950_000, "10 MB"),
        (212 * MB, "212 MB"),
        (999_499_999, "999 MB"),
        (999_500_000, "1.0 GB"),
        (1_400_000_000, "1.4 GB"),
    ],
)
def test_a_size_reads_at_a_glance(nbytes, said):
    assert size_text(nbytes) == said


def test_cpu_seconds_read_to_a_tenth_below_ten_and_whole_above():
    assert cpu_text(0.04) == "0.0 CPU s"
    assert cpu_text(3.44) == "3.4 CPU s"
    assert cpu_text(9.96) == "10 CPU s"
    assert cpu_text(12_345.6) == "12,346 CPU s"


def test_a_running_task_says_its_cpu_and_memory_and_an_ended_one_its_peak_and_total():
    running = Usage(cpu_percent=98.4, rss=212 * MB, peak_rss=250 * MB, cpu_seconds=3.4)
    assert usage_parts(running, TaskState.RUNNING) == ["CPU 98%", "212 MB"]
    assert usage_parts(running, TaskState.IDLE) == ["CPU 98%", "212 MB"]
    ended = Usage(None, None, peak_rss=250 * MB, cpu_seconds=3.4)
    for state in (TaskState.COMPLETED, TaskState.FAILED, TaskState.INTERRUPTED):
        assert usage_parts(ended, state) == ["peak 250 MB", "3.4 CPU s"]
    # Between two attempts, before its first sample, from a runner that cannot say.
    assert usage_parts(ended, TaskState.CREATED) == []
    assert usage_parts(None, TaskState.RUNNING) == []
    assert usage_parts(None, TaskState.COMPLETED) == []
    # Its first sample may have no rate yet.
    assert usage_parts(Usage(None, 5 * MB, 5 * MB, 0.0), TaskState.RUNNING) == ["5.0 MB"]


@pytest.mark.parametrize(
    ("peak", "cpu", "said"),
    [
        (212 * MB, 3.4, ["peak 212 MB", "3.4 CPU s"]),
        (None, 3.4, ["3.4 CPU s"]),
        (212 * MB, None, ["peak 212 MB"]),
        (None, None, []),
        # A database is data: what is not a figure is left out.
        (True, float("nan"), []),
        (-1, float("inf"), []),
        ("212", "3.4", []),
    ],
)
def test_what_an_ended_task_cost_leaves_out_what_is_unknown(peak, cpu, said):
    assert cost_parts(peak, cpu) == said


def task(state: TaskState = TaskState.CREATED, **fields: Any) -> Any:
    """A stand-in for a task as policy_parts reads it."""
    fields.setdefault("attempt", 1)
    fields.setdefault("waiting_for", [])
    fields.setdefault("retry_at", None)
    fields.setdefault("attempts", [])
    retries = fields.pop("retries", 0)
    return SimpleNamespace(state=state, options=SimpleNamespace(retries=retries), **fields)


def test_a_task_that_waits_for_others_names_them():
    assert policy_parts(task(waiting_for=["build", "lint"])) == ["waiting for build, lint"]
    many = policy_parts(task(waiting_for=[f"task {n}" for n in range(1000)]))
    assert len(many[0]) < 250 and many[0].endswith("…")


def test_a_task_between_two_attempts_says_which_comes_when_and_how_the_last_ended():
    first = Attempt(1, 990.0, 995.0, 1, "exit")
    waiting = task(attempt=1, retries=2, retry_at=1000.0, attempts=[first])
    assert policy_parts(waiting, now=996.2) == ["retry 2/3 in 4s", "exit code 1"]
    assert policy_parts(waiting, now=1000.5) == ["retry 2/3 in 0s", "exit code 1"]
    killed = Attempt(2, 996.0, 999.0, -9, "signal")
    later = task(attempt=2, retries=2, retry_at=1100.0, attempts=[first, killed])
    assert policy_parts(later, now=1000.0) == [
        "retry 3/3 in 1m40s",
        "exit code -9",
        "killed by SIGKILL",
    ]


def test_a_retried_task_says_its_attempt_while_it_runs_or_waits_for_a_slot():
    for state in (TaskState.CREATED, TaskState.RUNNING, TaskState.IDLE):
        assert policy_parts(task(state, attempt=2, retries=2)) == ["attempt 2/3"]
    assert policy_parts(task(TaskState.RUNNING, attempt=1, retries=2)) == []  # not retried yet
    assert policy_parts(task(TaskState.RUNNING)) == []
    assert policy_parts(task(TaskState.FAILED, attempt=3, retries=2)) == []


def test_countdowns_round_up_to_whole_seconds():
    assert countdown_text(-3) == "0s"
    assert countdown_text(0.1) == "1s"
    assert countdown_text(4.0) == "4s"
    assert countdown_text(125) == "2m05s"


ATTEMPTS = [
    {"number": 1, "started_at": 100.0, "ended_at": 102.1, "returncode": 1, "reason": "exit"},
    {"number": 2, "started_at": 104.0, "ended_at": 104.5, "returncode": -9, "reason": "signal"},
    {"number": 3, "started_at": 108.0, "ended_at": 109.0, "returncode": 0, "reason": "exit"},
]


def test_the_attempts_of_a_task_that_ran_more_than_once_are_counted_and_each_said():
    assert attempts_parts(ATTEMPTS) == ["3 attempts"]
    assert attempts_parts(ATTEMPTS[:1]) == attempts_parts([]) == []
    assert attempts_title(ATTEMPTS).splitlines() == [
        "attempt 1: exit code 1 · 2.1s",
        "attempt 2: exit code -9 · killed by SIGKILL · 0.5s",
        "attempt 3: exit code 0 · 1.0s",
    ]
    assert attempts_title(ATTEMPTS[:1]) == ""


def test_the_engines_attempts_read_as_the_historys():
    engine = [Attempt(**attempt) for attempt in ATTEMPTS]
    assert attempts_title(engine) == attempts_title(ATTEMPTS)


def test_attempts_read_back_from_a_database_are_said_as_far_as_they_can_be():
    odd = [
        {"number": "one", "returncode": "1", "reason": 7, "started_at": 5.0, "ended_at": 1.0},
        {"reason": "spawn error"},
    ]
    assert attempts_title(odd).splitlines() == ["attempt 1: ended", "attempt 2: spawn error"]
    many = [{"number": n, "reason": "exit", "returncode": 1} for n in range(1, 31)]
    lines = attempts_title(many).splitlines()
    assert len(lines) == 21 and lines[-1] == "... 10 more"


def test_a_tooltip_is_escaped_where_it_enters_html():
    span = info_span(["3 attempts"], 'attempt 1: <img src=x onerror=alert(1)> "q"')
    assert "<img" not in span
    assert html.escape('<img src=x onerror=alert(1)> "q"', quote=True) in span
    assert "title=" not in info_span(["12.0s"])


def test_a_text_row_says_its_extra_parts_after_the_rest_one_line_each():
    row = text_row(
        "abcd1234", TaskState.FAILED, "build", 1, "exit", None, None, ["3 attempts", "peak 2 MB"]
    )
    assert row == "abcd1234  FAILED      build exit 1  3 attempts · peak 2 MB"
    waiting = text_row("abcd1234", TaskState.CREATED, "test", None, None, None, None, ["a\nb"])
    assert waiting == "abcd1234  CREATED     test  a\\nb"
    assert text_row("abcd1234", TaskState.COMPLETED, "x", 0, "exit", None) == (
        "abcd1234  COMPLETED   x exit 0"
    )
