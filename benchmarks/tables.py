"""Table benchmark: %oneshot_tasks and %oneshot_history over many tasks, and the cost of
refreshing a shown table, in a real kernel, beside a one-page baseline from the same run.

    .venv/bin/python benchmarks/tables.py              # 10,000 tasks, 3 rounds, ~2.5 minutes
    .venv/bin/python benchmarks/tables.py --quick      # 1,000 tasks, 1 round, ~30 s
    .venv/bin/python benchmarks/tables.py --code DIR   # the kernel imports oneshot_nb from DIR

Each scenario gets a fresh kernel started with jupyter_client (benchmarks/views.py's
Kernel: this process reads the kernel's iopub socket raw, as a frontend would):

    tasks N      N tasks in the kernel (200 run for real, the rest stopped before they
                 start: the table does not care how they ended), then `%oneshot_tasks`
    tasks 50     the same with one page of tasks: the baseline
    history N    N tasks in the history database (copies of 20 real ones), then
                 `%oneshot_history`
    history 50   the same with one page of tasks: the baseline
    refresh N    a batch of N `true` commands at --limit 8 with its table shown, and
                 `%oneshot_tasks` shown, for a few seconds: each refresh of a table on the
                 loop is timed, beside each refresh of one task's view (the baseline)

Measured for the two magics: the wall time from the execute request until the kernel is
idle (what the user waits for), and every iopub message the kernel sends from the request
until 1 s after that (late throttled updates included): count and bytes of all frames.
The targets (issue 9): either table over 10,000 tasks in under 1 s and under 1 MB, and a
refresh of a shown table under 2 ms of loop time. A missed target prints MISSED; the exit
status is 0 unless the script crashes. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

from views import MB, Kernel, _load, _version, percentile

PAGE = 50  # the baseline: one page of rows
REAL = 200  # tasks that run for real in the `tasks` scenarios
TARGET_SECONDS = 1.0
TARGET_BYTES = 1 * MB
TARGET_REFRESH_MS = 2.0
SETTLE = 1.0  # seconds of traffic counted after the cell is idle

PRELUDE = """\
import asyncio, json, sqlite3, sys, time
sys.path[:0] = {code!r}
%load_ext oneshot_nb
print("@@CODE@@", sys.modules["oneshot_nb"].__file__)
%config OneshotMagics.limit = 16
_b_magics = get_ipython().magics_manager.registry["OneshotMagics"]
_b_orch = _b_magics.orchestrator
"""

# N tasks in the orchestrator: some run, the rest are stopped while they wait for a slot.
SETUP_TASKS = """\
_b_real = [_b_orch.submit("true" if i % 4 else "false") for i in range({real})]
await _b_orch.wait_all()
for _ in range({n} - len(_b_real)):
    _b_orch.submit("true").stop()
await _b_orch.wait_all()
_b_magics.store.flush(60)
"""

# N rows in the history: 20 real tasks, copied with new ids and times.
SETUP_HISTORY = """\
_b_seed = [_b_orch.submit(f"echo seed {{i}}; exit {{i % 3}}") for i in range(20)]
await _b_orch.wait_all()
assert _b_magics.store.flush(60)
_b_db = sqlite3.connect(_b_magics.store.path, isolation_level=None)
_b_db.execute("PRAGMA busy_timeout = 10000")
_b_cols = [r[1] for r in _b_db.execute("PRAGMA table_info(tasks)")]
_b_rows = _b_db.execute("SELECT * FROM tasks").fetchall()
_b_new = []
for _b_i in range({n} - len(_b_rows)):
    _b_row = dict(zip(_b_cols, _b_rows[_b_i % len(_b_rows)]))
    _b_row["id"] = f"c{{_b_i:07x}}"
    _b_row["created_at"] = _b_row["created_at"] - 1 - _b_i
    _b_new.append(tuple(_b_row[c] for c in _b_cols))
_b_db.execute("BEGIN")
_b_db.executemany(
    f"INSERT INTO tasks VALUES ({{', '.join('?' * len(_b_cols))}})", _b_new
)
_b_db.execute("COMMIT")
assert _b_db.execute("SELECT count(*) FROM tasks").fetchone()[0] == {n}
_b_db.close()
"""

MAGIC = {"tasks": "%oneshot_tasks", "history": "%oneshot_history"}

# Times every refresh of a table and of a task view: wraps the methods that do the work
# on the loop before any view is made (a Throttle keeps the bound method it was given).
SETUP_REFRESH = """\
import importlib
from oneshot_nb import TaskState
_b_times, _b_built = {{}}, set()
def _b_timed(cls, name, key):
    original = getattr(cls, name, None)
    if original is None:
        return
    def timed(self, *args, **kwargs):
        # A table's first flush builds its page: that is showing it, not a refresh; a
        # flush that puts other tasks on the page (new ones on top) is counted apart.
        if key == "table" and id(self) not in _b_built:
            kind = "build"
        elif key == "table" and getattr(self, "_page_stale", False):
            kind = "page"
        else:
            kind = key
        _b_built.add(id(self))
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            _b_times.setdefault(kind, []).append(
                ((time.perf_counter() - start) * 1000, (time.thread_time() - cpu) * 1000)
            )
    setattr(cls, name, timed)
