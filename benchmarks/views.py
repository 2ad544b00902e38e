"""View benchmark: 16 tasks flooding their live views in a real kernel, beside a floor and a
naive baseline measured in the same run.

    .venv/bin/python benchmarks/views.py            # 3 rounds of 4 s, about 1.5 minutes
    .venv/bin/python benchmarks/views.py --quick    # 1 round of 2 s, a smoke run
    .venv/bin/python benchmarks/views.py --patch FILE    # + a scenario oneshot+patch
    .venv/bin/python benchmarks/views.py --rounds 0 --profile oneshot   # cProfile only

Each scenario gets a fresh kernel started with jupyter_client; the kernel's iopub socket is
read raw by this process, so that the figures are what a frontend would receive:

    floor    the 16 producers started with subprocess.Popen, output to /dev/null: the lag
             that the machine and its load alone cause
    quiet    `%oneshot --quiet` tasks: the engine (pumps, log, history store), no view
    naive    `%oneshot --quiet` tasks, each with a displayed ipywidgets.Output fed by a
             listener with out.append_stdout/append_stderr(event.text) per output chunk
    oneshot  `%oneshot` tasks with their TaskView displayed

Measured per scenario: the kernel event loop's lag (a task inside the kernel that sleeps
10 ms and records how late it wakes), widget updates per second per widget (iopub
comm_msg with method update/echo_update, counted per comm_id in one-second windows of
kernel send time), the largest iopub message (its JSON content plus buffers) and the
total widget traffic. Rounds alternate the order of scenarios; the table shows medians.
The task history goes to a temporary database, never the user's. A missed target is
printed, never raised: the script exits 0 unless it crashes.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata

import zmq
from jupyter_client.manager import KernelManager

TASKS = 16
PERIOD = 0.01  # the probe's sleep
DRAIN_CAP = 10.0  # seconds the collect cell waits for the tasks after they should have ended
SCENARIOS = ("floor", "quiet", "naive", "oneshot")
KiB = 1024
MB = 1_000_000

TARGET_P99_MS = 25.0
TARGET_RATE = 10
TARGET_MSG = 256 * KiB

# The producer: lines as fast as Python writes them, every tenth in colour, and a
# coloured stderr line every 500 lines. It stops on its own after `duration` seconds
# (a producer blocked on a full pipe stops as soon as the kernel lets it write again)
# and leaves the count of lines and bytes it wrote in a file.
PRODUCER = """\
import sys, time
duration, ident, report = float(sys.argv[1]), sys.argv[2], sys.argv[3]
out, err = sys.stdout.write, sys.stderr.write
end = time.monotonic() + duration
n = nbytes = 0
while time.monotonic() < end:
    for _ in range(50):
        n += 1
        if n % 10:
            line = f"line {n} some text from task {ident}, long enough to look like a log\\n"
        else:
            line = f"\\x1b[32mline {n}\\x1b[0m some text from task {ident}, in colour\\n"
        out(line)
        nbytes += len(line)
    if n % 500 == 0:
        line = f"\\x1b[31mwarning\\x1b[0m: task {ident} is at line {n}\\n"
        err(line)
        nbytes += len(line)
sys.stdout.flush()
with open(report, "w") as f:
    f.write(f"{n} {nbytes}")
"""

# Run once in each fresh kernel, before anything is measured.
PRELUDE = """\
import asyncio, json, os, resource, subprocess, sys, time
%load_ext oneshot_nb
%config OneshotMagics.limit = {tasks}
_B_PY, _B_PRODUCER, _B_DIR = {python!r}, {producer!r}, {workdir!r}
_B_TASKS, _B_DURATION, _B_DRAIN_CAP = {tasks}, {duration}, {drain_cap}

def _b_command(i):
    return f"{{_B_PY}} {{_B_PRODUCER}} {{_B_DURATION}} {{i}} {{_B_DIR}}/report.{{i}}"

