"""Engine benchmarks: each figure next to a raw-asyncio baseline measured in the same run.

    make bench                                      # full run, about 1 min (more when busy)
    .venv/bin/python benchmarks/engine.py --quick   # smoke run, smaller sizes, fewer rounds

Rounds alternate baseline and subject (ABBA...) so that drift on a shared, noisy machine
falls on both alike; each line shows the medians and the ratio of the medians. A missed
target is printed, never raised: the script always exits 0 unless it crashes.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata

from figures import Figure, cpu_seconds, measure, print_table, reset_hwm, status_kib, writer

import oneshot_nb
from oneshot_nb import AsyncOrchestrator, TaskEvent, TaskState
from oneshot_nb.storage.store import Store

MiB = 1 << 20
PIPE = asyncio.subprocess.PIPE
READ_SIZE = 1 << 16


# -- measurements ----------------------------------------------------------------------


async def _spawn_raw(n: int, limit: int, shell: bool) -> float:
    sem = asyncio.Semaphore(limit)

    async def one() -> None:
        async with sem:
            if shell:
                proc = await asyncio.create_subprocess_shell("true", stdout=PIPE, stderr=PIPE)
            else:
                proc = await asyncio.create_subprocess_exec("true", stdout=PIPE, stderr=PIPE)
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            await proc.wait()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start


async def _spawn_engine(n: int, limit: int, shell: bool) -> float:
    command: str | list[str] = "true" if shell else ["true"]
    start = time.perf_counter()
    async with AsyncOrchestrator(limit=limit) as orch:
        for _ in range(n):
            orch.submit(command)
        states = await orch.wait_all()
    elapsed = time.perf_counter() - start
    bad = [s for s in states if s is not TaskState.COMPLETED]
    if bad:
        print(f"  warning: {len(bad)} of {n} spawn tasks did not complete: {bad[:3]}")
    return elapsed


async def _drain_raw(nbytes: int) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*writer(nbytes), stdout=PIPE, stderr=PIPE)

    async def pump(stream: asyncio.StreamReader) -> int:
        total = 0
        while True:
            data = await stream.read(READ_SIZE)
            if not data:
                return total
            total += len(data)

    assert proc.stdout is not None and proc.stderr is not None
    got, _ = await asyncio.gather(pump(proc.stdout), pump(proc.stderr))
    await proc.wait()
    elapsed = time.perf_counter() - start
    if got != nbytes:
        print(f"  warning: raw drain read {got} of {nbytes} bytes")
    return elapsed


async def _drain_engine(nbytes: int, attach: str = "none") -> float:
    counted = [0]

    def count(event: TaskEvent) -> None:
        if event.kind == "output":
            counted[0] += len(event.data)

    start = time.perf_counter()
    async with AsyncOrchestrator(limit=8) as orch:
        consumer = None
        if attach == "listener":
            orch.listeners.append(count)
        elif attach == "subscriber":
            subscription = orch.events()

            async def consume() -> None:
                async for event in subscription:
                    count(event)

            consumer = asyncio.get_running_loop().create_task(consume())
        task = orch.submit(writer(nbytes))
        await task.wait()
    if consumer is not None:
        await consumer
    elapsed = time.perf_counter() - start
    if task.state is not TaskState.COMPLETED or task.bytes_written["stdout"] != nbytes:
        print(f"  warning: engine drain {task.state} read {task.bytes_written} of {nbytes}")
    if attach != "none" and counted[0] != nbytes:
        print(f"  note: {attach} counted {counted[0]} of {nbytes} bytes (bounded queue drops)")
    return elapsed


def _log_lines(count: int) -> list[str]:
    """A Python program printing `count` log lines as fast as it can: what a training
    script or a build writes, at the speed Python writes it."""
    code = (
        "import sys\nw = sys.stdout.write\n"
        f"for i in range({count}): w('INFO step %d loss=%.6f lr=0.0001\\n' % (i, i * 0.001))"
    )
    return [sys.executable, "-c", code]


async def _drain_stored(
    nbytes: int, store_on: bool, committed: list[float], command: list[str] | None = None
) -> float:
    """Drain time of one task with or without the history store; `committed` gets the
    time until the store has committed every byte as well."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        async with AsyncOrchestrator(limit=8) as orch:
            store = Store(os.path.join(tmp, "history.sqlite3")) if store_on else None
            if store is not None:
                store.attach(orch)
            task = orch.submit(command or writer(nbytes))
            await task.wait()
            elapsed = time.perf_counter() - start
        if store is not None:
            store.flush(timeout=60)
            committed.append(time.perf_counter() - start)
            store.close()
    if command is None and task.bytes_written["stdout"] != nbytes:
        print(f"  warning: stored drain read {task.bytes_written} of {nbytes}")
    return elapsed


