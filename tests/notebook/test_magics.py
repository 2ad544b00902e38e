"""The magics in a plain InteractiveShell: parsing, usage errors, and the fallback to a
loop in a background thread where no event loop runs (terminal IPython, scripts)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from helpers import eventually, oneshot
from helpers.processes import group_gone
from IPython.core.error import UsageError
from traitlets import TraitError
from traitlets.config import Config

from oneshot_nb import Batch, OneshotTask, TaskState
from oneshot_nb.notebook.extension import load
from oneshot_nb.notebook.magics import OneshotMagics

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch) -> str:
    """No history: these tests are about the magics (and write nothing to the home dir)."""
    monkeypatch.setenv("ONESHOT_NB_DB", ":memory:")
    return ":memory:"


# -- no running loop: a background thread -------------------------------------------------


def test_oneshot_without_a_running_loop_runs_on_a_background_thread(ip, magics, capsys):
    """Outside a kernel %oneshot prints one line, returns the task at once, and the task
    runs to its end on the magics' own loop thread."""
    task = oneshot(ip, "echo hi")
    out = capsys.readouterr().out
    assert re.fullmatch(rf"started <OneshotTask {task.id} 'echo hi' [A-Z]+>\n", out)
    assert magics.session.portal is not None
    eventually(lambda: task.state is TaskState.COMPLETED)
    assert task.output == "hi\n"
    assert task.view is None


def test_oneshot_tasks_prints_a_text_table_without_a_kernel(ip, magics, capsys):
    """Outside a kernel %oneshot_tasks prints one line per task: id, state, name, exit."""
    done = oneshot(ip, "--quiet --name first true")
    failed = oneshot(ip, "--quiet sh -c 'exit 3'")
    eventually(lambda: done.done and failed.done)
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().out.splitlines() == [
        f"{done.id}  COMPLETED   first exit 0",
        f"{failed.id}  FAILED      sh -c 'exit 3' exit 3",
    ]


def test_a_cell_ending_in_a_magic_shows_the_task_once_as_text(ip, magics, capsys):
    """Outside a kernel the started line is the only display of a new task, and a later
    cell showing the task prints its text: no widget is made where none can be drawn."""
    ip.run_cell("%oneshot --name once true")
    out = capsys.readouterr().out
    assert out.count("OneshotTask") == 1
    assert out.startswith("started <OneshotTask")
    ip.run_cell("t = _")
    task = ip.user_ns["t"]
    eventually(lambda: task.done)
    ip.run_cell("t")
    assert f"<OneshotTask {task.id} 'once' COMPLETED>" in capsys.readouterr().out
    assert task.view is None


def test_oneshot_stop_from_the_main_thread_reaches_the_loop(ip, magics):
    """%oneshot_stop by name, by id and --all stop tasks that run on the loop thread."""
    by_name = oneshot(ip, "--quiet --name sleeper sleep 30")
    by_id = oneshot(ip, "--quiet sleep 30")
    rest = [oneshot(ip, "--quiet sleep 30") for _ in range(2)]
    eventually(lambda: all(t.state is TaskState.RUNNING for t in [by_name, by_id, *rest]))
    ip.run_line_magic("oneshot_stop", "sleeper")
    ip.run_line_magic("oneshot_stop", by_id.id)
    eventually(lambda: by_name.done and by_id.done)
    assert [t.state for t in rest] == [TaskState.RUNNING, TaskState.RUNNING]
    ip.run_line_magic("oneshot_stop", "--all")
    eventually(lambda: all(t.done for t in rest))
    for task in [by_name, by_id, *rest]:
        assert (task.state, task.reason) == (TaskState.INTERRUPTED, "stopped")


def test_exit_cleanup_stops_every_task_and_can_run_twice(ip, magics):
    """At exit every task ends INTERRUPTED with reason "shutdown", its process gone, and
    the loop thread closes; a second call (atexit after a call by hand) does nothing."""
    task = oneshot(ip, "--quiet sleep 30")
    eventually(lambda: task.state is TaskState.RUNNING)
    magics.session.close()
    assert (task.state, task.reason, task.done) == (TaskState.INTERRUPTED, "shutdown", True)
    assert group_gone(task.pid)
    assert magics.session.portal.loop.is_closed()
    magics.session.close()


