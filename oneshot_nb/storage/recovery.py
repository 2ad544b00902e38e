"""Settling the tasks of kernels that died: what they left CREATED, RUNNING or IDLE."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..runners import LocalRunner, Orphan, Place, Runner, is_running
from .database import LIVE_STATES
from .records import open_file
from .store import Store

# A dead kernel's tasks get at most this long to go after SIGTERM, whatever their grace:
# loading the extension waits for it.
RECOVERY_GRACE_CAP = 5.0
HOST = LocalRunner.host


def recover(store: Store, runners: Sequence[Runner] | None = None) -> list[str]:
    """Settle the tasks that kernels on this host left CREATED, RUNNING or IDLE when
    they died: each task's runner (by the name in its row; by default the local runner
    only) ends what still runs of it by the termination policy, with at most
    RECOVERY_GRACE_CAP of grace, and the task is marked INTERRUPTED, "kernel died".
    A task whose runner is not among `runners`, or does not call it its own, is left
    as it is. Returns the ids of the tasks settled.
    """
    runners = [LocalRunner()] if runners is None else list(runners)
    db = open_file(store.path, "rw")
    try:
        rows = db.execute(
            f"""SELECT t.id, t.state, t.runner, t.host, t.pid, t.pid_start, t.grace,
                s.pid, s.pid_start, s.host
            FROM tasks t LEFT JOIN sessions s ON s.id = t.session
            WHERE t.state IN ({", ".join("?" * len(LIVE_STATES))}) AND t.session != ?""",
            (*LIVE_STATES, store.session),
        ).fetchall()
        orphans = [
            Orphan(task_id, Place(runner or "local", host or HOST, pid, start),
                   min(grace or 0.0, RECOVERY_GRACE_CAP))
            for task_id, _, runner, host, pid, start, grace, kernel, kernel_start, kernel_host
            in rows
            if kernel_host in (None, HOST) and not _kernel_running(kernel, kernel_start)
        ]  # fmt: skip
        settled = set()
        for runner in runners:
            mine = [orphan for orphan in orphans if orphan.place.runner == runner.name]
            settled.update(orphan.task_id for orphan in runner.settle(mine))
        states = {task_id: state for task_id, state, *_ in rows}
        return _mark_settled(db, [(task_id, states[task_id]) for task_id in sorted(settled)])
    finally:
        db.close()


def _kernel_running(pid: int | None, start: int | None) -> bool:
    return pid is not None and is_running(pid, start)


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
