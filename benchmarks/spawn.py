"""Spawn comparison: N x `true` at 8 at once through raw asyncio, xargs, GNU parallel and
oneshot_nb, all measured in the same run.

    make bench                                       # full run (installs GNU parallel first)
    .venv/bin/python benchmarks/spawn.py --quick     # smoke run: 100 tasks, 2 rounds
    .venv/bin/python benchmarks/spawn.py --profile   # then one oneshot_nb run under cProfile

Rounds alternate the order of the contenders (A B C D, D C B A, ...) so that drift on a
shared, noisy machine falls on all of them alike; the table shows medians and ratios, and
every sample is listed below it. A second table splits the CPU time this process spends per
task into python-statemachine's share (measured apart) and the engine's own. A missed
target is printed, never raised: the script exits 0 unless it crashes or a run fails.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import oneshot_nb
from oneshot_nb import AsyncOrchestrator, OneshotStateMachine, TaskState

PIPE = asyncio.subprocess.PIPE
LIMIT = 8
RAW_TARGET = 1.8  # oneshot_nb wall time / raw asyncio wall time, at most
INSTALL_PARALLEL = "apt-get install -y parallel"

XARGS_ARGV = ["xargs", f"-P{LIMIT}", "-I{}", "true"]
# -N0 takes one input line per job but passes none of it, so every job is the bare `true`.
PARALLEL_ARGV = ["parallel", "--will-cite", f"-j{LIMIT}", "-N0", "true"]
# GNU parallel runs every job through a shell, picked from its parent processes or $SHELL
# unless PARALLEL_SHELL says; fixing it to /bin/sh (dash on Debian, the lightest) makes the
# figure the same from make, a terminal or CI, and gives parallel its best case.
PARALLEL_ENV = {**os.environ, "PARALLEL_SHELL": "/bin/sh"}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads), not of its children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the contenders: each runs n x `true` at LIMIT at once and returns its wall time ---------


async def _spawn_raw(n: int) -> float:
    sem = asyncio.Semaphore(LIMIT)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec("true", stdout=PIPE, stderr=PIPE)
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            if await proc.wait() != 0:
                raise RuntimeError(f"raw asyncio: `true` exited {proc.returncode}")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start


async def _spawn_oneshot(n: int) -> float:
    start = time.perf_counter()
    async with AsyncOrchestrator(limit=LIMIT) as orch:
        for _ in range(n):
            orch.submit(["true"])
        states = await orch.wait_all()
    elapsed = time.perf_counter() - start
    # A run whose tasks failed would time the failure path, not the spawn: refuse it.
    bad = [s for s in states if s is not TaskState.COMPLETED]
    if len(states) != n or bad:
        raise RuntimeError(
            f"oneshot_nb: {len(bad)} of {len(states)} tasks not COMPLETED: {bad[:3]}"
        )
    return elapsed


def _spawn_tool(argv: list[str], n: int, env: dict[str, str] | None = None) -> float:
    # The items come from a pipe, not a terminal, so neither tool can stop to ask anything.
    items = "".join(f"{i}\n" for i in range(n)).encode()
    start = time.perf_counter()
    done = subprocess.run(argv, input=items, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stdout or done.stderr:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}: {(done.stdout + done.stderr)[:500]!r}"
        )
    return elapsed


def _gnu_parallel() -> tuple[str | None, str]:
    """(version line, '') when GNU parallel is usable, else (None, why not)."""
    if shutil.which("parallel") is None:
        return None, "not installed"
    out = subprocess.run(
        ["parallel", "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout
    # moreutils also ships a `parallel`, with another syntax.
    if not out.startswith("GNU parallel"):
        return None, f"`{shutil.which('parallel')}` is another program (moreutils' parallel?)"
    return out.splitlines()[0], ""


# -- python-statemachine's share, measured apart ---------------------------------------------


class _Machine(OneshotStateMachine):
    """Built as a task builds its own: after_transition a method of the machine, taking
    the reason the events that end a task are given, minus the task's work."""

    calls = 0

    def after_transition(self, event: Any, source: Any, target: Any, reason: Any = None) -> None:
        _Machine.calls += 1


