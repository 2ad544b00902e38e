"""Reading /proc (Linux): which processes run, which group they are in, since when.

The one place that reads it. Elsewhere there is no /proc, and each function says what
it answers then.
"""

from __future__ import annotations

import os
import time

HAS_PROC = os.path.isdir("/proc/self")

# Stops poll together: one look at /proc serves them all.
SCAN_TTL = 0.02
_scan: tuple[float, frozenset[int] | None] = (float("-inf"), None)


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): [state, ppid, pgrp, ...]. OSError when there is no such process."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    if len(fields) < 20:
        raise OSError(f"/proc/{pid}/stat is too short")
    return fields


def start_time(pid: int, zombies: bool = False) -> int | None:
    """When `pid` started, in clock ticks since boot, or None if it is gone (a zombie,
    dead but not yet reaped, counts as gone unless `zombies`). A pid with the same start
    time is the same process; a reused pid is not."""
    try:
        fields = _stat(pid)
    except (OSError, ValueError):
        return None
    if fields[0] in (b"Z", b"X") and not zombies:
        return None
    return int(fields[19])


def exists(pid: int) -> bool | None:
    """Whether a process (zombies too) has this pid; None where /proc cannot tell."""
    if not HAS_PROC:
        return None
    return os.path.exists(f"/proc/{pid}")


def running_groups(fresh: bool = False) -> frozenset[int] | None:
    """The process groups that have a member that is not a zombie, or None where /proc
    cannot tell. A look younger than SCAN_TTL is reused unless `fresh`."""
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
                fields = _stat(int(entry))
            except (OSError, ValueError):
                continue
            if fields[0] not in (b"Z", b"X"):
                groups.add(int(fields[2]))
    _scan = (now, frozenset(groups))
    return _scan[1]


# The system calls that read a file descriptor (read, pread64, readv), by machine: a
# process blocked in one of them on a task's input is waiting for input.
_READ_CALLS = {"x86_64": {0, 17, 19}, "aarch64": {63, 65, 67}}.get(os.uname().machine)
# Where a process sleeps while it reads a terminal or a pipe, for machines whose system
# call numbers are not known here.
_READ_WAITS = {"n_tty_read", "wait_woken", "pipe_read", "anon_pipe_read", "pipe_wait"}


def members(group: int) -> list[int]:
    """The live processes of process group `group` (zombies left out)."""
    if not HAS_PROC:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(int(entry))
            except (OSError, ValueError):
                continue
            if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
                found.append(int(entry))
    return found


def reading(pid: int, target: str) -> bool | None:
    """Whether `pid` is blocked reading the file `target` (as /proc/PID/fd/N links read:
    '/dev/pts/3', 'pipe:[123]'); None where the system does not tell."""
    try:
        if _stat(pid)[0] != b"S":
            return False
        with open(f"/proc/{pid}/syscall") as f:
            call = f.read().split()
        if call and call[0] == "running":
            return False
        if _READ_CALLS is not None and call:
            if int(call[0]) not in _READ_CALLS:
                return False
            return os.readlink(f"/proc/{pid}/fd/{int(call[1], 16)}") == target
        with open(f"/proc/{pid}/wchan") as f:
            waits = f.read().strip() in _READ_WAITS
        return waits and os.readlink(f"/proc/{pid}/fd/0") == target
    except FileNotFoundError:  # it has just exited
        return False
    except (OSError, ValueError, IndexError):
        return None


def waiting_for_input(group: int, target: str) -> bool | None:
    """Whether a process of `group` is blocked reading `target`; None where the system
    cannot tell (no /proc, /proc/PID/syscall not readable)."""
    answers = [reading(pid, target) for pid in members(group)]
    if any(answers):
        return True
    return None if not answers or None in answers else False
