"""The reaper: no command outlives the Dask worker that started it.

A worker ends its commands' groups when it shuts down, but a worker killed with SIGKILL
(the OOM killer, a nanny, a batch system) runs no cleanup, and PR_SET_PDEATHSIG reaches
only a direct child, not what a command starts. So each worker keeps one small reaper: a
process in a session of its own, whose stdin is the worker's lifeline (a pipe whose write
end only the worker holds). The worker tells it of each command group as it starts
(`add PGID START GRACE`, START `-` when unknown) and as it ends (`del PGID`). When the
lifeline breaks, however the worker ended, or the reaper gets SIGTERM, it ends the groups
still watched by the one termination policy, and exits.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import BinaryIO

# Absolute, as the reaper runs from its file (see REAPER_COMMAND): importing it as part of its
# package would import the Dask runner, and Dask with it, into every worker's reaper.
from oneshot_nb.runners import procfs
from oneshot_nb.runners.terminate import ProcessGroup, end_groups_now

# A longer line is garbage, skipped whole: its tail, read apart, could pass for a line.
LINE_MAX = 256
# The reaper's command line: this file run as a script (`python -m` runs it too).
REAPER_COMMAND = [
    sys.executable,
    "-c",
    "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')",
]
# How long close() waits for the reaper beyond the longest grace: for it to start (it may
# still be importing) and for its SIGKILLs to take effect.
CLOSE_SLACK = 2.0

logger = logging.getLogger("oneshot_nb")

Watched = dict[int, tuple[int | None, float]]  # pgid: (its leader's start time, grace)


# The most a dead worker's commands get between SIGTERM and SIGKILL.
GRACE_CAP = 1.0


class _Stop(Exception):
    pass  # SIGTERM to the reaper: `kill` of it must not leave the commands behind


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the reaping short
    raise _Stop


def main() -> None:
    """The reaper: watch what the lifeline says until it breaks, then end what runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    spared = {os.getpid(), os.getpgrp(), os.getsid(0), os.getppid()}
    watched: Watched = {}
    signal.signal(signal.SIGTERM, _stop)
    try:
        with open(0, "rb", closefd=False) as lifeline:
            for line in _lines(lifeline):
                _obey(line.split(), watched)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (_Stop, OSError):
        pass
    spared.add(os.getppid())
    ours = [pgid for pgid, (start, _) in watched.items() if _same_leader(pgid, start, spared)]
    # The worker is gone and nobody will read what they write: a short grace, whatever
    # theirs, so that nothing of them runs on for long.
    end_groups_now({ProcessGroup(pgid): watched[pgid][1] for pgid in ours}, GRACE_CAP)


def _lines(lifeline: BinaryIO) -> Iterator[bytes]:
    skipping = False
    while chunk := lifeline.readline(LINE_MAX):
        whole = chunk.endswith(b"\n")  # a last line without one was cut short
        if whole and not skipping:
            yield chunk
        skipping = not whole


def _obey(words: list[bytes], watched: Watched) -> None:
    """Take one line into `watched`; anything but a well-formed one is ignored."""
    try:
        if words[0] == b"add" and len(words) == 4:
            pgid, grace = int(words[1]), float(words[3])
            start = None if words[2] == b"-" else int(words[2])
            if pgid > 1 and math.isfinite(grace) and grace >= 0 and (start is None or start >= 0):
                watched[pgid] = (start, grace)
        elif words[0] == b"del" and len(words) == 2:
            watched.pop(int(words[1]), None)
    except (IndexError, ValueError):
        pass


def _same_leader(pgid: int, start: int | None, spared: set[int]) -> bool:
    """local.py's rule: the leader is the very process the worker started (same start
    time, zombie or not), or no process has its pid any more (the members keep the
    group's id, which then cannot be handed out again). Unknown start: not signalled."""
    if pgid <= 1 or pgid in spared or start is None or not procfs.HAS_PROC:
        return False
    return not procfs.exists(pgid) or procfs.start_time(pgid, zombies=True) == start


