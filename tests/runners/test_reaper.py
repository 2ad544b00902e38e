"""The Dask worker's reaper, with real processes: when the worker's lifeline breaks
(however the worker died), the command groups it was told of end by the termination
policy, and nothing else is signalled."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import eventually
from helpers.processes import (
    group_gone,
    kill_group,
    live_members,
    process_gone,
    process_state,
    reaped,
)

from oneshot_nb.runners import procfs
from oneshot_nb.runners.dask import reaper as reaper_module
from oneshot_nb.runners.dask.reaper import Reaper

pytestmark = pytest.mark.skipif(not procfs.HAS_PROC, reason="the reaper needs /proc")

# A command's group: the shell, a child of it and a grandchild (the inner shell's sleep).
GROUP = "sh -c 'sleep 300 & wait' & sleep 300"
# A worker, as far as the reaper can tell: it starts a reaper and a command (its
# argv[1]), watches the command's group, says their pids, forks a child (as a task's
# multiprocessing pool would), and sleeps until it is killed.
WORKER = """
import os, subprocess, sys, time
from oneshot_nb.runners import procfs
from oneshot_nb.runners.dask.reaper import Reaper
reaper = Reaper.start()
command = subprocess.Popen(["sh", "-c", sys.argv[1]], start_new_session=True)
reaper.watch(command.pid, procfs.start_time(command.pid), 1.0)
child = os.fork()
if child == 0:
    time.sleep(300)
    os._exit(0)
print(command.pid, reaper.pid, child, flush=True)
time.sleep(300)
"""


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    started = Reaper.start()
    yield started
    started.close()


def command_group(
    spawned: Callable[..., subprocess.Popen], script: str = GROUP, members: int = 3
) -> tuple[int, int]:
    """Start `script` as a worker starts a command; return its group's id and its
    leader's start time once `members` of its processes run."""
    process = spawned(["sh", "-c", script])
    eventually(lambda: len(live_members(process.pid)) >= members)
    start = procfs.start_time(process.pid)
    assert start is not None
    return process.pid, start


def waiting(pid: int) -> bool:
    """Whether the reaper `pid` waits on its lifeline: its SIGTERM handler is set, it has
    read all that was written to it, and it sleeps (it blocks nowhere but in that read)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    if not caught & 1 << (signal.SIGTERM - 1):
        return False
    lifeline = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        unread = struct.unpack("i", fcntl.ioctl(lifeline, termios.FIONREAD, bytes(4)))[0]
    finally:
        os.close(lifeline)
    return unread == 0 and process_state(pid) == "S"


def test_a_killed_workers_commands_end_with_it(spawned):
    """SIGKILL of the process holding the lifeline (a worker, which runs no cleanup then)
    ends the whole group it watched, grandchild included, and the reaper exits. The
    child it forked lets go of the lifeline: were it to hold it, the pipe would not
    break while the child sleeps on, and nothing would end."""
    worker = spawned([sys.executable, "-c", WORKER, GROUP], stdout=subprocess.PIPE)
    pgid, reaper_pid, child = map(int, worker.stdout.readline().split())
    try:
        eventually(lambda: len(live_members(pgid)) >= 3)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        eventually(lambda: group_gone(pgid), timeout=3)
        eventually(lambda: process_gone(reaper_pid), timeout=3)
        assert not process_gone(child)
    finally:
        kill_group(pgid)
        kill_group(reaper_pid)


def test_a_group_that_ignores_sigterm_is_killed_after_its_grace(spawned, reaper):
    grace = 0.5
    pgid, start = command_group(spawned, "trap '' TERM; sleep 300 & sleep 300", members=2)
    reaper.watch(pgid, start, grace)
    eventually(lambda: waiting(reaper.pid))
    began = time.monotonic()
    reaper.close()
    took = time.monotonic() - began
    assert group_gone(pgid)
    assert grace <= took < grace + 2


def test_a_forgotten_group_is_not_signalled(spawned, reaper):
    """A command that ended is forgotten: its group id may then be another's."""
    kept, kept_start = command_group(spawned)
    forgotten, forgotten_start = command_group(spawned)
    reaper.watch(kept, kept_start, 1.0)
    reaper.watch(forgotten, forgotten_start, 1.0)
    reaper.forget(forgotten)
    reaper.close()
    assert group_gone(kept)
    assert len(live_members(forgotten)) >= 3


def test_a_group_whose_leader_is_another_process_is_not_signalled(spawned, reaper):
    """A leader whose start time is not the one watched is a later process given the
    pid: not ours. Without a start time, nothing tells, and nothing is signalled."""
    ours, ours_start = command_group(spawned)
    other, other_start = command_group(spawned)
    unknown, _ = command_group(spawned)
    reaper.watch(ours, ours_start, 0.0)
    reaper.watch(other, other_start + 1, 0.0)
    reaper.watch(unknown, None, 0.0)
    reaper.close()
    assert group_gone(ours)
    assert len(live_members(other)) >= 3
    assert len(live_members(unknown)) >= 3


