"""Watching a running command: its output, its silence, its deadline and its stop.

The half of `OneshotTask` that runs while the process does, kept apart so that each
half reads at once. `Supervision` is a mixin: it works on the task's own state.
"""

from __future__ import annotations

import logging
import time

import anyio
from anyio.abc import ByteReceiveStream

from ..runners import RunnerLost, RunnerStopped, end_group
from .events import OutputWanted, TaskEvent, notify
from .input import WAITING_FOR_INPUT
from .output import StreamDecoder

logger = logging.getLogger("oneshot_nb")

# Large reads keep the per-chunk cost (decode, log, events) small next to the copy.
CHUNK_SIZE = 1 << 16
# How long a stopped task waits between looks at its pipes once its group is gone.
DRAIN_POLL = 0.25
# After a stopped task's group is gone, what it wrote is what its pipes hold then: that
# much more is read, and no more, since a daemon that left the group (setsid) may hold
# them open and write for ever. Where a pipe cannot tell what it holds, they are read
# for at most DRAIN_LIMIT more (time spent waiting for the store's disk not counted, up
# to DRAIN_GATED_CAP).
DRAIN_LIMIT = 1.0
# How often an IDLE task that takes input is looked at again: did it begin (or stop)
# waiting for input? One shared look at /proc serves every task (see procfs.members).
INPUT_RECHECK = 1.0
# A program that reads, then works, then reads again, all in silence, changes the
# reason each time: at most this many changes a spell of silence are said (and stored).
REASON_CHANGES = 10
DRAIN_GATED_CAP = 30.0
OUTPUT_CUT_NOTE = (
    b"\n[oneshot_nb] output cut after the stop: a process outside the task's process group"
    b" (started with setsid?) still holds its output; it was left running\n"
)


