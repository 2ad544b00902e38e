"""Input to a running task: `send` and `close_stdin`, and whether it waits for input.

A mixin of `OneshotTask`, working on its state. A task takes input when it was started
with `pty` (a terminal) or `stdin` (a pipe); every other command keeps a closed stdin,
so that one that waits for input never hangs silently.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .events import TaskEvent, notify

logger = logging.getLogger("oneshot_nb")

# The IDLE reason of a task whose command is blocked reading its input.
WAITING_FOR_INPUT = "waiting for input"
# What the history keeps of input sent while the terminal did not echo (a password).
HIDDEN_INPUT = b"<hidden input>"


# Input sent before the command starts waits here, at most this much (as much as may
# wait unread once it runs).
EARLY_INPUT_LIMIT = 1 << 20
# How long a send from another thread waits for the loop to take it, to raise there
# what the loop refuses; past that it is left to run when the loop is free.
LOOP_WAIT = 1.0


class Input:
    """Sending input to the command (see OneshotTask for the state used)."""

    @property
    def takes_input(self) -> bool:
        """Whether the task was started to take input (`pty` or `stdin`)."""
        return self.options.pty or self.options.stdin

    @property
    def accepts_input(self) -> bool:
        """Whether `send` may be called now: the task takes input, has not ended, and
        its input has not been closed (by `close_stdin` of a pipe, or by the command).
        A terminal's end of file is a character: it takes input after it still."""
        if not self.takes_input or self.state.is_final:
            return False
        if self._early_close and not self.options.pty:
            return False  # a pipe closed for good
        stdin = getattr(self._process, "stdin", None)
        return stdin is None or not stdin.closed

    def send(self, data: str | bytes) -> None:
        """Write `data` (text is sent as UTF-8) to the command's input, now or as soon
        as it reads; before the command has started, once it has.

        Recorded in the history as the task's `stdin` stream once written to the
        command. Raises ValueError, and sends nothing, when the task does not take
        input (start it with `pty` or `stdin`), has ended, or its input is closed;
        BufferError when more than 1 MiB sent before is still unread. From another
        thread than the loop's, it waits for the loop to have taken it, and raises
        as it would there.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError(f"send() takes str or bytes, got {type(data).__name__}")
        self._check_input("send to")
        self._on_loop(self._send_now, data)

    def close_stdin(self) -> None:
        """End the command's input once what was sent is written: a pipe is closed; a
        terminal is sent its end-of-file character (as Ctrl-D: the reading program
        sees the end of its input, and the terminal takes input after it still).
        Idempotent for a pipe; ValueError when the task does not take input."""
        if not self.takes_input:
            raise ValueError(self._no_input())
        if self.state.is_final or (self._early_close and not self.options.pty):
            return
        self._on_loop(self._close_now)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Call `fn` on the task's loop, which owns the fd and the listeners: now when
        this is its thread (or it has none yet), else handed over and waited for, so
        that what it raises reaches the caller and calls keep their order."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        waiting = [True]

        def call() -> None:
            try:
                fn(*args)
            except Exception as exc:
                if waiting[0]:
                    done.set_exception(exc)
                else:  # the caller stopped waiting: said here, or never
                    logger.warning("oneshot_nb: task %s: %s", self.id, exc)
            else:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop has closed: nothing runs any more
            raise ValueError(f"task {self.id}: its event loop has closed") from None
        try:
            done.result(LOOP_WAIT)
        except concurrent.futures.TimeoutError:
            # The loop is busy, or is the very thread that waits for this one (a cell
            # that joins a thread pool): waiting more could wait for ever. It runs,
            # in order, once the loop is free.
            waiting[0] = False

    # -- on the loop --------------------------------------------------------------------

    def _send_now(self, data: bytes) -> None:
        if not data:
            return
        self._check_input("send to")  # again: it may have ended since, on the loop
        stdin = getattr(self._process, "stdin", None)
        if stdin is None:
            if self._early_bytes + len(data) > EARLY_INPUT_LIMIT:
                raise BufferError(
                    f"task {self.id} has not started; at most"
                    f" {EARLY_INPUT_LIMIT >> 10} KiB may wait for it"
                )
            self._early_input.append(data)  # recorded once it is written
            self._early_bytes += len(data)
            return
        self._write_input(stdin, data)

    def _write_input(self, stdin: Any, data: bytes) -> None:
        """Hand `data` to the runner's input, then record it (as `stdin`)."""
        # Read before writing: the command may turn echo back on once it has the line.
        hidden = getattr(stdin, "hidden", False)
        try:
            stdin.send(data)
        except BufferError:
            raise
        except Exception as exc:  # the command closed its input
            raise ValueError(f"cannot send to task {self.id}: {exc}") from None
        self.bytes_sent += len(data)
        if hidden:
            # Typed where the terminal does not echo (a password prompt): the history
            # and the views are told that input went, not what it was.
            data = HIDDEN_INPUT + (b"\n" if data.endswith(b"\n") else b"")
        if not self.options.pty:  # a terminal echoes what it is sent: it is in the output
            self._log.append("stdin", data)
        if self.listeners:
            text = data.decode("utf-8", "replace")
            notify(
                self.listeners,
                TaskEvent(self.id, "output", time.time(), stream="stdin", data=data, text=text),
            )
        # Input is activity: an IDLE task (waiting for it, most likely) is RUNNING again,
        # and says why if it goes quiet once more.
        self.last_activity = time.monotonic()
        if self._idle:
            self.machine.detect_activity()

    def _close_now(self) -> None:
        if self.state.is_final:
            return
        stdin = getattr(self._process, "stdin", None)
        if stdin is None:
            self._early_input.append(None)  # once it starts, after what was sent before
        else:
            try:
                stdin.close()
            except ValueError as exc:  # a terminal without an end-of-file character
                raise ValueError(f"cannot end the input of task {self.id}: {exc}") from None
        self._early_close = True

    def _input_started(self) -> None:
        """Once the command runs: write what was sent before, then the end of input if
        it was asked for."""
        stdin = getattr(self._process, "stdin", None)
        if stdin is None:
            return
        early, self._early_input, self._early_bytes = self._early_input, [], 0
        for item in early:
            try:
                if item is None:
                    stdin.close()
                else:
                    self._write_input(stdin, item)
            except (ValueError, BufferError) as exc:  # the command closed it at once
                logger.warning("oneshot_nb: task %s: input sent early was lost: %s", self.id, exc)
                return

    def _check_input(self, doing: str) -> None:
        if not self.takes_input:
            raise ValueError(self._no_input())
        if self.state.is_final:
            raise ValueError(f"cannot {doing} task {self.id}: it has ended ({self.state.value})")
        if not self.accepts_input:
            stdin = getattr(self._process, "stdin", None)
            why = getattr(stdin, "error", None) or "its input was closed"
            raise ValueError(f"cannot {doing} task {self.id}: {why}")

    def _no_input(self) -> str:
        return (
            f"task {self.id} does not take input: start it with pty=True or stdin=True"
            " (%oneshot --pty or --stdin)"
        )

    def _waits_for_input(self) -> bool:
        """Whether the command is blocked reading its input, as far as the system says."""
        if not self.takes_input:
            return False
        probe = getattr(self._process, "waiting_for_input", None)
        if probe is None:
            return False
        try:
            return probe() is True
        except Exception:  # a runner's fault: plain IDLE
            logger.exception("oneshot_nb: task %s: does it wait for input?", self.id)
            return False