# -- peak RSS, measured in a fresh child process ------------------------------------------


class _Sampler:
    """Samples VmRSS every `interval` seconds in a thread and keeps the maximum."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kib("VmRSS"))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib("VmRSS"))


def rss_child(mode: str, nbytes: int) -> None:
    """Run one task writing `nbytes` (raw loop or engine) and print RSS figures as JSON."""

    async def main() -> dict[str, object]:
        if mode == "engine":
            async with AsyncOrchestrator(limit=8) as orch:
                gc.collect()
                with _Sampler() as sampler:
                    before = status_kib("VmRSS")
                    hwm_reset = reset_hwm()
                    task = orch.submit(writer(nbytes))
                    await task.wait()
                    hwm = status_kib("VmHWM")
                ok = task.bytes_written["stdout"] == nbytes
        else:
            gc.collect()
            with _Sampler() as sampler:
                before = status_kib("VmRSS")
                hwm_reset = reset_hwm()
                await _drain_raw(nbytes)
                hwm = status_kib("VmHWM")
            ok = True
        return {
            "before_kib": before,
            "peak_sampled_kib": sampler.peak,
            "hwm_kib": hwm,
            "hwm_reset": hwm_reset,
            "samples": sampler.samples,
            "ok": ok,
        }

    print(json.dumps(asyncio.run(main())))


def _rss_growth(mode: str, nbytes: int) -> float:
    """Peak RSS growth in MiB of a fresh child process running `mode`."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss-child", mode, str(nbytes)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    if not data["ok"]:
        print(f"  warning: rss child {mode} did not read all {nbytes} bytes")
    peak = data["peak_sampled_kib"]
    if data["hwm_reset"]:
        peak = max(peak, data["hwm_kib"])
    return (peak - data["before_kib"]) / 1024


# -- rounds, medians and the table --------------------------------------------------------


def header(args: argparse.Namespace) -> None:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"
    print(f"python {platform.python_version()} ({sys.executable})")
    print(
        f"anyio {version('anyio')}  python-statemachine {version('python-statemachine')}  "
        f"oneshot_nb {version('oneshot_nb')} ({os.path.dirname(oneshot_nb.__file__)})"
    )
    print(
        f"nproc {nproc}  os.cpu_count {os.cpu_count()}  loadavg {os.getloadavg()[0]:.2f}  "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"mode {'quick' if args.quick else 'full'}: spawn {args.spawn} x {args.rounds_first} "
        f"rounds, drain {args.drain // MiB} MiB x {args.rounds}, "
        f"rss {args.rss // MiB} MiB x {args.rss_rounds} (each run in a fresh process)"
    )


