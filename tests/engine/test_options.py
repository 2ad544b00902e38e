"""TaskOptions: what a task is given, checked once when made, shared, replaced; and how
the orchestrator, a batch and a task take their options from one."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
from helpers import py

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskState
from oneshot_nb.engine.options import TaskOptions
from oneshot_nb.engine.task import DEFAULT_GRACE, DEFAULT_IDLE_AFTER, DEFAULT_MAX_LOG_BYTES

QUICK = py("pass")


def test_the_defaults_are_10s_idle_5s_grace_1_mib_of_log_and_no_timeout():
    """What a task gets when nothing is said: changing a default changes every task."""
    options = TaskOptions()
    assert (options.idle_after, options.grace, options.max_log_bytes, options.timeout) == (
        10.0,
        5.0,
        1 << 20,
        None,
    )
    assert (options.name, options.cwd, dict(options.env)) == (None, None, {})


def test_options_are_frozen():
    """Options are shared by the tasks of an orchestrator or a batch: changing one in
    place would change them all, so assigning raises."""
    options = TaskOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.grace = 1.0  # type: ignore[misc]
    assert options.grace == 5.0


BAD_OPTIONS = [
    ({"grace": -1}, ValueError, "grace must be a finite number of seconds >= 0, got -1"),
    ({"grace": math.inf}, ValueError, "grace must be a finite number of seconds >= 0, got inf"),
    (
        {"idle_after": 0},
        ValueError,
        "idle_after must be a number of seconds > 0 (None or inf: never), got 0",
    ),
    ({"timeout": "5"}, TypeError, "timeout must be a number of seconds > 0 (None or inf: never)"),
    ({"max_log_bytes": -1}, ValueError, "max_log_bytes must be a whole number of bytes >= 0"),
    ({"env": {"A": 1}}, TypeError, "env keys and values must be str, got 'A': 1"),
    ({"name": ""}, ValueError, "name must not be empty"),
    ({"cwd": ""}, ValueError, "cwd must not be empty"),
]


@pytest.mark.parametrize(("bad", "kind", "message"), BAD_OPTIONS)
def test_a_bad_option_raises_a_one_line_error_naming_it_as_the_engine_does(bad, kind, message):
    """TaskOptions checks each option when it is made, with the one-line error a task
    or an orchestrator given the same value raises: the option's name first, the rule,
    the value. A check skipped (the bad value kept), or another wording here than in
    the engine, breaks this."""
    with pytest.raises(kind) as made:
        TaskOptions(**bad)
    text = str(made.value)
    assert text.startswith(message)
    assert text.split()[0] == next(iter(bad))
    assert "\n" not in text
    with pytest.raises(kind) as task:
        OneshotTask(QUICK, **bad)
    assert str(task.value) == text
    with pytest.raises(kind) as replaced:
        TaskOptions().replace(**bad)
    assert str(replaced.value) == text


@pytest.mark.parametrize("name", ["idle_after", "timeout"])
def test_infinite_seconds_mean_never_and_are_kept_as_none(name):
    """idle_after and timeout take inf for never, kept as None: the engine tests `is
    None` to start no watcher, and would otherwise sleep for ever on an inf deadline."""
    assert getattr(TaskOptions(**{name: math.inf}), name) is None
    assert getattr(TaskOptions(**{name: None}), name) is None
    assert getattr(TaskOptions(**{name: 3}), name) == 3.0


def test_a_relative_cwd_is_made_absolute_against_the_directory_current_when_made(
    tmp_path, monkeypatch
):
    """A task runs where it was submitted: a relative cwd is resolved once, when the
    options are made, not when the task gets a slot (the kernel may have moved by
    then, with %cd)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    options = TaskOptions(cwd="work")
    assert options.cwd == str(tmp_path / "a" / "work")
    monkeypatch.chdir(tmp_path / "b")
    assert options.cwd == str(tmp_path / "a" / "work")
    assert OneshotTask(QUICK, options=options).cwd == str(tmp_path / "a" / "work")


def test_env_is_a_read_only_copy_of_the_mapping_given():
    """env cannot be changed through the options (TypeError), nor through the dict it
    was made from: tasks sharing the options must all see the same variables."""
    given = {"MODE": "fast"}
    options = TaskOptions(env=given)
    with pytest.raises(TypeError):
        options.env["MODE"] = "slow"  # type: ignore[index]
    given["MODE"] = "slow"
    given["EXTRA"] = "1"
    assert dict(options.env) == {"MODE": "fast"}


def test_replace_keeps_the_other_options_and_checks_the_changed_one():
    """replace() is a new TaskOptions: the options not named are kept, the named one is
    checked as when made (a bad value raises, naming it), and the original is left as
    it was."""
    options = TaskOptions(name="job", timeout=30, grace=2, env={"A": "1"}, max_log_bytes=100)
    changed = options.replace(grace=1)
    assert changed.grace == 1.0
    assert (changed.name, changed.timeout, dict(changed.env), changed.max_log_bytes) == (
        "job",
        30.0,
        {"A": "1"},
        100,
    )
    assert changed.idle_after == options.idle_after
    assert options.grace == 2.0
    assert options.replace(timeout=math.inf).timeout is None
    with pytest.raises(ValueError, match=r"^grace must be"):
        options.replace(grace=-1)


