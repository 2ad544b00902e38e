"""Terminal tasks, input and agent parsing: each figure beside a baseline in the same run.

    make bench                                        # full run, about 1.5 min (more when busy)
    .venv/bin/python benchmarks/terminal.py --quick   # smoke run, smaller sizes, one round

Each figure is measured beside its baseline, in rounds whose order alternates (ABBA...)
so that a shared machine's drift falls on both; the table gives medians and their
ratio. A target missed is reported, not raised (exit status 0 unless it crashes).
What each figure is: benchmarks/README.md, section terminal.py.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from typing import Any

from figures import (
    Figure,
    MiB,
    cpu_seconds,
    loadavg,
    measure,
    print_header,
    print_table,
    reset_hwm,
    status_kib,
    writer,
)

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState

READ_SIZE = 1 << 16


def _check(task: OneshotTask, what: str, nbytes: int | None = None) -> None:
    """Say so when a run did not do what it was timed for."""
    counted = task.bytes_written["stdout"]
    if task.state is not TaskState.COMPLETED or (nbytes is not None and counted != nbytes):
        print(
            f"  warning: {what}: {task.state.name} ({task.reason}), counted {counted} bytes"
            + (f" of {nbytes}" if nbytes is not None else ""),
            flush=True,
        )


# -- 1. and 2. draining a flood ----------------------------------------------------------


async def _drain_task(nbytes: int, pty: bool) -> float:
    """Seconds for one task writing `nbytes` to end, through a terminal or pipes."""
    start = time.perf_counter()
    async with AsyncOrchestrator() as orch:
        task = orch.submit(writer(nbytes), pty=pty)
        await task.wait()
    elapsed = time.perf_counter() - start
    _check(task, "pty drain" if pty else "pipe drain", nbytes)
    return elapsed


def _drain_bare_pty(nbytes: int, per_read: list[float]) -> float:
    """Seconds to read `nbytes` from a bare pty (OPOST off, as the engine sets it) with
    blocking reads of READ_SIZE until EIO: what a terminal can give at all. Appends to
    `per_read` the bytes a read gave on average."""
    start = time.perf_counter()
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    try:
        child = subprocess.Popen(
            writer(nbytes), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
    finally:
        os.close(slave)  # ours would keep the terminal from ever ending
    got = reads = 0
    try:
        while True:
            try:
                piece = os.read(master, READ_SIZE)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every process closed the slave
                    raise
                break
            if not piece:
                break
            got += len(piece)
            reads += 1
    finally:
        os.close(master)
        child.wait()
    elapsed = time.perf_counter() - start
    per_read.append(got / max(1, reads))
    if got != nbytes:
        print(f"  warning: bare pty read {got} of {nbytes} bytes", flush=True)
    return elapsed


# -- 3. a blocked loop, each round in a fresh process ----------------------------------------


def block_child(mode: str, nbytes: int, block: float) -> None:
    """One task writing `nbytes` (a terminal or pipes) while the loop is blocked for
    `block` s by a callback; print as JSON this process's peak RSS growth (VmHWM, reset
    before the task, minus VmRSS then), the bytes counted and the drain after the block."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        unblocked = [0.0]

        def hold_the_loop() -> None:
            time.sleep(block)  # as a long cell would
            unblocked[0] = time.perf_counter()

        async with AsyncOrchestrator() as orch:
            await orch.submit(["true"], pty=mode == "pty").wait()  # warm: the first spawn
            gc.collect()
            before = status_kib("VmRSS")
            reset = reset_hwm()
            task = orch.submit(writer(nbytes), pty=mode == "pty")
            while task.bytes_written["stdout"] == 0 and not task.done:
                await asyncio.sleep(0.001)
            loop.call_soon(hold_the_loop)
            await task.wait()
            drained = time.perf_counter() - unblocked[0]
            peak = status_kib("VmHWM") if reset else status_kib("VmRSS")
        return {
            "growth_mib": (peak - before) / 1024,
            "drain_s": drained,
            "bytes": task.bytes_written["stdout"],
            "state": task.state.name,
            "reset": reset,
        }

    print(json.dumps(asyncio.run(main())))


def _blocked(mode: str, nbytes: int, block: float, drained: list[float], lost: list[str]) -> float:
    """The peak RSS growth in MiB of a fresh process running `block_child`; its drain
    time after the block goes to `drained`, and a run that lost bytes to `lost`."""
    child = [sys.executable, os.path.abspath(__file__), "--block-child", mode]
    reply = subprocess.check_output([*child, str(nbytes), str(block)], text=True)
    data = json.loads(reply.splitlines()[-1])
    drained.append(data["drain_s"])
    if data["bytes"] != nbytes or data["state"] != "COMPLETED":
        lost.append(f"{mode} run {len(drained)}: {data['state']}, {data['bytes']} of {nbytes}")
    if not data["reset"]:
        print("  note: VmHWM could not be reset: growth from VmRSS after the drain only")
    return data["growth_mib"]