class _BProbe:
    \"\"\"Sleeps {period} s again and again and records how late each wake is, and how the
    interval went: on the CPU, waiting for a CPU (run queue), or neither (idle, GIL).\"\"\"
    def __init__(self, period):
        self.period = period
        self.lags, self.cpu, self.runq = [], [], []
        self.running = True
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None
        self.task = asyncio.get_running_loop().create_task(self._run())
    def _schedstat(self):
        if self._fd is None:
            return 0.0, 0.0
        on_cpu, waiting = os.pread(self._fd, 200, 0).split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    async def _run(self):
        loop = asyncio.get_running_loop()
        while self.running:
            start = loop.time()
            cpu, runq = self._schedstat()
            await asyncio.sleep(self.period)
            lag = loop.time() - start - self.period
            cpu2, runq2 = self._schedstat()
            self.lags.append(lag)
            self.cpu.append(cpu2 - cpu)
            self.runq.append(runq2 - runq)

def _b_begin():
    global _b_probe, _b_wall, _b_cpu, _b_thread_cpu
    _b_wall = time.monotonic()
    _b_cpu = time.process_time()
    _b_thread_cpu = time.thread_time()
    _b_probe = _BProbe({period})

def _b_reports():
    lines = nbytes = 0
    for i in range(_B_TASKS):
        try:
            with open(f"{{_B_DIR}}/report.{{i}}") as f:
                n, b = f.read().split()
        except (OSError, ValueError):
            continue
        lines += int(n)
        nbytes += int(b)
    return lines, nbytes

async def _b_end(wait_all, stop_all, read_bytes):
    \"\"\"Wait for the producers (capped), let the views flush, stop the probe, report.\"\"\"
    capped = False
    try:
        left = _B_DURATION + _B_DRAIN_CAP - (time.monotonic() - _b_wall)
        await asyncio.wait_for(wait_all(), left)
    except (asyncio.TimeoutError, TimeoutError):
        capped = True
        stop_all()
        try:
            await asyncio.wait_for(wait_all(), 10)
        except (asyncio.TimeoutError, TimeoutError):
            pass
    done = time.monotonic() - _b_wall
    await asyncio.sleep(0.3)  # the views' last throttled flush
    _b_probe.running = False
    await _b_probe.task
    lines, produced = _b_reports()
    result = dict(
        lags=_b_probe.lags, cpu_per_wake=_b_probe.cpu, runq_per_wake=_b_probe.runq,
        wall=done, capped=capped,
        cpu=time.process_time() - _b_cpu, thread_cpu=time.thread_time() - _b_thread_cpu,
        produced=produced, lines=lines, read=read_bytes(),
    )
    print("@@RESULT@@" + json.dumps(result))
"""

# The two scenarios that run %oneshot differ only in --quiet (no view shown).
ONESHOT_SCENARIO = """\
_b_begin()
_b_tasks = [
    get_ipython().run_line_magic("oneshot", f"FLAGS--name p{i} {_b_command(i)}")
    for i in range(_B_TASKS)
]
async def _b_wait_all():
    await asyncio.gather(*(t.wait() for t in _b_tasks))
def _b_stop_all():
    for t in _b_tasks:
        t.stop()
def _b_read():
    return sum(sum(t.bytes_written.values()) for t in _b_tasks)
"""

SETUP = {
    "floor": """\
