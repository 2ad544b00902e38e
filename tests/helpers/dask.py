"""Dask clusters for the tests of the Dask runner, and what their processes look like
from here: the worker processes, their reapers, the commands they run.

Every cluster here runs on this machine, so /proc answers for its workers and for the
commands they start. A cluster is either a LocalCluster of the test's own (`local_cluster`)
or `dask scheduler` and `dask worker` processes (`DaskProcesses`), each in a session of
its own, so that one killpg ends each and what it spawned in its group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster

from oneshot_nb.runners.dask import DaskRunner

from . import eventually, py
from .processes import PPID, kill_group, pids_where, process_gone

DASK = str(Path(sys.executable).with_name("dask"))
# How long a `dask scheduler` or `dask worker` process gets to come up on a loaded 2-CPU
# machine (about a second and a half each when idle).
START_WITHIN = 30.0
CLOSE_WITHIN = 5.0


# -- the processes of a cluster ---------------------------------------------------------------


def worker_pids(client: Client) -> dict[str, int]:
    """Each worker's pid, by its address (the host of a task's place); a worker that
    died but is still listed is left out."""
    return client.run(os.getpid, on_error="ignore")


def reaper_pids(client: Client) -> dict[str, int | None]:
    """The pid of each worker's reaper (None where the plugin is not set up, or has no
    reaper), by the worker's address."""

    def reaper_pid(dask_worker: Any) -> int | None:
        plugin = dask_worker.plugins.get("oneshot_nb")
        reaper = getattr(plugin, "reaper", None)
        return None if reaper is None else reaper.pid

    return client.run(reaper_pid, on_error="ignore")


def scheduler_workers(client: Client) -> list[str]:
    """The addresses of the workers the scheduler has now (asking none of them)."""

    def addresses(dask_scheduler: Any) -> list[str]:
        return list(dask_scheduler.workers)

    return client.run_on_scheduler(addresses)


def scheduler_tasks(client: Client) -> list[str]:
    """The keys of the tasks the scheduler holds, whoever submitted them."""

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks]

    return client.run_on_scheduler(keys)


def rss_mib(pid: int) -> float:
    """The resident memory of `pid`, in MiB (VmRSS in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


def our_children() -> set[int]:
    """The pids of this process's children, as /proc has them."""
    return {int(pid) for pid in pids_where(PPID, os.getpid())}


def all_gone(pids: Sequence[int | None], timeout: float = 10.0) -> None:
    """Fail the test unless every pid in `pids` has exited within `timeout`."""
    live = [pid for pid in pids if pid is not None]
    eventually(lambda: all(process_gone(pid) for pid in live), timeout)


def cluster_pids(client: Client) -> list[int]:
    """The pids of the cluster's workers and of their reapers."""
    reapers = [pid for pid in reaper_pids(client).values() if pid is not None]
    return [*worker_pids(client).values(), *reapers]


@contextlib.contextmanager
def local_cluster(workers: int = 1) -> Iterator[DaskRunner]:
    """A DaskRunner on a LocalCluster of the test's own (`workers` processes, one thread
    each, nannies that restart a worker that dies), given as a distributed.Client;
    closed after, and its worker processes and their reapers gone."""
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        runner = DaskRunner(Client(cluster, set_as_default=False))
        try:
            yield runner
        finally:
            pids = cluster_pids(runner.client)
            runner.close()
    finally:
        cluster.close()
    all_gone(pids)


# -- `dask scheduler` and `dask worker` as processes of their own -----------------------------


class DaskProcesses:
    """A `dask scheduler` and the `dask worker`s a test starts, each in a session of its
    own; `close` (SIGTERM, then SIGKILL) ends each and what is in its group."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.scheduler_file = directory / "scheduler.json"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def start_scheduler(self) -> str:
        """Start the scheduler; its address once it listens."""
        where = ["--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(self.scheduler_file)]
        self._start([DASK, "scheduler", "--no-dashboard", *where], "scheduler")
        eventually(lambda: self._scheduler_address() is not None, START_WITHIN)
        self.address = self._scheduler_address() or ""
        return self.address

    def _scheduler_address(self) -> str | None:
        try:  # the scheduler may be writing it
            return json.loads(self.scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    def start_worker(
        self, *options: str, argv: Sequence[str] = (DASK, "worker")
    ) -> subprocess.Popen[bytes]:
        """A worker of the scheduler (`argv` may be another way to run `dask worker`).
        Returns at once; `wait_for_workers` waits for it to join."""
        where = [self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard"]
        return self._start([*argv, *where, *options], "worker")

    def wait_for_workers(self, client: Client, count: int) -> None:
        client.wait_for_workers(count, timeout=START_WITHIN)

    def _start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        with log:
            process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        """What the processes wrote: for a failure's message."""
        return "\n".join(p.read_text(errors="replace") for p in self.directory.glob("*.log"))

    def close(self) -> None:
        """End the workers, then the scheduler: a worker told to stop while its scheduler
        closes can hang in Dask's own shutdown, so each is SIGKILLed after CLOSE_WITHIN."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(CLOSE_WITHIN)
            kill_group(process.pid)
            process.wait()


# -- commands ---------------------------------------------------------------------------------


def sleeper_with_child(
    pid_file: Path, *, ignore_term: bool = False, log: Path | None = None
) -> str:
    """Python code for a command that starts a child, writes "LEADER CHILD" (its own pid,
    which is its group's id, and the child's) to `pid_file` atomically, says "up", and
    sleeps. `ignore_term`: both ignore SIGTERM (the child inherits it). `log`: a line is
    appended to it first, so that a test can count the runs."""
    tmp = f"{pid_file}.tmp"
    first = ""
    if ignore_term:
        first += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    if log is not None:
        first += f"open({str(log)!r}, 'a').write(f'run {{os.getpid()}}\\n')\n"
    return f"""
import os, signal, subprocess, sys, time
{first}child = subprocess.Popen({py("import time; time.sleep(300)")!r})
with open({tmp!r}, "w") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}")
os.rename({tmp!r}, {str(pid_file)!r})
print("up", flush=True)
time.sleep(300)
"""


def read_pids(pid_file: Path) -> tuple[int, int]:
    """The (leader, child) pids a `sleeper_with_child` command wrote."""
    leader, child = pid_file.read_text().split()
    return int(leader), int(child)
