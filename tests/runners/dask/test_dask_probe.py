"""Regressions from a hostile probe of the Dask runner: a stop racing the start, a
reaper killed before its worker, a client closed under the runner or with tasks still
running, a worker retired or restarted while the kernel's loop is busy, claims the
scheduler kept for good, clusters named in ways the runner does not take. Real
processes throughout; no command, worker or reaper may be left behind."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from distributed import Client, LocalCluster
from helpers import eventually, py, wait_for_line, wait_until
from helpers.dask import (
    all_gone,
    cluster_pids,
    our_children,
    read_pids,
    sleeper_with_child,
    worker_pids,
)
from helpers.processes import group_gone, kill_group, process_gone

from oneshot_nb import AsyncOrchestrator, TaskState
from oneshot_nb.runners.dask import DaskRunner

# Most tests start a cluster of their own, and kill or close a part of it.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90), pytest.mark.slow]

GRACE = 0.5


def tagged(tag: str) -> list[int]:
    """The pids of the processes whose command line holds `tag` (this one aside)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if tag.encode() in cmdline and not process_gone(int(entry)):
                found.append(int(entry))
    return found


def kill_tagged(tag: str) -> None:
    """SIGKILL what holds `tag`: clean-up after a test that failed."""
    for pid in tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unique_tag(name: str) -> str:
    """A word for a test's commands to carry, found in no other process's command line."""
    return f"oneshotprobe{name}{os.getpid()}x{random.randrange(1 << 30)}"


@contextlib.contextmanager
def own_cluster(workers: int) -> Iterator[tuple[LocalCluster, list[int]]]:
    """A LocalCluster of the test's own, and a list for the pids of its workers and their
    reapers (the test adds them once a runner has set the plugin up); closed after, and
    every pid in the list gone."""
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    pids: list[int] = []
    try:
        yield cluster, pids
    finally:
        cluster.close()
    all_gone(pids)


# -- a stop racing the start ------------------------------------------------------------------


async def test_a_stop_racing_the_start_never_leaves_the_command_running(
    shared_runner: DaskRunner,
) -> None:
    """A stop that came while the worker was starting the command (after its claim was
    set, before it was spawned) released the Dask task before there was a command to
    stop: the command started anyway and ran on, with nobody to stop it or read it. Now
    a command released meanwhile never starts, and one that did start is stopped."""
    tag = unique_tag("race")
    tasks = []
    try:
        async with AsyncOrchestrator(runner=shared_runner, grace=GRACE, limit=4) as orch:
            began = time.monotonic()
            while len(tasks) < 60 and time.monotonic() - began < 12:
                task = orch.submit(f"sleep 300; : {tag} {len(tasks)}")
                tasks.append(task)
                await anyio.sleep(random.uniform(0.0, 0.06))
                task.stop()
                with anyio.fail_after(10):
                    await task.wait()
        await wait_until(lambda: tagged(tag) == [], timeout=3)
        for task in tasks:
            if task.place is not None and task.place.pid is not None:
                assert group_gone(task.place.pid), f"{task.id} left its group"
        ends = {(task.state, task.reason) for task in tasks}
        assert ends == {(TaskState.INTERRUPTED, "stopped")}, [t.error for t in tasks]
        assert len(tasks) >= 30
    finally:
        kill_tagged(tag)


# -- a reaper killed --------------------------------------------------------------------------


def reaper_of(dask_worker: Any) -> int:
    return dask_worker.plugins["oneshot_nb"].reaper.pid


async def test_a_killed_reaper_is_replaced_and_still_ends_a_killed_workers_commands(
    two_workers: DaskRunner, tmp_path: Path
) -> None:
    """A reaper killed by hand (or by the OOM killer) was never started again: when its
    worker was killed next, nothing ended the command's group, which ran on for good.
    Now the worker starts a new reaper within a second, told every group it watches,
    and a dead worker's commands get a grace of 1 s at most (this one ignores SIGTERM,
    and its task's grace is 5 s)."""
    pid_file = tmp_path / "pids"
    client = two_workers.client
    groups: list[int] = []
    try:
        async with AsyncOrchestrator(runner=two_workers, grace=5) as orch:
            task = orch.submit(py(sleeper_with_child(pid_file, ignore_term=True)))
            await wait_for_line(task, "up")
            leader, child = read_pids(pid_file)
            groups.append(leader)
            assert task.place is not None
            address = task.place.host
            first = client.run(reaper_of, workers=[address])[address]
            os.kill(first, signal.SIGKILL)
            await anyio.sleep(1.5)  # the worker looks at its reaper every second
            second = client.run(reaper_of, workers=[address])[address]
            assert second != first and not process_gone(second), "no new reaper"
            os.kill(worker_pids(client)[address], signal.SIGKILL)
            await wait_until(lambda: group_gone(leader) and process_gone(child), timeout=3)
            all_gone([second], timeout=3)
            with anyio.fail_after(5):
                await task.wait()
            assert (task.state, task.reason) == (TaskState.FAILED, "worker lost")
    finally:
        for pgid in groups:
            kill_group(pgid)