def _machines(n: int) -> float:
    """CPU seconds to build n task machines and take each CREATED -> RUNNING -> COMPLETED,
    the two transitions a `true` task makes."""
    _Machine.calls = 0
    before = _cpu_seconds()
    for i in range(n):
        machine = _Machine(f"bench-{i}")
        machine.start()
        machine.finish(reason="exit")
    cpu = _cpu_seconds() - before
    if machine.task_state is not TaskState.COMPLETED or _Machine.calls != 2 * n:
        raise RuntimeError(f"machines: {machine.task_state}, {_Machine.calls} callback calls")
    return cpu


# -- rounds -----------------------------------------------------------------------------


@dataclass
class Contender:
    key: str  # short name for the progress lines
    name: str
    run: Callable[[], float]  # one timed run: wall seconds
    cpu: bool = False  # also record this process's CPU per task
    wall: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # per task

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def measure(contenders: list[Contender], rounds: int, n: int, machine_us: list[float]) -> None:
    def once(c: Contender, record: bool) -> str:
        gc.collect()
        before = _cpu_seconds()
        wall = c.run()
        cpu = _cpu_seconds() - before
        if record:
            c.wall.append(wall)
            if c.cpu:
                c.cpu_us.append(cpu * 1e6 / n)
        return f"{c.key} {wall:.3f}s"

    def machines(record: bool) -> str:
        gc.collect()
        us = _machines(n) * 1e6 / n
        if record:
            machine_us.append(us)
        return f"machines {us:.0f}µs/task"

    # The machines sit next to oneshot_nb (the last contender) in both orders, so that the
    # subtraction giving the engine's own cost pairs figures taken moments apart.
    steps: list[Callable[[bool], str]] = [lambda record, c=c: once(c, record) for c in contenders]
    steps.append(machines)
    # One untimed run of each: the first run in a process pays for imports, heap growth and
    # cold caches (and the tools' binaries for the page cache).
    for step in steps:
        step(False)
    for r in range(rounds):
        order = steps if r % 2 == 0 else steps[::-1]
        done = [step(True) for step in order]
        print(f"  round {r + 1}/{rounds}: " + "  ".join(done), flush=True)


# -- output -----------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


def header(args: argparse.Namespace, parallel_version: str | None) -> None:
    nproc = _first_line(["nproc"])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {platform.python_version()} ({sys.executable})")
    print(
        f"anyio {_version('anyio')}  python-statemachine {_version('python-statemachine')}  "
        f"oneshot_nb {_version('oneshot_nb')} ({os.path.dirname(oneshot_nb.__file__)})"
    )
    print(f"{_first_line(['xargs', '--version'])}  |  {parallel_version or 'no GNU parallel'}")
    print(
        f"nproc {nproc}  os.cpu_count {os.cpu_count()}  loadavg {load}  "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"mode {'quick' if args.quick else 'full'}: {args.tasks} x `true` at {LIMIT} at once, "
        f"{args.rounds} rounds (plus one untimed warm-up run of each)"
    )
    print()


def _ratio_verdict(ratio: float, bound: float, strict: bool) -> str:
    met = ratio < bound if strict else ratio <= bound
    return "TARGET MET" if met else "TARGET MISSED"


