"""The local runner: commands run on this machine, each in a session of its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from . import procfs
from .base import Command, Orphan, Place
from .pipes import PipeStream
from .terminate import ProcessGroup, end_groups_now

HOST = os.uname().nodename


class LocalRunner:
    """Runs commands on this machine: each in a new session (so one signal reaches
    every process it starts), stdin closed, stdout and stderr through pipes that share
    a budget (see pipes.py), its exit awaited on a pidfd."""

    name = "local"
    host = HOST

    async def start(
        self, command: Command, cwd: str | None, env: Mapping[str, str], options: Any = None
    ) -> Child:
        return await spawn(command, cwd, env)

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        """End what still runs of the orphans of this host (the termination policy,
        each with its grace), and return them all; those of other hosts are not ours.

        A group is signalled only when its leader is the very process the task started
        (same pid and start time, zombie or not), or when no process has that pid any
        more (the group's other members keep its id, which the system then cannot hand
        out again). Where start times cannot be read, nothing is signalled.
        """
        ours = [o for o in orphans if o.place.host == HOST]
        groups = {
            ProcessGroup(o.place.pid): o.grace
            for o in ours
            if o.place.pid is not None and _same_leader(o.place.pid, o.place.start)
        }
        end_groups_now(groups)
        return ours

    def __repr__(self) -> str:
        return "LocalRunner()"


def _same_leader(pid: int, start: int | None) -> bool:
    # Never 0 or below (killpg would reach our own group, or fail), nor init, nor the
    # group this process is in: a history file is data, whoever wrote it.
    if not isinstance(pid, int) or pid <= 1 or pid in _own_lineage():
        return False
    if start is None or not procfs.HAS_PROC:
        return False
    if not procfs.exists(pid):
        return True
    return procfs.start_time(pid, zombies=True) == start


def _own_lineage() -> set[int]:
    """This process, its group, its session and its parent: what no history row may
    have signalled, whatever start time it gives."""
    return {os.getpid(), os.getpgrp(), os.getsid(0), os.getppid()}


def is_running(pid: int, start: int | None) -> bool:
    """Whether the process `pid` that started at `start` still runs here (a zombie
    does not). Without a start time, or without /proc, any process with that pid
    counts."""
    if start is None or not procfs.HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return procfs.start_time(pid) == start


class Child:
    """A command the local runner started (its `Handle`): its process, the read ends of
    its stdout and stderr, and its process group.

    Its exit is awaited on a pidfd (Linux 5.3+) that the event loop watches, as trio
    does: no thread per process, which asyncio's default child watcher starts for every
    spawn (starting it took about a fifth of a spawn's time). Where there is no pidfd,
    a thread waits.
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], stdout: PipeStream, stderr: PipeStream
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self.group = ProcessGroup(popen.pid)
        self._place: Place | None = None
        self._one_waiter = anyio.Lock()  # a pidfd takes one waiter at a time
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # an old kernel, or a sandbox that refuses
                self._pidfd = os.pidfd_open(popen.pid)

    def place(self) -> Place:
        if self._place is None:
            # Read once, while it runs: a start time read after it is reaped would be
            # None, and recovery could not tell it from a later process with its pid.
            self._place = Place("local", HOST, self.pid, procfs.start_time(self.pid))
        return self._place

    async def wait(self) -> int:
        """Wait for the process to exit and reap it; return its exit code (negative:
        the signal that killed it). Cancelling the wait leaves the process alone."""
        async with self._one_waiter:
            if self.returncode is None:
                await self._wait_for_exit()
                self.returncode = self._popen.wait()  # it has exited: this only reaps
                self._close_pidfd()
        assert self.returncode is not None
        return self.returncode

    async def _wait_for_exit(self) -> None:
        if self._pidfd is not None:
            await anyio.wait_readable(self._pidfd)
        else:
            # A limiter of its own: anyio's default lets 40 threads run at once, and a
            # 41st process would not be reaped until one of those ended.
            await anyio.to_thread.run_sync(
                self._popen.wait, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
            )

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def aclose(self) -> None:
        """Close the pipes, then wait for the process to exit."""
        with anyio.CancelScope(shield=True):
            await self.stdout.aclose()
            await self.stderr.aclose()
        await self.wait()


async def spawn(
    command: Command,
    cwd: str | None,
    env: Mapping[str, str] | None,
    pipe_size: int | None = None,
) -> Child:
    """Start `command` with stdin closed, stdout and stderr piped, in a new session.

    A new session makes the process the leader of its own group, so one signal reaches
    every process the command starts; closed stdin makes a command that reads input see
    EOF instead of waiting for ever. A string runs through the shell, like IPython's `!`.
    `env` is the whole environment (None: this process's). `pipe_size` gives each
    pipe a size of its own instead of a share of the budget (see pipes.py): a Dask
    worker, which has no notebook to keep responsive, reads fewer, larger chunks.
    Spawning blocks the loop
    for as long as fork and exec take, as asyncio's does.
    """
    out_read, out_write = os.pipe()
    try:
        err_read, err_write = os.pipe()
    except OSError:
        os.close(out_read)
        os.close(out_write)
        raise
    stdout = PipeStream(out_read, pipe_size)  # sized before use
    stderr = PipeStream(err_read, pipe_size)
    try:
        popen = subprocess.Popen(
            command if isinstance(command, str) else list(command),
            shell=isinstance(command, str),
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        stdout.close()
        stderr.close()
        raise
    finally:
        # The child has its own copies of the write ends; ours would keep the pipes
        # from ever ending.
        os.close(out_write)
        os.close(err_write)
    return Child(popen, stdout, stderr)