# -- 4. input round trips ----------------------------------------------------------------------


async def _round_trips(pty: bool, count: int) -> list[float]:
    """Milliseconds from `send("x\\n")` to all of its answer in the task's output, for
    `cat` in a terminal (its echo, then cat's copy: 4 bytes) or on a stdin pipe (2)."""
    answer = 4 if pty else 2
    arrived = asyncio.Event()
    wanted = [0]

    def listen(event: TaskEvent) -> None:
        if event.kind == "output" and task.bytes_written["stdout"] >= wanted[0]:
            arrived.set()

    listen.wants_text = False  # type: ignore[attr-defined]  # the count is enough

    async def one() -> float:
        arrived.clear()
        wanted[0] = task.bytes_written["stdout"] + answer
        start = time.perf_counter()
        task.send("x\n")
        await arrived.wait()
        return (time.perf_counter() - start) * 1000

    async with AsyncOrchestrator() as orch:
        task = orch.submit(["cat"], pty=pty, stdin=not pty)
        task.listeners.append(listen)
        await task.wait_for(TaskState.RUNNING)
        for _ in range(5):
            await one()  # untimed: cat has started and read once
        delays = [await one() for _ in range(count)]
        task.close_stdin()
        await task.wait()
    _check(task, "round trips", (count + 5) * answer)
    return delays


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


# -- 5. an agent's stream ----------------------------------------------------------------------

SESSION = "6a1f0c3e-5b7d-4e2a-9c41-2f8e7d6b5a90"
MODEL = "claude-sonnet-4-5-20250929"
# The words of the agent's messages: some need escaping in JSON, some are not ASCII.
PROSE = (
    "the test fails because fixture returns None when the config file is missing so I will "
    "read module check imports then run pytest again after fixing édition naïve ✓ → "
    '`make lint` passes; "quoted" path/to/file.py:42 {braces} [list] 0.0412 tokens'
)
WORDS = PROSE.split()
CODE = (
    "def {0}(self, value: int) -> str:",
    '    """Return the {1} of {0}, or "" when unset."""',
    "    if value is None:\n        return ''",
    "    return f'{{value!r}} -> {1}'\t# tab",
    "import {0}\nfrom {1} import {0} as _{0}",
    "FAILED tests/test_{0}.py::test_{1} - AssertionError: assert 'a\\\\b' == \"{1}\"",
    "{0}/{1}.py:12: warning: unused variable « {1} »",
)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _output_pool(rng: random.Random, count: int) -> list[str]:
    """Pieces of command output and file contents, 2-6 KB each, with characters JSON
    has to escape (newlines, tabs, quotes, backslashes) and some non-ASCII."""
    names = [w.strip("`\"'{}[].,;:") or "x" for w in WORDS]
    pool = []
    for _ in range(count):
        lines: list[str] = []
        size, target = 0, rng.randint(2000, 6000)
        while size < target:
            line = rng.choice(CODE).format(rng.choice(names), rng.choice(names))
            lines.append(line)
            size += len(line) + 1
        pool.append("\n".join(lines))
    return pool


def _tool_call(rng: random.Random, number: int) -> tuple[str, dict[str, str]]:
    kind = rng.choice(("Bash", "Read", "Edit", "Grep"))
    path = f"src/pkg/module_{number % 37}.py"
    if kind == "Bash":
        return kind, {"command": f"pytest -q tests/test_{number % 23}.py", "description": "Run"}
    if kind == "Read":
        return kind, {"file_path": path}
    if kind == "Edit":
        return kind, {"file_path": path, "old_string": "return None", "new_string": "return ''"}
    return kind, {"pattern": f"def test_{number % 11}", "path": "tests"}