def test_replace_with_an_unknown_option_raises_type_error():
    """A misspelt option (`gracee=1`) must not be ignored silently."""
    with pytest.raises(TypeError, match="gracee"):
        TaskOptions().replace(gracee=1)


def test_a_task_takes_the_options_given_with_any_option_named_replacing_theirs():
    """`OneshotTask(..., options=o, grace=1)` runs with o's other options and a grace
    of 1; o itself is unchanged. With nothing named, the task shares o itself."""
    options = TaskOptions(name="job", timeout=30, grace=4, idle_after=2, max_log_bytes=100)
    task = OneshotTask(QUICK, options=options, grace=1)
    assert task.grace == 1.0
    assert task.options == options.replace(grace=1)
    assert (task.name, task.timeout, task.idle_after, task.max_log_bytes) == (
        "job",
        30.0,
        2.0,
        100,
    )
    assert options.grace == 4.0
    assert OneshotTask(QUICK, options=options).options is options


@pytest.mark.parametrize("not_options", [{"grace": 1}, "grace=1", 1.5])
def test_options_that_are_not_a_task_options_raise_type_error(not_options):
    """A dict (or anything else) where a TaskOptions belongs is refused, not read."""
    with pytest.raises(TypeError, match="options must be a TaskOptions"):
        OneshotTask(QUICK, options=not_options)
    with pytest.raises(TypeError, match="options must be a TaskOptions"):
        AsyncOrchestrator(options=not_options)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_submit_and_submit_batch_refuse_options_that_are_not_a_task_options():
    """The same check at submit, for one task and for a batch; nothing is submitted."""
    async with AsyncOrchestrator() as orch:
        with pytest.raises(TypeError, match="options must be a TaskOptions"):
            orch.submit(QUICK, options={"grace": 1})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="options must be a TaskOptions"):
            orch.submit_batch([QUICK, QUICK], options={"grace": 1})
        assert orch.tasks == []


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_orchestrators_options_are_the_defaults_of_later_submits_only():
    """`orch.options` holds the defaults of submit: a task takes them (the very object,
    when it names no option of its own), and replacing them changes the tasks
    submitted after, not those submitted before."""
    first_options = TaskOptions(grace=1.5, max_log_bytes=1000, env={"WHICH": "first"})
    code = py("import os; print(os.environ['WHICH'])")
    async with AsyncOrchestrator(options=first_options) as orch:
        assert orch.options is first_options
        before = orch.submit(code)
        named = orch.submit(code, grace=0.5)
        orch.options = orch.options.replace(grace=3, env={"WHICH": "second"})
        after = orch.submit(code)
        assert await orch.wait_all() == [TaskState.COMPLETED] * 3
    assert before.options is first_options
    assert (before.grace, before.max_log_bytes, before.output) == (1.5, 1000, "first\n")
    assert (named.grace, named.max_log_bytes, named.output) == (0.5, 1000, "first\n")
    assert (after.grace, after.max_log_bytes, after.output) == (3.0, 1000, "second\n")
    assert after.options is orch.options


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_tasks_of_a_batch_share_one_task_options():
    """submit_batch checks its options once and gives every task the same TaskOptions
    object, made from the orchestrator's with the batch's own options replacing them."""
    async with AsyncOrchestrator(options=TaskOptions(max_log_bytes=500)) as orch:
        batch = orch.submit_batch([QUICK, QUICK, QUICK], grace=2, timeout=math.inf)
        await batch.wait()
    first, *others = batch.tasks
    assert all(task.options is first.options for task in others)
    assert (first.grace, first.timeout, first.max_log_bytes) == (2.0, None, 500)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_batch_given_options_uses_them_instead_of_the_orchestrators():
    """`submit_batch(options=o, grace=1)`: o's options, then grace 1, for every task."""
    base = TaskOptions(max_log_bytes=700, idle_after=3)
    async with AsyncOrchestrator(options=TaskOptions(max_log_bytes=500)) as orch:
        batch = orch.submit_batch([QUICK, QUICK], options=base, grace=1)
        await batch.wait()
    assert batch.tasks[0].options is batch.tasks[1].options
    assert batch.tasks[0].options == base.replace(grace=1)


def test_a_task_made_with_no_options_has_the_defaults():
    """A task given nothing runs with TaskOptions' defaults, which are the constants the
    engine exports; its cwd is the current directory when made."""
    task = OneshotTask(QUICK)
    assert task.options == TaskOptions()
    assert (task.idle_after, task.grace, task.max_log_bytes) == (
        DEFAULT_IDLE_AFTER,
        DEFAULT_GRACE,
        DEFAULT_MAX_LOG_BYTES,
    )
    assert task.cwd == os.getcwd()


def test_options_are_given_by_name_only():
    """The order of TaskOptions' fields is not part of the API: options go by name, and
    a positional one is refused (a new option may go anywhere among them)."""
    with pytest.raises(TypeError):
        TaskOptions("name", 1)  # type: ignore[misc]
    assert TaskOptions(name="name", idle_after=1).idle_after == 1.0
