"""Reading /proc (Linux): which processes run, which group they are in, since when.

The one place that reads it. Elsewhere there is no /proc, and each function says what
it answers then.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection

HAS_PROC = os.path.isdir("/proc/self")

# Stops poll together: one look at /proc serves them all (and the IDLE tasks that ask
# whether they wait for input, which may take an older one).
SCAN_TTL = 0.02
MEMBERS_TTL = 0.5
_scan: tuple[float, dict[int, list[int]] | None] = (float("-inf"), None)


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
    groups = _groups(0.0 if fresh else SCAN_TTL)
    return None if groups is None else frozenset(groups)


def _groups(ttl: float) -> dict[int, list[int]] | None:
    """Each process group with a live member, and those members (a look at /proc
    younger than `ttl` is reused); None where /proc cannot tell."""
    global _scan
    now = time.monotonic()
    if now - _scan[0] < ttl:
        return _scan[1]
    try:
        entries = os.listdir("/proc")
    except OSError:
        _scan = (now, None)
        return None
    groups: dict[int, list[int]] = {}
    for entry in entries:
        if entry.isdigit():
            try:
                fields = _stat(int(entry))
            except (OSError, ValueError):
                continue
            if fields[0] not in (b"Z", b"X"):
                groups.setdefault(int(fields[2]), []).append(int(entry))
    _scan = (now, groups)
    return groups


# The system calls that read a file descriptor (read, pread64, readv), by machine: a
# process blocked in one of them on a task's input is waiting for input.
_READ_CALLS = {"x86_64": {0, 17, 19}, "aarch64": {63, 65, 67}}.get(os.uname().machine)
# Where a process sleeps while it reads a terminal or a pipe, for machines whose system
# call numbers are not known here.
_READ_WAITS = {"n_tty_read", "wait_woken", "pipe_read", "anon_pipe_read", "pipe_wait"}


def members(group: int) -> list[int]:
    """The live processes of process group `group`, as a look at /proc younger than
    MEMBERS_TTL saw them (a fresh look for a group that one did not see: it may be
    newer than the look)."""
    groups = _groups(MEMBERS_TTL)
    if groups is not None and group not in groups:
        groups = _groups(0.0)
    return [] if groups is None else groups.get(group, [])


def reading(pid: int, targets: Collection[str]) -> bool | None:
    """Whether a thread of `pid` is blocked reading one of the files `targets` (as the
    /proc/PID/fd/N links read: '/dev/pts/3', '/dev/tty', 'pipe:[123]'); None where the
    system does not tell."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        for tid in threads:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                call = f.read().split()
            if not call or call[0] == "running":
                continue
            if _READ_CALLS is not None:
                if int(call[0]) in _READ_CALLS and _fd_file(pid, int(call[1], 16)) in targets:
                    return True
                continue
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                if f.read().strip() in _READ_WAITS:
                    return os.readlink(f"/proc/{pid}/fd/0") in targets
        return False
    except FileNotFoundError:  # it has just exited
        return False
    except (OSError, ValueError, IndexError):
        return None


def _fd_file(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def tree(pid: int) -> list[int] | None:
    """`pid` and its descendants, through /proc/PID/task/TID/children: a look that
    costs what the tree holds, not what the machine runs (a scan of /proc took 57 ms
    with 3,000 processes). None where the system has no such files."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:  # it has just exited
            continue
        except OSError:
            return None
        for tid in threads:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except FileNotFoundError:
                if not os.path.exists(f"/proc/{current}"):
                    break
                return None  # no CONFIG_PROC_CHILDREN
            except (OSError, ValueError):
                return None
    return found


def in_group(pids: list[int], group: int, zombies: bool = False) -> list[int]:
    """Those of `pids` in process group `group`, zombies left out unless `zombies`."""
    kept = []
    for pid in pids:
        try:
            fields = _stat(pid)
        except (OSError, ValueError):
            continue
        if int(fields[2]) == group and (zombies or fields[0] not in (b"Z", b"X")):
            kept.append(pid)
    return kept


def waiting_for_input(
    group: int, targets: Collection[str], leader: int | None = None
) -> bool | None:
    """Whether a process of `group` is blocked reading one of `targets`; None where the
    system cannot tell (no /proc, /proc/PID/syscall not readable). With `leader`, the
    group's processes are looked for among its descendants (a process that left its
    tree is not seen), else in a scan of /proc."""
    descendants = tree(leader) if leader is not None else None
    pids = members(group) if descendants is None else in_group(descendants, group)
    answers = [reading(pid, targets) for pid in pids]
    if any(answers):
        return True
    return None if not answers or None in answers else False
