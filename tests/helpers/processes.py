"""Processes as /proc and the kernel see them: the one place the tests read /proc or
call kill(2) to ask whether something is alive (signals they send to act are theirs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def process_state(pid: int) -> str | None:
    """The state letter of `pid` in /proc (R, S, T, Z...), or None when it has none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie waiting for init counts as gone)."""
    return process_state(pid) in (None, "Z", "X")


def pid_exists(pid: int) -> bool:
    """True while the kernel knows `pid`, a zombie not yet reaped included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_exists(pgid: int) -> bool:
    """True while the kernel knows process group `pgid`, were its members all zombies."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    return all(process_gone(int(p)) for p in _pids_in_group(pgid))


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that have not exited (zombies have: they only wait for
    a parent to reap them, and an orphan's parent here is PID 1, which may never)."""
    return [int(pid) for pid in _pids_in_group(pgid) if not process_gone(int(pid))]


def _pids_in_group(pgid: int) -> list[str]:
    return pids_where(PGRP, pgid)


# Fields of /proc/PID/stat after the command name.
PPID, PGRP = 1, 2


def pids_where(field: int, value: int) -> list[str]:
    """The pids whose /proc/PID/stat has `value` in `field` (PPID, PGRP)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[field]) == value:
                pids.append(entry)
    return pids


def reaped(pid: int) -> bool:
    """True when `pid` is not a child of ours waiting to be reaped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def our_zombies() -> list[int]:
    """Pids in /proc that are zombies whose parent is this process."""
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry))
    return zombies


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def exited_pid() -> int:
    """The pid of a process that has exited and been reaped: a dead kernel's."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def kill_group(pgid: int) -> None:
    """SIGKILL group `pgid` if it is still there: clean-up after a test that failed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
