"""The Dask runner when things go wrong, each test with a cluster of its own: a worker
killed or closed under a running command, a kernel killed, a worker without oneshot_nb.
No command may outlive the worker that ran it or the kernel that asked for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
from distributed import Client
from helpers import eventually, py, wait_for_line, wait_until
from helpers.dask import (
    DaskProcesses,
    all_gone,
    read_pids,
    reaper_pids,
    scheduler_tasks,
    scheduler_workers,
    sleeper_with_child,
    worker_pids,
)
from helpers.processes import group_gone, kill_group, process_gone

from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.runners.dask import DaskRunner
from oneshot_nb.runners.dask.connection import WorkerGone

# Each test starts a cluster of its own and kills a part of it: a few seconds each.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90), pytest.mark.slow]

GRACE = 0.5


# -- a worker killed or closed ----------------------------------------------------------------


async def test_a_killed_worker_fails_the_task_and_its_reaper_ends_the_group(
    two_workers: DaskRunner, tmp_path: Path
) -> None:
    """A worker killed with SIGKILL runs no cleanup: the task must fail ("worker lost")
    within seconds rather than wait for ever, the worker's reaper must end the command's
    group, and Dask running the task again elsewhere must not run the command twice."""
    pid_file, runs = tmp_path / "pids", tmp_path / "runs"
    client = two_workers.client
    reapers = reaper_pids(client)
    groups: list[int] = []
    try:
        async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
            task = orch.submit(py(sleeper_with_child(pid_file, ignore_term=True, log=runs)))
            await wait_for_line(task, "up")
            leader, child = read_pids(pid_file)
            groups.append(leader)
            assert task.place is not None
            address = task.place.host
            os.kill(worker_pids(client)[address], signal.SIGKILL)
            killed = time.monotonic()
            with anyio.fail_after(5):
                await task.wait()
            assert (task.state, task.reason) == (TaskState.FAILED, "worker lost")
            assert task.error is not None and task.error.startswith(f"worker lost: {address} (")
            await wait_until(lambda: group_gone(leader) and process_gone(child), timeout=3)
            assert time.monotonic() - killed < 5
            all_gone([reapers[address]], timeout=3)
            await anyio.sleep(3)  # time for the nanny's new worker to take the task again
            assert runs.read_text().count("\n") == 1
    finally:
        for pgid in groups:
            kill_group(pgid)


async def test_a_command_whose_worker_dies_at_once_runs_once(
    two_workers: DaskRunner, tmp_path: Path
) -> None:
    """Dask runs a task again when its worker dies, and the claim must stop a second
    run of the command: a worker that dies within milliseconds of the start (here the
    command kills it, as an out-of-memory kill might) must not see its command started
    again on each worker Dask tries next."""
    runs = tmp_path / "runs"
    code = f"""
        import os, signal, time
        with open({str(runs)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        os.kill(os.getppid(), signal.SIGKILL)  # the worker
        time.sleep(30)
    """
    async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
        task = orch.submit(py(code))
        try:
            with anyio.fail_after(10):
                await task.wait()
            await anyio.sleep(1)  # time for Dask to try it elsewhere
            started = [int(pid) for pid in runs.read_text().split()]
            assert len(started) == 1, f"the command ran {len(started)} times"
            assert task.state is TaskState.FAILED
        finally:
            for pid in runs.read_text().split() if runs.exists() else []:
                kill_group(int(pid))


async def test_a_killed_workers_reaper_ends_what_outlived_the_commands_leader(
    two_workers: DaskRunner, tmp_path: Path
) -> None:
    """A command whose first process has exited while a child of it still runs (and
    holds its output, so the task still runs) is not over: the worker's reaper must
    still end that child when the worker dies, as a stop would have; and Dask, which
    computes the finished Dask task again once its worker is lost, must not run the
    command again."""
    runs = tmp_path / "runs"  # "LEADER CHILD" for each run
    child = py("import time; time.sleep(300)")
    leader = f"""
        import os, subprocess
        child = subprocess.Popen({child!r})
        with open({str(runs)!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}\\n")
        print("up", flush=True)
    """
    client = two_workers.client
    try:
        async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
            task = orch.submit(py(leader))
            await wait_for_line(task, "up")
            orphan = int(runs.read_text().split()[1])
            assert task.place is not None and task.place.pid is not None
            await wait_until(lambda: process_gone(task.place.pid))  # the leader has exited
            assert task.state is TaskState.RUNNING  # its child holds the output
            os.kill(worker_pids(client)[task.place.host], signal.SIGKILL)
            await wait_until(lambda: process_gone(orphan), timeout=3)
            task.stop()  # its end is another test's: a killed worker noticed late
        await anyio.sleep(1)  # time for Dask to compute the lost Dask task again
        assert len(runs.read_text().splitlines()) == 1, "the command ran again"
    finally:
        for line in runs.read_text().splitlines() if runs.exists() else []:
            kill_group(int(line.split()[0]))


async def test_a_killed_worker_is_noticed_when_the_kernel_asks_it_anew(
    two_workers: DaskRunner, tmp_path: Path
) -> None:
    """A worker killed while none of the kernel's requests to it was in flight (here:
    the kernel's loop was busy, and the command's leader had exited, so no wait was
    pending either) must be found gone at the next request: the task fails "worker
    lost" within seconds."""
    chatty = py("""
        import time
        while True:
            print("tick", flush=True)
            time.sleep(0.02)
    """)
    leader = f"import subprocess; subprocess.Popen({chatty!r}); print('up', flush=True)"
    client = two_workers.client
    async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
        task = orch.submit(py(leader))
        try:
            await wait_for_line(task, "up")
            await wait_until(lambda: task.returncode == 0)  # no wait is pending now
            await wait_for_line(task, "tick")
            worker = worker_pids(client)[task.place.host]
            time.sleep(0.3)  # the loop is busy: the reads in flight return, none follows
            os.kill(worker, signal.SIGKILL)
            time.sleep(1.0)  # the scheduler has dropped the worker meanwhile
            began = time.monotonic()
            with anyio.fail_after(5):
                await task.wait()
            assert (task.state, task.reason) == (TaskState.FAILED, "worker lost")
            assert time.monotonic() - began < 5
        finally:
            task.stop()
            if task.place is not None and task.place.pid is not None:
                kill_group(task.place.pid)


async def test_asking_a_dead_worker_gives_up_within_seconds(two_workers: DaskRunner) -> None:
    """A request to a worker that has died (its address refuses connections) must end
    in WorkerGone within seconds: distributed's own rpc retries the connection for its
    whole connect timeout (30 s), which held a task whose worker died that long."""
    client, link = two_workers.client, two_workers.link
    dead = sorted(worker_pids(client).items())[0]
    os.kill(dead[1], signal.SIGKILL)
    eventually(lambda: dead[0] not in scheduler_workers(client))
    began = time.monotonic()
    with pytest.raises(WorkerGone):
        await link.call(lambda: link.ask(dead[0], "wait", key="no-such-command"))
    assert time.monotonic() - began < 5


RESTART_REASONS = ["released by the scheduler", "worker closed"]


@pytest.mark.parametrize("how", ["retire", "restart"])
async def test_a_closed_worker_interrupts_the_task_and_ends_its_group(
    two_workers: DaskRunner, tmp_path: Path, how: str
) -> None:
    """A worker closed on purpose (retired, or every worker restarted) stops what runs
    on it by the policy and says so: the task is INTERRUPTED, as a stop would end it,
    not FAILED, and nothing of its group is left. Retired: "worker closed"; restarted:
    the scheduler takes every task back first, "released by the scheduler" (or "worker
    closed" when the close reaches the worker first)."""
    pid_file = tmp_path / "pids"
    client = two_workers.client
    groups: list[int] = []
    try:
        async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
            task = orch.submit(py(sleeper_with_child(pid_file)))
            await wait_for_line(task, "up")
            leader, child = read_pids(pid_file)
            groups.append(leader)
            assert task.place is not None
            if how == "retire":
                await anyio.to_thread.run_sync(client.retire_workers, [task.place.host])
            else:
                await anyio.to_thread.run_sync(client.restart)
            with anyio.fail_after(10):
                await task.wait()
            # A restart: the scheduler's release and the nanny's close may reach the
            # worker in either order, and whichever comes first names the reason.
            reasons = ["worker closed"] if how == "retire" else RESTART_REASONS
            assert task.state is TaskState.INTERRUPTED and task.reason in reasons, task.error
            await wait_until(lambda: group_gone(leader) and process_gone(child), timeout=3)
    finally:
        for pgid in groups:
            kill_group(pgid)


# -- two kernels on one cluster ---------------------------------------------------------------


async def test_a_second_kernel_leaves_the_first_kernels_commands_running(
    two_workers: DaskRunner,
) -> None:
    """Kernels share a cluster's workers (the plugin's docstring: "a worker has one,
    which every kernel shares"): another kernel connecting, a restarted kernel or a
    second notebook, must not stop the commands the first one runs there, and both
    must be able to run commands."""
    address = two_workers.client.scheduler.address
    async with AsyncOrchestrator(runner=two_workers, grace=GRACE) as orch:
        first = orch.submit(py("import time; print('up', flush=True); time.sleep(1.5)"))
        await wait_for_line(first, "up")
        with Client(address, set_as_default=False) as client:
            other = DaskRunner(client)  # what another kernel does when it connects
            try:
                second = orch.submit(py("print('second')"), runner=other)
                await second.wait()
            finally:
                other.close()
        await first.wait()
    assert (second.state, second.output) == (TaskState.COMPLETED, "second\n"), second.error
    assert (first.state, first.reason) == (TaskState.COMPLETED, "exit"), first.error


# -- a kernel killed --------------------------------------------------------------------------

# The kernel: runs a command on `cluster` (argv[1]) with grace 0.5, writes what it knows
# to argv[3] once the command has started (the pids of the workers and their reapers),
# and sleeps until it is killed.
KERNEL = """
import asyncio, json, os, sys
from oneshot_nb import AsyncOrchestrator
from oneshot_nb.runners.dask import DaskRunner

def reaper_pid(dask_worker):
    return dask_worker.plugins["oneshot_nb"].reaper.pid

async def main():
    runner = DaskRunner(sys.argv[1])
    async with AsyncOrchestrator(runner=runner, grace=0.5) as orch:
        task = orch.submit(json.loads(sys.argv[2]))
        await task.wait_for("RUNNING")
        known = {
            "workers": list(runner.client.run(os.getpid).values()),
            "reapers": list(runner.client.run(reaper_pid).values()),
            "state": task.state.value,
        }
        with open(sys.argv[3] + ".tmp", "w") as f:
            json.dump(known, f)
        os.rename(sys.argv[3] + ".tmp", sys.argv[3])
        await asyncio.sleep(300)

if __name__ == "__main__":
    asyncio.run(main())
"""


def kill_kernel_and_watch(tmp_path: Path, cluster: str, *, its_own: bool = False) -> None:
    """Start the kernel on `cluster`, SIGKILL it once its command runs, and fail unless
    the command's group is gone within 5 s; `its_own`: the cluster is the kernel's
    (local:N), and its workers and their reapers must be gone too."""
    script, info, pid_file = tmp_path / "kernel.py", tmp_path / "kernel.json", tmp_path / "pids"
    script.write_text(KERNEL)
    command = json.dumps(py(sleeper_with_child(pid_file, ignore_term=True)))
    kernel = subprocess.Popen(
        [sys.executable, str(script), cluster, command, str(info)],
        cwd=tmp_path,
        start_new_session=True,
    )
    known: dict[str, list[int]] = {"workers": [], "reapers": []}
    leader = 0
    try:
        eventually(lambda: info.exists() or kernel.poll() is not None, timeout=30)
        assert kernel.poll() is None, "the kernel ended before its command ran"
        known = json.loads(info.read_text())
        eventually(pid_file.exists)  # RUNNING comes as its first process starts
        leader, child = read_pids(pid_file)
        assert not group_gone(leader)
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.wait()
        eventually(lambda: group_gone(leader) and process_gone(child), timeout=5)
        if its_own:
            all_gone(known["workers"] + known["reapers"], timeout=10)
    finally:
        kill_group(kernel.pid)  # and the workers it spawned, in its group
        kernel.wait()
        for pgid in [leader, *(known["reapers"] if its_own else [])]:
            if pgid:
                kill_group(pgid)


def test_a_killed_kernel_leaves_no_command_on_a_remote_cluster(
    dask_processes: DaskProcesses, tmp_path: Path
) -> None:
    """A kernel killed with SIGKILL never stops or forgets its commands: the scheduler
    releases the dead client's task, and the worker must end its command's group (by
    the policy: this one ignores SIGTERM)."""
    address = dask_processes.start_scheduler()
    dask_processes.start_worker()
    kill_kernel_and_watch(tmp_path, address)


def test_a_killed_kernel_leaves_nothing_of_its_local_cluster(tmp_path: Path) -> None:
    """With `local:1` the workers are the kernel's: they die with it, running no
    cleanup, and their reaper must end the command's group; nothing of the cluster
    (workers, reapers) is left either."""
    kill_kernel_and_watch(tmp_path, "local:1", its_own=True)


# -- a worker without oneshot_nb --------------------------------------------------------------

# `dask worker` as if oneshot_nb were not installed: importing it fails.
NO_ONESHOT_WORKER = textwrap.dedent("""
    import sys
    sys.modules["oneshot_nb"] = None
    from distributed.cli.dask_worker import main
    sys.argv[0] = "dask worker"
    main()
""")


def test_a_worker_without_oneshot_nb_is_one_clear_error(
    dask_processes: DaskProcesses, tmp_path: Path
) -> None:
    """A worker that cannot import oneshot_nb cannot run its plugin: a DaskRunner made
    when such a worker is in the cluster must say so at once, naming oneshot_nb."""
    address = dask_processes.start_scheduler()
    dask_processes.start_worker("--no-nanny", argv=[sys.executable, "-c", NO_ONESHOT_WORKER])
    with Client(address, set_as_default=False) as client:
        dask_processes.wait_for_workers(client, 1)
        with pytest.raises(RuntimeError) as caught:
            DaskRunner(client)
    message = str(caught.value)
    assert message.startswith("the Dask workers could not set up oneshot_nb: ")
    assert "ModuleNotFoundError" in message and "No module named 'oneshot_nb" in message
    assert "\n" not in message


async def test_a_worker_without_oneshot_nb_cannot_join_and_a_waiting_task_can_be_stopped(
    dask_processes: DaskProcesses,
) -> None:
    """Once a runner has registered its plugin, Dask sends it to every worker that
    joins; one that cannot import oneshot_nb fails to start (its log says why) and never
    gets a task. A task waiting meanwhile for a worker stays CREATED, and a stop must
    end it at once, its Dask task cancelled, rather than leave it waiting for ever."""
    address = dask_processes.start_scheduler()
    runner = DaskRunner(address, timeout=10)  # no worker yet: the plugin registers
    try:
        async with AsyncOrchestrator(runner=runner) as orch:
            task = orch.submit("echo hi")
            worker = dask_processes.start_worker(
                "--no-nanny", argv=[sys.executable, "-c", NO_ONESHOT_WORKER]
            )
            await anyio.to_thread.run_sync(worker.wait, 30)
            assert worker.returncode != 0
            assert "No module named 'oneshot_nb" in dask_processes.logs()
            assert runner.client.scheduler_info()["workers"] == {}
            assert task.state is TaskState.CREATED
            task.stop()
            with anyio.fail_after(2):
                await task.wait()
        assert (task.state, task.reason) == (TaskState.INTERRUPTED, "stopped")
        eventually(lambda: scheduler_tasks(runner.client) == [])  # its Dask task too
    finally:
        runner.close()