# -- a client closed --------------------------------------------------------------------------


async def test_a_new_runner_after_its_client_was_closed_leaves_no_old_cluster() -> None:
    """`runner.client.close()` closed the client but not the LocalCluster the runner
    had started: the next `DaskRunner("local:N")` started a second cluster and the
    first one's worker processes ran on until the kernel exited. Now the old cluster is
    closed before a new one starts, and the new runner works."""
    first = DaskRunner("local:1")
    try:
        old = cluster_pids(first.client)
        first.client.close()
        second = DaskRunner("local:1")
    except BaseException:
        if first.local_cluster is not None:
            first.local_cluster.close()
        raise
    try:
        assert second.local_cluster is not first.local_cluster
        all_gone(old)
        async with AsyncOrchestrator(runner=second) as orch:
            task = orch.submit(py("print('again')"))
            await task.wait()
        assert (task.state, task.output) == (TaskState.COMPLETED, "again\n"), task.error
    finally:
        new = cluster_pids(second.client)
        second.close()
    all_gone(new)


def block_the_loop_while(action: Any, seconds: float) -> None:
    """Run `action` on another thread, half a second from now, while this thread (the
    kernel's loop) sleeps for `seconds`: a busy cell reads nothing meanwhile."""
    thread = threading.Thread(target=lambda: (time.sleep(0.5), action()))
    thread.start()
    time.sleep(seconds)
    thread.join()


async def test_a_worker_retired_while_the_kernel_is_busy_keeps_the_output(
    two_workers: DaskRunner,
) -> None:
    """A worker retired while the kernel's loop was blocked (a busy cell) closed its
    server at once: what the command had written but the kernel not yet read was lost,
    the log cut short. Now a closing worker waits (up to 5 s) for its kernels to read
    it all: the log ends with the command's last line, every byte counted."""
    code = """
        import sys, time
        sys.stdout.write("x" * 3_000_000 + "\\nEND\\n")
        sys.stdout.flush()
        time.sleep(100)
    """
    client = two_workers.client
    async with AsyncOrchestrator(runner=two_workers, grace=GRACE, max_log_bytes=8 << 20) as orch:
        task = orch.submit(py(code))
        await task.wait_for("RUNNING")
        assert task.place is not None
        address = task.place.host
        block_the_loop_while(lambda: client.retire_workers([address]), 3)
        with anyio.fail_after(15):
            await task.wait()
    assert (task.state, task.reason) == (TaskState.INTERRUPTED, "worker closed"), task.error
    assert task.bytes_written["stdout"] == 3_000_005
    assert task.output.endswith("x\nEND\n") and len(task.output) == 3_000_005
    assert task.place.pid is not None and group_gone(task.place.pid)


async def retire_and_time(client: Client, address: str) -> float:
    """Retire the worker at `address`; the seconds until its process has exited."""
    pid = worker_pids(client)[address]
    began = time.monotonic()
    await anyio.to_thread.run_sync(client.retire_workers, [address])
    await wait_until(lambda: process_gone(pid), timeout=30)
    return time.monotonic() - began


async def test_a_closing_worker_waits_no_longer_than_its_kernel_takes_to_read(
    two_workers: DaskRunner,
) -> None:
    """A closing worker waits (up to 5 s) until its kernels have read what its commands
    wrote; but when the kernel's last read brought the command's last bytes and its
    end together (a TERM trap that prints), the kernel asked no more, the worker never
    learnt they had arrived, and waited the whole 5 s for nothing: every retire or
    restart of a worker that ran such a command took 5 s longer (a restart, 4 s and
    the nanny's SIGKILL). It must take about as long as closing an idle worker."""
    client = two_workers.client
    async with AsyncOrchestrator(runner=two_workers, grace=3) as orch:
        task = orch.submit("trap 'echo bye; exit 3' TERM; echo start; sleep 1000 & wait")
        await wait_for_line(task, "start")
        assert task.place is not None
        busy = task.place.host
        idle = next(address for address in worker_pids(client) if address != busy)
        idle_took = await retire_and_time(client, idle)
        busy_took = await retire_and_time(client, busy)
        with anyio.fail_after(5):
            await task.wait()
    assert (task.state, task.reason, task.output) == (
        TaskState.INTERRUPTED,
        "worker closed",
        "start\nbye\n",
    )
    assert busy_took < idle_took + 2.5, f"{busy_took:.1f} s, an idle worker {idle_took:.1f} s"


RESTART_REASONS = ("released by the scheduler", "worker closed")