_b_begin()
_b_procs = [
    subprocess.Popen(_b_command(i).split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for i in range(_B_TASKS)
]
async def _b_wait_all():
    while any(p.poll() is None for p in _b_procs):
        await asyncio.sleep(0.02)
def _b_stop_all():
    for p in _b_procs:
        p.kill()
def _b_read():
    return None
""",
    "naive": """\
import ipywidgets as _b_widgets
from IPython.display import display as _b_display
_b_begin()
_b_tasks = []
for _b_i in range(_B_TASKS):
    _b_out = _b_widgets.Output()
    _b_display(_b_out)
    _b_task = get_ipython().run_line_magic("oneshot", f"--quiet --name p{_b_i} {_b_command(_b_i)}")
    def _b_feed(event, out=_b_out):
        if event.kind == "output" and event.text:
            if event.stream == "stderr":
                out.append_stderr(event.text)
            else:
                out.append_stdout(event.text)
    _b_task.listeners.append(_b_feed)
    _b_tasks.append(_b_task)
async def _b_wait_all():
    await asyncio.gather(*(t.wait() for t in _b_tasks))
def _b_stop_all():
    for t in _b_tasks:
        del t.listeners[:]  # the drain must end: stop feeding the Output widgets
        t.stop()
def _b_read():
    return sum(sum(t.bytes_written.values()) for t in _b_tasks)
""",
    "quiet": ONESHOT_SCENARIO.replace("FLAGS", "--quiet "),
    "oneshot": ONESHOT_SCENARIO.replace("FLAGS", ""),
}

COLLECT = "await _b_end(_b_wait_all, _b_stop_all, _b_read)\n"

PROFILE_START = "import cProfile as _b_cp\n_b_prof = _b_cp.Profile()\n_b_prof.enable()\n"
PROFILE_END = """\
_b_prof.disable()
import io as _b_io, pstats as _b_pstats
for _b_key in ("tottime", "cumulative"):
    _b_s = _b_io.StringIO()
    _b_pstats.Stats(_b_prof, stream=_b_s).sort_stats(_b_key).print_stats({limit})
    print(f"--- kernel main thread, by {{_b_key}} ---")
    print(_b_s.getvalue().split("\\n", 4)[-1].rstrip())
"""


# -- the client side: a raw iopub reader ---------------------------------------------------

_METHOD = re.compile(rb'"method":\s*"(\w+)"')
_COMM_ID = re.compile(rb'"comm_id":\s*"([^"]+)"')
_DELIM = b"<IDS|MSG>"


def _kernel_time(date: str) -> float:
    """Seconds since the epoch from a header's ISO date (3.10's fromisoformat needs this)."""
    date = date.replace("Z", "+00:00")
    return datetime.fromisoformat(date).timestamp()


@dataclass
class Traffic:
    """What the recorder saw of one scenario's run."""

    updates: dict[str, list[float]] = field(default_factory=dict)  # comm_id -> send times
    widget_bytes: int = 0
    iopub_bytes: int = 0
    iopub_messages: int = 0
    max_size: int = 0
    max_type: str = ""
    start: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # comm_id -> widget model name

    def by_model(self) -> str:
        """Update messages per widget model, e.g. "OutputModel 640, HTMLModel 560"."""
        counts: dict[str, int] = {}
        for comm_id, times in self.updates.items():
            model = self.models.get(comm_id, "?").removesuffix("Model") or "?"
            counts[model] = counts.get(model, 0) + len(times)
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        return ", ".join(f"{model} {n}" for model, n in ranked)


