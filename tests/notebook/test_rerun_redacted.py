"""%oneshot_rerun of a task whose history lost a secret (an env value or a password in
a URL, redacted when stored): it says what it cannot restore instead of running
without it, and a literal "<redacted>" of the user's own is no redaction."""

from __future__ import annotations

import pytest
from helpers import eventually
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from oneshot_nb import OneshotTask, TaskState
from oneshot_nb.storage.records import get_record

pytestmark = pytest.mark.timeout(30)


def run(ip: InteractiveShell, magic: str, line: str) -> OneshotTask:
    task = ip.run_line_magic(magic, "--quiet " + line)
    eventually(lambda: task.done)
    return task


PRINT_ENV = "echo ${API_TOKEN:-none} ${DATABASE_URL:-none} $MODE"


def test_rerun_refuses_naming_the_values_it_cannot_restore(ip, magics, monkeypatch):
    """A rerun left redacted values out silently, so the task ran with whatever the
    kernel had, or nothing. Now it refuses in one line naming them, and runs nothing."""
    monkeypatch.setenv("API_TOKEN", "kernel-token")
    first = run(
        ip,
        "oneshot",
        "--env API_TOKEN=t0k --env DATABASE_URL=pg://u:pw@h/d --env MODE=fast " + PRINT_ENV,
    )
    assert first.output == "t0k pg://u:pw@h/d fast\n"
    before = list(magics.orchestrator.tasks)
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("oneshot_rerun", f"--quiet {first.id}")
    assert str(refused.value) == (
        f"cannot rerun task {first.id}: the values of API_TOKEN, DATABASE_URL were not saved;"
        " --env-from-kernel takes the kernel's"
    )
    assert list(magics.orchestrator.tasks) == before


def test_rerun_with_env_from_kernel_takes_the_kernels_values_now(ip, magics, monkeypatch):
    """--env-from-kernel runs with the kernel's current values for what was not saved,
    the stored values for the rest; the rerun's own record is redacted again, so its
    rerun asks again."""
    monkeypatch.setenv("API_TOKEN", "kernel-token")
    monkeypatch.setenv("DATABASE_URL", "pg://kernel@h/d")
    first = run(
        ip,
        "oneshot",
        "--env API_TOKEN=t0k --env DATABASE_URL=pg://u:pw@h/d --env MODE=fast " + PRINT_ENV,
    )
    rerun = run(ip, "oneshot_rerun", f"--env-from-kernel {first.id}")
    assert rerun.state is TaskState.COMPLETED
    assert rerun.output == "kernel-token pg://kernel@h/d fast\n"
    assert get_record(rerun.id).redacted_env == ["API_TOKEN"]
    with pytest.raises(UsageError, match="the values of API_TOKEN were not saved"):
        ip.run_line_magic("oneshot_rerun", rerun.id)


def test_rerun_with_env_from_kernel_refuses_when_the_kernel_has_no_value(ip, magics, monkeypatch):
    """Asked to take a value from the kernel that the kernel does not have, the rerun
    refuses rather than run without it."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    first = run(ip, "oneshot", f"--env API_TOKEN=t0k {PRINT_ENV}")
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("oneshot_rerun", f"--env-from-kernel {first.id}")
    assert str(refused.value) == (
        f"cannot rerun task {first.id}: the values of API_TOKEN were not saved, and the"
        " kernel has none"
    )


def test_rerun_refuses_a_command_that_lost_a_password(ip, magics):
    """A command whose URL password was redacted would run with "<redacted>" as the
    password: the rerun refuses in one line instead, whatever the options."""
    first = run(ip, "oneshot", "echo postgres://u:hunter2@h/d")
    for options in ("", "--env-from-kernel "):
        with pytest.raises(UsageError) as refused:
            ip.run_line_magic("oneshot_rerun", f"{options}{first.id}")
        assert str(refused.value) == (
            f"cannot rerun task {first.id}: its command held a password in a URL, which"
            " was not saved; run it again with %oneshot"
        )


def test_rerun_of_a_task_without_secrets_needs_no_option(ip, magics):
    """Nothing redacted: the rerun runs as before, no option needed."""
    first = run(ip, "oneshot", "--env MODE=fast echo $MODE")
    rerun = run(ip, "oneshot_rerun", first.id)
    assert (rerun.state, rerun.output) == (TaskState.COMPLETED, "fast\n")
    assert rerun.env == {"MODE": "fast"}


@pytest.mark.parametrize(
    "line",
    [
        "--env NOTE=<redacted> echo $NOTE",
        "printf '%s\\n' 's/x/<redacted>/'",
    ],
    ids=["an env value", "the command"],
)
def test_a_literal_redacted_marker_is_not_taken_for_a_redaction(ip, magics, line):
    """A value or command holding the text "<redacted>" of its own was taken for one
    that lost a secret: the rerun was refused ("values of NOTE were not saved", "its
    command held a password in a URL"). What was redacted is now recorded when the task
    is stored, so the rerun runs the same thing."""
    first = run(ip, "oneshot", line)
    assert first.state is TaskState.COMPLETED
    record = get_record(first.id)
    assert (record.redacted_env, record.command_redacted) == ([], False)
    rerun = run(ip, "oneshot_rerun", first.id)
    assert (rerun.state, rerun.output) == (TaskState.COMPLETED, first.output)
    assert "<redacted>" in rerun.output