async def test_a_restart_keeps_what_the_command_says_as_it_is_stopped(
    two_workers: DaskRunner,
) -> None:
    """`client.restart()` has the scheduler take every task back before the workers
    close: the worker forgot a released command at once, so what it printed when
    stopped (a TERM trap's last words) never reached the kernel. Now it is stopped by
    the policy, says why, and is kept for its kernel to read to the end."""
    command = "trap 'echo bye-out; echo bye-err >&2; exit 3' TERM; echo start; sleep 1000 & wait"
    client = two_workers.client
    async with AsyncOrchestrator(runner=two_workers, grace=3) as orch:
        task = orch.submit(command)
        await wait_for_line(task, "start")
        await anyio.to_thread.run_sync(client.restart)
        with anyio.fail_after(15):
            await task.wait()
    # The scheduler's release and the nanny's close may reach the worker in either
    # order: whichever comes first names the reason.
    assert task.reason in RESTART_REASONS, task.error
    ended = (task.state, task.read_output("stdout"), task.read_output("stderr"))
    assert ended == (TaskState.INTERRUPTED, "start\nbye-out\n", "bye-err\n"), task.error
    assert task.place is not None and task.place.pid is not None
    await wait_until(lambda: group_gone(task.place.pid), timeout=3)


async def test_closing_the_runner_interrupts_its_running_and_queued_tasks(
    tmp_path: Path,
) -> None:
    """`DaskRunner.close()` with tasks still on the cluster failed the running one
    ("worker lost", a closed connection's error) and the one still queued for a worker
    thread ("spawn error", its Dask task cancelled). Now both end INTERRUPTED, "client
    closed", and the scheduler, which releases a closed client's tasks, has the worker
    stop the running command by the policy (its TERM trap runs; what it prints has
    nobody left to read it)."""
    tag, said = unique_tag("close"), tmp_path / "said"
    trap = f"trap 'echo bye; echo bye > {said}; exit 4' TERM"
    running_command = f"{trap}; echo hi; sleep 993 & wait; : {tag}"
    with own_cluster(workers=1) as (cluster, pids):
        runner = DaskRunner(Client(cluster, set_as_default=False))
        try:
            pids += cluster_pids(runner.client)
            async with AsyncOrchestrator(runner=runner, grace=2, limit=2) as orch:
                running = orch.submit(running_command)
                queued = orch.submit(f"sleep 300; : {tag}")  # one worker thread: it waits
                await wait_for_line(running, "hi")
                await anyio.sleep(0.5)
                assert queued.state is TaskState.CREATED
                await anyio.to_thread.run_sync(runner.close)
                with anyio.fail_after(15):
                    await running.wait()
                    await queued.wait()
            for task in (running, queued):
                assert (task.state, task.reason) == (TaskState.INTERRUPTED, "client closed"), (
                    task.error
                )
            assert queued.place is None
            assert running.place is not None and running.place.pid is not None
            await wait_until(lambda: group_gone(running.place.pid) and not tagged(tag), 5)
            assert said.read_text() == "bye\n"
        finally:
            runner.close()
            kill_tagged(tag)


async def test_a_closed_runner_leaves_no_claims_on_the_scheduler() -> None:
    """A claim (a scheduler event per command, which stops Dask running it twice) is
    cleared 60 s after its task ends, by the next start: a runner closed before then
    left its last minute of claims on the scheduler for good, growing with every kernel
    that came and went. Now closing the runner clears them."""
    with (
        own_cluster(workers=1) as (cluster, pids),
        Client(cluster, set_as_default=False) as watcher,
    ):
        mine = Client(cluster, set_as_default=False)
        runner = DaskRunner(mine)
        try:
            pids += cluster_pids(watcher)

            def claims(dask_scheduler: Any, client_id: str = mine.id) -> int:
                events = dask_scheduler.extensions["events"]._events
                return sum(f"-claim-{client_id}-" in str(name) for name in events)

            before = watcher.run_on_scheduler(scheduler_events)
            async with AsyncOrchestrator(runner=runner, limit=4) as orch:
                batch = orch.submit_batch(["true"] * 50)
                with anyio.fail_after(60):
                    for task in batch.tasks:
                        await task.wait()
            assert all(task.state is TaskState.COMPLETED for task in batch.tasks)
            assert watcher.run_on_scheduler(claims) == 50  # kept: a minute after
        finally:
            runner.close()
        eventually(lambda: watcher.run_on_scheduler(scheduler_events) == before)
        assert watcher.run_on_scheduler(claims) == 0


def scheduler_events(dask_scheduler: Any) -> int:
    """How many events (claims among them) the scheduler holds."""
    return len(dask_scheduler.extensions["events"]._events)


# -- the cluster named ------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", ["local:\u00b2", "local:\u0663", "inproc://x:1", "ucx://x:1"])
def test_a_cluster_the_runner_cannot_use_is_one_line_error(cluster: str) -> None:
    """The check took any Unicode digit (str.isdigit): `local:²` failed later in int()
    with a message of Python's own, and `local:٣` (an Arabic-Indic three) started three
    workers; "inproc://" and "ucx://" addresses passed it and failed inside Dask. Each
    is now a ValueError in one line naming the forms the runner takes, and starts
    nothing."""
    before = our_children()
    with pytest.raises(ValueError) as caught:
        DaskRunner(cluster)
    message = str(caught.value)
    assert "\n" not in message and repr(cluster) in message
    assert "local:N" in message
    if not cluster.startswith("local"):
        assert "tcp://host:8786" in message
    assert our_children() <= before