class _Stream:
    """Writes a Claude Code stream-json file line by line, counting what it holds."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.size = 0
        self.turns = 0
        self.tool_calls = 0

    def line(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self.file.write(data)
        self.size += len(data)

    def assistant(self, message_id: str, block: dict[str, Any], usage: dict[str, int]) -> None:
        # Claude Code prints one line per content block, each repeating id and usage.
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [block],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self.line(
            {
                "type": "assistant",
                "message": message,
                "parent_tool_use_id": None,
                "session_id": SESSION,
            }
        )

    def tool_result(self, tool_id: str, content: str) -> None:
        block = {"tool_use_id": tool_id, "type": "tool_result", "content": content}
        self.line(
            {
                "type": "user",
                "message": {"role": "user", "content": [block]},
                "parent_tool_use_id": None,
                "session_id": SESSION,
            }
        )


def write_claude_stream(path: str, size: int, seed: int = 12) -> tuple[int, int]:
    """About `size` bytes of a Claude Code run as `--output-format stream-json` prints
    it: a system init, turns of text and tool_use blocks, each tool's result a few KB
    (one in 300 about 1 MB), a last text and the result. Returns (turns, tool calls)."""
    rng = random.Random(seed)
    pool = _output_pool(rng, 64)
    big = "\n".join(pool)
    big = (big * (MiB // len(big) + 1))[:MiB]
    with open(path, "wb", buffering=1 << 20) as file:
        stream = _Stream(file)
        stream.line(
            {
                "type": "system",
                "subtype": "init",
                "cwd": "/work/project",
                "session_id": SESSION,
                "tools": ["Bash", "Edit", "Glob", "Grep", "Read", "Write", "TodoWrite"],
                "mcp_servers": [],
                "model": MODEL,
                "permissionMode": "bypassPermissions",
                "apiKeySource": "none",
            }
        )
        while True:
            stream.turns += 1
            message_id = f"msg_01{stream.turns:020d}"
            usage = {
                "input_tokens": 4,
                "cache_creation_input_tokens": rng.randint(100, 3000),
                "cache_read_input_tokens": 20000 + 40 * stream.turns,
                "output_tokens": rng.randint(20, 600),
            }
            text = _text(rng, rng.randint(10, 120))
            stream.assistant(message_id, {"type": "text", "text": text}, usage)
            if stream.size >= size:
                break  # the last turn: text only
            calls = []
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                stream.tool_calls += 1
                tool_id = f"toolu_01{stream.tool_calls:020d}"
                name, arguments = _tool_call(rng, stream.tool_calls)
                block = {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}
                stream.assistant(message_id, block, usage)
                calls.append(tool_id)
            for tool_id in calls:
                stream.tool_result(tool_id, big if rng.random() < 1 / 300 else rng.choice(pool))
        stream.line(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 1_234_567,
                "duration_api_ms": 1_100_000,
                "num_turns": stream.turns,
                "result": text,
                "session_id": SESSION,
                "total_cost_usd": 12.3456,
                "usage": {"input_tokens": 4 * stream.turns, "output_tokens": 300 * stream.turns},
            }
        )
    return stream.turns, stream.tool_calls


async def _cat(path: str, agent: str | None, expected: tuple[int, int]) -> float:
    """Seconds for `cat path` to end as a task, its output read as `agent`'s stream."""
    start = time.perf_counter()
    async with AsyncOrchestrator() as orch:
        task = orch.submit(["cat", path], agent=agent)
        await task.wait()
    elapsed = time.perf_counter() - start
    _check(task, f"cat, agent={agent}", os.path.getsize(path))
    summary = task.agent
    if agent is not None:
        turns, tool_calls = expected
        if (
            summary is None
            or (summary.kind, summary.turns, summary.tool_calls) != (agent, turns, tool_calls)
            or summary.result is None
            or not summary.result.ok
            or summary.error is not None
        ):
            print(
                f"  warning: agent summary {summary!r:.300}, expected {turns} turns and"
                f" {tool_calls} tool calls, ended ok",
                flush=True,
            )
    return elapsed


# -- rounds, medians and the table ----------------------------------------------------------------


def header(args: argparse.Namespace) -> None:
    print_header(
        ("anyio", "python-statemachine", "oneshot_nb"),
        f"mode {'quick' if args.quick else 'full'}: drain {args.drain // MiB} MiB x "
        f"{args.rounds} (+1 warm-up), blocked {args.block:g} s with {args.blocked // MiB} MiB x "
        f"{args.block_rounds} (each in a fresh process), {args.trips} round trips x "
        f"{args.rounds}, agent stream {args.stream // 1_000_000} MB x {args.rounds}",
    )