_b_views = importlib.import_module("oneshot_nb.notebook.views")
# Wherever this version defines its tables (not an import of a module it does not have).
_b_tables = sys.modules[_b_views.TaskTable.__module__]
_b_timed(_b_tables.TaskTable, "_flush", "table")
_b_timed(_b_tables.TaskTable, "_flush_page", "page")  # where the page moves on its own turn
_b_timed(_b_tables.TaskRow, "tick", "row")
_b_timed(_b_views.TaskView, "_flush", "view")
_b_probe = get_ipython().run_line_magic("oneshot", "--name probe sleep {duration}")
get_ipython().run_line_magic("oneshot_tasks", "")
_b_batch = get_ipython().run_cell_magic("oneshot_parallel", "--limit 8", "true\\n" * {n})
"""

COLLECT_REFRESH = """\
_b_ran = sum(t.state is TaskState.COMPLETED for t in _b_batch.tasks)
_b_batch.stop()
await _b_batch.wait()
await _b_probe.wait()
await asyncio.sleep(0.5)
print("@@RESULT@@" + json.dumps(dict(
    times=_b_times, ended=_b_ran
)))
"""


@dataclass
class Shown:
    """One run of a magic: how long until idle, and what the kernel sent."""

    seconds: float
    messages: int
    bytes: int
    widgets: int  # comm_open messages


@dataclass
class Refresh:
    """One refresh run: per-call loop times (wall ms, CPU ms) by what was refreshed."""

    times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    ended: int = 0
    updates: int = 0  # widget update messages over the run
    seconds: float = 0.0


def start_kernel(workdir: str, code: str | None) -> Kernel:
    """A fresh kernel on a fresh history database, with oneshot_nb loaded (from `code`,
    ahead of the installed one, when given)."""
    db = os.path.join(workdir, "history.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    kernel = Kernel(os.path.join(workdir, "kernel.log"), {**os.environ, "ONESHOT_NB_DB": db})
    try:
        text = kernel.run(PRELUDE.format(code=[os.path.abspath(code)] if code else []))
    except BaseException:
        kernel.close()
        raise
    loaded = text.split("@@CODE@@", 1)[1].split()[0]
    if code and not loaded.startswith(os.path.abspath(code)):
        kernel.close()
        raise RuntimeError(f"the kernel imported {loaded}, not the code in {code}")
    return kernel


def run_shown(kind: str, n: int, workdir: str, code: str | None) -> Shown:
    kernel = start_kernel(workdir, code)
    try:
        setup = (
            SETUP_TASKS.format(n=n, real=min(REAL, n))
            if kind == "tasks"
            else (SETUP_HISTORY.format(n=n))
        )
        kernel.run(setup, timeout=600)
        time.sleep(0.5)  # let the setup's own late updates pass
        kernel.recorder.start_recording()
        start = time.monotonic()
        kernel.run(MAGIC[kind], timeout=600)
        seconds = time.monotonic() - start
        time.sleep(SETTLE)
        traffic = kernel.recorder.stop_recording()
    finally:
        kernel.close()
    return Shown(seconds, traffic.iopub_messages, traffic.iopub_bytes, len(traffic.models))


def run_refresh(n: int, duration: float, workdir: str, code: str | None) -> Refresh:
    import json

    kernel = start_kernel(workdir, code)
    try:
        kernel.recorder.start_recording()
        start = time.monotonic()
        kernel.run(SETUP_REFRESH.format(n=n, duration=duration), timeout=600)
        time.sleep(duration)  # the batch runs, its table shown, the cell done
        text = kernel.run(COLLECT_REFRESH, timeout=600)
        seconds = time.monotonic() - start
        traffic = kernel.recorder.stop_recording()
    finally:
        kernel.close()
    marker = text.rfind("@@RESULT@@")
    if marker < 0:
        raise RuntimeError(f"no result from the refresh run:\n{text}")
    data = json.loads(text[marker + len("@@RESULT@@") :].splitlines()[0])
    updates = sum(len(times) for times in traffic.updates.values())
    return Refresh(data["times"], data["ended"], updates, seconds)


# -- report ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def shown_line(name: str, runs: list[Shown]) -> str:
    return (
        f"  {name:<14} {median([r.seconds for r in runs]):7.2f} s  "
        f"{median([r.messages for r in runs]):8.0f} msgs  "
        f"{median([r.bytes for r in runs]) / MB:8.3f} MB  "
        f"{median([r.widgets for r in runs]):7.0f} widgets"
        f"   (rounds: {', '.join(f'{r.seconds:.2f} s / {r.bytes / MB:.3f} MB' for r in runs)})"
    )


def verdict_shown(kind: str, n: int, big: list[Shown], page: list[Shown]) -> None:
    seconds, size = median([r.seconds for r in big]), median([r.bytes for r in big])
    base_s, base_b = median([r.seconds for r in page]), median([r.bytes for r in page])
    ok_s, ok_b = seconds < TARGET_SECONDS, size < TARGET_BYTES
    print(
        f"  {MAGIC[kind]} over {n}: {seconds:.2f} s ({seconds / base_s:.1f}x the {PAGE}-task"
        f" baseline) target < {TARGET_SECONDS:g} s {'met' if ok_s else 'MISSED'};"
        f" {size / MB:.3f} MB ({size / base_b:.1f}x) target < {TARGET_BYTES / MB:g} MB"
        f" {'met' if ok_b else 'MISSED'}"
    )


def refresh_lines(runs: list[Refresh]) -> None:
    labels = {
        "build": "table built (first flush)",
        "page": "page changed (new rows)",
        "table": "table refresh (on events)",
        "row": "row tick (elapsed time)",
        "view": "task view refresh (baseline)",
    }
    for key, label in labels.items():
        walls = [median([w for w, _ in r.times.get(key, [])]) for r in runs]
        cpus = [median([c for _, c in r.times.get(key, [])]) for r in runs]
        p99 = [percentile([w for w, _ in r.times.get(key, [])], 99) for r in runs]
        worst = [max((w for w, _ in r.times.get(key, [])), default=float("nan")) for r in runs]
        calls = [len(r.times.get(key, [])) for r in runs]
        if not any(calls):
            print(f"  {label:<30} (no such calls)")
            continue
        print(
            f"  {label:<30} median {median(walls):6.3f} ms (CPU {median(cpus):6.3f}),"
            f" p99 {median(p99):6.3f}, max {median(worst):6.2f} ms; {median(calls):.0f} calls"
        )
    ended = median([r.ended for r in runs])
    rate = median([r.updates / r.seconds for r in runs])
    print(f"  batch tasks that ran to their end: {ended:.0f}; widget updates/s: {rate:.0f}")


def verdict_refresh(runs: list[Refresh]) -> None:
    table = median([median([w for w, _ in r.times.get("table", [])]) for r in runs])
    view = median([median([w for w, _ in r.times.get("view", [])]) for r in runs])
    ok = table < TARGET_REFRESH_MS
    print(
        f"  table refresh: median {table:.3f} ms ({table / view:.1f}x one task view's"
        f" {view:.3f} ms) target < {TARGET_REFRESH_MS:g} ms {'met' if ok else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, 1 round")
    parser.add_argument("--tasks", type=int, help="tasks in each table (10,000; 1,000 quick)")
    parser.add_argument("--rounds", type=int, help="rounds of every scenario (3; 1 quick)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of refresh run")
    parser.add_argument(
        "--scenarios",
        default="tasks,history,refresh",
        metavar="LIST",
        help="a subset of tasks,history,refresh (default: all)",
    )
    parser.add_argument(
        "--code",
        metavar="DIR",
        help="import oneshot_nb from DIR in the kernels (an export of another commit, to compare)",
    )
    args = parser.parse_args()
    n = args.tasks or (1000 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    print("oneshot_nb table benchmark" + (" (--quick)" if args.quick else ""))
    print(
        f"python {sys.version.split()[0]}  ipykernel {_version('ipykernel')}"
        f"  ipywidgets {_version('ipywidgets')}  nproc {os.cpu_count()}  load average {_load()}"
    )
    print(
        f"{n} tasks, {rounds} round(s), baseline {PAGE} tasks"
        + (f", oneshot_nb from {args.code}" if args.code else "")
    )
    print()
    workdir = tempfile.mkdtemp(prefix="oneshot-bench-tables-")
    chosen = {name.strip() for name in args.scenarios.split(",")}
    if not chosen <= {"tasks", "history", "refresh"}:
        parser.error(f"--scenarios takes tasks, history and refresh, got {args.scenarios!r}")
    scenarios = [(kind, size) for kind in MAGIC if kind in chosen for size in (n, PAGE)]
    shown: dict[tuple[str, int], list[Shown]] = {s: [] for s in scenarios}
    refreshes: list[Refresh] = []
    start = time.monotonic()
    try:
        for number in range(rounds):
            order = scenarios if number % 2 == 0 else scenarios[::-1]
            print(f"round {number + 1}/{rounds} (load average {_load()}):", flush=True)
            for kind, size in order:
                run = run_shown(kind, size, workdir, args.code)
                shown[kind, size].append(run)
                print(shown_line(f"{kind} {size}", [run]).split("   (")[0], flush=True)
            if "refresh" in chosen:
                refreshes.append(run_refresh(n, args.duration, workdir, args.code))
                refresh_lines(refreshes[-1:])
        print()
        print(
            f"medians of {rounds} round(s), {time.monotonic() - start:.0f} s in all"
            f" (load average now {_load()}):"
        )
        for kind, size in scenarios:
            print(shown_line(f"{kind} {size}", shown[kind, size]))
        if refreshes:
            refresh_lines(refreshes)
        print()
        print("targets:")
        for kind in MAGIC:
            if kind in chosen:
                verdict_shown(kind, n, shown[kind, n], shown[kind, PAGE])
        if refreshes:
            verdict_refresh(refreshes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
