"""The termination policy with real process groups: SIGTERM, the grace, SIGKILL, and a
wait for what was killed to be gone, on the loop (end_group) or blocking, for many
groups at once (end_groups_now)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from helpers import eventually, py, wait_until
from helpers.processes import group_gone, live_members, process_gone

from oneshot_nb.runners import end_group, end_groups_now
from oneshot_nb.runners.terminate import ProcessGroup


def stubborn_group(
    spawned: Callable[..., subprocess.Popen], where: Path
) -> tuple[subprocess.Popen, int, Path]:
    """A process group: a parent that SIGTERM ends, and a child of it that notes SIGTERM
    (in `where`/termed) and goes on. Returns the parent, the child's pid once its
    handler is set, and the note's path."""
    where.mkdir()
    pid_file, termed = where / "child.pid", where / "termed"
    child = f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *_: open({str(termed)!r}, "w").close())
        with open({str(pid_file) + ".tmp"!r}, "w") as f:
            f.write(str(os.getpid()))
        os.rename({str(pid_file) + ".tmp"!r}, {str(pid_file)!r})
        while True:
            time.sleep(1)
    """
    parent = spawned(
        py(f"import subprocess, time\nsubprocess.Popen({py(child)!r})\ntime.sleep(100)")
    )
    eventually(pid_file.exists, timeout=10)
    return parent, int(pid_file.read_text()), termed


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_end_group_terminates_then_kills_what_outlives_the_grace(tmp_path, spawned):
    """end_group sends SIGTERM to the whole group (the parent dies of it), leaves the
    child that ignores it running through the grace, then kills it: once it returns
    nothing of the group runs. Killing at once, not signalling the whole group, or
    returning before the kill took effect, breaks this."""
    grace = 1.0
    parent, child, termed = stubborn_group(spawned, tmp_path / "g")
    seen_alive = 0.0
    began = time.monotonic()

    async def watch() -> None:
        nonlocal seen_alive
        while not process_gone(child):
            seen_alive = time.monotonic() - began
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await end_group(ProcessGroup(parent.pid), grace)
        assert live_members(parent.pid) == []
        assert process_gone(child)
    assert termed.exists()  # it was asked first
    assert seen_alive >= grace / 2
    assert parent.wait(5) == -signal.SIGTERM


@pytest.mark.timeout(30)
def test_end_groups_now_ends_many_groups_in_one_wait_of_the_grace(tmp_path, spawned):
    """end_groups_now gives three groups that ignore SIGTERM one wait of the grace
    together (well under three graces), SIGKILLs what is left, and nothing of them
    runs after. A wait per group, or no wait at all, breaks this."""
    grace = 1.0
    groups = [stubborn_group(spawned, tmp_path / f"g{i}") for i in range(3)]
    began = time.monotonic()
    end_groups_now({ProcessGroup(parent.pid): grace for parent, _, _ in groups})
    took = time.monotonic() - began
    assert grace / 2 <= took < 1.5 * grace
    eventually(lambda: all(group_gone(parent.pid) for parent, _, _ in groups), timeout=1)
    for parent, child, termed in groups:
        assert process_gone(child)
        assert termed.exists()
        assert parent.wait(5) == -signal.SIGTERM


BALLAST_MIB = 256  # a killed process frees its memory before it is gone: ~20 ms for this


def slow_to_exit(ready: Path) -> list[str]:
    """A process that ignores SIGTERM and holds BALLAST_MIB of memory it has touched, as
    a training job does: after SIGKILL it still runs while the system frees it."""
    return py(
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ballast = bytearray({BALLAST_MIB} << 20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(1)
        """
    )


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["end_group", "end_groups_now"])
async def test_a_killed_group_slow_to_exit_is_gone_when_the_policy_returns(
    policy, tmp_path, spawned
):
    """SIGKILL only queues the kill: a process holding much memory runs on while it is
    freed. Both forms of the termination policy return only once what they killed is
    gone (end_group waits up to KILL_WAIT for it), so that a task, or a dead kernel's
    task, is not called ended while its process still runs."""
    ready = tmp_path / "ready"
    process = spawned(slow_to_exit(ready))
    await wait_until(ready.exists, timeout=20)
    group = ProcessGroup(process.pid)
    if policy == "end_group":
        await end_group(group, 0.1)
    else:
        end_groups_now({group: 0.1})
    assert live_members(process.pid) == []


class FaultyGroup:
    """A runner's group whose methods raise, in front of a real local group: a bug in a
    third-party runner, or a worker that no longer answers."""

    def __init__(self, pgid: int, fails: set[str]) -> None:
        self.real = ProcessGroup(pgid)
        self.fails = fails

    def _do(self, name: str) -> object:
        if name in self.fails:
            raise OSError(f"{name} failed")
        return getattr(self.real, name)()

    def terminate(self) -> None:
        self._do("terminate")

    def kill(self) -> None:
        self._do("kill")

    def alive(self) -> bool:
        return bool(self._do("alive"))


def test_one_groups_fault_does_not_stop_the_policy_for_the_others(tmp_path, spawned, caplog):
    """`end_groups_now` (interpreter exit, recovery) over a group whose terminate and
    kill raise, beside two good groups: the good ones are still ended, the fault is
    logged, and nothing raises. An exception escaping the first group's terminate left
    every group running at kernel exit."""
    bad = spawned(py("import time; time.sleep(100)"))
    good = [spawned(py("import time; time.sleep(100)")) for _ in range(2)]
    groups = {FaultyGroup(bad.pid, {"terminate", "kill"}): 0.5}
    groups.update({ProcessGroup(p.pid): 0.5 for p in good})
    end_groups_now(groups)
    assert all(group_gone(p.pid) for p in good)
    assert "could not terminate" in caplog.text and "could not kill" in caplog.text


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_group_that_cannot_say_it_is_alive_is_not_waited_for(tmp_path, spawned, caplog):
    """`end_group` over a group whose `alive` raises returns at once (logged) instead
    of raising into the task that stops, or waiting for ever."""
    process = spawned(py("import time; time.sleep(100)"))
    with anyio.fail_after(5):
        await end_group(FaultyGroup(process.pid, {"alive"}), 30)
    assert "could not tell whether" in caplog.text
    eventually(lambda: process.poll() is not None, timeout=5)  # the SIGTERM was sent


@pytest.mark.parametrize("pgid", [0, -1, 1, True])
def test_a_group_id_no_command_can_have_is_never_signalled(pgid):
    """ProcessGroup(0) would signal the caller's own group (killpg(0)), 1 is init's,
    and a negative id is refused by the system: such a group is gone from the start and
    its methods send nothing. A history row with pid 0 made %load_ext SIGTERM and then
    SIGKILL the kernel's own process group."""
    group = ProcessGroup(pgid)
    assert not group.alive()
    group.terminate()
    group.kill()  # this process (in the test's group) is still here to assert:
    assert not group.alive()