def run(args: argparse.Namespace) -> None:
    figures: list[Figure] = []
    header(args)
    started = time.perf_counter()

    def timed(figs: list[Figure], step: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        step()
        figures.extend(figs)
        took = time.perf_counter() - t0
        print(f"  measured {figs[0].name.strip()!r} in {took:.0f} s", flush=True)

    size = args.drain

    def rate(seconds: Callable[[], float]) -> Callable[[], float]:
        return lambda: size / MiB / seconds()

    # 1. the target: a terminal task drains at least half as fast as a piped one
    pipe_vs_pty = Figure(
        f"1 drain {size // MiB} MiB: pipes | pty", "MiB/s", target=(">=", 0.5, "ratio")
    )
    timed(
        [pipe_vs_pty],
        lambda: measure(
            pipe_vs_pty,
            args.rounds,
            rate(lambda: asyncio.run(_drain_task(size, pty=False))),
            rate(lambda: asyncio.run(_drain_task(size, pty=True))),
        ),
    )

    # 2. what a terminal can give at all: a bare pty read by blocking reads
    bare_vs_pty = Figure("2 drain: bare pty | pty task", "MiB/s")
    per_read: list[float] = []
    timed(
        [bare_vs_pty],
        lambda: measure(
            bare_vs_pty,
            args.rounds,
            rate(lambda: _drain_bare_pty(size, per_read)),
            rate(lambda: asyncio.run(_drain_task(size, pty=True))),
        ),
    )

    # 3. the loop blocked while a terminal task floods
    blocked = Figure(
        f"3 blocked {args.block:g} s, {args.blocked // MiB} MiB: RSS+",
        "MiB",
        target=("<", 16, "subject"),
    )
    after = Figure("  drained, s after the block", "s")
    lost: list[str] = []

    def block_round(mode: str, drained: list[float]) -> Callable[[], float]:
        return lambda: _blocked(mode, args.blocked, args.block, drained, lost)

    pipe_run, pty_run = block_round("pipe", after.base), block_round("pty", after.subj)
    timed(
        [blocked, after],
        lambda: measure(blocked, args.block_rounds, pipe_run, pty_run, warmup=False),
    )

    # 4. input round trips: each round gives its p50 and p99
    p50 = Figure(f"4 send -> answer, {args.trips} x: p50", "ms")
    p99 = Figure("  p99", "ms")

    def trips(pty: bool) -> Callable[[], float]:
        def one() -> float:
            delays = asyncio.run(_round_trips(pty, args.trips))
            (p99.subj if pty else p99.base).append(_p99(delays))
            return statistics.median(delays)

        return one

    timed([p50, p99], lambda: measure(p50, args.rounds, trips(False), trips(True)))
    del p99.base[0], p99.subj[0]  # the warm-up runs

    # 5. an agent's stream read as it comes, beside the same bytes unread
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "claude.ndjson")
        t0 = time.perf_counter()
        expected = write_claude_stream(path, args.stream)
        stream_mib = os.path.getsize(path) / MiB
        print(
            f"  wrote {stream_mib:.1f} MiB of stream-json ({expected[0]} turns,"
            f" {expected[1]} tool calls) in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        wall = Figure(f"5 cat {stream_mib:.0f} MiB stream: plain | claude", "s")
        speed = Figure("  throughput", "MiB/s")
        cpu = Figure("  CPU of this process per MiB", "ms")

        def cat(agent: str | None) -> Callable[[], float]:
            def one() -> float:
                before = cpu_seconds()
                elapsed = asyncio.run(_cat(path, agent, expected))
                side = "base" if agent is None else "subj"
                getattr(cpu, side).append((cpu_seconds() - before) * 1000 / stream_mib)
                getattr(speed, side).append(stream_mib / elapsed)
                return elapsed

            return one

        timed([wall, speed, cpu], lambda: measure(wall, args.rounds, cat(None), cat("claude")))
        for fig in (speed, cpu):
            del fig.base[0], fig.subj[0]  # the warm-up runs

    print_table(figures, "baseline", "subject", "figure (medians): baseline | subject")
    print()
    print(
        f"  2 a read of the bare pty gave {statistics.median(per_read):,.0f} bytes on average"
        f" of the {READ_SIZE:,} asked (median of the runs)"
    )
    runs = len(after.base) + len(after.subj)
    verdict = f"TARGET MISSED: {'; '.join(lost)}" if lost else "TARGET MET"
    print(f"  3 every byte counted, in {runs} runs: {verdict}")
    print(f"\n  total {time.perf_counter() - started:.0f} s, loadavg now {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, smaller sizes")
    parser.add_argument("--block-child", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block_child is not None:
        child = args.block_child
        return block_child(child[0], int(child[1]), float(child[2]))
    if args.quick:
        args.drain, args.rounds, args.trips, args.stream = 64 * MiB, 1, 50, 10_000_000
        args.block, args.blocked, args.block_rounds = 1.0, 64 * MiB, 1
    else:
        args.drain, args.rounds, args.trips, args.stream = 256 * MiB, 5, 200, 50_000_000
        args.block, args.blocked, args.block_rounds = 3.0, 256 * MiB, 3
    run(args)


if __name__ == "__main__":
    main()