def test_garbage_on_the_lifeline_is_ignored(spawned):
    """Malformed lines (a victim group named in each) neither crash the reaper nor get a
    group signalled; a line too long is skipped whole, though its tail reads as a valid
    line; a valid line after them all still counts; a line cut short by EOF does not.
    Nor does the reaper signal its own group, were it named with its start time."""
    victim, start = command_group(spawned)
    target, target_start = command_group(spawned)
    process = spawned(
        [*reaper_module.REAPER_COMMAND, reaper_module.__file__],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    padding = b" " * (4 * reaper_module.LINE_MAX)
    garbage = [
        b"\n",
        b"add\n",
        b"add x y z\n",
        b"add 1 0 0\n",
        b"add 0 0 0\n",
        b"add -%d %d 0\n" % (victim, start),
        b"add %d %d nan\n" % (victim, start),
        b"add %d %d inf\n" % (victim, start),
        b"add %d %d -1\n" % (victim, start),
        b"add %d -%d 0\n" % (victim, start),
        b"add %d %d 0 0\n" % (victim, start),
        b"add %d\xff %d 0\n" % (victim, start),
        b"\xff\xfe\x00\x80\n",
        b"del\n",
        b"del x y\n",
        padding + b"add %d %d 0\n" % (victim, start),
        b"x" * 100_000 + b"\n",
        b"add %d %d 0\n" % (process.pid, procfs.start_time(process.pid)),
        b"add %d %d 0\n" % (target, target_start),
        b"add %d %d 0" % (victim, start),
    ]
    for line in garbage:
        process.stdin.write(line)
    process.stdin.close()
    assert process.wait(timeout=5) == 0
    assert b"Traceback" not in process.stderr.read()
    assert group_gone(target)
    assert len(live_members(victim)) >= 3


def test_sigterm_ends_the_groups_and_sigint_does_not(spawned, reaper):
    """`kill` of the reaper must not leave commands behind; SIGINT and SIGHUP (a
    terminal's) are not meant for it."""
    pgid, start = command_group(spawned)
    reaper.watch(pgid, start, 1.0)
    eventually(lambda: waiting(reaper.pid))
    os.kill(reaper.pid, signal.SIGINT)
    os.kill(reaper.pid, signal.SIGHUP)
    time.sleep(0.2)
    assert not process_gone(reaper.pid)
    assert len(live_members(pgid)) >= 3
    os.kill(reaper.pid, signal.SIGTERM)
    eventually(lambda: group_gone(pgid), timeout=3)
    eventually(lambda: process_gone(reaper.pid), timeout=3)


def test_a_dead_reaper_is_started_again_and_told_every_group(spawned, reaper, caplog):
    """A call that finds the reaper dead (SIGKILLed) starts a new one, which knows the
    groups watched before as well as the new one; the dead one is reaped. Twice, with
    one warning."""
    first, first_start = command_group(spawned)
    second, second_start = command_group(spawned)
    reaper.watch(first, first_start, 1.0)
    dead = []
    with caplog.at_level(logging.DEBUG, logger="oneshot_nb"):
        for call in (lambda: reaper.watch(second, second_start, 1.0), lambda: reaper.forget(1)):
            dead.append(reaper.pid)
            os.kill(reaper.pid, signal.SIGKILL)
            eventually(lambda: process_gone(dead[-1]))
            call()
            assert reaper.pid not in dead
            assert reaped(dead[-1])
    gone = "oneshot_nb: the reaper is gone ([Errno 32] Broken pipe); starting another"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", gone),
        ("DEBUG", gone),
    ]
    reaper.close()
    assert group_gone(first)
    assert group_gone(second)


def test_close_ends_what_is_watched_and_the_reaper(spawned, reaper):
    pgid, start = command_group(spawned)
    reaper.watch(pgid, start, 1.0)
    pid = reaper.pid
    reaper.close()
    assert group_gone(pgid)
    assert process_gone(pid)
    assert reaper.pid is None
    reaper.close()
    reaper.watch(pgid, start, 1.0)  # after close: nothing to tell, and no new reaper
    assert reaper.pid is None


def test_close_after_the_reaper_died_still_ends_what_is_watched(spawned, reaper):
    pgid, start = command_group(spawned)
    reaper.watch(pgid, start, 1.0)
    os.kill(reaper.pid, signal.SIGKILL)
    eventually(lambda: process_gone(reaper.pid))
    reaper.close()
    assert group_gone(pgid)
