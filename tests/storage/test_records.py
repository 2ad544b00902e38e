"""Reading the history back: history(), get_record() and a record's log, prune(), and
rows that cannot be read."""

from __future__ import annotations

import sqlite3
import time

import anyio
import pytest
from helpers import py, query, run_in_turn, stored_orchestrator, wait_until

from oneshot_nb import OneshotTask, TaskRecord, TaskState, history
from oneshot_nb.storage import records
from oneshot_nb.storage.records import get_record, prune
from oneshot_nb.storage.store import REDACTED

pytestmark = pytest.mark.timeout(30)

DAY = 86400.0


# -- history() ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_history_lists_every_task_newest_first_with_its_fields(db, tmp_path):
    """history() returns one TaskRecord per task, newest first, holding what the task
    held when it ended (secret env values redacted); ONESHOT_NB_DB is the default."""
    tasks = await run_in_turn(
        db,
        ("echo one", {"name": "one"}),
        ("exit 4", {"name": "bad", "env": {"API_TOKEN": "abc", "MODE": "fast"}}),
        (["echo", "a b"], {"cwd": tmp_path}),
    )
    found = history(path=db)
    assert [r.id for r in found] == [t.id for t in reversed(tasks)]
    assert [r.id for r in history()] == [r.id for r in found]
    for record, task in zip(found, reversed(tasks), strict=True):
        assert isinstance(record, TaskRecord)
        assert (record.name, record.command, record.cwd) == (task.name, task.command, task.cwd)
        assert (record.state, record.returncode, record.reason, record.error) == (
            task.state,
            task.returncode,
            task.reason,
            task.error,
        )
        assert (record.created_at, record.started_at, record.ended_at) == (
            task.created_at,
            task.started_at,
            task.ended_at,
        )
        assert record.path == db
    bad = found[1]
    assert (bad.state, bad.returncode, bad.env) == (
        TaskState.FAILED,
        4,
        {"API_TOKEN": REDACTED, "MODE": "fast"},
    )
    assert found[0].command == ["echo", "a b"]
    assert found[0].read_log() == b"a b\n"
    assert len({r.session for r in found}) == 1


@pytest.mark.anyio
async def test_history_limit_failed_and_grep_select_tasks(db):
    """limit keeps the newest N; failed keeps FAILED tasks only (a failed spawn too, not
    an interrupted one); grep keeps tasks whose name or command holds the text."""
    tasks = await run_in_turn(
        db,
        ("echo needle", {"name": "by command"}),
        ("exit 1", {"name": "needle in the name"}),
        (["/nonexistent/program"], {}),
        ("sleep 30", {"timeout": 0.1, "grace": 0.5}),
        ("true", {}),
    )
    by_command, by_name, no_spawn, timed_out, last = tasks
    assert (no_spawn.state, timed_out.state) == (TaskState.FAILED, TaskState.INTERRUPTED)
    ids = lambda found: [r.id for r in found]  # noqa: E731
    assert ids(history(2, path=db)) == [last.id, timed_out.id]
    assert ids(history(100, path=db)) == [t.id for t in reversed(tasks)]
    assert ids(history(failed=True, path=db)) == [no_spawn.id, by_name.id]
    assert ids(history(grep="needle", path=db)) == [by_name.id, by_command.id]
    assert ids(history(1, failed=True, grep="needle", path=db)) == [by_name.id]
    assert history(grep="no such text", path=db) == []


def test_history_of_a_missing_file_or_of_memory_is_empty_and_creates_nothing(tmp_path):
    """Reading never creates a database: no file, no history."""
    missing = tmp_path / "missing.sqlite3"
    assert history(path=str(missing)) == []
    assert history(path=":memory:") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_history_reads_a_database_whose_path_looks_like_a_uri(tmp_path):
    """A path with characters that mean something in a URI (#, ?, %) is read from the
    file it names, as the store wrote it."""
    path = str(tmp_path / "run #1 ?mode=ro %41" / "history.sqlite3")
    [task] = await run_in_turn(path, (["echo", "found"], {}))
    [record] = history(path=path)
    assert record.id == task.id
    assert record.read_log() == b"found\n"
    assert prune(0, path=path) == 1


