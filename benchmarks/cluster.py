"""Dask runner benchmarks: each figure next to the local runner's, measured in the same run.

    make bench                                     # full run, about 2 min (more when busy)
    .venv/bin/python benchmarks/cluster.py --quick    # smoke run, smaller sizes, fewer rounds

The remote side is `DaskRunner("local:2")`: a LocalCluster of two worker processes on this
machine, so every figure is the runner's own cost (the kernel <-> worker protocol, Dask's
comms, the worker plugin), with no network in it. Rounds alternate local and dask (ABBA...)
so that drift on a shared, noisy machine falls on both alike; each line shows the medians
and the ratio of the medians. A missed target is printed, never raised: the script always
exits 0 unless it crashes. See benchmarks/README.md for what each figure means.
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
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from figures import Figure, cpu_seconds, measure, print_table, reset_hwm, status_kib, writer

import oneshot_nb
from oneshot_nb import AsyncOrchestrator, TaskEvent, TaskState
from oneshot_nb.runners.dask import DaskRunner

MiB = 1 << 20
CLUSTER = "local:2"
LIMIT = 8
LINE_EVERY = 0.02  # seconds between two lines of the latency command


# -- what the tasks run -------------------------------------------------------------------


def _ticker(seconds: float) -> list[str]:
    """A command printing the time it writes each line, every LINE_EVERY s, flushed."""
    code = (
        "import sys, time\n"
        f"start = time.time()\nn = int({seconds} / {LINE_EVERY})\n"
        "for i in range(n):\n"
        f"    time.sleep(max(0.0, start + i * {LINE_EVERY} - time.time()))\n"
        "    sys.stdout.write(f'{time.time():.6f}\\n')\n"
        "    sys.stdout.flush()\n"
    )
    return [sys.executable, "-c", code]


def _check(task: Any, what: str, nbytes: int | None = None) -> None:
    """Say so when a run did not do what it was timed for."""
    wrong = task.state is not TaskState.COMPLETED
    if nbytes is not None and task.bytes_written["stdout"] != nbytes:
        wrong = True
    if wrong:
        print(
            f"  warning: {what}: {task.state.name} {task.reason} {task.error or ''}"
            f" read {task.bytes_written} of {nbytes}",
            flush=True,
        )


# -- 1. line latency ------------------------------------------------------------------------


async def _latencies(runner: DaskRunner | None, seconds: float) -> list[float]:
    """For each line of the ticker, ms from its write to the output event that holds it."""
    delays: list[float] = []
    partial = [b""]

    def listen(event: TaskEvent) -> None:
        if event.kind != "output" or event.stream != "stdout":
            return
        now = time.time()
        *lines, partial[0] = (partial[0] + event.data).split(b"\n")
        delays.extend((now - float(line)) * 1000 for line in lines)

    listen.wants_text = False  # type: ignore[attr-defined]  # bytes are enough
    async with AsyncOrchestrator(runner=runner) as orch:
        orch.listeners.append(listen)
        task = orch.submit(_ticker(seconds))
        await task.wait()
    _check(task, "ticker")
    expected = int(seconds / LINE_EVERY)
    if len(delays) != expected:
        print(f"  warning: ticker gave {len(delays)} of {expected} lines", flush=True)
    return delays


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 2. drain throughput ----------------------------------------------------------------------


async def _drain(runner: DaskRunner | None, nbytes: int) -> tuple[float, str | None]:
    """Seconds to drain `nbytes` from one task, and the worker it ran on."""
    start = time.perf_counter()
    async with AsyncOrchestrator(runner=runner) as orch:
        task = orch.submit(writer(nbytes))
        await task.wait()
    elapsed = time.perf_counter() - start
    _check(task, "drain", nbytes)
    return elapsed, task.place.host if task.place is not None else None


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (a worker), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 3. many short tasks ------------------------------------------------------------------------


async def _spawn(runner: DaskRunner | None, n: int, command: list[str] | None = None) -> float:
    command = command or ["true"]
    start = time.perf_counter()
    async with AsyncOrchestrator(runner=runner, limit=LIMIT) as orch:
        for _ in range(n):
            orch.submit(command)
        states = await orch.wait_all()
    elapsed = time.perf_counter() - start
    bad = [s for s in states if s is not TaskState.COMPLETED]
    if bad:
        print(
            f"  warning: {len(bad)} of {n} `{' '.join(command)}` tasks did not complete: {bad[:3]}"
        )
    return elapsed


# -- 4. a blocked kernel loop, each round in a fresh process -----------------------------------


class _Peaks:
    """Samples VmRSS of some processes every 10 ms in a thread, keeping each maximum: a
    thread still runs while the event loop is blocked."""

    def __init__(self, pids: list[int | str]) -> None:
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in self.peak:
            self.peak[pid] = max(self.peak[pid], status_kib("VmRSS", pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.01)

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def block_child(mode: str, nbytes: int, block: float) -> None:
    """One task writing `nbytes` while this process's loop sleeps `block` s in a
    coroutine; print as JSON the RSS growth of this process (the kernel) and of the
    worker that ran the command, and the bytes the task counted."""
    runner = DaskRunner(CLUSTER) if mode == "dask" else None
    workers: dict[str, int] = runner.client.run(os.getpid) if runner is not None else {}

    async def main() -> dict[str, Any]:
        async with AsyncOrchestrator(runner=runner) as orch:
            # Warm: the connections to both workers, the plugin, the first spawn.
            await asyncio.gather(*(orch.submit(["true"]).wait() for _ in range(4)))
            gc.collect()
            pids: list[int | str] = ["self", *workers.values()]
            before = {pid: status_kib("VmRSS", pid) for pid in pids}
            reset = all([reset_hwm(pid) for pid in pids])
            with _Peaks(pids) as peaks:
                task = orch.submit(writer(nbytes))
                while task.bytes_written["stdout"] == 0 and not task.done:
                    await asyncio.sleep(0.001)
                time.sleep(block)  # the loop's thread blocked, as by a long cell
                unblocked = time.perf_counter()
                await task.wait()
                drained = time.perf_counter() - unblocked
            hwm = {pid: status_kib("VmHWM", pid) for pid in pids}
        growth = {
            str(pid): (max(peaks.peak[pid], hwm[pid] if reset else 0) - before[pid]) / 1024
            for pid in pids
        }
        place = task.place
        worker = str(workers[place.host]) if runner is not None and place is not None else None
        return {
            "kernel": growth["self"],
            "worker": growth[worker] if worker is not None else None,
            "counted": task.bytes_written["stdout"],
            "state": task.state.name,
            "drained_after_block": drained,
            "hwm_reset": reset,
        }

    try:
        print(json.dumps(asyncio.run(main())))
    finally:
        if runner is not None:
            runner.close()


def _blocked(mode: str, nbytes: int, block: float, results: list[dict[str, Any]]) -> float:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--block-child", mode, str(nbytes), str(block)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    results.append(data)
    if data["counted"] != nbytes or data["state"] != "COMPLETED":
        print(f"  warning: blocked {mode}: {data['state']}, counted {data['counted']} of {nbytes}")
    if not data["hwm_reset"]:
        print("  note: VmHWM could not be reset: growth from sampled VmRSS only")
    return data["kernel"]


# -- rounds, medians and the table --------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def header(args: argparse.Namespace) -> None:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    print(f"python {platform.python_version()} ({sys.executable})")
    print(
        f"distributed {version('distributed')}  dask {version('dask')}  "
        f"anyio {version('anyio')}  oneshot_nb {version('oneshot_nb')} "
        f"({os.path.dirname(oneshot_nb.__file__)})"
    )
    system = f"{platform.system()} {platform.release()}"
    print(f"os.cpu_count {os.cpu_count()}  loadavg {_loadavg()}  {system}")
    print(
        f"mode {'quick' if args.quick else 'full'}: DaskRunner({CLUSTER!r}) vs local; "
        f"latency {args.tick:g} s x {args.rounds}, drain {args.drain // MiB} MiB x "
        f"{args.rounds} (+1 warm-up), {args.spawn} x true and {LIMIT} x sleep @{LIMIT} x "
        f"{args.rounds}, "
        f"blocked {args.block:g} s with {args.blocked // MiB} MiB x {args.block_rounds} "
        f"(each in a fresh process)"
    )
    print(flush=True)


def run(args: argparse.Namespace) -> None:
    header(args)
    started = time.perf_counter()
    runner = DaskRunner(CLUSTER)
    print(f"  cluster up in {time.perf_counter() - started:.1f} s", flush=True)
    figures: list[Figure] = []

    def on(which: str) -> DaskRunner | None:
        return runner if which == "dask" else None

    def timed(figs: list[Figure], step: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        step()
        figures.extend(figs)
        print(f"  measured {figs[0].name.strip()!r} in {time.perf_counter() - t0:.0f} s")

    # Warm both sides: the plugin, the connections to each worker, the first spawns.
    for which in ("local", "dask"):
        asyncio.run(_spawn(on(which), 8))

    # 1. line latency: each round gives its p50, p99 and max
    p50 = Figure(f"1 line latency p50, {args.tick:g} s ticker", "ms")
    p99 = Figure("  line latency p99", "ms", target=("<=", 50, "dask"))
    top = Figure("  line latency max", "ms")

    def latency(which: str) -> Callable[[], float]:
        def one() -> float:
            delays = asyncio.run(_latencies(on(which), args.tick))
            side = "base" if which == "local" else "subj"
            getattr(p99, side).append(_percentile(delays, 0.99))
            getattr(top, side).append(max(delays))
            return _percentile(delays, 0.5)

        return one

    timed(
        [p50, p99, top],
        lambda: measure(p50, args.rounds, latency("local"), latency("dask"), warmup=False),
    )

    # 2. drain throughput, and the CPU this process spends per MiB
    size = args.drain
    mib = size / MiB
    rate = Figure(f"2 drain {size // MiB} MiB", "MiB/s", target=(">=", 0.4, "ratio"))
    cpu = Figure("  drain, CPU ms/MiB: this process", "ms")
    worker_cpu = Figure("  drain, CPU ms/MiB: the dask worker", "ms")
    workers: dict[str, int] = runner.client.run(os.getpid)

    def drain(which: str) -> Callable[[], float]:
        def one() -> float:
            before = cpu_seconds()
            theirs = {address: _process_cpu(pid) for address, pid in workers.items()}
            elapsed, host = asyncio.run(_drain(on(which), size))
            getattr(cpu, "base" if which == "local" else "subj").append(
                (cpu_seconds() - before) * 1000 / mib
            )
            if host in workers:
                spent = _process_cpu(workers[host]) - theirs[host]
                worker_cpu.subj.append(spent * 1000 / mib)
            return mib / elapsed

        return one

    timed(
        [rate, cpu, worker_cpu],
        lambda: measure(rate, args.rounds, drain("local"), drain("dask")),
    )
    del cpu.base[0], cpu.subj[0], worker_cpu.subj[0]  # the warm-up runs

    # 3. many short tasks
    n = args.spawn
    wall = Figure(f"3 {n} x true @{LIMIT}, wall", "s")
    per = Figure("  per task", "ms")

    def spawn(which: str) -> Callable[[], float]:
        def one() -> float:
            elapsed = asyncio.run(_spawn(on(which), n))
            getattr(per, "base" if which == "local" else "subj").append(elapsed * 1000 / n)
            return elapsed

        return one

    timed(
        [wall, per], lambda: measure(wall, args.rounds, spawn("local"), spawn("dask"), warmup=False)
    )

    # How many commands run at once at limit 8: a worker runs one per Dask thread.
    nap, naps = 0.5, LIMIT
    at_once = Figure(f"  {naps} x sleep {nap:g} @{LIMIT}: running at once", "")

    def sleeps(which: str) -> Callable[[], float]:
        return lambda: naps * nap / asyncio.run(_spawn(on(which), naps, ["sleep", str(nap)]))

    timed(
        [at_once],
        lambda: measure(at_once, args.rounds, sleeps("local"), sleeps("dask"), warmup=False),
    )
    runner.close()

    # 4. the kernel's loop blocked while a task floods
    kernel = Figure(
        f"4 blocked {args.block:g} s, {args.blocked // MiB} MiB: kernel RSS+",
        "MiB",
        target=("<", 16, "dask"),
    )
    worker = Figure("  worker RSS+ (peak growth)", "MiB", target=("<", 16, "dask"))
    after = Figure("  drained, s after the block", "s")
    results: dict[str, list[dict[str, Any]]] = {"local": [], "dask": []}

    def blocked(which: str) -> Callable[[], float]:
        return lambda: _blocked(which, args.blocked, args.block, results[which])

    timed(
        [kernel, worker, after],
        lambda: measure(kernel, args.block_rounds, blocked("local"), blocked("dask"), warmup=False),
    )
    worker.subj[:] = [r["worker"] for r in results["dask"]]
    after.base[:] = [r["drained_after_block"] for r in results["local"]]
    after.subj[:] = [r["drained_after_block"] for r in results["dask"]]
    lost = [
        f"{which} round {i + 1}: {r['counted']} of {args.blocked} ({r['state']})"
        for which, rs in results.items()
        for i, r in enumerate(rs)
        if r["counted"] != args.blocked or r["state"] != "COMPLETED"
    ]

    print_table(figures, "local", "dask", "figure (medians)")
    print()
    print(
        "  notes: LocalCluster's scheduler and the client's loop thread live in this process,"
        "\n  so its CPU counts theirs; DaskRunner('local:2') has one Dask thread per worker,"
        "\n  which bounds the commands running at once to 2 whatever the limit."
    )
    if lost:
        print("  4 nothing lost: TARGET MISSED: " + "; ".join(lost))
    else:
        rounds = len(results["local"]) + len(results["dask"])
        print(f"  4 nothing lost: TARGET MET (all {args.blocked} bytes counted in {rounds} runs)")
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {_loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument("--block-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block_child:
        mode, nbytes, block = args.block_child
        block_child(mode, int(nbytes), float(block))
        return
    if args.quick:
        args.tick, args.drain, args.spawn, args.rounds = 1.0, 64 * MiB, 50, 1
        args.block, args.blocked, args.block_rounds = 1.0, 64 * MiB, 1
    else:
        args.tick, args.drain, args.spawn, args.rounds = 3.0, 512 * MiB, 200, 3
        args.block, args.blocked, args.block_rounds = 3.0, 300 * MiB, 3
    run(args)


if __name__ == "__main__":
    main()
