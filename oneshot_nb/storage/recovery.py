"""Settling the tasks of kernels that died: what they left CREATED, RUNNING or IDLE."""

from __future__ import annotations

import logging
import math
import reprlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..runners import LocalRunner, Orphan, Place, Runner, SettledThere, is_running
from .database import LIVE_STATES
from .records import open_file
from .store import Store

logger = logging.getLogger("oneshot_nb")

# A dead kernel's tasks get at most this long to go after SIGTERM, whatever their grace:
# loading the extension waits for it.
RECOVERY_GRACE_CAP = 5.0
HOST = LocalRunner.host
# Linux's largest pid_max (PID_MAX_LIMIT on 64-bit): no process has a larger pid. Pid 1
# is init, and 0 and below name process groups to kill(2), not a process.
MAX_PID = 4194304


def recover(store: Store, runners: Sequence[Runner] | None = None) -> list[str]:
    """Settle the tasks that kernels on this host left CREATED, RUNNING or IDLE when
    they died: each task's runner (by the name in its row; by default the local runner,
    and Dask's, whose tasks are ended on the workers) ends what still runs of it by the
    termination policy, with at most RECOVERY_GRACE_CAP of grace, and the task is
    marked INTERRUPTED, "kernel died".
    A task whose runner is not among `runners`, or does not call it its own, is left
    as it is; so is one whose kernel cannot be told dead. A runner whose `settle`
    fails is logged and its tasks left; the others are still settled. Returns the ids
    of the tasks settled.

    The rows are data, whoever wrote them: a pid, start time or grace that no process
    could have is read as unknown rather than trusted.
    """
    if runners is None:
        runners = [LocalRunner(), SettledThere("dask")]
    runners = _checked_runners(runners)
    db = open_file(store.path, "rw")
    try:
        rows = db.execute(
            f"""SELECT t.id, t.state, t.runner, t.host, t.pid, t.pid_start, t.grace,
                s.pid, s.pid_start, s.host
            FROM tasks t LEFT JOIN sessions s ON s.id = t.session
            WHERE t.state IN ({", ".join("?" * len(LIVE_STATES))}) AND t.session != ?""",
            (*LIVE_STATES, store.session),
        ).fetchall()
        orphans: list[Orphan] = []
        states: dict[str, str] = {}
        for row in rows:
            orphan = _orphan(row)
            if orphan is not None:
                orphans.append(orphan)
                states[orphan.task_id] = row[1]
        settled: set[str] = set()
        for runner in runners:
            mine = [orphan for orphan in orphans if orphan.place.runner == runner.name]
            given = {orphan.task_id for orphan in mine}
            try:
                returned = {orphan.task_id for orphan in runner.settle(mine)}
            except Exception as exc:
                logger.warning(
                    "oneshot_nb: runner %r could not settle what dead kernels left running"
                    " (%s: %s); its tasks are left as they are",
                    runner.name,
                    type(exc).__name__,
                    exc,
                )
                continue
            # Only what this runner was given: an id it made up, or another runner's
            # task, is not its to call settled.
            settled |= returned & given
        return _mark_settled(db, [(task_id, states[task_id]) for task_id in sorted(settled)])
    finally:
        db.close()


def _checked_runners(runners: object) -> list[Runner]:
    checked: list[Any] | None = None
    if not isinstance(runners, (str, bytes, bytearray)) and isinstance(runners, Iterable):
        checked = list(runners)
    if checked is None or not all(_is_runner(runner) for runner in checked):
        shown = reprlib.repr(runners).replace("\n", " ")
        raise TypeError(
            "runners must be a sequence of runners (each with a name and a settle"
            f" method), got {shown}"
        )
    return checked


def _is_runner(candidate: Any) -> bool:
    if isinstance(candidate, type):  # the class, not a runner: its settle wants a self
        return False
    try:
        return isinstance(candidate.name, str) and callable(candidate.settle)
    except Exception:  # no such attribute, or a property that raises
        return False


def _orphan(row: tuple[Any, ...]) -> Orphan | None:
    """The orphan a row describes, or None when it is not one to settle: its kernel ran
    on another host, still runs, or cannot be told dead."""
    task_id, _, runner, host, pid, start, grace, kernel, kernel_start, kernel_host = row
    if not isinstance(task_id, str) or kernel_host not in (None, HOST):
        return None  # an id this package never writes (NULL, a blob): not our task
    if kernel is not None:
        kernel_pid = _pid(kernel, lowest=1)  # a kernel may be init in a container
        if kernel_pid is None:
            # A kernel pid no process can have (text, out of range) cannot tell us
            # whether that kernel still runs: settling its tasks might stop a live
            # kernel's work, so they are left as they are. A NULL pid (none recorded)
            # is a kernel that is gone, as ever.
            return None
        # An unreadable start time is none: any process with that pid then counts as
        # the kernel, which errs on the side of leaving its tasks alone.
        if is_running(kernel_pid, _start(kernel_start)):
            return None
    # An unreadable pid or start time is none: the task cannot be signalled (the local
    # runner signals nothing without both), but it is still an orphan, to be marked.
    place = Place(runner or "local", host or HOST, _pid(pid), _start(start))
    return Orphan(task_id, place, _grace(grace))


def _pid(value: object, lowest: int = 2) -> int | None:
    """A pid some process could have, else None. A task's group is never 1 (init's)."""
    if isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= MAX_PID:
        return value
    return None


def _start(value: object) -> int | None:
    """A process start time (clock ticks since boot), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _grace(value: object) -> float:
    """The grace of a row, capped at RECOVERY_GRACE_CAP; 0 when it is not a finite
    number of seconds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return 0.0
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        return 0.0
    return float(min(value, RECOVERY_GRACE_CAP))


def _mark_settled(db: Any, tasks: list[tuple[str, str]]) -> list[str]:
    now = time.time()
    settled_ids = []
    db.execute("BEGIN IMMEDIATE")
    for task_id, state in tasks:
        settled = db.execute(
            "UPDATE tasks SET state = 'INTERRUPTED', reason = 'kernel died',"
            " ended_at = ? WHERE id = ? AND state = ?",
            (now, task_id, state),
        )
        if settled.rowcount == 0:
            continue  # another kernel loading at the same moment settled it first
        settled_ids.append(task_id)
        db.execute(
            "INSERT INTO transitions VALUES (?, 'interrupt', ?, 'INTERRUPTED', ?, 'kernel died')",
            (task_id, state, now),
        )
    db.execute("COMMIT")
    return settled_ids


def settle_when_open(
    store: Store, say_now: Callable[[str], None], say_later: Callable[[str], None]
) -> None:
    """`recover` now if the store is open, with what it did said through `say_now`;
    else once the fault met when it was opened goes (on the store's thread), said
    through `say_later`. One line, and only when there is something to say."""

    def settle(say: Callable[[str], None]) -> None:
        try:
            settled = recover(store)
        except Exception as exc:
            say(
                f"oneshot_nb: cannot settle what dead kernels left running in {store.path}"
                f" now ({exc}); the next kernel to load the extension tries again"
            )
            return
        if settled:
            say(
                f"oneshot_nb: {len(settled)} task(s) left running by a kernel that died"
                " were stopped and marked 'kernel died' (see %oneshot_history)"
            )

    if store.fault is None:
        settle(say_now)
    else:
        store.when_open(lambda: settle(say_later))