def report(contenders: dict[str, Contender], machine_us: list[float], n: int, skipped: str) -> None:
    raw, one = contenders["raw"], contenders["oneshot"]
    row = "  {:<44} {:>9} {:>10} {:>9} {:>11}"
    print()
    print(row.format("contender", "median", "per task", "/ raw", "oneshot /"))
    for c in contenders.values():
        print(
            row.format(
                c.name,
                f"{c.median:.3f} s",
                f"{c.median * 1000 / n:.3f} ms",
                f"{c.median / raw.median:.2f}",
                f"{one.median / c.median:.2f}",
            )
        )
    if skipped:
        print(f"  {'GNU parallel':<44} {skipped}")

    print()
    target = "  {:<44} {:>9} {:>9}  {}"
    print(target.format("target", "value", "bound", "result"))
    ratio = one.median / raw.median
    print(
        target.format(
            "oneshot_nb / raw asyncio, wall",
            f"{ratio:.2f}",
            f"<= {RAW_TARGET:g}",
            _ratio_verdict(ratio, RAW_TARGET, strict=False),
        )
    )
    if "parallel" in contenders:
        ratio = one.median / contenders["parallel"].median
        print(
            target.format(
                "oneshot_nb / GNU parallel, wall",
                f"{ratio:.2f}",
                "< 1",
                _ratio_verdict(ratio, 1.0, strict=True),
            )
        )
    else:
        print(target.format("oneshot_nb / GNU parallel, wall", "-", "< 1", "NOT MEASURED"))

    raw_cpu, one_cpu = statistics.median(raw.cpu_us), statistics.median(one.cpu_us)
    machine = statistics.median(machine_us)
    print()
    print("  CPU of this process per task, µs (user+sys, all threads, children excluded; medians)")
    cost = "  {:<60} {:>8}"
    print(cost.format("raw asyncio", f"{raw_cpu:.0f}"))
    print(cost.format("oneshot_nb", f"{one_cpu:.0f}"))
    print(cost.format("oneshot_nb - raw asyncio: what oneshot_nb adds", f"{one_cpu - raw_cpu:.0f}"))
    print(
        cost.format(
            f"  python-statemachine: build + start() + finish(), {n} apart", f"{machine:.0f}"
        )
    )
    print(cost.format("  the engine's own: the rest", f"{one_cpu - raw_cpu - machine:.0f}"))

    print()
    print("  samples in measurement order (rounds alternate the order of the contenders):")

    def samples(label: str, values: list[float], fmt: str) -> None:
        print(f"    {label:<56} " + " ".join(format(x, fmt) for x in values))

    for c in contenders.values():
        samples(c.name + ", wall s", c.wall, ".3f")
    for c in contenders.values():
        if c.cpu:
            samples(c.name + ", CPU µs/task", c.cpu_us, ".0f")
    samples("python-statemachine, CPU µs/task", machine_us, ".0f")
    own = [o - r - m for o, r, m in zip(one.cpu_us, raw.cpu_us, machine_us, strict=True)]
    samples("the engine's own, CPU µs/task, round by round", own, ".0f")


def profile(n: int) -> None:
    """One oneshot_nb run under cProfile (main thread only), slowed by the profiler."""
    print(f"\n  cProfile of one oneshot_nb run of {n} tasks, top 15 by cumulative time:")
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(_spawn_oneshot(n))
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 tasks, 2 rounds")
    parser.add_argument("--tasks", type=int, help="tasks per run (500; 100 with --quick)")
    parser.add_argument("--rounds", type=int, help="timed rounds (8; 2 with --quick)")
    parser.add_argument("--profile", action="store_true", help="then profile one oneshot run")
    args = parser.parse_args()
    args.tasks = args.tasks or (100 if args.quick else 500)
    # An even count gives each contender as many early as late slots.
    args.rounds = args.rounds or (2 if args.quick else 8)
    n = args.tasks

    parallel_version, why = _gnu_parallel()
    header(args, parallel_version)
    skipped = ""
    if parallel_version is None:
        skipped = f"skipped: {why}"
        print(
            f"  GNU parallel {skipped}. Install it with `{INSTALL_PARALLEL}` (make bench does)."
            "\n  Measuring the others.\n"
        )

    contenders = {
        "raw": Contender(
            "raw", f"raw asyncio, Semaphore({LIMIT})", lambda: asyncio.run(_spawn_raw(n)), cpu=True
        ),
        "xargs": Contender("xargs", " ".join(XARGS_ARGV), lambda: _spawn_tool(XARGS_ARGV, n)),
    }
    if parallel_version is not None:
        contenders["parallel"] = Contender(
            "parallel",
            " ".join(PARALLEL_ARGV),
            lambda: _spawn_tool(PARALLEL_ARGV, n, PARALLEL_ENV),
        )
    contenders["oneshot"] = Contender(
        "oneshot",
        f"oneshot_nb, AsyncOrchestrator(limit={LIMIT})",
        lambda: asyncio.run(_spawn_oneshot(n)),
        cpu=True,
    )

    started = time.perf_counter()
    machine_us: list[float] = []
    measure(list(contenders.values()), args.rounds, n, machine_us)
    report(contenders, machine_us, n, skipped)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {load}")
    if args.profile:
        profile(n)


if __name__ == "__main__":
    main()
