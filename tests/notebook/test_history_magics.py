"""The history magics in a plain InteractiveShell (%oneshot_history, %oneshot_log,
%oneshot_rerun), including a history that is off or whose database fails."""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import subprocess
import sys
import time

import anyio
import pytest
from helpers import eventually, py, run_in_turn
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from oneshot_nb import OneshotTask, TaskState, history
from oneshot_nb.storage import database, records, writer
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.store import Store

pytestmark = pytest.mark.timeout(30)

DAY = 86400.0


def oneshot(ip: InteractiveShell, line: str) -> OneshotTask:
    task = ip.run_line_magic("oneshot", "--quiet " + line)
    eventually(lambda: task.done)
    return task


def test_the_history_magics_read_quoted_arguments_as_the_shell_does(ip, magics, capsys):
    """`--grep "two words"` looks for the two words, not for them in quotes; an
    unclosed quote in any history magic is one UsageError line.

    Regression: these magics kept the quotes (so --grep found nothing) and an
    unclosed quote raised a raw `ValueError: No closing quotation`."""
    task = oneshot(ip, "--name 'two words here' true")
    eventually(lambda: task.done)
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", '--grep "two words"')
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [task.id]
    for magic, line in [
        ("oneshot_history", '--grep "two'),
        ("oneshot_log", f"'{task.id}"),
        ("oneshot_rerun", f'"{task.id}'),
    ]:
        with pytest.raises(UsageError, match="no closing quotation") as error:
            ip.run_line_magic(magic, line)
        assert "\n" not in str(error.value)


def test_oneshot_history_prints_a_text_table_newest_first(ip, magics, capsys):
    """Outside a kernel %oneshot_history prints one line per task, newest first: id,
    state, name, exit code and reason (none while it runs)."""
    first = oneshot(ip, "--name first true")
    second = oneshot(ip, "--name second exit 3")
    running = ip.run_line_magic("oneshot", "--quiet --name third sleep 30")
    eventually(lambda: running.state is TaskState.RUNNING)
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "")
    assert capsys.readouterr().out.splitlines() == [
        f"{running.id}  RUNNING     third",
        f"{second.id}  FAILED      second exit 3",
        f"{first.id}  COMPLETED   first exit 0",
    ]
    running.stop()


def test_oneshot_history_filters_by_failed_grep_and_limit(ip, magics, capsys):
    """--failed, --grep and --limit select as history() does, alone and together."""
    first = oneshot(ip, "--name needle-ok true")
    second = oneshot(ip, "--name plain exit 2")
    third = oneshot(ip, "--name needle-bad exit 5")

    def shown(line: str) -> list[str]:
        capsys.readouterr()
        ip.run_line_magic("oneshot_history", line)
        return [row.split()[0] for row in capsys.readouterr().out.splitlines()]

    assert shown("--failed") == [third.id, second.id]
    assert shown("--grep needle") == [third.id, first.id]
    assert shown("--limit 2") == [third.id, second.id]
    assert shown("--failed --grep plain --limit 1") == [second.id]
    with pytest.raises(UsageError):
        ip.run_line_magic("oneshot_history", "--limit 0")


def test_oneshot_history_prune_prints_how_many_were_deleted(ip, magics, db, capsys):
    """--prune DAYS deletes the tasks that ended more than DAYS ago and says how many;
    a negative DAYS is a UsageError."""
    old = oneshot(ip, "echo old")
    new = oneshot(ip, "echo new")
    assert magics.store.flush()
    edit = sqlite3.connect(db, isolation_level=None)
    edit.execute("UPDATE tasks SET ended_at = ? WHERE id = ?", (time.time() - 3 * DAY, old.id))
    edit.close()
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "--prune 2")
    assert capsys.readouterr().out == "deleted 1 task(s) that ended more than 2 days ago\n"
    assert [r.id for r in history(path=db)] == [new.id]
    with pytest.raises(UsageError, match="days must be a number >= 0"):
        ip.run_line_magic("oneshot_history", "--prune -1")


