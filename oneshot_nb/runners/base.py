"""The runner protocol: all the engine knows of the place where a command runs.

A runner starts a command and hands back a `Handle`: the command's output as two byte
streams, its exit status to await, its process group to signal, and where it runs. The
engine drives every runner through these alone, so a new place to run commands (a pty, a
Dask worker) is one module behind this interface, and the engine does not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from anyio.abc import ByteReceiveStream

if TYPE_CHECKING:
    from ..engine.options import TaskOptions

Command = str | Sequence[str]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a command runs, as the history records it and recovery reads it back."""

    runner: str  # the runner's name: "local", ...
    host: str  # the host (or worker) whose processes these are
    pid: int | None  # the group leader's pid there, which is also the group's id
    start: int | None  # its start time, which tells it from a later process given its pid


class RunnerLost(Exception):
    """Raised by `Handle.wait` when the place the command ran in is gone, and its exit
    status with it (a worker that died). The task ends FAILED with `reason`, and the
    exception's message as its error."""

    def __init__(self, message: str, reason: str = "runner lost") -> None:
        super().__init__(message)
        self.reason = reason


class RunnerStopped(RunnerLost):
    """Raised by `Handle.wait` when the runner itself stopped the command (its worker
    was closed or retired, the cluster restarted). The task ends INTERRUPTED with
    `reason`, as a stop would end it."""


class Group(Protocol):
    """Every process a command started, signalled as one."""

    def terminate(self) -> None:
        """SIGTERM to every process, then SIGCONT so that a stopped one acts on it. Once:
        later calls do nothing. Never raises, whether or not the group still exists."""

    def kill(self) -> None:
        """SIGKILL to every process of the group still there."""

    def alive(self) -> bool:
        """Whether any process of the group still runs (a zombie does not)."""

    # Optional: usage() -> GroupUsage | None, the group's CPU seconds so far and resident
    # memory now (see runners/usage.py). It blocks on reads of /proc, so the engine
    # calls it from a worker thread, about once a second; None where it cannot say.


class Input(Protocol):
    """A command's input, for a task started with `pty` or `stdin` (a handle's optional
    `stdin`; None or absent: its stdin is closed)."""

    closed: bool  # nothing more can be sent (closed by us, or by the command)
    error: str | None  # why the command's input ended, when it ended it

    def send(self, data: bytes) -> None:
        """Write `data` now or as soon as the command reads, without blocking. Raises
        once the input is closed; BufferError when too much would wait unread."""

    def close(self) -> None:
        """End the input once what was sent is written (a terminal: its EOF character)."""


class Handle(Protocol):
    """A command a runner started. Its streams end when every process holding them has
    closed them, which may be long after the command itself has exited.

    Optional parts: `stdin` (an `Input`, for a task that takes input),
    `waiting_for_input()` (True when the command is blocked reading its input, None
    where the system cannot tell), which an IDLE task asks to say why it is silent, and
    `exit_usage` ((CPU seconds, peak RSS in bytes) of the command as its reaping said,
    once `wait()` has returned), whose CPU completes what was sampled while it ran.
    """

    pid: int | None
    stdout: ByteReceiveStream
    stderr: ByteReceiveStream
    group: Group

    def place(self) -> Place:
        """Where it runs (asked while it runs, by the history)."""
        ...

    async def wait(self) -> int:
        """Wait for the command to exit; its exit code, negative for the signal that
        killed it. RunnerLost when that can no longer be known. Cancelling the wait
        leaves the command alone."""
        ...

    async def aclose(self) -> None:
        """Close the streams and wait for the command to exit."""
        ...


@dataclass(frozen=True, slots=True)
class Orphan:
    """A task that a kernel left CREATED, RUNNING or IDLE when it died."""

    task_id: str
    place: Place
    grace: float  # seconds between SIGTERM and SIGKILL for what still runs


class Runner(Protocol):
    """A place to run commands."""

    name: str  # recorded in the history, and how recovery finds the runner of a task
    # Optional: what a task may ask of it beyond pipes, of "pty" (a terminal) and "stdin"
    # (a pipe to send input through); a task asking for another is refused at submit.
    # features: frozenset[str]

    async def start(
        self, command: Command, cwd: str | None, env: Mapping[str, str], options: TaskOptions
    ) -> Handle:
        """Start `command` in `cwd` with `env` as its whole environment, stdin closed
        (unless `options` asks for a pty or stdin, and the runner has that feature), in
        a process group of its own. OSError or ValueError when it cannot start."""
        ...

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        """Of these tasks, left running by kernels that died, end what still runs of the
        ones that are this runner's own (the termination policy, blocking), and return
        those: they can be marked ended. The others are left for a runner that knows
        them."""
        ...