def run(args: argparse.Namespace) -> None:
    header(args)
    started = time.perf_counter()
    figures: list[Figure] = []
    n, limit = args.spawn, 8

    def timed(
        fig: Figure,
        rounds: int,
        base: Callable[[], float],
        subj: Callable[[], float],
        warmup: bool = True,
    ) -> None:
        t0 = time.perf_counter()
        measure(fig, rounds, base, subj, warmup)
        figures.append(fig)
        print(f"  measured {fig.name!r} in {time.perf_counter() - t0:.0f} s", flush=True)

    # 1. spawn throughput; the same runs also give the CPU time this process spent per
    # task, a figure that other load on the machine disturbs much less than wall time.
    cpu = Figure("  spawn argv, CPU of this process/task", "ms")

    def cpu_ms(
        fn: Callable[[], float], samples: list[float], per: float = n
    ) -> Callable[[], float]:
        def run_one() -> float:
            before = cpu_seconds()
            result = fn()
            samples.append((cpu_seconds() - before) * 1000 / per)
            return result

        return run_one

    timed(
        Figure(f"1 spawn {n} true @{limit}, argv", "s", target=("<=", 1.3, "ratio")),
        args.rounds_first,
        cpu_ms(lambda: asyncio.run(_spawn_raw(n, limit, shell=False)), cpu.base),
        cpu_ms(lambda: asyncio.run(_spawn_engine(n, limit, shell=False)), cpu.subj),
    )
    del cpu.base[0], cpu.subj[0]  # the warm-up runs
    figures.append(cpu)
    timed(
        Figure(f"  spawn {n} 'true' @{limit}, shell str", "s"),
        args.rounds,
        lambda: asyncio.run(_spawn_raw(n, limit, shell=True)),
        lambda: asyncio.run(_spawn_engine(n, limit, shell=True)),
    )

    # 2. drain throughput (times turned into MiB/s per round)
    size = args.drain
    mib = size / MiB

    def rate(fn: Callable[[], float]) -> Callable[[], float]:
        return lambda: mib / fn()

    cpu = Figure("  drain, CPU of this process per MiB", "ms")
    timed(
        Figure(f"2 drain {size // MiB} MiB, no listener", "MiB/s", target=(">=", 0.8, "ratio")),
        args.rounds,
        cpu_ms(rate(lambda: asyncio.run(_drain_raw(size))), cpu.base, mib),
        cpu_ms(rate(lambda: asyncio.run(_drain_engine(size))), cpu.subj, mib),
    )
    del cpu.base[0], cpu.subj[0]  # the warm-up runs
    figures.append(cpu)
    timed(
        Figure("  drain, + counting listener", "MiB/s"),
        args.rounds,
        rate(lambda: asyncio.run(_drain_raw(size))),
        rate(lambda: asyncio.run(_drain_engine(size, "listener"))),
    )
    timed(
        Figure("  drain, + counting subscriber", "MiB/s"),
        args.rounds,
        rate(lambda: asyncio.run(_drain_raw(size))),
        rate(lambda: asyncio.run(_drain_engine(size, "subscriber"))),
    )

    # 4. the history store: draining with it on, against the same drain without it
    stored = args.stored
    committed: list[float] = []
    timed(
        Figure(f"4 drain {size_name(stored)} with store", "s", target=("<=", 2.0, "ratio")),
        args.rounds,
        lambda: asyncio.run(_drain_stored(stored, False, [])),
        lambda: asyncio.run(_drain_stored(stored, True, committed)),
    )
    done = Figure("  ... until all of it is committed", "s")
    done.base[:] = figures[-1].base
    done.subj[:] = committed[1:]  # without the warm-up run
    figures.append(done)
    lines = args.stored_lines
    timed(
        Figure(f"  {lines:,} log lines from Python, with store", "s"),
        args.rounds,
        lambda: asyncio.run(_drain_stored(0, False, [], _log_lines(lines))),
        lambda: asyncio.run(_drain_stored(0, True, [], _log_lines(lines))),
    )

    # 3. peak RSS growth, each round in a fresh child process
    timed(
        Figure(
            f"3 peak RSS growth, {size_name(args.rss)} task", "MiB", target=("<=", 64, "subject")
        ),
        args.rss_rounds,
        lambda: _rss_growth("raw", args.rss),
        lambda: _rss_growth("engine", args.rss),
        warmup=False,
    )  # a fresh process each round: nothing to warm

    print_table(figures, "baseline", "oneshot_nb")
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {os.getloadavg()[0]:.2f}")


def size_name(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):g} GiB" if nbytes >= 1 << 30 else f"{nbytes // MiB} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument("--rss-child", nargs=2, metavar=("MODE", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]))
        return
    if args.quick:
        args.spawn, args.drain, args.rss, args.stored = 100, 64 * MiB, 128 * MiB, 64 * MiB
        args.stored_lines = 300_000
        args.rounds_first, args.rounds, args.rss_rounds = 2, 1, 1
    else:
        args.spawn, args.drain, args.rss, args.stored = 500, 512 * MiB, 1 << 30, 256 * MiB
        args.stored_lines = 3_000_000
        args.rounds_first, args.rounds, args.rss_rounds = 7, 5, 3
    run(args)


if __name__ == "__main__":
    main()