# A terminal IPython's first %oneshot, with a Ctrl-C (SIGINT) from another thread after
# argv[1] seconds; then a second %oneshot, and a Ctrl-C in a cell. It prints what it saw.
CTRL_C_AT_START = """
import faulthandler, os, signal, sys, threading, time
faulthandler.dump_traceback_later(8, exit=True)  # a hang: the stacks, then exit 1
os.environ["ONESHOT_NB_DB"] = ":memory:"
from IPython.core.interactiveshell import InteractiveShell

def interrupted(fn):
    try:
        fn()
    except KeyboardInterrupt:
        return True
    return False

def loop_threads():
    names = (t.name for t in threading.enumerate())
    return sorted(n for n in names if n.startswith(("asyncio-portal", "oneshot_nb")))

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "oneshot_nb")
sent = threading.Event()
def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    sent.set()
timer = threading.Timer(float(sys.argv[1]), ctrl_c)
first = interrupted(lambda: (timer.start(), ip.run_line_magic("oneshot", "--quiet true")))
late = interrupted(lambda: (sent.wait(5), time.sleep(0.2)))  # after the magic: caught here
print("first:", "interrupted" if first else "late" if late else "returned")
print("threads after the first:", loop_threads())
task = ip.run_line_magic("oneshot", "--quiet echo second")
while not task.done:
    time.sleep(0.01)
print("second:", task.output.strip())
print("threads after the second:", loop_threads())
threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
print("ctrl-c in a cell:", interrupted(lambda: time.sleep(5)) and time.monotonic() - start < 2)
"""


def test_a_ctrl_c_while_the_loop_thread_starts_leaves_it_whole_or_not_there():
    """A Ctrl-C landing while the first %oneshot starts the loop thread is raised once
    the thread runs (or before it starts): the magic does not hang, no half-started
    loop thread is left, the next %oneshot runs on the one loop thread, and a later
    Ctrl-C interrupts a cell as usual.

    Regression: a KeyboardInterrupt while anyio's start_blocking_portal waited for its
    loop hung the magic in `thread.join()` for good. The loop's start takes tens of
    milliseconds (its imports), so a Ctrl-C at each of these delays lands in it."""
    delays = [0.001, 0.002, 0.003, 0.004, 0.005, 0.007, 0.01]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CTRL_C_AT_START, str(delay)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for delay in delays
    ]
    firsts = []
    for delay, run in zip(delays, runs, strict=True):
        try:
            out, err = run.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            run.kill()
            out, err = run.communicate()
        assert run.returncode == 0, f"Ctrl-C after {delay}s: {out}{err}"
        lines = dict(line.split(": ", 1) for line in out.splitlines())
        firsts.append(lines["first"])
        assert lines["threads after the first"] in ("[]", "['oneshot_nb loop']"), out
        assert lines["second"] == "second", out
        assert lines["threads after the second"] == "['oneshot_nb loop']", out
        assert lines["ctrl-c in a cell"] == "True", out
    # The Ctrl-Cs did land in the first magic (it takes longer than these delays).
    assert "interrupted" in firsts


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_commands_from_the_loop_thread_do_not_block_sigint(ip, magics):
    """A command started on the loop thread inherits that thread's signal mask: SIGINT
    must not be blocked there, or `kill -INT` would not reach the command."""
    task = oneshot(ip, "--quiet grep SigBlk /proc/self/status")
    eventually(lambda: task.done)
    assert magics.session.portal is not None
    blocked = int(task.output.split()[1], 16)
    assert not blocked & (1 << (signal.SIGINT - 1)), task.output


# -- parsing --------------------------------------------------------------------------------