BAD_ARGUMENTS = [
    (history, {"limit": 0}, ValueError, "limit must be a whole number >= 1, got 0"),
    (history, {"limit": -1}, ValueError, "limit must be a whole number >= 1, got -1"),
    (history, {"limit": 1.5}, TypeError, "limit must be an int, got float"),
    (history, {"limit": True}, TypeError, "limit must be an int, got bool"),
    (history, {"limit": "5"}, TypeError, "limit must be an int, got str"),
    (history, {"offset": -1}, ValueError, "offset must be a whole number >= 0, got -1"),
    (history, {"offset": "1"}, TypeError, "offset must be an int, got str"),
    (history, {"failed": "yes"}, TypeError, "failed must be a bool, got str"),
    (history, {"failed": 1}, TypeError, "failed must be a bool, got int"),
    (history, {"grep": 5}, TypeError, "grep must be a str or None, got int"),
    (history, {"grep": b"x"}, TypeError, "grep must be a str or None, got bytes"),
    (history, {"path": 5}, TypeError, "path must be a str, an os.PathLike or None, got int"),
    (get_record, {"task_id": 5}, TypeError, "task_id must be a str, got int"),
    (get_record, {"task_id": "x", "path": b"h"}, TypeError, "path must be a str, an os"),
    (prune, {"days": -1}, ValueError, "days must be a number >= 0, got -1"),
    (prune, {"days": float("nan")}, ValueError, "days must be a number >= 0, got nan"),
    (prune, {"days": True}, TypeError, "days must be a number, got bool"),
    (prune, {"days": "7"}, TypeError, "days must be a number, got str"),
    (prune, {"days": 1, "path": 5}, TypeError, "path must be a str, an os.PathLike or"),
]


@pytest.mark.parametrize(
    ("function", "arguments", "error", "message"),
    BAD_ARGUMENTS,
    ids=[f"{f.__name__}-{a}" for f, a, *_ in BAD_ARGUMENTS],
)
def test_reads_refuse_bad_arguments_naming_them(db, function, arguments, error, message):
    """history(grep=5), history(failed='yes') and history(grep=b'x') were accepted
    silently, history(path=5) raised a TypeError that did not name `path`, and
    history(limit='5') a ValueError. Now a wrong type is a TypeError and a wrong value
    a ValueError, each naming the argument; nothing is deleted."""
    with pytest.raises(error) as raised:
        function(**arguments)
    assert str(raised.value).startswith(message)


@pytest.mark.anyio
async def test_reading_a_log_refuses_bad_arguments_naming_them(db):
    """read_log("both") returned nothing, as if the task had written nothing."""
    [task] = await run_in_turn(db, ("echo hi", {}))
    record = get_record(task.id, path=db)
    for call, error, message in [
        (lambda: record.read_log("both"), ValueError, "stream must be 'stdout', 'stderr'"),
        (lambda: record.read_log(1), TypeError, "stream must be a str or None, got int"),
        (lambda: record.read_chunks(-1), ValueError, "last_bytes must be a whole number >= 0"),
        (lambda: record.read_chunks("1"), TypeError, "last_bytes must be an int, got str"),
    ]:
        with pytest.raises(error) as raised:
            call()
        assert str(raised.value).startswith(message)


@pytest.mark.anyio
async def test_a_limit_or_offset_beyond_what_sqlite_holds_means_no_limit(db):
    """history(limit=10**30) failed with sqlite3's "datatype mismatch" (and so did
    %oneshot_history --limit 9223372036854775807): a limit too large for SQLite is no
    limit, an offset that large finds nothing, and a huge prune deletes nothing."""
    tasks = await run_in_turn(db, ("echo one", {}), ("echo two", {}))
    newest_first = [t.id for t in reversed(tasks)]
    for limit in (2**63 - 1, 2**63, 10**30):
        assert [r.id for r in history(limit, path=db)] == newest_first
    assert history(offset=10**30, path=db) == []
    assert prune(10**400, path=db) == 0
    assert [r.id for r in history(path=db)] == newest_first


@pytest.mark.anyio
async def test_get_record_finds_a_task_by_id_and_raises_key_error_for_others(db, tmp_path):
    """get_record returns the task with that id; an unknown id, or no database at all,
    raises KeyError naming the id."""
    [task] = await run_in_turn(db, ("echo hi", {}))
    assert get_record(task.id, path=db).read_log() == b"hi\n"
    with pytest.raises(KeyError, match="no task 'nope' in the history"):
        get_record("nope", path=db)
    with pytest.raises(KeyError, match="no task 'nope' in the history"):
        get_record("nope", path=str(tmp_path / "missing.sqlite3"))


