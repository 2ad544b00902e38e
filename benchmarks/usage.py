"""What sampling the tasks' CPU and memory costs the event loop: 64 running tasks, each way
of sampling beside the same run without it.

    make bench                                     # full run, about 3.5 min
    .venv/bin/python benchmarks/usage.py --quick   # smoke run, one round of 3 s windows

Three runs per round, their order turned round every other round (off, thread, loop;
loop, thread, off; ...) so that a shared machine's drift falls on all: 64 `sleep 60`
tasks of one orchestrator; once they all run and have been sampled once, the loop
thread's CPU time over a window, then the lag of a 10 ms ticker on the loop over another
(apart, since the ticker's own CPU time would drown the first figure). The runs:

    off     orch.usage_meter.enabled = False: nothing sampled (the baseline)
    thread  the orchestrator's own meter: each round of samples read in a worker thread
    loop    UsageMeter(off_loop=False): each round read on the loop itself

The table gives medians; the target is on what sampling adds to the loop's CPU time
(< 1 ms per second, issue 13). A target missed is reported, not raised (exit status 0
unless it crashes). What each figure is: benchmarks/README.md, section usage.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata

from figures import Figure, cpu_seconds, print_table

import oneshot_nb
from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.engine.usage import UsageMeter

TASKS = 64
TICK = 0.01  # the lag probe's period
MODES = ("off", "thread", "loop")


class Probe:
    """A callback every TICK on the loop that records how late it runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lags: list[float] = []
        self._due = loop.time() + TICK
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.lags.append(now - self._due)
        self._due = max(self._due + TICK, now)
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def _run(mode: str, window: float) -> dict[str, float]:
    """One run: 64 sleeping tasks sampled as `mode` says. Once every task runs and has
    been sampled once: the loop thread's CPU time over `window` seconds, then the lag of
    the probe over as long (apart: the probe's own CPU time would drown the figure)."""
    async with AsyncOrchestrator(limit=TASKS) as orch:
        if mode == "off":
            orch.usage_meter.enabled = False
        elif mode == "loop":
            orch.usage_meter = UsageMeter(off_loop=False)
        tasks = [orch.submit(["sleep", "60"]) for _ in range(TASKS)]
        for task in tasks:
            await task.wait_for(TaskState.RUNNING)
        meter = orch.usage_meter
        await asyncio.sleep(1.5 * meter.interval)  # the first round has been taken
        if mode != "off" and any(task.usage is None for task in tasks):
            print(f"  warning: {mode}: a task has not been sampled", flush=True)
        rounds = meter.rounds
        cpu, loop_cpu, start = cpu_seconds(), time.thread_time(), time.perf_counter()
        await asyncio.sleep(window)
        took = time.perf_counter() - start
        loop_cpu, cpu = time.thread_time() - loop_cpu, cpu_seconds() - cpu
        rounds = meter.rounds - rounds
        probe = Probe(asyncio.get_running_loop())
        await asyncio.sleep(window)
        probe.stop()
    lags = sorted(probe.lags)
    return {
        "loop_ms": loop_cpu * 1000 / took,
        "other_ms": (cpu - loop_cpu) * 1000 / took,
        "p50": statistics.median(lags) * 1000,
        "p99": lags[int(0.99 * (len(lags) - 1))] * 1000,
        "rounds": rounds / took,
    }


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def header(args: argparse.Namespace) -> None:
    versions = {}
    for dist in ("anyio", "psutil", "oneshot_nb"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "?"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"
    print(f"python {platform.python_version()} ({sys.executable})")
    print(
        "  ".join(f"{dist} {version}" for dist, version in versions.items())
        + f" ({os.path.dirname(oneshot_nb.__file__)})"
    )
    print(f"nproc {nproc}  loadavg {_loadavg()}  {platform.system()} {platform.release()}")
    print(
        f"mode {'quick' if args.quick else 'full'}: {TASKS} x `sleep 60`, windows of"
        f" {args.window:g} s, {args.rounds} rounds of {', '.join(MODES)}",
        flush=True,
    )


def run(args: argparse.Namespace) -> None:
    header(args)
    started = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]
        for mode in order:
            results[mode].append(asyncio.run(_run(mode, args.window)))
        print(f"  round {r + 1} done, loadavg {_loadavg()}", flush=True)

    def side(mode: str, key: str) -> list[float]:
        return [result[key] for result in results[mode]]

    def added(mode: str) -> list[float]:
        """Round by round, what sampling added to the loop thread's CPU time."""
        return [
            s - b for s, b in zip(side(mode, "loop_ms"), side("off", "loop_ms"), strict=True)
        ]

    figures = []
    for mode, number in (("thread", 1), ("loop", 2)):
        name = "in a thread" if mode == "thread" else "on the loop"
        figures += [
            Figure(
                f"{number} loop CPU per s: off | {name}",
                "ms",
                side("off", "loop_ms"),
                side(mode, "loop_ms"),
            ),
            Figure(
                "  added by sampling",
                "ms",
                subj=added(mode),
                target=("<", 1.0, "subject") if mode == "thread" else None,
            ),
            Figure("  loop lag p50", "ms", side("off", "p50"), side(mode, "p50")),
            Figure("  loop lag p99", "ms", side("off", "p99"), side(mode, "p99")),
            Figure(
                "  other threads' CPU per s", "ms", side("off", "other_ms"), side(mode, "other_ms")
            ),
            Figure("  rounds of samples per s", "/s", subj=side(mode, "rounds")),
        ]
    print_table(figures, "off", "sampling", "figure (medians): off | sampling")
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {_loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s windows")
    args = parser.parse_args()
    args.rounds, args.window = (1, 3.0) if args.quick else (3, 8.0)
    run(args)


if __name__ == "__main__":
    main()
