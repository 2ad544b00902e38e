"""What sampling the tasks' CPU and memory costs the event loop: 64 running tasks, each way
of sampling beside the same run without it.

    make bench                                     # full run, about 3.5 min
    .venv/bin/python benchmarks/usage.py --quick   # smoke run, one round of 3 s windows

Five runs per round, their order turned round every other round so that a shared
machine's drift falls on all. Each run: 64 tasks of one orchestrator; once they all run
and have been sampled once, the loop thread's CPU time over a window, then the lag of a
10 ms ticker on the loop over another (apart, since the ticker's own CPU time would
drown the first figure). The runs:

    sleep, off      64 x `sleep 60`, orch.usage_meter.enabled = False (the baseline)
    sleep, thread   the orchestrator's own meter: each round read in a worker thread
    sleep, loop     UsageMeter(off_loop=False): each round read on the loop itself
    work, off       64 Pythons that each hold a new block of up to 1 MiB every 0.2 s, so
    work, thread    that every sample says something new and is told to the listeners

The table gives medians; the target is on what sampling 64 sleeping tasks adds to the
loop's CPU time (< 1 ms per second, issue 13). A target missed is reported, not raised
(exit status 0 unless it crashes). What each figure is: benchmarks/README.md, section
usage.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from figures import Figure, cpu_seconds, loadavg, print_header, print_table

from oneshot_nb import AsyncOrchestrator, TaskEvent, TaskState
from oneshot_nb.engine.usage import UsageMeter

TASKS = 64
TICK = 0.01  # the lag probe's period
# Holds a new block of up to 1 MiB every 0.2 s: its RSS moves from one sample to the next.
WORK = [
    sys.executable,
    "-S",
    "-c",
    "import random, time\nwhile True: keep = b'x' * random.randrange(1 << 20); time.sleep(0.2)",
]
COMMANDS = {"sleep": ["sleep", "60"], "work": WORK}
RUNS = (
    ("sleep", "off"),
    ("sleep", "thread"),
    ("sleep", "loop"),
    ("work", "off"),
    ("work", "thread"),
)


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


async def _run(command: str, mode: str, window: float) -> dict[str, float]:
    """One run: 64 tasks of `command` sampled as `mode` says. Once every task runs and
    has been sampled once: the loop thread's CPU time and the usage events told over
    `window` seconds, then the lag of the probe over as long (apart: the probe's own
    CPU time would drown the first figure)."""
    events = [0]

    def count(event: TaskEvent) -> None:
        events[0] += event.kind == "usage"

    async with AsyncOrchestrator(limit=TASKS) as orch:
        if mode == "off":
            orch.usage_meter.enabled = False
        elif mode == "loop":
            orch.usage_meter = UsageMeter(off_loop=False)
        orch.listeners.append(count)
        tasks = [orch.submit(COMMANDS[command]) for _ in range(TASKS)]
        for task in tasks:
            await task.wait_for(TaskState.RUNNING)
        meter = orch.usage_meter
        await asyncio.sleep(1.5 * meter.interval)  # the first round has been taken
        if mode != "off" and any(task.usage is None for task in tasks):
            print(f"  warning: {command}, {mode}: a task has not been sampled", flush=True)
        rounds, events[0] = meter.rounds, 0
        cpu, loop_cpu, start = cpu_seconds(), time.thread_time(), time.perf_counter()
        await asyncio.sleep(window)
        took = time.perf_counter() - start
        loop_cpu, cpu = time.thread_time() - loop_cpu, cpu_seconds() - cpu
        rounds, told = meter.rounds - rounds, events[0]
        probe = Probe(asyncio.get_running_loop())
        await asyncio.sleep(window)
        probe.stop()
    lags = sorted(probe.lags)
    return {
        "loop_ms": loop_cpu * 1000 / took,
        "other_ms": (cpu - loop_cpu) * 1000 / took,
        "p50": statistics.median(lags) * 1000,
        "p99": lags[int(0.99 * (len(lags) - 1))] * 1000,
        "max": lags[-1] * 1000,
        "rounds": rounds / took,
        "events": told / took,
    }


def header(args: argparse.Namespace) -> None:
    print_header(
        ("anyio", "psutil", "oneshot_nb"),
        f"mode {'quick' if args.quick else 'full'}: {TASKS} tasks, windows of {args.window:g} s,"
        f" {args.rounds} rounds of {'; '.join(', '.join(run) for run in RUNS)}",
    )


def run(args: argparse.Namespace) -> None:
    header(args)
    started = time.perf_counter()
    results: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in RUNS}
    for r in range(args.rounds):
        for command, mode in RUNS if r % 2 == 0 else RUNS[::-1]:
            results[command, mode].append(asyncio.run(_run(command, mode, args.window)))
        print(f"  round {r + 1} done, loadavg {loadavg()}", flush=True)

    figures = []
    for number, command, mode, name in (
        (1, "sleep", "thread", "64 sleeping, off | in a thread"),
        (2, "sleep", "loop", "64 sleeping, off | on the loop"),
        (3, "work", "thread", "64 working, off | in a thread"),
    ):
        off, on = results[command, "off"], results[command, mode]

        def side(runs: list[dict[str, float]], key: str) -> list[float]:
            return [result[key] for result in runs]

        added = [s - b for s, b in zip(side(on, "loop_ms"), side(off, "loop_ms"), strict=True)]
        target = ("<", 1.0, "subject") if number == 1 else None
        figures += [
            Figure(f"{number} {name}: loop CPU/s", "ms", side(off, "loop_ms"), side(on, "loop_ms")),
            Figure("  added by sampling", "ms", subj=added, target=target),
            Figure("  loop lag p50", "ms", side(off, "p50"), side(on, "p50")),
            Figure("  loop lag p99", "ms", side(off, "p99"), side(on, "p99")),
            Figure("  loop lag max", "ms", side(off, "max"), side(on, "max")),
            Figure("  other threads' CPU/s", "ms", side(off, "other_ms"), side(on, "other_ms")),
            Figure("  rounds of samples/s", "/s", subj=side(on, "rounds")),
            Figure("  usage events/s", "/s", subj=side(on, "events")),
        ]
    print_table(figures, "off", "sampling", "figure (medians): off | sampling")
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s windows")
    args = parser.parse_args()
    args.rounds, args.window = (1, 3.0) if args.quick else (3, 6.0)
    run(args)


if __name__ == "__main__":
    main()