def test_options_before_the_command_are_the_magics_and_the_rest_is_the_command(ip, magics):
    """Options are read up to the first word that is not one; the command keeps its own
    options, even ones named like the magic's."""
    task = oneshot(
        ip,
        "--quiet --name=build --idle 2 --timeout 60 --grace 0 --cwd /tmp --env A=1 "
        "--env B=x=y echo -n --name other",
    )
    assert task.command == "echo -n --name other"
    assert (task.name, task.idle_after, task.timeout, task.grace) == ("build", 2.0, 60.0, 0.0)
    assert (task.cwd, task.env) == ("/tmp", {"A": "1", "B": "x=y"})
    eventually(lambda: task.done)
    assert task.output == "--name other"


def test_the_command_is_taken_verbatim(ip, magics):
    """Quotes and the command's own -c reach the shell exactly as typed."""
    ip.run_cell("""t = %oneshot --quiet --timeout 60 sh -c 'echo "a  b"; echo $0'""")
    task = ip.user_ns["t"]
    assert task.command == """sh -c 'echo "a  b"; echo $0'"""
    assert task.timeout == 60
    eventually(lambda: task.done)
    assert task.output == "a  b\nsh\n"


def test_double_dash_ends_the_options(ip, magics):
    """After --, even a word that looks like an option is the command."""
    task = oneshot(ip, "--quiet -- --idle 5")
    assert task.command == "--idle 5"
    assert task.idle_after == magics.idle_after


def test_names_expand_as_in_bang_commands(ip, magics):
    """{expr} and $name expand from the user's namespace in %oneshot and in each line of
    %%oneshot_parallel; the magics' own local names do not shadow the user's."""
    ip.user_ns.update(word="hello", line="L", cell="C", args="A", self="S", text="T")
    ip.run_cell("t = %oneshot --quiet echo {word} $word {line} {self}")
    ip.run_cell(
        "%%oneshot_parallel --quiet --out jobs\necho {word} $word {line} {cell} {args} {self}"
        " {text}\n"
    )
    task, [line_task] = ip.user_ns["t"], ip.user_ns["jobs"].tasks
    assert task.command == "echo hello hello L S"
    assert line_task.command == "echo hello hello L C A S T"


def test_option_values_are_read_as_the_shell_reads_them(ip, magics, tmp_path):
    """Quotes and backslashes in option values are shell syntax, not part of the value:
    `--name "my task"` names the task `my task`, and nothing is dropped."""
    folder = tmp_path / "a dir"
    folder.mkdir()
    ip.run_cell(
        f'\nt = %oneshot --quiet --name "my task" --cwd "{folder}" --env "A=1 2" '
        "--env B=x\\ y echo hi"
    )
    task = ip.user_ns["t"]
    assert (task.name, task.cwd, task.env) == ("my task", str(folder), {"A": "1 2", "B": "x y"})
    assert task.command == "echo hi"


def test_parallel_runs_each_line_and_stores_the_batch(ip, magics, capsys):
    """Each non-blank, non-comment line is one task of a batch with its own limit;
    --out stores the batch and the cell's value is the same batch."""
    result = ip.run_cell(
        "%%oneshot_parallel --limit 2 --out jobs\n# a comment\necho 1\n\n   \necho 2\n"
        "  # indented comment\necho 3\n"
    )
    jobs = ip.user_ns["jobs"]
    assert isinstance(jobs, Batch)
    assert result.result is jobs
    assert [t.command for t in jobs] == ["echo 1", "echo 2", "echo 3"]
    assert jobs.limit == 2
    assert capsys.readouterr().out.count("Batch of 3") == 1
    eventually(lambda: jobs.done)
    assert [t.output for t in jobs] == ["1\n", "2\n", "3\n"]


# -- usage errors ---------------------------------------------------------------------------