class Reaper:
    """The worker's end of the lifeline. None of its methods raises: a worker whose
    reaper cannot run still runs commands. A reaper found dead is started anew (once a
    call) and told every group still watched; a warning says so, once."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._watched: Watched = {}
        self._closed = self._warned = False
        _reapers.add(self)

    @classmethod
    def start(cls) -> Reaper:
        reaper = cls()
        reaper._restart()
        return reaper

    @property
    def pid(self) -> int | None:
        """The reaper process's; None when none could start, and after close()."""
        return None if self._process is None else self._process.pid

    def watch(self, pgid: int, start: int | None, grace: float) -> None:
        """A command's group started: end it should the worker die."""
        self._watched[pgid] = (start, grace)
        self._send(_add(pgid, start, grace))

    def forget(self, pgid: int) -> None:
        """The command ended: its group id may go to another process, not ours to end."""
        self._watched.pop(pgid, None)
        self._send(f"del {pgid:d}\n".encode())

    def check(self) -> None:
        """Start a new reaper if this one has died (killed by hand, the OOM killer), told
        every group still watched: the worker calls this every second, so that its
        commands are never long without one."""
        if not self._closed and self._process is not None and self._process.poll() is not None:
            self._warn("oneshot_nb: the reaper %s died; starting another", self._process.pid)
            self._restart()

    def close(self) -> None:
        """Break the lifeline: the reaper ends the groups still watched and exits. Blocks
        until it has (the longest grace and CLOSE_SLACK at most), then kills it."""
        if self._process is not None and self._process.poll() is not None and self._watched:
            self._restart()  # it died: start one that ends what is still watched
        process, self._process, self._closed = self._process, None, True
        grace = max((grace for _, grace in self._watched.values()), default=0.0)
        self._watched.clear()
        if process is None:
            return
        process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(grace + CLOSE_SLACK)
        except subprocess.TimeoutExpired:
            logger.warning("oneshot_nb: the reaper %d did not exit; killing it", process.pid)
            process.kill()
            process.wait()

    def _send(self, line: bytes) -> None:
        if self._closed:
            return
        try:
            self._write(line)
        except OSError as error:
            self._warn("oneshot_nb: the reaper is gone (%s); starting another", error)
            self._restart()

    def _restart(self) -> None:
        if self._process is not None:
            self._process.stdin.close()  # type: ignore[union-attr]
            self._process.poll()  # reaps it: it has exited, or its pipe would not be broken
        try:
            self._process = subprocess.Popen(
                [*REAPER_COMMAND, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                start_new_session=True,
            )
            for pgid, (start, grace) in self._watched.items():
                self._write(_add(pgid, start, grace))
        except OSError as error:
            self._warn("oneshot_nb: no reaper (%s): commands may outlive this worker", error)

    def _write(self, line: bytes) -> None:
        # One write(2) of under PIPE_BUF bytes: atomic, the reaper never reads half a line.
        if self._process is None or self._process.stdin is None:
            raise BrokenPipeError("no reaper")
        self._process.stdin.write(line)

    def _warn(self, message: str, error: object) -> None:
        (logger.debug if self._warned else logger.warning)(message, error)
        self._warned = True


def _add(pgid: int, start: int | None, grace: float) -> bytes:
    return f"add {pgid:d} {'-' if start is None else f'{start:d}'} {float(grace)!r}\n".encode()


# A child forked from the worker (a task's multiprocessing pool) must not keep the write
# end open: the lifeline would not break while the child runs on after the worker died.
_reapers: weakref.WeakSet[Reaper] = weakref.WeakSet()


def _let_go_in_child() -> None:
    for reaper in _reapers:
        if reaper._process is not None:
            reaper._process.stdin.close()  # type: ignore[union-attr]
        reaper._process, reaper._closed = None, True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_let_go_in_child)

if __name__ == "__main__":
    main()