class Supervision:
    """What a task does while its process runs (see OneshotTask for the state used)."""

    def _conclude(self) -> None:
        if self.state.is_final:
            return
        code = self.returncode
        if isinstance(self.lost, RunnerStopped):
            self.machine.interrupt(reason=self.lost.reason)
        elif self.lost is not None:
            self._fail_or_retry(self.lost.reason)
        elif self._agent_watch is not None and self._agent_watch.failed:
            # The agent said it failed, whatever its exit code: its message is why.
            self._fail_or_retry(self._agent_watch.failed)
        elif code == 0:
            self.machine.finish(reason="exit")
        else:
            self._fail_or_retry("signal" if code is not None and code < 0 else "exit")

    async def _runner_fault(self, exc: Exception) -> None:
        """The runner lost the command, or failed to give its exit or its output: kept,
        for `_conclude` to say, and its output streams closed (they would not end by
        themselves either); the group is ended after (see _supervise)."""
        if self.lost is None:
            lost = exc if isinstance(exc, RunnerLost) else None
            self.lost = lost or RunnerLost(f"{type(exc).__name__}: {exc}")
            self.error = self.error or str(self.lost)  # kept even if a stop ends the task
            if isinstance(self.lost, RunnerStopped):
                self.interrupt(self.lost.reason)
        assert self._process is not None
        with anyio.CancelScope(shield=True):
            await self._process.stdout.aclose()
            await self._process.stderr.aclose()

    async def _pump(self, stream: ByteReceiveStream, name: str, done: anyio.Event | None) -> None:
        # None while nobody wants text: a fresh one when someone does again, since the
        # bytes in between were never decoded.
        decoder: StreamDecoder | None = None
        previous = b""
        try:
            while True:
                try:
                    data = await stream.receive(CHUNK_SIZE)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                except Exception as exc:  # a runner's stream at fault
                    await self._runner_fault(exc)
                    break
                if not isinstance(data, bytes):
                    await self._runner_fault(TypeError(f"{name} gave {data!r:.40}, not bytes"))
                    break
                self.last_activity = time.monotonic()
                self.bytes_written[name] += len(data)
                if self._idle:
                    self.machine.detect_activity()
                self._log.append(name, data)
                if self._agent_watch is not None and name == "stdout":
                    self._watch_agent(data)
                wanted = self._output_wanted()
                if wanted is OutputWanted.TEXT:
                    if decoder is None:
                        decoder = _decoder_after(previous)
                    self._emit_output(name, data, decoder.decode(data))
                else:
                    decoder = None
                    if wanted:
                        self._emit_output(name, data, "")
                previous = data
                if self.output_gate is not None:
                    self._gated += 1
                    try:
                        await self.output_gate()
                    finally:
                        self._gated -= 1
        finally:
            if decoder is None and self._output_wanted() is OutputWanted.TEXT:
                decoder = _decoder_after(previous)  # a view came after the last chunk
            rest = decoder.decode(b"", final=True) if decoder is not None else ""
            if rest:
                self._emit_output(name, b"", rest)
            if self._agent_watch is not None and name == "stdout":
                self._watch_agent(None)
            if done is not None:
                done.set()

    def _watch_agent(self, data: bytes | None) -> None:
        """Feed the agent's stream (None: its end) to its watch; tell the listeners
        when its summary changed."""
        assert self._agent_watch is not None
        try:
            changed = (
                self._agent_watch.feed(data) if data is not None else self._agent_watch.finish()
            )
        except Exception:  # a parser's fault must not cost the output
            logger.exception("oneshot_nb: task %s: reading the agent's stream", self.id)
            return
        if changed and self.listeners:
            notify(self.listeners, TaskEvent(self.id, "agent", time.time()))

    def _output_wanted(self) -> OutputWanted:
        if not self.listeners:
            return OutputWanted.NOTHING
        return self.output_wanted() if self.output_wanted else OutputWanted.TEXT

    def _emit_output(self, name: str, data: bytes, text: str) -> None:
        notify(
            self.listeners,
            TaskEvent(self.id, "output", time.time(), stream=name, data=data, text=text),
        )

    async def _watch_silence(self) -> None:
        """RUNNING -> IDLE once `idle_after` passes with no output: a sleep to the
        deadline, not a poll, so the transition comes on time and costs nothing. While
        a task that takes input is IDLE, whether it waits for input is looked at again
        every INPUT_RECHECK: a new answer is a new reason (IDLE -> IDLE). Returns once
        the task has ended."""
        assert self.idle_after is not None
        changes = 0  # of the reason, in this spell of silence
        while self._process_runs():
            if self.machine.RUNNING.is_active:
                changes = 0
                silent = time.monotonic() - self.last_activity
                if silent >= self.idle_after:
                    self._say_why_silent()
                    continue
                await self._sleep_or_wake(self.idle_after - silent)
            elif self.takes_input and changes < REASON_CHANGES:
                await self._sleep_or_wake(INPUT_RECHECK)
                if self.machine.IDLE.is_active and self._say_why_silent(only_if_new=True):
                    changes += 1
            else:
                await self._sleep_or_wake(None)

    def _process_runs(self) -> bool:
        """RUNNING or IDLE: not ended, nor back in CREATED for a retry."""
        return self.machine.RUNNING.is_active or self.machine.IDLE.is_active

    def _say_why_silent(self, only_if_new: bool = False) -> bool:
        """IDLE, saying whether it waits for input; False when `only_if_new` and the
        reason has not changed."""
        reason = WAITING_FOR_INPUT if self._waits_for_input() else None
        if only_if_new and reason == self.reason:
            return False
        self.machine.detect_silence(reason=reason)
        return True

    async def _watch_timeout(self) -> None:
        assert self.timeout is not None
        deadline = time.monotonic() + self.timeout  # of each attempt
        while self._process_runs():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.interrupt("timeout")
                return
            await self._sleep_or_wake(remaining)

    async def _sleep_or_wake(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: for ever), or until the next transition."""
        wake = anyio.Event()
        self._state_waiters.append(wake)
        if seconds is None:
            await wake.wait()
        else:
            with anyio.move_on_after(seconds):
                await wake.wait()
            if not wake.is_set():
                self._state_waiters.remove(wake)

    async def _enforce_stop(self) -> None:
        """End the group by the termination policy (the interrupt sent its SIGTERM;
        SIGKILL for what outlives `grace`); then, once it is gone, stop reading pipes
        that something outside it (a daemon the command started with its own session)
        may hold open for ever."""
        assert self._group is not None and self._stopped is not None
        await end_group(self._group, self.grace)
        assert self._stdout_done is not None and self._stderr_done is not None
        owed = self._owed_output()
        drain = gated = 0.0
        while True:
            # Output still coming (a backlog being read, or waiting for the store's
            # disk) is waited for, within DRAIN_LIMIT; pipes that stay open and silent
            # once the group is gone are not ours to wait on.
            seen = self.last_activity
            start = time.monotonic()
            with anyio.move_on_after(DRAIN_POLL):
                await self._stdout_done.wait()
                await self._stderr_done.wait()
            if self._stdout_done.is_set() and self._stderr_done.is_set():
                break
            if self.last_activity == seen and not self._gated:
                break
            if owed is not None and all(self.bytes_written[n] >= owed[n] for n in owed):
                self.output_cut = True  # all the group wrote is read: the rest is not its
                break
            if self._gated and gated < DRAIN_GATED_CAP:
                gated += time.monotonic() - start
            else:
                drain += time.monotonic() - start
            if drain >= DRAIN_LIMIT:
                self.output_cut = True
                break
        if self._process is not None:
            await self._process.stdout.aclose()  # each pump sees the end of its stream
            await self._process.stderr.aclose()
        if self.output_cut:  # after the close: no chunk of the daemon's comes after it
            self._log.append("stderr", OUTPUT_CUT_NOTE)
            self._emit_output("stderr", OUTPUT_CUT_NOTE, OUTPUT_CUT_NOTE.decode())
        self._stopped.set()

    def _owed_output(self) -> dict[str, int] | None:
        """For each stream, the bytes read so far plus what its pipe holds: once the
        group is gone, all it will ever have written. None where a pipe cannot tell."""
        if self._process is None:
            return None
        owed = {}
        for name, stream in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
            pending = getattr(stream, "pending", None)
            held = pending() if pending is not None else None
            if held is None:
                return None
            owed[name] = self.bytes_written[name] + held
        return owed


def _decoder_after(previous: bytes) -> StreamDecoder:
    """A decoder that goes on from the end of `previous`, the chunk read before: a
    character cut between the two comes out whole (what it decodes of `previous` was
    told already, or to nobody)."""
    decoder = StreamDecoder()
    decoder.decode(previous[-3:])
    return decoder