def test_oneshot_log_prints_the_whole_log_not_just_the_tail_in_memory(ip, magics, capsys):
    """%oneshot_log ID prints every byte the task wrote, in arrival order, though the
    task itself kept only the newest max_log_bytes; --stream picks one stream."""
    magics.max_log_bytes = 1000
    code = (
        "import sys\nfor i in range(5000): print(f'line {i}')\n"
        "sys.stdout.flush()\nprint('the end', file=sys.stderr)"
    )
    task = oneshot(ip, f"--name long {shlex.join(py(code))}")
    assert task.state is TaskState.COMPLETED
    assert task.output_dropped > 0
    lines = "".join(f"line {i}\n" for i in range(5000))
    capsys.readouterr()
    ip.run_line_magic("oneshot_log", task.id)
    assert capsys.readouterr().out == lines + "the end\n"
    ip.run_line_magic("oneshot_log", f"--stream stderr {task.id}")
    assert capsys.readouterr().out == "the end\n"


def test_oneshot_rerun_runs_the_same_command_in_the_same_cwd_with_the_same_env(
    ip, magics, tmp_path
):
    """%oneshot_rerun ID submits the stored command with its name, cwd and env overrides,
    and returns a new task that completes."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = "pwd; echo $MODE"
    first = oneshot(ip, f"--name again --cwd {workdir} --env MODE=fast {command}")
    assert first.output == f"{workdir}\nfast\n"
    rerun = ip.run_line_magic("oneshot_rerun", f"--quiet {first.id}")
    assert isinstance(rerun, OneshotTask)
    assert rerun.id != first.id
    assert (rerun.command, rerun.name, rerun.cwd, rerun.env) == (
        command,
        "again",
        str(workdir),
        {"MODE": "fast"},
    )
    eventually(lambda: rerun.done)
    assert rerun.state is TaskState.COMPLETED
    assert rerun.output == first.output
    assert get_record(rerun.id).read_log() == rerun.output.encode()


def test_oneshot_rerun_runs_in_a_terminal_of_the_same_size_read_as_the_same_agent(ip, magics, db):
    """A task run with --pty, --cols, --rows, --stdin, --agent or --retries reruns with
    them (not with --after: what it waited for has run)."""
    command = "python3 -c 'import os; print(os.isatty(1), os.get_terminal_size().columns)'"
    first = oneshot(
        ip, f"--quiet --pty --cols 77 --stdin --agent auto --retries 2 --retry-delay 0.5 {command}"
    )
    eventually(lambda: first.done)
    rerun = ip.run_line_magic("oneshot_rerun", f"--quiet {first.id}")
    eventually(lambda: rerun.done)
    options = rerun.options
    assert (options.pty, options.cols, options.stdin, options.agent) == (True, 77, True, "auto")
    assert (options.retries, options.retry_delay) == (2, 0.5)
    assert rerun.output == first.output == "True 77\n"


def test_oneshot_rerun_of_an_argv_task_runs_the_same_argv(ip, magics, db):
    """A task stored as an argv list reruns as that list, not as one shell string."""
    argv = ["echo", "$HOME", "a  b"]
    [original] = anyio.run(run_in_turn, db, (argv, {}))
    rerun = ip.run_line_magic("oneshot_rerun", f"--quiet {original.id}")
    assert rerun.command == argv
    eventually(lambda: rerun.done)
    assert rerun.output == original.output == "$HOME a  b\n"


def test_oneshot_rerun_of_a_file_name_that_is_not_utf8_runs_the_same_command(ip, magics, tmp_path):
    """A file name that is not UTF-8 (from os.listdir, through {var}) made the store
    fail and history go off. Now the task runs, and its rerun runs the very same
    command in the same directory."""
    workdir = tmp_path / os.fsdecode(b"dir\xff")
    workdir.mkdir()
    (workdir / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"found\n")
    [ip.user_ns["listed"]] = os.listdir(workdir)
    ip.user_ns["workdir"] = str(workdir)
    first = ip.run_line_magic("oneshot", "--quiet --cwd {workdir} cat {listed}")
    eventually(lambda: first.done)
    assert (first.state, first.output) == (TaskState.COMPLETED, "found\n")
    rerun = ip.run_line_magic("oneshot_rerun", f"--quiet {first.id}")
    eventually(lambda: rerun.done)
    assert (rerun.command, rerun.cwd) == (first.command, first.cwd)
    assert (rerun.state, rerun.output) == (TaskState.COMPLETED, "found\n")
    assert (magics.store.error, magics.store.skipped_records) == (None, 0)


@pytest.mark.parametrize("magic", ["oneshot_log", "oneshot_rerun"])
def test_an_unknown_task_id_is_a_usage_error(ip, magics, magic):
    """%oneshot_log and %oneshot_rerun name the id they could not find."""
    with pytest.raises(UsageError, match="no task 'nope' in the history"):
        ip.run_line_magic(magic, "nope")


def test_memory_turns_history_off_and_creates_no_file(
    ip, load_magics, tmp_path, monkeypatch, capsys
):
    """ONESHOT_NB_DB=:memory: means no history: no file anywhere, tasks still run, and
    the history magics say that history is off."""
    monkeypatch.setenv("ONESHOT_NB_DB", ":memory:")
    monkeypatch.chdir(tmp_path)
    magics = load_magics()
    assert magics.store is None
    task = oneshot(ip, "echo still runs")
    assert (task.state, task.output) == (TaskState.COMPLETED, "still runs\n")
    for magic, line in [("oneshot_history", ""), ("oneshot_log", task.id)]:
        with pytest.raises(UsageError, match="task history is off"):
            ip.run_line_magic(magic, line)
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("setting", [":memory:", "corrupt", "under a file"])
def test_a_db_setting_that_turns_history_off_makes_the_history_magics_say_why(
    ip, tmp_path, load_magics, setting
):
    """c.OneshotMagics.db = ":memory:", a file that is not a database, or a path whose
    directory cannot be made, turns history off as ONESHOT_NB_DB does: the history
    magics say so, naming the cause seen at load (they said "OneshotMagics.db or
    ONESHOT_NB_DB", whatever the cause)."""
    cause = "OneshotMagics.db is ':memory:'"
    if setting == "corrupt":
        setting = str(tmp_path / "corrupt.sqlite3")
        with open(setting, "wb") as f:
            f.write(b"this is not a database\n" * 100)
        cause = f"cannot use {setting}: file is not a database"
    elif setting == "under a file":
        (tmp_path / "a file").write_bytes(b"")
        setting = str(tmp_path / "a file" / "history.sqlite3")
        cause = f"cannot use {setting}: [Errno 17] File exists: '{tmp_path / 'a file'}'"
    ip.config.OneshotMagics.db = setting
    try:
        magics = load_magics()
    finally:
        del ip.config.OneshotMagics["db"]
    assert (magics.db, magics.store) == (setting, None)
    for magic, line in [("oneshot_history", ""), ("oneshot_log", "abc")]:
        with pytest.raises(UsageError) as raised:
            ip.run_line_magic(magic, line)
        assert str(raised.value) == f"task history is off: {cause}"


def test_a_corrupt_database_turns_history_off_with_one_warning(ip, db, load_magics, capsys):
    """A file that is not a database: one line on stderr says history is off, the file
    is left alone, and tasks run to their end as usual."""
    garbage = b"this is not a database\n" * 100
    with open(db, "wb") as f:
        f.write(garbage)
    magics = load_magics()
    assert magics.store is None
    assert capsys.readouterr().err == (
        f"oneshot_nb: task history is off: cannot use {db}: file is not a database\n"
    )
    task = oneshot(ip, "echo still runs")
    ip.run_line_magic("oneshot_tasks", "")
    assert (task.state, task.output) == (TaskState.COMPLETED, "still runs\n")
    assert capsys.readouterr().err == ""
    with open(db, "rb") as f:
        assert f.read() == garbage


def test_a_store_fault_and_its_end_are_each_said_once_by_the_next_magic(
    ip, db, load_magics, monkeypatch, capsys, caplog
):
    """When the database is locked past the timeout while tasks run, the tasks go on and
    the next magic says so, once; when the lock goes, the next magic says history is
    saved again. Neither line comes from the store's thread (which would print it into
    whatever cell runs) or twice (it was logged and also queued for the magic)."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)
    magics = load_magics()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        task = oneshot(ip, "echo while locked")
        eventually(lambda: magics.store.fault is not None)
        assert capsys.readouterr().err == ""
        ip.run_line_magic("oneshot_tasks", "")
        assert capsys.readouterr().err == (
            f"oneshot_nb: task history cannot be saved to {db} for now"
            " (OperationalError: database is locked); tasks run on, and it tries again"
            " every 0.1 s\n"
        )
        later = oneshot(ip, "echo after")
        ip.run_line_magic("oneshot_tasks", "")
        assert capsys.readouterr().err == ""
        assert (task.state, later.state) == (TaskState.COMPLETED, TaskState.COMPLETED)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    eventually(lambda: magics.store.fault is None)
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().err == (
        f"oneshot_nb: task history is saved to {db} again; nothing lost\n"
    )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert get_record(task.id).read_log() == b"while locked\n"
    assert get_record(later.id).read_log() == b"after\n"


def test_history_magics_say_in_one_line_that_the_database_is_not_readable(ip, db, magics, capsys):
    """A database replaced by garbage while the kernel runs: %oneshot_history,
    %oneshot_log and --prune raise a one-line UsageError (was sqlite3.DatabaseError
    with a traceback), and the store says once that history is off."""
    task = oneshot(ip, "echo before")
    assert magics.store.flush()
    garbage = f"{db}.new"
    with open(garbage, "wb") as f:
        f.write(b"this is not a database\n" * 100)
    os.replace(garbage, db)
    capsys.readouterr()
    for magic, line in [
        ("oneshot_history", ""),
        ("oneshot_history", "--prune 1"),
        ("oneshot_log", task.id),
    ]:
        with pytest.raises(UsageError) as raised:
            ip.run_line_magic(magic, line)
        assert str(raised.value) == f"cannot read the task history at {db}: file is not a database"
    after = oneshot(ip, "echo after")
    eventually(lambda: magics.store.error is not None)
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().err == (
        f"oneshot_nb: task history is no longer saved to {db}"
        f" ({db} is not a database now (file is not a database))\n"
    )
    assert after.state is TaskState.COMPLETED


def test_a_lock_at_load_pauses_history_and_settles_dead_kernels_once_it_goes(
    ip, db, load_magics, monkeypatch, capsys
):
    """A lock held by another process at %load_ext blocked the kernel for the busy
    timeout (10 s), then turned history off for the kernel, and the history magics
    blamed the setting. Now loading returns at once, history is paused (said once by
    the next magic), tasks run; once the lock goes, history resumes, what a dead kernel
    left running is settled, and the next magic says both."""
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)
    Store(db).close()
    dead = sqlite3.connect(db, isolation_level=None)
    dead.execute("INSERT INTO sessions VALUES ('dead', 1, 1, ?, 0)", (os.uname().nodename,))
    dead.execute(
        "INSERT INTO tasks (id, session, name, command, argv, env, created_at, state)"
        " VALUES ('orphan', 'dead', 'orphan', 'sleep 1', 0, '{}', 0, 'CREATED')"
    )
    dead.close()
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
    )
    locker = subprocess.Popen(
        [sys.executable, "-c", code, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert locker.stdout.readline() == b"locked\n"
        began = time.monotonic()
        magics = load_magics()
        assert time.monotonic() - began < 2
        assert magics.store is not None and magics.store.fault is not None
        assert capsys.readouterr().err == ""
        task = oneshot(ip, "echo while locked")
        assert task.state is TaskState.COMPLETED
        ip.run_line_magic("oneshot_tasks", "")
        assert capsys.readouterr().err == (
            f"oneshot_nb: task history cannot be saved to {db} for now (OperationalError:"
            " database is locked); tasks run on, and it tries again every 0.1 s\n"
        )
    finally:
        locker.stdin.close()
        locker.wait(10)
    eventually(lambda: magics.store.fault is None and get_record("orphan").state.is_final)
    ip.run_line_magic("oneshot_tasks", "")
    assert capsys.readouterr().err == (
        f"oneshot_nb: task history is saved to {db} again; nothing lost\n"
        "oneshot_nb: 1 task(s) left running by a kernel that died were stopped and marked"
        " 'kernel died' (see %oneshot_history)\n"
    )
    assert get_record(task.id).read_log() == b"while locked\n"
    assert get_record("orphan").reason == "kernel died"


def test_history_magics_follow_the_file_after_a_cd_with_a_relative_path(
    ip, load_magics, tmp_path, monkeypatch, capsys
):
    """ONESHOT_NB_DB=rel.db, then %cd: the kernel said "rel.db was deleted while in
    use" and began a new history in the new directory. Now the store holds the
    absolute path and the magics read it: nothing said, nothing made elsewhere."""
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)
    monkeypatch.setattr(records, "active_store", None)
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setenv("ONESHOT_NB_DB", "rel.db")
    magics = load_magics()
    before = oneshot(ip, "echo before")
    ip.run_line_magic("cd", str(elsewhere))
    time.sleep(0.3)  # idle checks of the file
    after = oneshot(ip, "echo after")
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "")
    out, err = capsys.readouterr()
    assert err == ""
    assert [row.split()[0] for row in out.splitlines()] == [after.id, before.id]
    assert magics.store.path == str(home / "rel.db")
    assert list(elsewhere.iterdir()) == []


def test_oneshot_history_takes_the_largest_limit(ip, magics, capsys):
    """--limit 9223372036854775807 failed with sqlite3's "datatype mismatch" (one more
    row is read to know whether there are more)."""
    task = oneshot(ip, "true")
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "--limit 9223372036854775807")
    assert [row.split()[0] for row in capsys.readouterr().out.splitlines()] == [task.id]


def test_history_magics_say_a_file_overwritten_in_place_is_not_a_database(ip, db, magics, capsys):
    """A file overwritten in place (same inode) while a task runs: the magics went on
    showing the old pages left in the -wal, the task RUNNING forever. Now they say in
    one line that the file is not a database."""
    running = ip.run_line_magic("oneshot", "--quiet sleep 30")
    eventually(lambda: running.state is TaskState.RUNNING)
    assert magics.store.flush()
    code = "import sys; open(sys.argv[1], 'r+b').write(b'this is not a database' * 100)"
    subprocess.run([sys.executable, "-c", code, db], check=True)
    for magic, line in [
        ("oneshot_history", ""),
        ("oneshot_history", "--prune 1"),
        ("oneshot_log", running.id),
    ]:
        with pytest.raises(UsageError) as raised:
            ip.run_line_magic(magic, line)
        assert str(raised.value) == f"cannot read the task history at {db}: file is not a database"
    running.stop()


def test_oneshot_log_prints_a_pipe_tasks_input_in_line_and_alone(ip, magics, capsys):
    """A `--stdin` task's input is in its log where it came; --stream stdin prints only
    the input."""
    task = ip.run_line_magic("oneshot", "--quiet --stdin " + shlex.join(py(UPPER)))
    # Started first: from this thread, a close could overtake a send made before the start.
    eventually(lambda: task.state is TaskState.RUNNING)
    task.send("hello\n")
    task.close_stdin()
    eventually(lambda: task.done)
    capsys.readouterr()
    ip.run_line_magic("oneshot_log", task.id)
    assert capsys.readouterr().out == "hello\nHELLO\n"
    ip.run_line_magic("oneshot_log", f"--stream stdin {task.id}")
    assert capsys.readouterr().out == "hello\n"


def test_oneshot_history_says_an_agents_turns_and_cost(ip, magics, capsys):
    """An agent task's text row ends with its turns and cost; others' rows as before."""
    fake = os.path.join(os.path.dirname(__file__), os.pardir, "agents", "fake_agent.py")
    agent = oneshot(ip, "--agent claude " + shlex.join([sys.executable, fake, "claude", "ok"]))
    plain = oneshot(ip, "--name plain true")
    capsys.readouterr()
    ip.run_line_magic("oneshot_history", "")
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == f"{plain.id}  COMPLETED   plain exit 0"
    assert rows[1].startswith(f"{agent.id}  COMPLETED ")
    assert rows[1].endswith(" exit 0  4 turns · $0.0412")


UPPER = "import sys; print(sys.stdin.read().strip().upper())"
