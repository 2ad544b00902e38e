"""%oneshot --pty/--stdin/--agent and %oneshot_send in a plain InteractiveShell (the
tasks run on the magics' loop thread): parsing, sending, and one-line usage errors."""

from __future__ import annotations

import pytest
from helpers import eventually, oneshot
from IPython.core.error import UsageError

from oneshot_nb import TaskState

pytestmark = pytest.mark.timeout(30)

PROMPT = 'read -p "continue? " answer; echo "got $answer"'


def test_a_prompting_pty_task_goes_idle_waiting_for_input_and_completes_on_send(ip, magics):
    task = oneshot(ip, f"--quiet --pty --idle 0.3 --name ask {PROMPT}")
    eventually(lambda: task.state is TaskState.IDLE)
    assert task.reason == "waiting for input"
    ip.run_line_magic("oneshot_send", "ask y")
    eventually(lambda: task.state is TaskState.COMPLETED)
    assert task.output == "continue? y\ngot y\n"


def test_send_text_is_sent_verbatim_with_a_newline(ip, magics):
    task = oneshot(ip, "--quiet --stdin --name cat cat")
    ip.run_line_magic("oneshot_send", f"{task.id}   two  spaces 'and quotes'")
    ip.run_line_magic("oneshot_send", "--no-newline cat no newline")
    ip.run_line_magic("oneshot_send", "--eof cat")
    eventually(lambda: task.state is TaskState.COMPLETED)
    assert task.read_output("stdout") == "two  spaces 'and quotes'\nno newline"


def test_send_with_eof_sends_then_ends_the_input(ip, magics):
    task = oneshot(ip, "--quiet --stdin --name wc wc -l")
    ip.run_line_magic("oneshot_send", "--eof wc a")
    eventually(lambda: task.state is TaskState.COMPLETED)
    assert task.read_output("stdout").strip() == "1"


def test_a_quoted_task_name_is_one_word(ip, magics):
    task = oneshot(ip, "--quiet --stdin --name 'my task' cat")
    ip.run_line_magic("oneshot_send", "--eof 'my task' hello")
    eventually(lambda: task.state is TaskState.COMPLETED)
    assert task.read_output("stdout") == "hello\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "give a task id or name"),
        ("nosuchtask hi", "no task with id or name 'nosuchtask'"),
        ("plain hi", "does not take input: start it with pty=True or stdin=True"),
        ("--bogus plain hi", "unknown option '--bogus'"),
        ("'unclosed hi", "no closing quotation"),
    ],
)
def test_send_refuses_bad_input_in_one_line(ip, magics, line, message):
    plain = oneshot(ip, "--quiet --name plain sleep 5")
    with pytest.raises(UsageError, match=message) as caught:
        ip.run_line_magic("oneshot_send", line)
    assert "\n" not in str(caught.value)
    plain.stop()


def test_send_to_an_ended_task_says_so(ip, magics):
    task = oneshot(ip, "--quiet --stdin --name short true")
    eventually(lambda: task.done)
    with pytest.raises(UsageError, match=f"cannot send to task {task.id}: it has ended"):
        ip.run_line_magic("oneshot_send", "short hi")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--cols 80 true", "--cols and --rows size a terminal: give --pty too"),
        ("--pty --cols 0 true", "expected 1 to 1000 characters"),
        ("--pty --rows x true", "expected 1 to 1000 characters"),
        ("--agent gpt true", "invalid choice: 'gpt'"),
        ("--pty --cluster local:1 true", "--pty and --stdin run on this machine only"),
        ("--stdin --cluster tcp://127.0.0.1:1 true", "--pty and --stdin run on this machine"),
    ],
)
def test_bad_terminal_options_are_one_usage_error_and_start_nothing(ip, magics, line, message):
    before = len(magics.session.orchestrator.tasks)
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("oneshot", line)
    assert len(magics.session.orchestrator.tasks) == before


def test_a_batch_of_pty_tasks_each_sees_a_terminal(ip, magics):
    batch = ip.run_cell_magic(
        "oneshot_parallel",
        "--quiet --pty --cols 50",
        "python3 -c 'import os; print(os.get_terminal_size().columns)'\n" * 2,
    )
    eventually(lambda: batch.done)
    assert [task.output for task in batch] == ["50\n", "50\n"]
