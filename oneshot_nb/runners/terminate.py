"""The one termination policy: SIGTERM to the group (then SIGCONT), a grace, SIGKILL.

Stop, timeout, shutdown and recovery all end a command's group this way: `end_group`
on the event loop, `end_groups_now` where no loop runs (interpreter exit, recovery at
load). Both work on any runner's `Group`; signalling a local group is `ProcessGroup`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Mapping

import anyio

from . import procfs
from .base import Group
from .usage import GroupMeter, GroupUsage, group_usage

# How often a stopping task looks whether its group is gone before the grace ends.
GROUP_POLL = 0.05
# How long to wait for a SIGKILLed group to vanish: a killed process dies once it is next
# scheduled (milliseconds, even on a loaded machine). Kept short because the group also
# looks alive while a member is a zombie that init has not reaped yet, and some inits
# (in containers and micro-VMs) reap only every second or so.
KILL_WAIT = 0.25

logger = logging.getLogger("oneshot_nb")


async def end_group(group: Group, grace: float) -> None:
    """SIGTERM (unless sent already), wait up to `grace` for the group to go, SIGKILL
    what is left, and wait up to KILL_WAIT for it to vanish.

    Why the last wait: killpg only queues the signal, and a member that has not been
    scheduled since still runs; without it, it could outlive the task's end.
    """
    terminate(group)
    deadline = time.monotonic() + grace
    while alive(group):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await anyio.sleep(min(GROUP_POLL, remaining))
    else:
        return
    kill(group)
    with anyio.move_on_after(KILL_WAIT):
        while alive(group):
            await anyio.sleep(GROUP_POLL)


def end_groups_now(groups: Mapping[Group, float], max_grace: float = math.inf) -> None:
    """`end_group` for many groups at once, blocking: SIGTERM to each, one wait of the
    longest grace (at most `max_grace`) for them all, SIGKILL to what is left, and one
    wait of up to KILL_WAIT for that to vanish."""
    for group in groups:
        terminate(group)
    deadline = time.monotonic() + min(max(groups.values(), default=0.0), max_grace)
    while any(alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(GROUP_POLL)
    left = [group for group in groups if alive(group)]
    for group in left:
        kill(group)
    deadline = time.monotonic() + KILL_WAIT
    while any(alive(group) for group in left) and time.monotonic() < deadline:
        time.sleep(GROUP_POLL / 5)


# A runner's group that raises must not stop the policy for the others, nor leave a
# task unended: what it failed to do is logged, and a group that cannot say whether it
# is alive is not waited for.


def terminate(group: Group) -> None:
    try:
        group.terminate()
    except Exception:
        logger.exception("oneshot_nb: could not terminate %r", group)


def kill(group: Group) -> None:
    try:
        group.kill()
    except Exception:
        logger.exception("oneshot_nb: could not kill %r", group)


def alive(group: Group) -> bool:
    try:
        return bool(group.alive())
    except Exception:
        logger.exception("oneshot_nb: could not tell whether %r is alive", group)
        return False


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to process group `pgid`; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        # On some systems a group whose only member is a zombie answers EPERM.
        return False
    return True


class ProcessGroup:
    """A process group of this machine, by its id (the pid of its leader)."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.terminate_requested = False
        # Set once the group was seen gone: its id may then be handed to another
        # process group, which must never get our signals. Gone from the start for an
        # id no command of ours can have: killpg(0) signals the caller's own group,
        # and 1 is init's.
        self.gone = isinstance(pgid, bool) or not isinstance(pgid, int) or pgid <= 1
        self._meter = GroupMeter()  # what it costs, sampled by usage()

    def terminate(self) -> None:
        """SIGTERM, then SIGCONT, so that a member stopped with SIGSTOP (or Ctrl-Z's
        SIGTSTP) runs and can act on the SIGTERM instead of holding it pending until
        the grace runs out. Once."""
        if self.terminate_requested:
            return
        self.terminate_requested = True
        if not self.gone and signal_group(self.pgid, signal.SIGTERM):
            signal_group(self.pgid, signal.SIGCONT)

    def kill(self) -> None:
        if not self.gone:
            signal_group(self.pgid, signal.SIGKILL)

    def alive(self) -> bool:
        """Whether any process of the group still runs.

        A zombie does not count: it has exited and only waits for its parent to reap
        it. Orphans are reaped by init, which in some containers and VMs does so late
        or never; counting their zombies would make every stop wait out its whole grace.
        """
        if not self.gone and not self._running():
            self.gone = True
        return not self.gone

    def _running(self) -> bool:
        if not signal_group(self.pgid, 0):
            return False
        running = procfs.running_groups()
        if running is not None and self.pgid not in running:
            # A recent look may predate the group: only a fresh one may call it gone.
            running = procfs.running_groups(fresh=True)
        return running is None or self.pgid in running

    def usage(self) -> GroupUsage | None:
        """What the group has cost so far: its CPU seconds and its live processes' RSS
        (see runners/usage.py); None until a member of it has been read.

        Blocking (it reads /proc): called off the event loop, except at a task's end,
        when the group is usually gone and nothing is read."""
        live = not self.gone and signal_group(self.pgid, 0)
        return group_usage(self._meter, self.pgid, live)

    def __repr__(self) -> str:
        return f"<ProcessGroup {self.pgid}{' gone' if self.gone else ''}>"
