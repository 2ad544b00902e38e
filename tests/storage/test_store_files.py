"""The history file shared with other processes: this process never drops the locks its
SQLite connections hold (closing any descriptor of a file drops them all), a relative
path stays the same file after a chdir, and a file overwritten in place is said to be
no database by every reader, and not written over again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from helpers import query, wait_until

from oneshot_nb import AsyncOrchestrator, TaskState, history
from oneshot_nb.storage import database, writer
from oneshot_nb.storage.records import get_record, prune
from oneshot_nb.storage.store import Store, StoreError, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locks time out after 0.1 s, and the writer checks the file every 0.1 s."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)


def open_and_close_elsewhere(path: os.PathLike[str] | str) -> None:
    """What a second kernel's %oneshot_history does: another process opens the file,
    reads, and closes it. Closing the last connection deletes the -wal and -shm."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
        " db.execute('SELECT * FROM tasks').fetchall(); db.close()"
    )
    subprocess.run([sys.executable, "-c", code, os.fspath(path)], check=True)


# -- this process keeps its locks -----------------------------------------------------------


async def test_the_writers_checks_of_the_file_keep_this_processs_locks(tmp_path, quick_retries):
    """The writer read the file's header with open() and close() at every commit and
    idle check, which drops every POSIX lock this process holds on the file: another
    process closing its connection then took itself for the last one and deleted the
    -wal under ours, and what we wrote next was lost. Now the -wal stays, and what is
    written after is seen by others."""
    path = tmp_path / "history.sqlite3"
    history_store = Store(str(path))
    try:
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            await orch.submit(["echo", "before"]).wait()
            assert history_store.flush()
            await anyio.sleep(0.5)  # idle checks of the file
            open_and_close_elsewhere(path)
            assert os.path.exists(f"{path}-wal")
            after = orch.submit(["echo", "after"])
            await after.wait()
            assert history_store.flush()
            # Another process sees it while this one still has the file open.
            assert query(path, "SELECT state FROM tasks WHERE id = ?", after.id) == [("COMPLETED",)]
    finally:
        history_store.close()
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


