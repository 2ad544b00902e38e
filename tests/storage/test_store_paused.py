"""History paused from the start (a lock or a full disk when the store is made), and
paused with more output waiting than the disk has room for: tasks run on, the small
records get in, and each fault and its end are said once."""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import fill, py, query, wait_until

from oneshot_nb import AsyncOrchestrator, TaskState, history
from oneshot_nb.storage import writer
from oneshot_nb.storage.database import lasting_at_load
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.store import Store, StoreError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MIB = 1 << 20


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused store tries again every 0.1 s (locks still wait the whole 10 s)."""
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)


def lock_elsewhere(path: os.PathLike[str] | str) -> subprocess.Popen[str]:
    """Another process holding the write lock until `release`."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
    )
    locker = subprocess.Popen(
        [sys.executable, "-c", code, os.fspath(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    return locker


def release(locker: subprocess.Popen[str]) -> None:
    assert locker.stdin is not None
    locker.stdin.close()
    locker.wait(10)


async def test_a_lock_when_the_store_is_made_starts_history_paused_not_off(tmp_path, quick_retries):
    """A lock held by another process when the store was made blocked for the whole
    busy timeout (10 s), then turned history off for the kernel. Now making the store
    waits a moment only, history starts paused (said once, as mid-run), tasks run, and
    once the lock goes the store connects, says so once, and stores what waited."""
    path = tmp_path / "history.sqlite3"
    Store(str(path)).close()
    errors: list[str] = []
    locker = lock_elsewhere(path)
    began = time.monotonic()
    try:
        history_store = Store(str(path), on_error=errors.append)
    except BaseException:
        release(locker)
        raise
    try:
        assert time.monotonic() - began < 2
        assert (history_store.error, history_store.fault) == (
            None,
            "OperationalError: database is locked",
        )
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            task = orch.submit(["echo", "while locked"])
            assert await task.wait() is TaskState.COMPLETED
            assert history_store.flush(timeout=1) is False
            release(locker)
            locker = None
            await wait_until(lambda: history_store.fault is None)
            assert history_store.flush()
    finally:
        if locker is not None:
            release(locker)
        history_store.close()
    assert errors == [
        f"oneshot_nb: task history cannot be saved to {path} for now (OperationalError:"
        " database is locked); tasks run on, and it tries again every 0.1 s",
        f"oneshot_nb: task history is saved to {path} again; nothing lost",
    ]
    assert get_record(task.id, path=str(path)).read_log() == b"while locked\n"
    assert query(path, "SELECT count(*) FROM sessions") == [(2,)]


async def test_a_full_disk_when_the_store_is_made_starts_history_paused(small_disk, quick_retries):
    """No room on the disk for a new file's schema: history started off. Now it starts
    paused, and once space is freed the file is made and the task stored."""
    path = os.path.join(small_disk, "history.sqlite3")
    filler = fill(small_disk)
    errors: list[str] = []
    history_store = Store(path, on_error=errors.append)
    try:
        assert history_store.error is None and history_store.fault is not None
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            task = orch.submit(["echo", "on a full disk"])
            assert await task.wait() is TaskState.COMPLETED
            os.unlink(filler)
            await wait_until(lambda: history_store.fault is None)
            assert history_store.flush()
    finally:
        history_store.close()
    assert len(errors) == 2
    assert errors[1] == f"oneshot_nb: task history is saved to {path} again; nothing lost"
    assert get_record(task.id, path=path).read_log() == b"on a full disk\n"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda tmp: tmp / "garbage.sqlite3", "file is not a database"),
        (lambda tmp: tmp / "a file" / "history.sqlite3", "File exists"),
    ],
    ids=["not a database", "no directory can be made"],
)
def test_a_fault_that_lasts_at_load_still_refuses_the_file(tmp_path, make, cause):
    """Only what waiting cannot mend raises when the store is made (history off)."""
    (tmp_path / "garbage.sqlite3").write_bytes(b"this is not a database\n" * 100)
    (tmp_path / "a file").write_bytes(b"")
    with pytest.raises(Exception, match=cause):
        Store(str(make(tmp_path)))


async def test_output_bigger_than_the_space_freed_holds_back_nothing_else(
    small_disk, quick_retries
):
    """With more output waiting than the space freed on a full disk, the whole batch
    was tried again and again: history stayed paused for good, and a task that had
    ended stayed RUNNING in it. Now task rows and transitions go in first, then as much
    output as fits; the rest is dropped, counted and said, and history goes on."""
    path = os.path.join(small_disk, "history.sqlite3")
    errors: list[str] = []
    history_store = Store(path, on_error=errors.append)
    size = 6 * MIB  # more than the whole 4 MiB disk
    code = f"import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes({size}))"
    try:
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            filler = fill(small_disk)
            chatty = orch.submit(py(code))
            quick = orch.submit(["echo", "quick"])
            for task in (chatty, quick):
                assert await task.wait() is TaskState.COMPLETED
            await wait_until(lambda: history_store.fault is not None)
            os.unlink(filler)
            await wait_until(lambda: history_store.fault is None, timeout=10)
            assert history_store.flush()
            states = {r.id: r.state for r in history(path=path)}
            assert states == {chatty.id: TaskState.COMPLETED, quick.id: TaskState.COMPLETED}
    finally:
        history_store.close()
    dropped = history_store.dropped_bytes
    stored = get_record(chatty.id, path=path).read_log()
    assert 0 < dropped < size and len(stored) + dropped == size
    assert random.Random(7).randbytes(size).startswith(stored)
    assert get_record(quick.id, path=path).read_log() == b"quick\n"
    assert errors[1:] == [
        f"oneshot_nb: task history is saved to {path} again;"
        f" {dropped:,} bytes of output could not be saved meanwhile"
    ]


@pytest.mark.parametrize(
    ("fault", "lasting"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), True),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (sqlite3.OperationalError("database is locked"), False),
        (sqlite3.OperationalError("database or disk is full"), False),
        (sqlite3.OperationalError("unable to open database file"), True),
        (sqlite3.OperationalError("attempt to write a readonly database"), True),
        (sqlite3.DatabaseError("file is not a database"), True),
        (StoreError("history database is at schema version 3, newer than..."), True),
    ],
    ids=lambda value: str(value),
)
def test_only_what_waiting_cannot_mend_turns_history_off_at_load(fault, lasting):
    """Permission denied, a read-only file, no directory, not a database, a newer
    schema: history off (the user must act). A lock or a full disk: paused."""
    assert lasting_at_load(fault) is lasting
