"""What a process group of this machine costs: its CPU time and resident memory.

Read through psutil, a process at a time, for the members found in the group leader's
tree (see `members`). A sample blocks on a few reads of /proc per member, about 70 µs
in all here: call it off the event loop, unless the group is gone (then it reads
nothing).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

from . import procfs

# How far to follow the parents of processes gone since the last sample (a shell of a
# shell of a shell...) to find a member that took in their CPU time.
MAX_HOPS = 64


@dataclass(frozen=True, slots=True)
class GroupUsage:
    """A process group's cost as one sample reads it."""

    cpu_seconds: float  # user + system CPU time of the group so far; never goes down
    rss: int  # resident memory of its live processes, summed (bytes); 0 once it is gone


class GroupMeter:
    """Follows one process group's CPU time and memory from sample to sample.

    CPU time: each live member's own (user + system) plus what it has taken in from the
    children it reaped (psutil's children_user and children_system, which hold the
    whole subtree a child had reaped in turn). A member that is gone is then counted
    either by an ancestor in the group that reaps it (a shell that waited for its
    command: its time moves there) or, when none does (the group's leader, which the
    runner reaps; an orphan that init reaps), by keeping its last sampled time. What a
    process did between its last sample and its exit is lost (at most one interval),
    and so is a whole process that lived between two samples and was reaped outside
    the group. The sum dips while a member that exited waits to be reaped; the figure
    holds its highest value meanwhile, so it never goes down.

    Memory: RSS summed over the live members, so that pages two processes share (a
    fork's, a shared library's) are counted by each, as `ps` would add them up.

    Thread-safe: a sample off the loop and one on it (at a task's end) may overlap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each member read: its psutil handle, and its parent when first seen (one that
        # outlives its parent is handed to init, whose reaping is counted as outside).
        self._processes: dict[int, tuple[psutil.Process, int]] = {}
        # Each member seen in the last sample: its CPU time then, and its parent.
        self._seen: dict[int, tuple[float, int]] = {}
        self._kept = 0.0  # the last time of members that left it without being reaped in it
        self._cpu = 0.0
        self._read = False  # whether any member was ever read

    def sample(self, members: list[int]) -> GroupUsage | None:
        """The group's cost now, given its live members' pids; None while none has
        ever been read (a group gone before its first sample, or no /proc)."""
        with self._lock:
            now: dict[int, tuple[float, int]] = {}
            rss = 0
            for pid in members:
                reading = self._read_process(pid)
                if reading is not None:
                    seconds, parent, resident = reading
                    now[pid] = (seconds, parent)
                    rss += resident
            self._keep_the_gone(now)
            self._seen = now
            for pid in [pid for pid in self._processes if pid not in now]:
                del self._processes[pid]
            self._read = self._read or bool(now)
            if not self._read:
                return None
            self._cpu = max(self._cpu, self._kept + sum(s for s, _ in now.values()))
            return GroupUsage(self._cpu, rss)

    def _read_process(self, pid: int) -> tuple[float, int, int] | None:
        """A member's CPU time (its own and its reaped children's), parent and RSS;
        None when it has gone meanwhile or may not be read."""
        try:
            known = self._processes.get(pid)
            if known is None:
                process = psutil.Process(pid)
                known = self._processes[pid] = (process, process.ppid())
            process, parent = known
            # Not in oneshot(): for two values from two files it doubled the cost.
            times = process.cpu_times()
            resident = process.memory_info().rss
        except (psutil.Error, OSError):
            return None
        seconds = times.user + times.system + times.children_user + times.children_system
        return seconds, parent, resident

    def _keep_the_gone(self, now: dict[int, tuple[float, int]]) -> None:
        """Keep the last time of each member gone since the last sample that no live
        member will take in (see the class)."""
        for pid, (seconds, parent) in self._seen.items():
            if pid in now:
                continue
            hops = 0
            while parent in self._seen and parent not in now and hops < MAX_HOPS:
                parent = self._seen[parent][1]  # gone too: its parent may reap both
                hops += 1
            if parent not in now:
                self._kept += seconds


def group_usage(meter: GroupMeter, pgid: int, live: bool) -> GroupUsage | None:
    """Sample process group `pgid` with `meter` (its own, kept from sample to sample);
    with `live` false (the group is known to be gone) nothing is read."""
    if not procfs.HAS_PROC:
        return None
    return meter.sample(members(pgid) if live else [])


def members(pgid: int) -> list[int]:
    """The processes of group `pgid`: those in its leader's tree, a look that costs
    what the tree holds; a scan of /proc (shared, see procfs.members) once the leader
    has gone, or where trees cannot be walked. A process that left the tree but not the
    group (an orphan, handed to init) is seen only then."""
    tree = procfs.tree(pgid)
    # Zombies too: their CPU time is in their stat until their parent reaps them, and
    # then in the parent's children's time; left out, it would drop from the sum.
    found = procfs.in_group(tree, pgid, zombies=True) if tree is not None else []
    return found or procfs.members(pgid)
