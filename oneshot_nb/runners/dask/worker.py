"""On each Dask worker: the commands it runs for oneshot_nb kernels.

A command runs as an `async def` Dask task on the worker's event loop (so Dask's own
threads bound how many run on a worker), spawned as a local one is, in a session of its
own. `Commands`, a worker plugin, keeps each running command's unsent output and answers
the kernel's requests: `read` (output past an offset, which acknowledges what is before
it; a long poll), `wait` (the exit), `stop` (the termination policy, run here), `kill`
and `forget`. Output is pulled by the kernel, never pushed: a kernel that reads slowly
leaves the outbox full, and a full outbox stops reading the pipe, which slows the
command instead of filling the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from distributed import get_worker
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol import to_serialize
from tornado.ioloop import PeriodicCallback

from .. import procfs
from ..local import HOST, spawn
from .command import LONG_POLL, REPLY, Running
from .reaper import Reaper

PLUGIN = "oneshot_nb"
KEPT = "_oneshot_nb_running"  # the worker's attribute for what runs there
# Each pipe's size on a worker: a sixteenth of the reads a kernel's 64 KiB pipes take.
WORKER_PIPE = 1 << 20
# How long a closing worker waits for its kernels to read what its commands wrote.
DRAIN_ON_CLOSE = 5.0
# How long a command the scheduler released is kept for its kernel to read, after its end.
RELEASED_KEPT = 30.0
# How often the reaper is looked at.
REAPER_CHECK = 1.0

logger = logging.getLogger("oneshot_nb")


class Commands(WorkerPlugin):
    """The worker plugin: the commands this worker runs for kernels, and the handlers
    the kernels call. Registered by each kernel's DaskRunner under one name, so a worker
    has one, which every kernel shares."""

    name = PLUGIN

    def __init__(self, version: str = "") -> None:
        self.version = version
        self.running: dict[str, Running] = {}

    def setup(self, worker: Any) -> None:
        from ..._version import __version__

        if self.version and self.version != __version__:
            raise RuntimeError(
                f"this worker has oneshot_nb {__version__}, the kernel {self.version}:"
                " install the same version on both"
            )
        self.worker = worker
        # Each kernel registers the plugin when it connects, and Dask replaces the one
        # there: what runs is kept on the worker, for the new one to take over.
        kept = getattr(worker, KEPT, None)
        if kept is None:
            kept = ({}, Reaper.start())
            setattr(worker, KEPT, kept)
            # A reaper that died would leave the commands unguarded until the next one
            # starts: looked at every second (the worker stops it when it closes).
            check = PeriodicCallback(kept[1].check, REAPER_CHECK * 1000)
            worker.periodic_callbacks["oneshot_nb-reaper"] = check
            check.start()
        self.running, self.reaper = kept
        for name in ("read", "wait", "stop", "kill", "forget"):
            worker.handlers[f"oneshot_{name}"] = getattr(self, name)

    async def teardown(self, worker: Any) -> None:
        """The worker closes: stop what runs here, each by the policy, and say why.
        (Replaced by another kernel's registration, it leaves everything running.)"""
        if not _closing(worker):
            return
        stops = [self.closing(command) for command in list(self.running.values())]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        # What the commands wrote is still here: give their kernels (a busy cell may
        # hold one) a while to read it before the worker's server goes.
        deadline = asyncio.get_running_loop().time() + DRAIN_ON_CLOSE
        while any(not command.drained() for command in self.running.values()):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        self.reaper.close()

    def closing(self, command: Running) -> asyncio.Task[None]:
        """Stop `command` because this worker closes."""
        return self.stop_for(command, f"worker closed: {self.worker.address}")

    def stop_for(self, command: Running, why: str) -> asyncio.Task[None]:
        """Stop `command` of the worker's own accord, and tell its kernel why at once:
        the worker may be gone before a reply saying so could leave."""
        if command.stopped is None and command.stopping is None:
            self.worker.log_event(command.topic, {"key": command.key, "stopped": why})
        return command.stop(command.grace, why)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # The scheduler takes the task back: the worker closes (retired, restarted), or
        # the kernel let it go, or died, and will never stop or forget it.
        command = self.running.get(key) if isinstance(key, str) else None
        if command is None or finish not in ("released", "cancelled", "forgotten"):
            return
        if _closing(self.worker):
            self.closing(command)  # kept, for the kernel to read to the end
            return
        if not command.released:
            command.released = True
            # All of its group, whether its first process has exited or not: what is
            # left of it would otherwise run on with nobody to read or stop it. Kept a
            # while for a kernel that still reads (the scheduler restarted, say); one
            # that died never forgets it.
            why = (
                f"released by the scheduler: it took the task back from {self.worker.address}"
                " (a restart of the cluster?)"
            )
            stopping = self.stop_for(command, why)
            loop = asyncio.get_running_loop()
            stopping.add_done_callback(lambda _: loop.call_later(RELEASED_KEPT, self.forget, key))

    # -- the Dask task ----------------------------------------------------------------

    async def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one command for a kernel: claim it, start it, tell the kernel where it
        runs (or why it could not start), and return its exit once it has exited."""
        worker = self.worker
        notice = {"key": spec["key"], "worker": worker.address, "host": HOST}
        # Dask runs a task again when its worker dies; the command must not run twice.
        # The claim is set, and its setting answered, before the command starts: the
        # scheduler may handle this worker's death before a set still on its way (a
        # command that kills its worker at once ran on every worker Dask tried).
        if await worker.scheduler.event_is_set(name=spec["claim"]):
            return {"duplicate": True}
        await worker.scheduler.event_set(name=spec["claim"])
        # Released meanwhile (a stop while it started, the kernel gone): the release
        # came before the command was there to stop, so it must not start at all.
        task = worker.state.tasks.get(spec["key"])
        if task is None or task.state != "executing":
            return {"cancelled": True}
        return await self._run(spec, notice)

    async def _run(self, spec: dict[str, Any], notice: dict[str, Any]) -> dict[str, Any]:
        key, worker = spec["key"], self.worker
        env = {**os.environ, **spec["env"], "ONESHOT_WORKER": worker.address}
        try:
            child = await spawn(spec["command"], _cwd(spec), env, WORKER_PIPE)
        except Exception as exc:
            worker.log_event(spec["topic"], {**notice, "error": f"{type(exc).__name__}: {exc}"})
            return {"error": True}
        command = Running(key, child, spec["grace"], spec["topic"])
        self.running[key] = command
        start = procfs.start_time(child.pid, zombies=True)
        self.reaper.watch(child.pid, start, command.grace)
        command.pumps = [asyncio.ensure_future(command.pump(n)) for n in ("stdout", "stderr")]
        worker.log_event(spec["topic"], {**notice, "pid": child.pid, "start": start})
        waiting = asyncio.ensure_future(child.wait())
        try:
            command.exit(await asyncio.shield(waiting))
        except asyncio.CancelledError:
            # The worker is closing (it cancels its own tasks first): stop by the
            # policy, and let the kernel know why.
            await asyncio.shield(self.closing(command))
            command.exit(await waiting)
            raise
        return {"exit": command.returncode}

    # -- what the kernel calls ---------------------------------------------------------

    async def read(self, key: str, stream: str, since: int, wait: float = LONG_POLL) -> dict:
        command = self.running.get(key)
        if command is None or stream not in command.boxes:
            return {"unknown": True}
        box = command.boxes[stream]
        box.ack(since)
        if since == box.end and not box.eof:
            await box.grown.wait(min(wait, LONG_POLL))
        if since < box.base:
            return {"unknown": True}  # asked for what it acknowledged: not ours to guess
        data = box.take(since, REPLY)
        end = box.eof and since + len(data) == box.end
        box.told_end = box.told_end or end
        # A frame of its own: not copied into the message by msgpack.
        return {"data": to_serialize(data), "eof": end}

    async def wait(self, key: str, wait: float = LONG_POLL) -> dict:
        command = self.running.get(key)
        if command is None:
            return {"unknown": True}
        if command.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(command.exited.wait(), min(wait, LONG_POLL))
        return {"exit": command.returncode, "stopped": command.stopped}

    async def stop(self, key: str, grace: float) -> dict:
        command = self.running.get(key)
        if command is None:
            return {"alive": False}
        await asyncio.shield(command.stop(grace))
        return {"alive": command.alive()}

    def kill(self, key: str) -> dict:
        command = self.running.get(key)
        if command is None:
            return {"alive": False}
        command.child.group.kill()
        return {"alive": command.alive()}

    def forget(self, key: str) -> None:
        """The kernel has all it wants of the command: drop it, and the reaper need not
        watch its group any more (kept until now: what outlived the first process of
        the command still holds its output, and is still the task's)."""
        command = self.running.pop(key, None)
        if command is not None:
            command.close()
            self.reaper.forget(command.child.pid)


def _closing(worker: Any) -> bool:
    return worker.status in (Status.closing, Status.closing_gracefully, Status.closed)


def _cwd(spec: dict[str, Any]) -> str | None:
    """The directory asked for; else the kernel's, where the worker has it (a shared
    file system, or the kernel's own machine); else the worker's."""
    if spec["cwd"] is not None:
        return spec["cwd"]
    hint = spec["kernel_cwd"]
    return hint if hint is not None and os.path.isdir(hint) else None


async def run_command(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: run `spec`'s command through this worker's plugin."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN)
    if plugin is None:
        raise RuntimeError(f"oneshot_nb's worker plugin is not set up on {worker.address}")
    return await plugin.run(spec)
