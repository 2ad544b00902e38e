"""The local runner: commands run on this machine, each in a session of its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import anyio

from . import procfs
from .base import Command, Orphan, Place
from .pipes import PipeStream
from .stdin import InputPipe
from .terminal import (
    TERM,
    NoStream,
    TerminalStream,
    foreground_group,
    open_terminal,
    take_terminal,
)
from .terminate import ProcessGroup, end_groups_now

HOST = os.uname().nodename


class LocalRunner:
    """Runs commands on this machine: each in a new session (so one signal reaches
    every process it starts), stdin closed, stdout and stderr through pipes that share
    a budget (see pipes.py), its exit awaited on a pidfd."""

    name = "local"
    host = HOST
    features = frozenset({"pty", "stdin"})  # what options a task may ask of it

    async def start(
        self, command: Command, cwd: str | None, env: Mapping[str, str], options: Any = None
    ) -> Child:
        if getattr(options, "pty", False):
            return spawn_in_terminal(command, cwd, env, options.cols, options.rows)
        return await spawn(command, cwd, env, stdin=getattr(options, "stdin", False))

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
        self,
        popen: subprocess.Popen[bytes],
        stdout: PipeStream | TerminalStream,
        stderr: PipeStream | NoStream,
        stdin: InputPipe | None = None,
        input_file: str | None = None,
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin  # None: its stdin is closed
        # Its input as /proc/PID/fd links name it: the pipe, or the terminal (which a
        # program that asks for a password opens as /dev/tty).
        self._input_files = () if input_file is None else (input_file,)
        if input_file is not None and isinstance(stdout, TerminalStream):
            self._input_files += ("/dev/tty",)
        self.returncode: int | None = None
        # Once reaped: its CPU seconds (with its reaped children's) and peak RSS, bytes.
        self.exit_usage: tuple[float, int] | None = None
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

    def waiting_for_input(self) -> bool | None:
        """Whether the command is blocked reading its input: a process of the group the
        terminal runs in the foreground (of its own group, for a pipe) in a read of it.
        None where the system cannot tell."""
        if self.stdin is None or not self._input_files:
            return False
        group: int | None = self.pid
        if isinstance(self.stdout, TerminalStream) and self.stdout.fd >= 0:
            group = foreground_group(self.stdout.fd)
        if group is None:
            return None
        return procfs.waiting_for_input(group, self._input_files, leader=self.pid)

    async def wait(self) -> int:
        """Wait for the process to exit and reap it; return its exit code (negative:
        the signal that killed it). Cancelling the wait leaves the process alone."""
        async with self._one_waiter:
            if self.returncode is None:
                await self._wait_for_exit()
                self.returncode = self._reap()
                self._close_pidfd()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> int:
        """Reap the exited process; its exit code. Through wait4, for what its reaping
        says it cost (`exit_usage`): its CPU time and its children's that it reaped,
        exact where samples taken a second apart are not."""
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # reaped already (the thread of the fallback wait)
            return self._popen.wait()
        code = os.waitstatus_to_exitcode(status)
        self._popen.returncode = code
        # ru_maxrss is kept too, though a fork carries its parent's peak until it execs.
        self.exit_usage = (usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)
        return code

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
            if self.stdin is not None:
                self.stdin.abort()
            await self.stdout.aclose()
            await self.stderr.aclose()
        await self.wait()


async def spawn(
    command: Command,
    cwd: str | None,
    env: Mapping[str, str] | None,
    pipe_size: int | None = None,
    stdin: bool = False,
) -> Child:
    """Start `command` with stdin closed (a pipe with `stdin`), stdout and stderr piped,
    in a new session.

    A new session makes the process the leader of its own group, so one signal reaches
    every process the command starts; closed stdin makes a command that reads input see
    EOF instead of waiting for ever. A string runs through the shell, like IPython's `!`.
    `env` is the whole environment (None: this process's). `pipe_size` gives each
    pipe a size of its own instead of a share of the budget (see pipes.py): a Dask
    worker, which has no notebook to keep responsive, reads fewer, larger chunks.
    Spawning blocks the loop
    for as long as fork and exec take, as asyncio's does.
    """
    with contextlib.ExitStack() as ours, contextlib.ExitStack() as theirs:
        # The child has its own copies of its ends (`theirs`), closed here whatever
        # happens: ours would keep the pipes from ever ending. Our ends (`ours`) are
        # closed only if it cannot start.
        out_read = _pipe(theirs)
        stdout = PipeStream(out_read.ours, pipe_size)  # sized before use
        ours.callback(stdout.close)
        err_read = _pipe(theirs)
        stderr = PipeStream(err_read.ours, pipe_size)
        ours.callback(stderr.close)
        in_write = _pipe(theirs, child_reads=True) if stdin else None
        if in_write is not None:
            ours.callback(os.close, in_write.ours)
        popen = subprocess.Popen(
            command if isinstance(command, str) else list(command),
            shell=isinstance(command, str),
            stdin=subprocess.DEVNULL if in_write is None else in_write.theirs,
            stdout=out_read.theirs,
            stderr=err_read.theirs,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        ours.pop_all()
    if in_write is None:
        return Child(popen, stdout, stderr)
    return Child(popen, stdout, stderr, InputPipe(in_write.ours), _fd_link(in_write.ours))


class _Ends(NamedTuple):
    ours: int
    theirs: int


def _pipe(theirs: contextlib.ExitStack, child_reads: bool = False) -> _Ends:
    """A pipe: our end, and the child's (the write end, or the read end when it reads),
    which `theirs` closes."""
    read, write = os.pipe()
    ends = _Ends(write, read) if child_reads else _Ends(read, write)
    theirs.callback(os.close, ends.theirs)
    return ends


def spawn_in_terminal(
    command: Command, cwd: str | None, env: Mapping[str, str] | None, cols: int, rows: int
) -> Child:
    """Start `command` in a new session whose controlling terminal is a new pty of
    `cols` x `rows`: its stdin, stdout and stderr; TERM says what it is.

    The terminal's session is the command's group: a stop reaches every process in it,
    and when the command exits the terminal sends SIGHUP to what it left in the
    foreground, as a closed terminal window does.
    """
    master, slave = open_terminal(cols, rows)
    writer = -1
    try:
        slave_name = os.ttyname(slave)
        writer = os.dup(master)
        environment = dict(os.environ if env is None else env, TERM=TERM)
        popen = subprocess.Popen(
            command if isinstance(command, str) else list(command),
            shell=isinstance(command, str),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=environment,
            start_new_session=True,
            preexec_fn=take_terminal,  # after setsid, before exec
        )
    except BaseException:
        os.close(master)
        if writer >= 0:
            os.close(writer)
        raise
    finally:
        os.close(slave)  # or the terminal would never end: we would hold it open
    return Child(
        popen, TerminalStream(master), NoStream(), InputPipe(writer, terminal=True), slave_name
    )


def _fd_link(fd: int) -> str | None:
    """What /proc/PID/fd/N reads for `fd` in any process that has it ('pipe:[123]')."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