@pytest.mark.anyio
async def test_reads_include_what_the_active_store_has_not_committed_yet(db):
    """With the kernel's store active, a read right after a task ends sees its final
    state and whole log: the store is flushed first."""
    async with stored_orchestrator(db) as (orch, store):
        records.active_store = store
        task = orch.submit(["echo", "fresh"])
        await task.wait()
        [record] = history(path=db)
        assert (record.state, record.read_log()) == (TaskState.COMPLETED, b"fresh\n")


# -- prune() --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_prune_deletes_tasks_that_ended_before_the_cutoff_with_their_logs(db):
    """prune(days) deletes the tasks that ended more than `days` ago, their chunks and
    their transitions, and keeps newer and still running tasks."""
    async with stored_orchestrator(db, grace=0.5) as (orch, store):
        old = orch.submit(["echo", "old"])
        new = orch.submit(["echo", "new"])
        running = orch.submit(py("import time; print('up', flush=True); time.sleep(60)"))
        await old.wait()
        await new.wait()
        await wait_until(lambda: running.bytes_written["stdout"] > 0)
        assert await anyio.to_thread.run_sync(store.flush)
        tables = {"tasks": "id", "chunks": "task", "transitions": "task"}

        def rows(task: OneshotTask) -> dict[str, int]:
            return {
                table: query(db, f"SELECT count(*) FROM {table} WHERE {column} = ?", task.id)[0][0]
                for table, column in tables.items()
            }

        assert all(all(rows(t).values()) for t in (old, new, running))
        edit = sqlite3.connect(db, isolation_level=None)
        edit.execute("UPDATE tasks SET ended_at = ? WHERE id = ?", (time.time() - 10 * DAY, old.id))
        edit.close()
        assert prune(7, path=db) == 1
        assert rows(old) == dict.fromkeys(tables, 0)
        assert all(all(rows(t).values()) for t in (new, running))
        assert prune(0, path=db) == 1
        assert [r.id for r in history(path=db)] == [running.id]
        running.stop()
        await running.wait()


def test_history_reads_a_page_from_an_offset(tmp_path):
    """records.history(limit, offset=N) skips the N newest; a bad offset is refused."""
    import asyncio

    db = str(tmp_path / "history.sqlite3")

    async def run() -> None:
        async with stored_orchestrator(db, idle_after=None) as (orch, _):
            for i in range(4):
                await orch.submit(["true"], name=f"t{i}").wait()

    asyncio.run(run())
    assert [r.name for r in records.history(2, offset=1, path=db)] == ["t2", "t1"]
    assert [r.name for r in records.history(offset=3, path=db)] == ["t0"]
    with pytest.raises(ValueError, match="offset must be a whole number >= 0"):
        records.history(offset=-1, path=db)
    for bad in (1.5, True):
        with pytest.raises(TypeError, match="offset must be an int"):
            records.history(offset=bad, path=db)


# -- rows that cannot be read ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "breakage",
    ["state = 'BOGUS'", "name = NULL", "id = CAST('x' AS BLOB)", "env = 'not json'"],
)
async def test_a_row_that_cannot_be_read_is_left_out_and_said(tmp_path, caplog, breakage):
    """Regression: one foreign or broken row (a state this version does not know, no
    name, an id stored as bytes) broke %oneshot_history with a traceback. It is left
    out, said in one line, and the other tasks are shown."""
    db = str(tmp_path / "history.sqlite3")
    async with stored_orchestrator(db, idle_after=None) as (orch, _):
        for name in ("good", "broken"):
            await orch.submit(["true"], name=name).wait()
    connection = sqlite3.connect(db)
    connection.execute(f"UPDATE tasks SET {breakage} WHERE name = 'broken'")
    connection.commit()
    connection.close()
    with caplog.at_level("WARNING", logger="oneshot_nb"):
        found = history(path=db)
    assert [record.name for record in found] == ["good"]
    assert "1 task(s) in" in caplog.text and "could not be read" in caplog.text
