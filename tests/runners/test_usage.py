"""What a process group costs, read with real processes: CPU seconds (its members', and
what they reaped), resident memory summed over its members, and what is kept once the
group is gone."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
from helpers import py

from oneshot_nb.runners.terminate import ProcessGroup
from oneshot_nb.runners.usage import GroupMeter, GroupUsage

pytestmark = pytest.mark.timeout(30)

MiB = 1 << 20
Spawn = Callable[..., subprocess.Popen]


def allocating(mib: int) -> str:
    """Python code that touches `mib` MiB (every page, so that it is resident), says
    "ready" and sleeps."""
    return f"""
        import time
        b = bytearray({mib} * 1024 * 1024)
        for i in range(0, len(b), 4096):
            b[i] = 1
        print("ready", flush=True)
        time.sleep(30)
    """


def started(spawned: Spawn, code: str) -> tuple[subprocess.Popen, ProcessGroup]:
    """A process group running `code`, once it has said "ready"."""
    process = spawned(py(code), stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    return process, ProcessGroup(process.pid)


def bare_rss(spawned: Spawn) -> int:
    """What a bare interpreter (as py() starts it) holds resident."""
    _, group = started(spawned, allocating(0))
    usage = group.usage()
    assert usage is not None
    return usage.rss


def cpu_share(group: ProcessGroup, seconds: float) -> float:
    """The group's CPU seconds over `seconds` of wall time, as a share of one core."""
    before, start = group.usage(), time.monotonic()
    time.sleep(seconds)
    after, took = group.usage(), time.monotonic() - start
    assert before is not None and after is not None
    return (after.cpu_seconds - before.cpu_seconds) / took


def test_a_busy_loop_reads_about_one_core(spawned: Spawn):
    group = ProcessGroup(spawned(py("while True: pass")).pid)
    assert 0.7 <= cpu_share(group, 2.0) <= 1.3


def test_sleep_reads_about_nothing(spawned: Spawn):
    group = ProcessGroup(spawned(["sleep", "5"]).pid)
    assert cpu_share(group, 1.5) < 0.1


def test_the_rss_of_a_program_that_allocates_200_mib_reads_within_a_fifth_of_it(
    spawned: Spawn,
):
    """Beyond what a bare interpreter holds, measured beside it."""
    bare = bare_rss(spawned)
    _, group = started(spawned, allocating(200))
    usage = group.usage()
    assert usage is not None
    assert abs(usage.rss - bare - 200 * MiB) <= 0.2 * 200 * MiB


def test_the_rss_of_a_group_of_two_processes_is_their_sum(spawned: Spawn):
    bare = bare_rss(spawned)
    parent = f"""
        import subprocess, time
        b = bytearray(100 * 1024 * 1024)
        for i in range(0, len(b), 4096):
            b[i] = 1
        child = subprocess.Popen({py(allocating(50))!r}, stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\\n"
        print("ready", flush=True)
        time.sleep(30)
    """
    _, group = started(spawned, parent)
    usage = group.usage()
    assert usage is not None
    assert abs(usage.rss - 2 * bare - 150 * MiB) <= 0.2 * 150 * MiB


def test_the_cpu_of_a_child_the_group_reaped_is_counted_never_sampled_alive(spawned: Spawn):
    """A child that ran and was reaped between two samples still counts: its parent
    took its time in (children_user, children_system)."""
    child = "import time\nwhile time.process_time() < 1.0: pass"
    code = f"import subprocess\nsubprocess.run({py(child)!r})\nprint('ready', flush=True)"
    _, group = started(spawned, code + "\nimport time\ntime.sleep(30)")
    usage = group.usage()
    assert usage is not None
    assert usage.cpu_seconds >= 0.95


def test_what_a_leader_used_is_kept_once_it_is_gone(spawned: Spawn):
    """The runner reaps the leader outside the group: its last sampled time stays, the
    figure never goes down, and nothing is resident any more."""
    process = spawned(py("import time\nwhile time.process_time() < 0.6: pass"))
    group = ProcessGroup(process.pid)
    first = group.usage()
    time.sleep(0.3)
    last = group.usage()
    process.wait()
    after = group.usage()
    assert first is not None and last is not None and after is not None
    assert first.cpu_seconds <= last.cpu_seconds == after.cpu_seconds
    assert after.rss == 0


def test_a_group_gone_before_its_first_sample_has_no_usage(spawned: Spawn):
    process = spawned(["true"])
    process.wait()
    assert ProcessGroup(process.pid).usage() is None


def test_a_member_that_exits_is_counted_by_the_parent_that_reaps_it():
    """Bookkeeping without processes: a child gone with its parent still there is the
    parent's to count (its time moves into the parent's); one whose parent is gone too
    (a shell of a shell) likewise, when an ancestor in the group is left; a leader's
    (reaped outside the group) is kept. The figure never goes down meanwhile."""
    meter = GroupMeter()
    readings = {
        10: (1.0, 1, 1000),  # the leader: its parent is outside the group
        11: (2.0, 10, 2000),  # its child
        12: (3.0, 11, 3000),  # and a grandchild
    }
    meter._read_process = lambda pid: readings.get(pid)  # type: ignore[method-assign]
    assert meter.sample([10, 11, 12]) == GroupUsage(6.0, 6000)
    # The grandchild and its parent end: the leader reaps the child, which had reaped it.
    del readings[11], readings[12]
    readings[10] = (6.5, 1, 1000)
    assert meter.sample([10]) == GroupUsage(6.5, 1000)
    # The leader ends, reaped by the runner: what it had is kept.
    assert meter.sample([]) == GroupUsage(6.5, 0)


def test_a_dip_while_a_child_waits_to_be_reaped_is_not_shown():
    meter = GroupMeter()
    readings = {10: (1.0, 1, 100), 11: (2.0, 10, 100)}
    meter._read_process = lambda pid: readings.get(pid)  # type: ignore[method-assign]
    assert meter.sample([10, 11]).cpu_seconds == 3.0  # type: ignore[union-attr]
    del readings[11]  # a zombie, not yet reaped by its parent
    assert meter.sample([10]).cpu_seconds == 3.0  # type: ignore[union-attr]
    readings[10] = (3.5, 1, 100)  # reaped: the parent has its time
    assert meter.sample([10]).cpu_seconds == 3.5  # type: ignore[union-attr]


def test_the_cpu_of_children_not_yet_reaped_stays_in_the_sum():
    """A child that burned CPU and exited is a zombie until its parent reaps it: its
    time is still the group's, and the leader's own time after adds to it."""
    import subprocess
    import sys
    import time

    from oneshot_nb.runners.terminate import ProcessGroup

    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    end = time.process_time() + 1.0\n"
        "    while time.process_time() < end: pass\n"
        "    os._exit(0)\n"
        "time.sleep(1.6)\n"  # the child is a zombie from about 1 s on
        "end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\n"
        "time.sleep(30)\n"
    )
    process = subprocess.Popen([sys.executable, "-S", "-c", code], start_new_session=True)
    try:
        group = ProcessGroup(process.pid)
        group.usage()
        time.sleep(1.3)
        early = group.usage()
        time.sleep(1.5)
        late = group.usage()
        assert early is not None and late is not None
        assert early.cpu_seconds >= 0.9
        assert late.cpu_seconds >= early.cpu_seconds + 0.4
    finally:
        process.kill()
        process.wait()