def test_closing_one_of_two_stores_of_a_file_keeps_the_others_locks(tmp_path):
    """Each writer keeps a descriptor of its file to read the header; two stores of one
    file in one process share it, so closing one does not drop the other's locks."""
    path = tmp_path / "history.sqlite3"
    first = Store(str(path))
    try:
        Store(str(path)).close()
        open_and_close_elsewhere(path)
        assert os.path.exists(f"{path}-wal")
    finally:
        first.close()
    assert query(path, "SELECT count(*) FROM sessions") == [(2,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


def test_connecting_again_keeps_the_locks_of_the_connection_already_open(tmp_path):
    """connect() created the file with os.close(os.open(path, O_CREAT)), also when it
    existed: opening a second connection dropped the first one's locks."""
    path = str(tmp_path / "history.sqlite3")
    first = connect(path)
    try:
        first.execute("INSERT INTO sessions VALUES ('one', 1, 1, 'host', 0)")
        connect(path).close()
        open_and_close_elsewhere(path)
        assert os.path.exists(f"{path}-wal")
        first.execute("INSERT INTO sessions VALUES ('two', 2, 2, 'host', 0)")
        assert query(path, "SELECT id FROM sessions ORDER BY id") == [("one",), ("two",)]
    finally:
        first.close()
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


WRITER = """
import asyncio, sys
from oneshot_nb import AsyncOrchestrator
from oneshot_nb.storage.store import Store

LINES = (
    "import time\\nfor i in range(100):\\n print(f'line {i}', flush=True)\\n"
    " time.sleep(0.02)\\ntime.sleep(30)"
)

async def main(path):
    store = Store(path)
    async with AsyncOrchestrator() as orch:
        store.attach(orch)
        task = orch.submit([sys.executable, "-c", LINES])
        print(task.id, flush=True)
        while True:
            lines = task.output.count("\\n")
            if await asyncio.to_thread(store.flush):
                print(lines, flush=True)  # that many lines are committed
            await asyncio.sleep(0.05)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.timeout(60)
def test_a_killed_writer_loses_nothing_committed_while_another_process_reads(tmp_path):
    """A kernel writes a long task while another process reads the history again and
    again (history(), as a second kernel's %oneshot_history does). The writer's checks
    dropped its locks, so a reader's close deleted the writer's -wal: once the writer
    was SIGKILLed its task held 40 of 100 lines and the file was corrupt. Now the file
    is sound and holds every line the writer had committed."""
    path = str(tmp_path / "history.sqlite3")
    cwd = Path(__file__).resolve().parents[2]  # the repository: its oneshot_nb
    writer_process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), path],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert writer_process.stdout is not None
        task_id = writer_process.stdout.readline().strip()
        committed = 0
        while committed < 100:
            line = writer_process.stdout.readline()
            assert line, "the writer process ended"
            committed = int(line)
            history(path=path)
    finally:
        writer_process.kill()
        writer_process.wait()
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    record = get_record(task_id, path=path)
    [(pid,)] = query(path, "SELECT pid FROM tasks WHERE id = ?", task_id)
    os.killpg(pid, signal.SIGKILL)
    assert record.state is TaskState.RUNNING
    assert record.read_log() == "".join(f"line {i}\n" for i in range(100)).encode()


# -- a file overwritten in place ------------------------------------------------------------

GARBAGE = b"this is not a database\n" * 100


def overwrite_elsewhere(path: os.PathLike[str] | str, data: bytes) -> None:
    """Overwrite the file in place (same inode), from another process, as a user would."""
    code = "import sys; open(sys.argv[1], 'r+b').write(sys.argv[2].encode())"
    subprocess.run([sys.executable, "-c", code, os.fspath(path), data.decode()], check=True)


async def test_a_file_overwritten_in_place_is_no_database_to_readers_and_is_left_as_it_is(
    tmp_path, quick_retries
):
    """A file overwritten in place while in use: the writer said once that history was
    off, but reads went on serving the old pages left in the -wal (a task RUNNING
    forever), and at exit the writer copied its -wal back into the user's file. Now
    every read says in one line that the file is not a database, and the file keeps the
    bytes the user wrote; the next store refuses it rather than take the old -wal."""
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    history_store = Store(str(path), on_error=errors.append)
    try:
        async with AsyncOrchestrator(grace=0.5) as orch:
            history_store.attach(orch)
            running = orch.submit(["sleep", "30"])
            await wait_until(lambda: running.state is TaskState.RUNNING)
            assert history_store.flush()
            [record] = history(path=str(path))
            assert record.state is TaskState.RUNNING
            overwrite_elsewhere(path, GARBAGE)
            await wait_until(lambda: history_store.error is not None)
            not_a_database = f"cannot read the task history at {path}: file is not a database"
            for read in (
                lambda: history(path=str(path)),
                lambda: get_record(running.id, path=str(path)),
                record.read_log,
                lambda: prune(0, path=str(path)),
            ):
                with pytest.raises(StoreError) as raised:
                    read()
                assert str(raised.value) == not_a_database
            running.stop()
            await running.wait()
    finally:
        history_store.close()
    assert errors == [
        f"oneshot_nb: task history is no longer saved to {path}"
        f" ({path} was overwritten by something not a database)"
    ]
    assert path.read_bytes()[: len(GARBAGE)] == GARBAGE
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        Store(str(path))
    assert path.read_bytes()[: len(GARBAGE)] == GARBAGE


# -- a relative path ------------------------------------------------------------------------


async def test_a_relative_path_names_the_same_file_after_a_chdir(
    tmp_path, monkeypatch, quick_retries
):
    """A relative path was used as given: after a chdir (%cd) the writer took the file
    for deleted and began a new history in the new directory. Now the store holds the
    absolute path; a reader given a relative path takes it from the current directory
    when it is called."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    errors: list[str] = []
    history_store = Store("rel.sqlite3", on_error=errors.append)
    try:
        assert history_store.path == str(first / "rel.sqlite3")
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            before = orch.submit(["echo", "before"])
            await before.wait()
            monkeypatch.chdir(second)
            await anyio.sleep(0.3)  # idle checks of the file
            after = orch.submit(["echo", "after"])
            await after.wait()
            assert history_store.flush()
    finally:
        history_store.close()
    assert errors == []
    assert os.listdir(second) == []
    monkeypatch.chdir(first)
    found = history(path="rel.sqlite3")
    assert [r.id for r in found] == [after.id, before.id]
    assert {r.path for r in found} == {str(first / "rel.sqlite3")}
