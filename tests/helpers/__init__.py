"""Helpers for the tests: child commands are `sys.executable -c CODE`, not shell tricks.

A module of its own rather than conftest.py, which nbval's notebooks/conftest.py would
shadow when a test imports from it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from oneshot_nb import AsyncOrchestrator
from oneshot_nb.storage.store import Store


def py(code: str) -> list[str]:
    """An argv that runs `code` in a fresh Python: portable, no shell quoting."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie waiting for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    return all(process_gone(int(p)) for p in _pids_in_group(pgid))


def _pids_in_group(pgid: int) -> list[str]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(entry)
    return pids


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `condition` on the loop until it holds; fail the test after `timeout`."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


@contextlib.asynccontextmanager
async def stored_orchestrator(
    path: str | os.PathLike[str], **options: Any
) -> AsyncIterator[tuple[AsyncOrchestrator, Store]]:
    """An orchestrator whose tasks a Store at `path` records. Leaving the block closes
    the store, so everything recorded is committed."""
    store = Store(os.fspath(path))
    try:
        async with AsyncOrchestrator(**options) as orchestrator:
            store.attach(orchestrator)
            yield orchestrator, store
    finally:
        store.close()


def query(path: str | os.PathLike[str], sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows read through a connection of our own, as another process would see them."""
    db = sqlite3.connect(os.fspath(path))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def wait_for_line(task: Any, line: str, timeout: float = 10.0) -> None:
    """Wait until `task` has written the whole `line`, newline included.

    The newline matters: with PYTHONUNBUFFERED, `print` writes the text and the newline
    separately, and a test that acts on the text alone can race the newline.
    """
    await wait_until(lambda: f"{line}\n" in task.output, timeout)


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that have not exited (zombies have: they only wait for
    a parent to reap them, and an orphan's parent here is PID 1, which may never)."""
    return [int(pid) for pid in _pids_in_group(pgid) if not process_gone(int(pid))]


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `condition` from this thread until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.01)


def reaped(pid: int) -> bool:
    """True when `pid` is not a child of ours waiting to be reaped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def parent_of_a_sleeper(pid_file: os.PathLike[str]) -> str:
    """Python code that starts a child which writes its pid to `pid_file` (atomically)
    and sleeps, then sleeps itself: a process with a descendant to look for."""
    path = os.fspath(pid_file)
    child = f"""
        import os, time
        with open({path + ".tmp"!r}, "w") as f:
            f.write(str(os.getpid()))
        os.rename({path + ".tmp"!r}, {path!r})
        time.sleep(100)
    """
    return f"""
        import subprocess, time
        subprocess.Popen({py(child)!r})
        time.sleep(100)
    """