class Recorder(threading.Thread):
    """Reads the kernel's iopub socket as raw frames and keeps only small facts about each
    message: a frontend's view of the traffic, without paying to decode the large ones."""

    def __init__(self, km: KernelManager) -> None:
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)  # never drop on our side
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(km._make_url("iopub"))
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.recording = False
        self.traffic = Traffic()
        self.idle: set[str] = set()  # parents whose status went idle
        self.streams: dict[str, list[str]] = {}  # parent msg_id -> stream text and errors
        self.numbers: dict[str, list[int]] = {}  # session -> message numbers seen

    def run(self) -> None:
        while not self._halt.is_set():
            if self.socket.poll(50):
                try:
                    frames = self.socket.recv_multipart()
                except zmq.ZMQError:
                    return
                self._handle(frames)
        self.socket.close(linger=0)
        self.context.term()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def start_recording(self) -> None:
        with self._lock:
            self.traffic = Traffic(start=time.time())
            self.numbers = {}
            self.recording = True

    def stop_recording(self) -> Traffic:
        with self._lock:
            self.recording = False
            return self.traffic

    def _handle(self, frames: list[bytes]) -> None:
        i = frames.index(_DELIM)
        header = json.loads(frames[i + 2])
        parent = json.loads(frames[i + 3]) if len(frames[i + 3]) > 2 else {}
        content = frames[i + 5]
        size = len(content) + sum(len(b) for b in frames[i + 6 :])
        kind = header["msg_type"]
        parent_id = parent.get("msg_id", "")
        with self._lock:
            if self.recording:
                traffic = self.traffic
                traffic.iopub_messages += 1
                traffic.iopub_bytes += sum(len(f) for f in frames)
                if size > traffic.max_size:
                    traffic.max_size, traffic.max_type = size, kind
                session, _, number = header["msg_id"].rpartition("_")
                if number.isdigit():
                    self.numbers.setdefault(session, []).append(int(number))
                if kind == "comm_msg":
                    method = _METHOD.search(content[:200])
                    comm_id = _COMM_ID.search(content[-200:]) or _COMM_ID.search(content[:200])
                    if method and comm_id and method[1] in (b"update", b"echo_update"):
                        when = _kernel_time(header["date"])
                        traffic.updates.setdefault(comm_id[1].decode(), []).append(when)
                        traffic.widget_bytes += size
                    elif comm_id:
                        traffic.widget_bytes += size
                elif kind == "comm_open":
                    traffic.widget_bytes += size
                    if len(content) < 1 << 16:
                        body = json.loads(content)
                        state = (body.get("data") or {}).get("state") or {}
                        traffic.models[body.get("comm_id", "")] = str(state.get("_model_name"))
            if kind == "status":
                if json.loads(content).get("execution_state") == "idle":
                    self.idle.add(parent_id)
            elif kind == "stream":
                self.streams.setdefault(parent_id, []).append(json.loads(content)["text"])
            elif kind == "error":
                body = json.loads(content)
                text = f"{body['ename']}: {body['evalue']}\n" + "\n".join(body["traceback"])
                self.streams.setdefault(parent_id, []).append(_strip_ansi(text))

    def wait_idle(self, msg_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if msg_id in self.idle:
                    return True
            time.sleep(0.01)
        return False

    def text(self, msg_id: str) -> str:
        with self._lock:
            return "".join(self.streams.get(msg_id, []))


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Kernel:
    """A fresh kernel, a shell client to run cells, and a raw iopub recorder."""

    def __init__(self, log_path: str, env: dict[str, str]) -> None:
        # The kernel's own stdout and stderr (its TCP warning, tracebacks) go to a file,
        # shown if a cell fails.
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(stdout=self._log, stderr=self._log, env=env)
        self.recorder = Recorder(self.km)
        self.recorder.start()
        self.kc = self.km.client()
        self.kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self.shell_replies = 0
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        # A SUB socket misses what is published before it has joined: ask until the
        # kernel's status for our request arrives on our socket.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.kc.kernel_info()
            self._reply(msg_id, 10)
            if self.recorder.wait_idle(msg_id, 1.0):
                return
        raise RuntimeError("the kernel did not become ready")

    def _reply(self, msg_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            self.shell_replies += 1
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def run(self, code: str, timeout: float = 60.0) -> str:
        """Run a cell; return its printed text; raise if it failed."""
        msg_id = self.kc.execute(code, store_history=False)
        reply = self._reply(msg_id, timeout)
        self.recorder.wait_idle(msg_id, timeout)
        text = self.recorder.text(msg_id)
        if reply["content"]["status"] != "ok":
            with open(self.log_path) as f:
                log = f.read()[-4000:]
            raise RuntimeError(f"cell failed:\n{code}\n{text}\nkernel log:\n{log}")
        return text

    def close(self) -> None:
        self.recorder.stop()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self._log.close()


# -- one scenario --------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    lags_ms: list[float]
    cpu_ms: list[float]  # per wake: the loop thread's time on a CPU during the interval
    runq_ms: list[float]  # per wake: its time runnable but waiting for a CPU
    wall: float
    capped: bool
    cpu: float
    thread_cpu: float
    produced: int
    lines: int
    read: int | None
    traffic: Traffic
    missed: int
    profile: str = ""

    def lag(self, q: float) -> float:
        return percentile(self.lags_ms, q)

    def worst_wakes(self) -> tuple[float, float, float, float]:
        """For the wakes at or above p99 lag: mean lag, and how their intervals went on
        average: on a CPU, waiting for one, and neither (sleeping in select, or the GIL)."""
        cut = self.lag(99)
        worst = [i for i, lag in enumerate(self.lags_ms) if lag >= cut]
        n = len(worst) or 1
        lag = sum(self.lags_ms[i] for i in worst) / n
        cpu = sum(self.cpu_ms[i] for i in worst) / n
        runq = sum(self.runq_ms[i] for i in worst) / n
        return lag, cpu, runq, PERIOD * 1000 + lag - cpu - runq

    @property
    def max_rate(self) -> int:
        """The most updates any widget sent in one second window (windows from the start)."""
        best = 0
        for times in self.traffic.updates.values():
            counts: dict[int, int] = {}
            for t in times:
                window = math.floor(t - self.traffic.start)
                counts[window] = counts.get(window, 0) + 1
            best = max(best, *counts.values())
        return best

    @property
    def max_rate_sliding(self) -> int:
        """The most updates any widget sent within any one second [t, t + 1)."""
        best = 0
        for times in self.traffic.updates.values():
            times = sorted(times)
            first = 0
            for last, t in enumerate(times):
                while times[first] <= t - 1.0:
                    first += 1
                best = max(best, last - first + 1)
        return best

    @property
    def loop_ms_per_mb(self) -> float:
        """The loop thread's CPU per MB of output read: the cost of the path, which the
        machine's load changes far less than it changes lags."""
        if not self.read:
            return float("nan")
        return self.thread_cpu * 1000 / (self.read / MB)

    @property
    def updates(self) -> int:
        return sum(len(v) for v in self.traffic.updates.values())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of them at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_scenario(
    scenario: str,
    duration: float,
    workdir: str,
    producer: str,
    *,
    profile: bool = False,
    patch: str = "",
) -> Result:
    """One run of `scenario` in a fresh kernel. A scenario named "X+patch" is X with the
    code of `patch` run in the kernel after the extension is loaded."""
    base = scenario.split("+")[0]
    for name in os.listdir(workdir):
        if name.startswith("report."):
            os.unlink(os.path.join(workdir, name))
    # The task history goes to a database of this run's own, deleted at the end: the
    # store's writer works as in real use, and the user's history is left alone.
    db = os.path.join(workdir, "history.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    env = {**os.environ, "ONESHOT_NB_DB": db}
    kernel = Kernel(os.path.join(workdir, "kernel.log"), env)
    try:
        kernel.run(
            PRELUDE.format(
                tasks=TASKS,
                python=sys.executable,
                producer=producer,
                workdir=workdir,
                duration=duration,
                drain_cap=DRAIN_CAP,
                period=PERIOD,
            )
        )
        if scenario.endswith("+patch"):
            kernel.run(patch)
        if profile:
            kernel.run(PROFILE_START)
        kernel.recorder.start_recording()
        replies_before = kernel.shell_replies
        kernel.run(SETUP[base])
        time.sleep(duration + 0.2)
        text = kernel.run(COLLECT, timeout=duration + DRAIN_CAP + 60)
        traffic = kernel.recorder.stop_recording()
        replies = kernel.shell_replies - replies_before
        profile_text = kernel.run(PROFILE_END.format(limit=30)) if profile else ""
    finally:
        kernel.close()
    marker = text.rfind("@@RESULT@@")
    if marker < 0:
        raise RuntimeError(f"no result from the {scenario} run:\n{text}")
    data = json.loads(text[marker + len("@@RESULT@@") :].splitlines()[0])
    missed = 0
    for numbers in kernel.recorder.numbers.values():
        # One counter numbers every message of the kernel's session, shell replies too.
        missed += max(0, max(numbers) - min(numbers) + 1 - len(numbers) - replies)
    return Result(
        scenario=scenario,
        lags_ms=[lag * 1000 for lag in data["lags"]],
        cpu_ms=[x * 1000 for x in data["cpu_per_wake"]],
        runq_ms=[x * 1000 for x in data["runq_per_wake"]],
        wall=data["wall"],
        capped=data["capped"],
        cpu=data["cpu"],
        thread_cpu=data["thread_cpu"],
        produced=data["produced"],
        lines=data["lines"],
        read=data["read"],
        traffic=traffic,
        missed=missed,
        profile=profile_text,
    )


# -- report --------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def header(args: argparse.Namespace) -> None:
    print("oneshot_nb view benchmark" + (" (--quick)" if args.quick else ""))
    print(
        f"python {platform.python_version()}  ipykernel {_version('ipykernel')}"
        f"  ipywidgets {_version('ipywidgets')}  jupyter_client {_version('jupyter_client')}"
        f"  pyzmq {_version('pyzmq')}  oneshot_nb {_version('oneshot_nb')}"
    )
    print(
        f"nproc {os.cpu_count()}  {platform.system()} {platform.release()}  load average {_load()}"
    )
    print(
        f"{TASKS} producers x {args.duration:g} s each, {args.rounds} round(s), probe period"
        f" {PERIOD * 1000:g} ms, drain cap {DRAIN_CAP:g} s, a fresh kernel per scenario"
    )
    print()


def round_line(r: Result) -> str:
    lag, cpu, runq, rest = r.worst_wakes()
    read = "" if r.read is None else f", read {r.read / MB:.0f} MB"
    per_mb = "" if r.read is None else f", {r.loop_ms_per_mb:.1f} ms/MB"
    flags = (" CAPPED" if r.capped else "") + (f" MISSED {r.missed} msgs" if r.missed else "")
    indent = " " * 16
    return (
        f"  {r.scenario:<13} lag p50 {r.lag(50):.1f}  p99 {r.lag(99):.1f}  max {max(r.lags_ms):.1f}"
        f" ms ({len(r.lags_ms)} wakes) | max upd/s/widget {r.max_rate} (sliding"
        f" {r.max_rate_sliding}), {r.updates} updates of {len(r.traffic.updates)} widgets"
        f" | max msg {r.traffic.max_size / KiB:.1f} KiB ({r.traffic.max_type})"
        f" | widget traffic {r.traffic.widget_bytes / MB:.1f} MB{flags}"
        + (f"\n{indent}updates by widget model: {r.traffic.by_model()}" if r.updates else "")
        + f"\n{indent}produced {r.produced / MB:.0f} MB{read} in {r.wall:.1f} s | kernel CPU"
        f" {r.cpu:.1f} s, loop thread {r.thread_cpu:.1f} s{per_mb}"
        f"\n{indent}worst 1% of wakes: lag {lag:.1f} ms; their {PERIOD * 1000 + lag:.1f} ms"
        f" interval = {cpu:.1f} on CPU + {runq:.1f} waiting for a CPU"
        f" + {rest:.1f} off CPU (idle or GIL)"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(results: dict[str, list[Result]]) -> dict[str, dict[str, float]]:
    columns = (
        ("p50 ms", lambda r: r.lag(50), "{:.1f}"),
        ("p99 ms", lambda r: r.lag(99), "{:.1f}"),
        ("max ms", lambda r: max(r.lags_ms), "{:.1f}"),
        ("upd/s/widget", lambda r: r.max_rate, "{:g}"),
        ("max msg KiB", lambda r: r.traffic.max_size / KiB, "{:.1f}"),
        ("traffic MB", lambda r: r.traffic.widget_bytes / MB, "{:.1f}"),
        ("produced MB", lambda r: r.produced / MB, "{:.0f}"),
        ("kernel CPU s", lambda r: r.cpu, "{:.1f}"),
        ("loop ms/MB", lambda r: r.loop_ms_per_mb, "{:.1f}"),
    )
    medians: dict[str, dict[str, float]] = {}
    rows = [["scenario", *(c[0] for c in columns)]]
    for scenario, runs in results.items():
        medians[scenario] = {}
        row = [scenario]
        for name, get, fmt in columns:
            value = median([get(r) for r in runs])
            medians[scenario][name] = value
            row.append("-" if math.isnan(value) else fmt.format(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return medians


def verdict(
    medians: dict[str, dict[str, float]], results: dict[str, list[Result]], scenario: str
) -> None:
    m = medians[scenario]
    runs = results[scenario]
    checks = (
        ("event loop p99 lag", m["p99 ms"], TARGET_P99_MS, "ms", max(r.lag(99) for r in runs)),
        ("updates/s per widget", m["upd/s/widget"], TARGET_RATE, "", max(r.max_rate for r in runs)),
        (
            "largest iopub message",
            m["max msg KiB"],
            TARGET_MSG / KiB,
            "KiB",
            max(r.traffic.max_size for r in runs) / KiB,
        ),
    )
    print()
    print(f"{scenario} targets (median of rounds; worst round in brackets):")
    for name, value, limit, unit, worst in checks:
        ok = value <= limit if name.startswith("updates") else value < limit
        op = "<=" if name.startswith("updates") else "<"
        print(
            f"  {name:<22} {value:8.1f} {unit:<3} (worst {worst:.1f})  target {op} {limit:g} {unit}"
            f"  {'met' if ok else 'MISSED'}"
        )
    if "floor" not in medians or "naive" not in medians:
        return
    floor, naive = medians["floor"]["p99 ms"], medians["naive"]["p99 ms"]
    print(
        f"  p99 lag: floor {floor:.1f} ms, {scenario} {m['p99 ms']:.1f} ms, naive {naive:.1f} ms;"
        f" widget traffic: {scenario} {m['traffic MB']:.1f} MB, naive"
        f" {medians['naive']['traffic MB']:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument(
        "--rounds", type=int, help="rounds of every scenario (default 3; 0 with --profile)"
    )
    parser.add_argument("--duration", type=float, help="seconds each producer writes (4)")
    parser.add_argument(
        "--profile",
        metavar="SCENARIO",
        help="after the rounds, one more run of SCENARIO under cProfile in the kernel",
    )
    parser.add_argument(
        "--patch",
        metavar="FILE",
        help="Python code to run in the kernel after %%load_ext (e.g. a monkeypatch of the"
        " views): adds a scenario oneshot+patch, measured in the same rounds",
    )
    parser.add_argument(
        "--scenarios",
        metavar="LIST",
        help="comma-separated subset to run, e.g. oneshot,oneshot+patch (default: all)",
    )
    args = parser.parse_args()
    scenarios = SCENARIOS + (("oneshot+patch",) if args.patch else ())
    if args.scenarios:
        chosen = tuple(s.strip() for s in args.scenarios.split(","))
        unknown = [s for s in chosen if s not in scenarios]
        if unknown:
            parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(scenarios)}")
        scenarios = chosen
    patch = ""
    if args.patch:
        with open(args.patch) as f:
            patch = f.read()
    if args.profile and args.profile not in scenarios:
        parser.error(f"--profile takes one of {', '.join(scenarios)}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    args.duration = args.duration or (2.0 if args.quick else 4.0)
    header(args)

    workdir = tempfile.mkdtemp(prefix="oneshot-bench-views-")
    producer = os.path.join(workdir, "produce.py")
    with open(producer, "w") as f:
        f.write(PRODUCER)
    results: dict[str, list[Result]] = {s: [] for s in scenarios}
    start = time.monotonic()
    try:
        for n in range(args.rounds):
            order = scenarios if n % 2 == 0 else tuple(reversed(scenarios))
            print(f"round {n + 1}/{args.rounds} (load average {_load()}):")
            for scenario in order:
                result = run_scenario(scenario, args.duration, workdir, producer, patch=patch)
                results[scenario].append(result)
                print(round_line(result), flush=True)
        if args.rounds:
            print()
            print(
                f"medians of {args.rounds} round(s), {time.monotonic() - start:.0f} s in all"
                f" (load average now {_load()}):"
            )
            medians = table(results)
            for scenario in scenarios:
                if scenario.startswith("oneshot"):
                    verdict(medians, results, scenario)
        if args.profile:
            print()
            print(f"profile of one {args.profile} run (not counted above; cProfile slows it):")
            result = run_scenario(
                args.profile, args.duration, workdir, producer, profile=True, patch=patch
            )
            print(round_line(result))
            print(textwrap.indent(result.profile, "  "))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
