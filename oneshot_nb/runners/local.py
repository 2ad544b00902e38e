"""Spawning a command in its own session and signalling its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import anyio

from .pipes import PipeStream


class Child:
    """A spawned command: its process, and the read ends of its stdout and stderr.

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
        self._one_waiter = anyio.Lock()  # a pidfd takes one waiter at a time
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # an old kernel, or a sandbox that refuses
                self._pidfd = os.pidfd_open(popen.pid)

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
    command: str | Sequence[str], cwd: str | None, env: Mapping[str, str] | None
) -> Child:
    """Start `command` with stdin closed, stdout and stderr piped, in a new session.

    A new session makes the process the leader of its own group, so one signal reaches
    every process the command starts; closed stdin makes a command that reads input see
    EOF instead of waiting for ever. A string runs through the shell, like IPython's `!`.
    `env` is the whole environment (None: this process's). Spawning blocks the loop
    for as long as fork and exec take, as asyncio's does.
    """
    out_read, out_write = os.pipe()
    try:
        err_read, err_write = os.pipe()
    except OSError:
        os.close(out_read)
        os.close(out_write)
        raise
    stdout, stderr = PipeStream(out_read), PipeStream(err_read)  # sized before use
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


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to process group `pgid`; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # On some systems a group whose only member is a zombie answers EPERM.
        return False
    return True


def terminate_group(pgid: int) -> bool:
    """SIGTERM to group `pgid`, then SIGCONT, so that a member stopped with SIGSTOP (or
    Ctrl-Z's SIGTSTP) runs and can act on the SIGTERM instead of holding it pending until
    the grace runs out. False when the group no longer exists."""
    if not signal_group(pgid, signal.SIGTERM):
        return False
    signal_group(pgid, signal.SIGCONT)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs.

    A zombie does not count: it has exited and only waits for its parent to reap it.
    Orphans are reaped by init, which in some containers and VMs does so late or
    never; counting their zombies would make every stop wait out its whole grace.
    """
    if not signal_group(pgid, 0):
        return False
    running = _running_groups(fresh=False)
    if running is not None and pgid not in running:
        # A recent look may predate the group: only a fresh one may call it gone.
        running = _running_groups(fresh=True)
    return running is None or pgid in running


_scan: tuple[float, frozenset[int] | None] = (float("-inf"), None)
SCAN_TTL = 0.02  # stops poll together: one look at /proc serves them all


def _running_groups(fresh: bool) -> frozenset[int] | None:
    """The groups that have a member that is not a zombie (Linux /proc), or None where
    /proc cannot tell."""
    global _scan
    now = time.monotonic()
    if not fresh and now - _scan[0] < SCAN_TTL:
        return _scan[1]
    try:
        entries = os.listdir("/proc")
    except OSError:
        _scan = (now, None)
        return None
    groups = set()
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] not in (b"Z", b"X"):
                groups.add(int(fields[2]))
    _scan = (now, frozenset(groups))
    return _scan[1]


class ProcessGroup:
    """What the state machine terminates: every process in the task's group."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.terminate_requested = False
        # Set once the group was seen gone: its id may then be handed to another
        # process group, which must never get our signals.
        self.gone = False

    def terminate(self) -> None:
        self.terminate_requested = True
        if not self.gone:
            terminate_group(self.pgid)

    def kill(self) -> None:
        if not self.gone:
            signal_group(self.pgid, signal.SIGKILL)

    def alive(self) -> bool:
        if not self.gone and not group_alive(self.pgid):
            self.gone = True
        return not self.gone


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (Linux), or None if it is gone.

    A pid with the same start time is the same process; a reused pid is not. A zombie
    (dead, not yet reaped by its parent) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])
