"""Settling the tasks of kernels that died: what they left CREATED, RUNNING or IDLE."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from ..runners.local import group_alive, process_start_time, signal_group, terminate_group
from .database import LIVE_STATES
from .records import open_file
from .store import Store

# A dead kernel's tasks get at most this long to go after SIGTERM, whatever their grace:
# loading the extension waits for it.
RECOVERY_GRACE_CAP = 5.0


def recover(store: Store) -> list[str]:
    """Settle the tasks that kernels on this host left CREATED, RUNNING or IDLE when
    they died: terminate each surviving process group (SIGTERM, then SIGKILL after its
    grace, at most RECOVERY_GRACE_CAP) and mark the task INTERRUPTED, "kernel died".

    A group is signalled only when its leader is the very process the task started
    (same pid and start time), or when no process has that pid any more (the group's
    other members keep its id, which the system then cannot hand out again).
    Returns the ids of the tasks settled.
    """
    db = open_file(store.path, "rw")
    try:
        rows = db.execute(
            f"""SELECT t.id, t.state, t.pid, t.pid_start, t.grace, s.pid, s.pid_start, s.host
            FROM tasks t LEFT JOIN sessions s ON s.id = t.session
            WHERE t.state IN ({", ".join("?" * len(LIVE_STATES))}) AND t.session != ?""",
            (*LIVE_STATES, store.session),
        ).fetchall()
        host = os.uname().nodename
        orphans = [row for row in rows if row[7] in (None, host) and not _alive(row[5], row[6])]
        groups = {}
        for _, _, pid, pid_start, grace, *_ in orphans:
            if pid is not None and _ours(pid, pid_start) and terminate_group(pid):
                groups[pid] = min(grace or 0.0, RECOVERY_GRACE_CAP)
        deadline = time.monotonic() + max(groups.values(), default=0.0)
        while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        now = time.time()
        settled_ids = []
        db.execute("BEGIN IMMEDIATE")
        for task_id, state, *_ in orphans:
            settled = db.execute(
                "UPDATE tasks SET state = 'INTERRUPTED', reason = 'kernel died',"
                " ended_at = ? WHERE id = ? AND state = ?",
                (now, task_id, state),
            )
            if settled.rowcount == 0:
                continue  # another kernel loading at the same moment settled it first
            settled_ids.append(task_id)
            db.execute(
                "INSERT INTO transitions"
                " VALUES (?, 'interrupt', ?, 'INTERRUPTED', ?, 'kernel died')",
                (task_id, state, now),
            )
        db.execute("COMMIT")
        return settled_ids
    finally:
        db.close()


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


def _alive(pid: int | None, start: int | None) -> bool:
    """Whether a kernel's process still runs: same pid and start time; where start
    times cannot be read (no /proc), any process with that pid counts as alive."""
    if pid is None:
        return False
    if start is None or not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_start_time(pid) == start


def _ours(pid: int, start: int | None) -> bool:
    """Whether signalling group `pid` reaches the task's processes and nothing else:
    its leader is the very process (start time, zombie or not), or no process has that
    pid (the group's other members keep the id, which the system cannot reuse then)."""
    if start is None or not _HAS_PROC:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            now = int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return True
    except (OSError, IndexError, ValueError):
        return False
    return now == start


_HAS_PROC = os.path.isdir("/proc/self")
