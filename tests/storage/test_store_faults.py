"""The store when things go wrong, for real: names that are not UTF-8, a row the database
refuses, a lock held too long, a full disk, the file deleted or replaced while in use.
Tasks always run on, and each fault is said once."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterator

import anyio
import pytest
from helpers import fill, py, query, wait_until

from oneshot_nb import AsyncOrchestrator, TaskState, history
from oneshot_nb.storage import database, store, writer
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.store import Store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # "caf\udce9": a name the file system allows
MIB = 1 << 20


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locks time out after 0.1 s, and a paused store tries again every 0.1 s."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(writer, "RETRY_INTERVAL", 0.1)


@contextlib.contextmanager
def locked(path: os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock until the block ends (or it rolls
    back itself)."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield blocker
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()


async def flushed(store: Store) -> bool:
    return await anyio.to_thread.run_sync(store.flush)


# -- 1. strings the file system allows but UTF-8 does not -----------------------------------


async def test_names_that_are_not_utf8_are_stored_as_their_bytes_and_read_back_the_same(
    tmp_path,
):
    """A command, name, cwd and env value holding a file name that is not UTF-8 (as
    os.listdir gives it) made the store raise UnicodeEncodeError and turn history off.
    Now the task runs, history stays on, the file holds the bytes os.fsencode gives,
    and the record reads back the very same strings (so a rerun runs the same thing),
    found by grep too."""
    workdir = tmp_path / NOT_UTF8
    workdir.mkdir()
    (workdir / f"{NOT_UTF8}.txt").write_bytes(b"inside\n")
    [listed] = os.listdir(workdir)
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    store = Store(str(path), on_error=errors.append)
    try:
        async with AsyncOrchestrator() as orch:
            store.attach(orch)
            shell = orch.submit(
                f"cat {listed}", name=f"show {listed}", cwd=workdir, env={"WHICH": listed}
            )
            argv = orch.submit(["cat", listed], cwd=workdir)
            plain = orch.submit(["echo", "plain"])
            for task in (shell, argv, plain):
                assert await task.wait() is TaskState.COMPLETED
    finally:
        store.close()
    assert (store.error, store.fault, store.skipped_records, errors) == (None, None, 0, [])
    record = get_record(shell.id, path=str(path))
    assert (record.command, record.name, record.cwd, record.env) == (
        f"cat {listed}",
        f"show {listed}",
        str(workdir),
        {"WHICH": listed},
    )
    assert get_record(argv.id, path=str(path)).command == ["cat", listed]
    assert query(path, "SELECT command, cwd FROM tasks WHERE id = ?", shell.id) == [
        (os.fsencode(f"cat {listed}"), os.fsencode(workdir))
    ]
    for task in (shell, argv):
        assert get_record(task.id, path=str(path)).read_log() == b"inside\n"
    assert [r.id for r in history(grep=listed, path=str(path))] == [argv.id, shell.id]
    assert [r.id for r in history(grep="plain", path=str(path))] == [plain.id]


async def test_grep_finds_text_that_is_not_ascii_in_an_argv_command(tmp_path):
    """An argv is stored as JSON, which escapes what is not ASCII: grep compared the
    text with the escapes and missed "café" in ["echo", "café"]."""
    path = tmp_path / "history.sqlite3"
    store = Store(str(path))
    try:
        async with AsyncOrchestrator() as orch:
            store.attach(orch)
            task = orch.submit(["echo", "café", 'say "hi"'], name="greeting")
            await task.wait()
    finally:
        store.close()
    for text in ("café", 'café say "hi"'):
        assert [r.id for r in history(grep=text, path=str(path))] == [task.id]


async def test_a_row_the_database_refuses_is_skipped_and_said_once_not_its_batch(tmp_path):
    """A row that cannot be written (here: a chunk whose key is taken already) failed
    its whole transaction and turned history off, losing the other tasks' records.
    Now that row is skipped and said once; the rest of its batch, and all that
    follows, is stored."""
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    store = Store(str(path), on_error=errors.append)
    go = tmp_path / "go"  # they print once this exists
    wait_then_print = (
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
        "print('{}', flush=True)"
    )
    try:
        async with AsyncOrchestrator() as orch:
            store.attach(orch)
            # All print at once, so their rows share a transaction.
            tasks = [orch.submit(py(wait_then_print.format(f"task {i}"))) for i in range(4)]
            refused = tasks[0]
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("INSERT INTO chunks VALUES (?, 0, 'stdout', 0, ?)", (refused.id, b"taken\n"))
            db.close()
            go.touch()
            for task in tasks:
                assert await task.wait() is TaskState.COMPLETED
            later = orch.submit(["echo", "later"])
            await later.wait()
            assert await flushed(store)
    finally:
        store.close()
    assert (store.error, store.skipped_records) == (None, 1)
    assert errors == [
        f"oneshot_nb: a history record of task {refused.id} could not be saved and was"
        " skipped (IntegrityError: UNIQUE constraint failed: chunks.task, chunks.seq)"
    ]
    for i, task in enumerate(tasks[1:], 1):
        assert get_record(task.id, path=str(path)).read_log() == f"task {i}\n".encode()
    record = get_record(refused.id, path=str(path))
    assert (record.state, record.read_log()) == (TaskState.COMPLETED, b"taken\n")
    assert get_record(later.id, path=str(path)).read_log() == b"later\n"


# -- 3. transient faults: history pauses and resumes ----------------------------------------


async def test_a_lock_held_past_the_busy_timeout_pauses_history_until_it_goes(
    tmp_path, quick_retries
):
    """A database locked by another process for longer than the busy timeout turned
    history off for good. Now history pauses (said once), flush() does not hang, tasks
    run on, and once the lock goes everything is written and that is said once too."""
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    store = Store(str(path), on_error=errors.append)
    try:
        async with AsyncOrchestrator() as orch:
            store.attach(orch)
            with locked(path):
                during = [orch.submit(["echo", f"during {i}"]) for i in range(3)]
                for task in during:
                    assert await task.wait() is TaskState.COMPLETED
                await wait_until(lambda: store.fault is not None)
                asked = time.monotonic()
                assert store.flush(timeout=5) is False
                assert time.monotonic() - asked < 1  # at once: a reader does not wait
                await anyio.sleep(0.3)  # a few failed retries: still said only once
            await wait_until(lambda: store.fault is None)
            after = orch.submit(["echo", "after"])
            await after.wait()
            assert await flushed(store)
    finally:
        store.close()
    assert store.error is None
    assert errors == [
        f"oneshot_nb: task history cannot be saved to {path} for now (OperationalError:"
        " database is locked); tasks run on, and it tries again every 0.1 s",
        f"oneshot_nb: task history is saved to {path} again; nothing lost",
    ]
    for task in [*during, after]:
        record = get_record(task.id, path=str(path))
        assert (record.state, record.read_log()) == (TaskState.COMPLETED, task.output.encode())
        assert [t[2] for t in record.transitions()] == ["RUNNING", "COMPLETED"]


async def test_output_past_the_bound_while_paused_is_dropped_counted_and_said(
    tmp_path, quick_retries, monkeypatch
):
    """While history is paused, a chatty task is not held back (the fault may last),
    memory stays bounded: output beyond HIGH_WATER is dropped, counted, and said when
    history resumes; what was kept is stored, in order."""
    monkeypatch.setattr(store, "HIGH_WATER", 256 << 10)
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    history_store = Store(str(path), on_error=errors.append)
    code = """
        import sys, time
        for i in range(64):
            sys.stdout.buffer.write(bytes([65 + i % 26]) * 65536)
            sys.stdout.buffer.flush()
            time.sleep(0.002)
    """
    try:
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            with locked(path):
                first = orch.submit(["echo", "first"])
                await wait_until(lambda: history_store.fault is not None)
                chatty = orch.submit(py(code))
                with anyio.fail_after(20):
                    assert await chatty.wait() is TaskState.COMPLETED
                assert history_store.queued_bytes <= (256 << 10) + 65536
            await wait_until(lambda: history_store.fault is None)
            assert await flushed(history_store)
    finally:
        history_store.close()
    dropped = history_store.dropped_bytes
    assert 0 < dropped < 4 * MIB
    assert errors[1:] == [
        f"oneshot_nb: task history is saved to {path} again;"
        f" {dropped:,} bytes of output could not be saved meanwhile"
    ]
    stored = get_record(chatty.id, path=str(path)).read_log()
    assert len(stored) + dropped == 4 * MIB
    expected = b"".join(bytes([65 + i % 26]) * 65536 for i in range(64))
    assert expected.startswith(stored)  # the oldest output is what was kept
    assert get_record(first.id, path=str(path)).read_log() == b"first\n"


async def test_a_full_disk_pauses_history_until_space_is_freed(small_disk, quick_retries):
    """A full disk turned history off for good. Now it pauses, the task runs to its
    end, and once space is freed its whole output is stored."""
    path = os.path.join(small_disk, "history.sqlite3")
    errors: list[str] = []
    history_store = Store(path, on_error=errors.append)
    make = f"random.Random(7).randbytes({MIB})"
    payload = random.Random(7).randbytes(MIB)  # incompressible, like a real log's worst
    try:
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            filler = fill(small_disk)
            task = orch.submit(py(f"import random, sys; sys.stdout.buffer.write({make})"))
            assert await task.wait() is TaskState.COMPLETED
            await wait_until(lambda: history_store.fault is not None)
            os.unlink(filler)
            await wait_until(lambda: history_store.fault is None)
            assert await flushed(history_store)
        assert get_record(task.id, path=path).read_log() == payload
    finally:
        history_store.close()
    assert history_store.error is None
    paused, resumed = errors
    assert paused.startswith(f"oneshot_nb: task history cannot be saved to {path} for now (")
    assert "full" in paused or "I/O" in paused
    assert resumed == f"oneshot_nb: task history is saved to {path} again; nothing lost"


# -- 2. the file deleted or replaced while in use -------------------------------------------


@pytest.mark.parametrize("deleted", ["the file", "the file, its -wal and -shm"])
async def test_a_database_deleted_while_in_use_is_created_again_and_history_goes_on(
    tmp_path, deleted
):
    """Deleting the file while a kernel wrote to it sent every later write into the
    deleted file, lost at exit. Now a new file is created (said once), later tasks are
    in it, and so is a task that was running (recovery would find it), with its state
    and pid start time."""
    path = tmp_path / "history.sqlite3"
    errors: list[str] = []
    history_store = Store(str(path), on_error=errors.append)
    try:
        async with AsyncOrchestrator(grace=0.5) as orch:
            history_store.attach(orch)
            running = orch.submit(py("import time; print('up', flush=True); time.sleep(60)"))
            before = orch.submit(["echo", "before"])
            await before.wait()
            await wait_until(lambda: running.bytes_written["stdout"] > 0)
            assert await flushed(history_store)
            for suffix in ("", "-wal", "-shm") if deleted != "the file" else ("",):
                os.unlink(f"{path}{suffix}")
            after = orch.submit(["echo", "after"])
            await after.wait()
            assert await flushed(history_store)
            assert {r.id for r in history(path=str(path))} == {running.id, after.id}
            [(pid_start,)] = query(path, "SELECT pid_start FROM tasks WHERE id = ?", running.id)
            assert pid_start is not None
            running.stop()
            await running.wait()
    finally:
        history_store.close()
    assert history_store.error is None
    assert errors == [
        f"oneshot_nb: {path} was deleted while in use; task history goes on in the file"
        " there now (without what the old one held)"
    ]
    assert query(path, "SELECT id FROM sessions") == [(history_store.session,)]
    assert get_record(after.id, path=str(path)).read_log() == b"after\n"
    assert get_record(running.id, path=str(path)).state is TaskState.INTERRUPTED
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("how", ["in place", "by rename"])
async def test_a_database_replaced_by_garbage_turns_history_off_with_one_line(tmp_path, how):
    """A file overwritten with something that is not a database: history is off, said
    once, tasks run on, and the reads raise one StoreError line, not sqlite3's."""
    path = tmp_path / "history.sqlite3"
    garbage = b"this is not a database\n" * 100
    errors: list[str] = []
    history_store = Store(str(path), on_error=errors.append)
    try:
        async with AsyncOrchestrator() as orch:
            history_store.attach(orch)
            await orch.submit(["echo", "before"]).wait()
            assert await flushed(history_store)
            if how == "in place":
                path.write_bytes(garbage)
            else:
                (tmp_path / "garbage").write_bytes(garbage)
                os.replace(tmp_path / "garbage", path)
            after = orch.submit(["echo", "after"])
            assert await after.wait() is TaskState.COMPLETED
            await wait_until(lambda: history_store.error is not None)
    finally:
        history_store.close()
    reason = (
        f"{path} was overwritten by something not a database"
        if how == "in place"
        else f"{path} is not a database now (file is not a database)"
    )
    assert errors == [f"oneshot_nb: task history is no longer saved to {path} ({reason})"]
    if how == "by rename":
        assert path.read_bytes() == garbage
        with pytest.raises(
            database.StoreError,
            match=r"^cannot read the task history at .*"
            r": file is not a database$",
        ):
            history(path=str(path))


# -- 4. said once, where the user looks -----------------------------------------------------


async def test_a_fault_is_only_logged_at_debug_level_when_on_error_says_it(
    tmp_path, quick_retries, caplog
):
    """A warning logged on the store's thread prints into whatever cell runs, and the
    magics print the same line again: with on_error set, the log gets it at debug level
    only; without, it is a warning (nobody else would say it)."""
    caplog.set_level(logging.DEBUG, logger="oneshot_nb")
    for on_error in ([].append, None):
        path = tmp_path / f"{on_error is None}.sqlite3"
        history_store = Store(str(path), on_error=on_error)
        try:
            async with AsyncOrchestrator() as orch:
                history_store.attach(orch)
                with locked(path):
                    await orch.submit(["true"]).wait()
                    await wait_until(lambda s=history_store: s.fault is not None)
        finally:
            history_store.close()
    paused = [r for r in caplog.records if "cannot be saved" in r.getMessage()]
    assert [r.levelno for r in paused] == [logging.DEBUG, logging.WARNING]