ONESHOT_ERRORS = [
    ("--bogus ls", "unknown option '--bogus'"),
    ("-x ls", "unknown option '-x'"),
    ("", "no command given"),
    ("   ", "no command given"),
    ("--quiet --name build", "no command given"),
    ("--name", "--name needs a value"),
    ("--name -- echo", "--name needs a value before the command, got '--'"),
    ("--idle abc ls", "--idle: expected a number of seconds > 0 (inf: never), got 'abc'"),
    ("--idle -1 ls", "--idle: expected a number of seconds > 0 (inf: never), got '-1'"),
    ("--idle 0 ls", "--idle: expected a number of seconds > 0 (inf: never), got '0'"),
    ("--timeout=-5 ls", "--timeout: expected a number of seconds > 0 (inf: never), got '-5'"),
    ("--timeout nan ls", "--timeout: expected a number of seconds > 0 (inf: never), got 'nan'"),
    ("--grace -1 ls", "--grace: expected a finite number of seconds >= 0, got '-1'"),
    ("--grace inf ls", "--grace: expected a finite number of seconds >= 0, got 'inf'"),
    ("--grace 1e400 ls", "--grace: expected a finite number of seconds >= 0, got '1e400'"),
    ("--grace nan ls", "--grace: expected a finite number of seconds >= 0, got 'nan'"),
    ('--name "my task ls', "no closing quotation"),
    ("--name 'x", "no closing quotation"),
    ("--cwd 'a\\0b' ls", "--cwd: no such directory"),
    ("--cwd /nonexistent/dir ls", "--cwd: no such directory: /nonexistent/dir"),
    ("--env X ls", "--env takes KEY=VALUE with a variable name as KEY, got 'X'"),
    ("--env =v ls", "--env takes KEY=VALUE with a variable name as KEY, got '=v'"),
    ("--env 1A=v ls", "--env takes KEY=VALUE with a variable name as KEY, got '1A=v'"),
]


@pytest.mark.parametrize(("line", "message"), ONESHOT_ERRORS)
def test_a_bad_oneshot_line_is_one_clear_line_and_starts_nothing(ip, magics, line, message):
    """Each mistake raises UsageError with one line naming it, and no task is submitted."""
    orchestrator = magics.orchestrator
    before = len(orchestrator.tasks)
    with pytest.raises(UsageError) as error:
        ip.run_line_magic("oneshot", line)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert len(orchestrator.tasks) == before


