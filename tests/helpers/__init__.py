"""Helpers for the tests: child commands are `sys.executable -c CODE`, not shell tricks.

A package of its own rather than conftest.py, which nbval's notebooks/conftest.py would
shadow when a test imports from it. Here: commands, waiting for a condition, and the
history database; `processes` reads /proc and checks liveness, `kernel` drives a real
ipykernel, `runners` has runners of our own around the local one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from oneshot_nb import AsyncOrchestrator, OneshotTask
from oneshot_nb.storage.store import Store


def py(code: str) -> list[str]:
    """An argv that runs `code` in a fresh Python: portable, no shell quoting. Without
    `site` (-S): the commands use the standard library only, and start in half the time."""
    return [sys.executable, "-S", "-c", textwrap.dedent(code)]


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


# -- waiting for a condition ----------------------------------------------------------------


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `condition` on the loop until it holds; fail the test after `timeout`."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def wait_for_line(task: Any, line: str, timeout: float = 10.0) -> None:
    """Wait until `task` has written the whole `line`, newline included.

    The newline matters: with PYTHONUNBUFFERED, `print` writes the text and the newline
    separately, and a test that acts on the text alone can race the newline.
    """
    await wait_until(lambda: f"{line}\n" in task.output, timeout)


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `condition` from this thread until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.01)


# -- the history database -------------------------------------------------------------------


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


async def run_in_turn(path: str, *submits: tuple[object, dict]) -> list[OneshotTask]:
    """Run each (command, options) to its end, one after the other, with a store."""
    done = []
    async with stored_orchestrator(path) as (orch, _):
        for command, options in submits:
            task = orch.submit(command, **options)
            await task.wait()
            done.append(task)
    return done


def query(path: str | os.PathLike[str], sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows read through a connection of our own, as another process would see them."""
    db = sqlite3.connect(os.fspath(path))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def fill(directory: str) -> str:
    """Write a file until the disk is full; return its path."""
    filler = os.path.join(directory, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def oneshot(ip: Any, line: str) -> OneshotTask:
    """`%oneshot LINE` in the shell `ip`: the task it returns (a task, or the test fails)."""
    task = ip.run_line_magic("oneshot", line)
    assert isinstance(task, OneshotTask)
    return task