PARALLEL_ERRORS = [
    ("", "", "the cell body is empty"),
    ("", "\n   \n# only a comment\n\t\n", "the cell has no commands"),
    ("--limit 0", "echo a", "--limit: expected a whole number of 1 or more, got '0'"),
    ("--limit -1", "echo a", "--limit: expected a whole number of 1 or more, got '-1'"),
    ("--limit two", "echo a", "--limit: expected a whole number, got 'two'"),
    ("--limit 2.5", "echo a", "--limit: expected a whole number, got '2.5'"),
    ("--idle -1", "echo a", "--idle: expected a number of seconds > 0 (inf: never), got '-1'"),
    ("--timeout soon", "echo a", "--timeout: expected a number of seconds > 0"),
    ("--grace inf", "echo a", "--grace: expected a finite number of seconds >= 0, got 'inf'"),
    ('--out "jobs', "echo a", "no closing quotation"),
    ("--limit 99999999999 --out", "echo a", "expected one argument"),
    ("--out 1x", "echo a", "--out takes a variable name, got '1x'"),
    ("--out a-b", "echo a", "--out takes a variable name, got 'a-b'"),
    ("--out class", "echo a", "--out takes a variable name, got 'class'"),
    ("--out __builtins__", "echo a", "--out takes a variable name, got '__builtins__'"),
    ("--bogus", "echo a", "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize(("line", "cell", "message"), PARALLEL_ERRORS)
def test_a_bad_parallel_cell_is_one_clear_line_and_starts_nothing(ip, magics, line, cell, message):
    """Each mistake raises UsageError with one line naming it, and no task is submitted."""
    orchestrator = magics.orchestrator
    with pytest.raises(UsageError) as error:
        ip.run_cell_magic("oneshot_parallel", line, cell)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert orchestrator.tasks == []


@pytest.mark.parametrize(
    ("magic", "line", "message"),
    [
        ("oneshot_stop", "nosuch", "no task with id or name 'nosuch'"),
        ("oneshot_stop", "", "give a task id or name, or --all"),
        ("oneshot_stop", '"sleeper', "no closing quotation"),
        ("oneshot_tasks", "everything", "unrecognized arguments: everything"),
    ],
)
def test_bad_stop_and_tasks_lines_are_usage_errors(ip, magics, magic, line, message):
    """A task that does not exist, or a stray argument, is a UsageError that stops
    nothing."""
    task = oneshot(ip, "--quiet --name sleeper sleep 30")
    with pytest.raises(UsageError, match=re.escape(message)):
        ip.run_line_magic(magic, line)
    assert not task.state.is_final


def test_every_magic_reads_quoted_arguments_as_the_shell_does(ip, magics):
    """`--name "my task"` names the task `my task`; `%oneshot_stop "my task"` finds it.

    Regression: the other magics kept the quotes, so the task could not be found."""
    task = oneshot(ip, '--quiet --name "my task" sleep 30')
    assert task.name == "my task"
    ip.run_line_magic("oneshot_stop", '"my task"')
    eventually(lambda: task.done)
    assert task.state is TaskState.INTERRUPTED


def test_a_name_that_starts_with_a_dash_is_a_value(ip, magics):
    """`--name -x cmd` works as `--name=-x cmd` does: a value option takes the next word."""
    task = oneshot(ip, "--quiet --name -x true")
    assert (task.name, task.command) == ("-x", "true")


def test_stop_by_a_shared_name_prefers_the_running_task(ip, magics):
    """Two tasks named `dup`, the newest ended: `%oneshot_stop dup` stops the running one.

    Regression: the newest was picked even when it had ended, and the running one
    could not be stopped by name."""
    running = oneshot(ip, "--quiet --name dup sleep 30")
    ended = oneshot(ip, "--quiet --name dup true")
    eventually(lambda: ended.done)
    ip.run_line_magic("oneshot_stop", "dup")
    eventually(lambda: running.done)
    assert running.state is TaskState.INTERRUPTED


def test_stop_by_a_name_several_running_tasks_share_lists_them_or_stops_all(ip, magics):
    one = oneshot(ip, "--quiet --name dup sleep 30")
    two = oneshot(ip, "--quiet --name dup sleep 30")
    other = oneshot(ip, "--quiet --name other sleep 30")
    with pytest.raises(UsageError) as error:
        ip.run_line_magic("oneshot_stop", "dup")
    assert str(error.value) == (
        f"2 tasks named 'dup' have not ended: {one.id}, {two.id}; give an id, or --all"
    )
    assert not (one.state.is_final or two.state.is_final)
    ip.run_line_magic("oneshot_stop", "--all dup")
    eventually(lambda: one.done and two.done)
    assert not other.state.is_final
    ip.run_line_magic("oneshot_stop", "--all")
    eventually(lambda: other.done)


def test_a_relative_cwd_in_a_deleted_directory_is_one_line(ip, magics, tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(UsageError, match=r"--cwd: \. is relative and the kernel's directory"):
        ip.run_line_magic("oneshot", "--cwd . pwd")


def test_a_cwd_that_is_a_file_is_not_a_directory(ip, magics, tmp_path):
    """A --cwd that exists but is no directory says so; one that is not there at all
    (under a file, too) is no such directory."""
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UsageError) as error:
        ip.run_line_magic("oneshot", f"--cwd {file} true")
    assert str(error.value) == f"--cwd: not a directory: {file}"
    with pytest.raises(UsageError) as error:
        ip.run_line_magic("oneshot", f"--cwd {file}/sub true")
    assert str(error.value) == f"--cwd: no such directory: {file}/sub"
    assert magics.orchestrator.tasks == []


def test_infinite_timeout_and_idle_mean_never(ip, magics):
    task = oneshot(ip, "--quiet --timeout inf --idle inf true")
    assert (task.timeout, task.idle_after) == (None, None)
    eventually(lambda: task.done)
    assert task.state is TaskState.COMPLETED


def test_a_queued_task_keeps_the_directory_it_was_submitted_from(ip, magics, tmp_path):
    """With the limit taken, `%cd A; %oneshot pwd; %cd B`: the queued pwd prints A.
    A relative --cwd is taken from where the kernel was at submit too."""
    a, b = tmp_path / "A", tmp_path / "B"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    ip.run_line_magic("config", "OneshotMagics.limit = 1")
    here = __import__("os").getcwd()
    try:
        ip.run_line_magic("cd", f"-q {a}")
        blocker = oneshot(ip, "--quiet sleep 0.5")
        pwd = oneshot(ip, "--quiet pwd")
        sub = oneshot(ip, "--quiet --cwd sub pwd")
        ip.run_line_magic("cd", f"-q {b}")
        eventually(lambda: blocker.done and pwd.done and sub.done)
    finally:
        ip.run_line_magic("cd", f"-q {here}")
    assert (pwd.output, sub.output) == (f"{a}\n", f"{a / 'sub'}\n")
    assert (pwd.cwd, sub.cwd) == (str(a), str(a / "sub"))


# -- configuration --------------------------------------------------------------------------


def test_config_limit_changes_the_running_orchestrator(ip, magics):
    """%config OneshotMagics.limit applies at once to the orchestrator in use."""
    orchestrator = magics.orchestrator
    ip.run_line_magic("config", "OneshotMagics.limit = 4")
    assert orchestrator.limit == 4 == magics.limit


def test_config_idle_after_is_the_default_for_new_tasks(ip, magics):
    """%config OneshotMagics.idle_after sets the default of tasks submitted after it."""
    default = magics.idle_after
    before = oneshot(ip, "--quiet true")
    ip.run_line_magic("config", "OneshotMagics.idle_after = 2")
    after = oneshot(ip, "--quiet true")
    assert default != 2.0
    assert (before.idle_after, after.idle_after) == (default, 2.0)


@pytest.mark.parametrize(("name", "value"), [("limit", 0), ("grace", -1.0), ("timeout", 0.0)])
def test_invalid_config_raises_and_changes_nothing(ip, magics, caplog, name, value):
    """An out-of-range setting raises TraitError (which %config reports) and neither the
    setting nor the orchestrator changes."""
    orchestrator = magics.orchestrator
    settings = (magics.limit, magics.grace, magics.timeout)
    defaults = orchestrator.options
    with pytest.raises(TraitError, match=name):
        setattr(magics, name, value)
    ip.run_line_magic("config", f"OneshotMagics.{name} = {value}")
    assert name in caplog.text
    assert (magics.limit, magics.grace, magics.timeout) == settings
    assert (orchestrator.limit, orchestrator.options) == (settings[0], defaults)


def test_settings_from_a_config_file_are_honoured(ip):
    """c.OneshotMagics.* in an ipython_config file set the magics' defaults."""
    config = Config()
    config.OneshotMagics.limit = 3
    config.OneshotMagics.idle_after = 2.5
    config.OneshotMagics.grace = 0.5
    magics = OneshotMagics(shell=ip, config=config)
    try:
        assert magics.orchestrator.limit == 3
        task = magics.session.call(magics.orchestrator.submit, "true")
        assert (task.idle_after, task.grace) == (2.5, 0.5)
    finally:
        magics.session.close()
        ip.configurables.remove(magics)


def test_an_invalid_config_file_setting_is_refused():
    """An out-of-range setting in a config file raises TraitError when the magics load."""
    config = Config()
    config.OneshotMagics.limit = 0
    with pytest.raises(TraitError, match="limit"):
        OneshotMagics(config=config)


def test_reload_ext_keeps_the_magics_and_the_tasks_they_run(ip, magics):
    """%reload_ext oneshot_nb (load called again) gives back the same magics: a task
    started before is still stopped by %oneshot_stop, and no second pre-run hook or
    history writer is added."""
    task = oneshot(ip, "--quiet sleep 30")
    again = load(ip)
    assert again is magics
    assert ip.events.callbacks["pre_run_cell"].count(magics.session.new_cell) == 1
    ip.run_line_magic("oneshot_stop", task.id)
    eventually(lambda: task.done, timeout=10)
    assert task.state is TaskState.INTERRUPTED


@pytest.fixture
def extension_loaded(ip, magics):
    """The extension loaded by %load_ext (into the magics' session, which the magics
    fixture made); loaded again after the test, for that fixture to undo, and forgotten
    by IPython's extension manager, for the next test to load it afresh."""
    ip.run_line_magic("load_ext", "oneshot_nb")
    yield
    load(ip)
    ip.extension_manager.loaded.discard("oneshot_nb")


def test_unload_ext_takes_the_magics_away_and_leaves_the_tasks_running(
    ip, magics, extension_loaded
):
    """%unload_ext oneshot_nb removes every magic, the pre-run hook and the display of
    tasks; a task started before goes on running (it is stopped at exit, as before)."""
    task = oneshot(ip, "--quiet sleep 30")
    ip.run_line_magic("unload_ext", "oneshot_nb")
    for name in ("oneshot", "oneshot_stop", "oneshot_tasks", "oneshot_history"):
        with pytest.raises(UsageError, match=f"Line magic function `%{name}` not found"):
            ip.run_line_magic(name, "--all")
    with pytest.raises(UsageError, match="Cell magic `%%oneshot_parallel` not found"):
        ip.run_cell_magic("oneshot_parallel", "", "true")
    assert magics.session.new_cell not in ip.events.callbacks["pre_run_cell"]
    assert ip.display_formatter.ipython_display_formatter.for_type(OneshotTask) is None
    assert not task.state.is_final


def test_load_ext_after_unload_ext_gets_the_same_session_and_tasks_back(
    ip, magics, extension_loaded, capsys
):
    """%load_ext after %unload_ext registers the same magics: %oneshot_tasks lists the
    task started before the unload and %oneshot_stop stops it by name, with one pre-run
    hook and the display of tasks back."""
    task = oneshot(ip, "--quiet --name before sleep 30")
    eventually(lambda: task.state is TaskState.RUNNING)
    ip.run_line_magic("unload_ext", "oneshot_nb")
    ip.run_line_magic("load_ext", "oneshot_nb")
    assert ip.find_magic("oneshot").__self__ is magics
    assert ip.events.callbacks["pre_run_cell"].count(magics.session.new_cell) == 1
    assert ip.display_formatter.ipython_display_formatter.for_type(OneshotTask) is not None
    capsys.readouterr()
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().out.split()[:3] == [task.id, "RUNNING", "before"]
    ip.run_line_magic("oneshot_stop", "before")
    eventually(lambda: task.done, timeout=10)
    assert (task.state, task.reason) == (TaskState.INTERRUPTED, "stopped")


def test_reload_ext_magic_keeps_the_tasks_within_reach(ip, magics, extension_loaded):
    """%reload_ext oneshot_nb (IPython unloads, reimports the package and loads it):
    the same magics come back, a task started before stops by name, one pre-run hook."""
    task = oneshot(ip, "--quiet --name before sleep 30")
    ip.run_line_magic("reload_ext", "oneshot_nb")
    assert ip.find_magic("oneshot").__self__ is magics
    assert ip.events.callbacks["pre_run_cell"].count(magics.session.new_cell) == 1
    ip.run_line_magic("oneshot_stop", "before")
    eventually(lambda: task.done, timeout=10)
    assert task.state is TaskState.INTERRUPTED


def test_exit_after_unload_ext_stops_the_tasks_that_kept_running(tmp_path):
    """A task left running by %unload_ext is still stopped, its group gone, when the
    interpreter exits."""
    script = f"""
import os, time
os.environ["ONESHOT_NB_DB"] = ":memory:"
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "oneshot_nb")
ip.run_line_magic("config", "OneshotMagics.grace = 0.5")
task = ip.run_line_magic("oneshot", "--quiet sleep 60")
while task.pid is None:
    time.sleep(0.01)
ip.run_line_magic("unload_ext", "oneshot_nb")
open({str(tmp_path / "pid")!r}, "w").write(str(task.pid))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    pid = int((tmp_path / "pid").read_text())
    eventually(lambda: group_gone(pid))


def test_a_text_table_shows_control_characters_in_names_escaped(ip, magics, capsys):
    """A name with an ANSI escape or a newline prints as its escape: a terminal would
    act on it, and a row must stay one line."""
    orchestrator = magics.orchestrator
    task = magics.session.call(orchestrator.submit, "true", name="\x1b[31mred\nx")
    eventually(lambda: task.done)
    capsys.readouterr()
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().out.splitlines() == [
        f"{task.id}  COMPLETED   \\x1b[31mred\\nx exit 0"
    ]
