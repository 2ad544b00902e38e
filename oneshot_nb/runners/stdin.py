"""Input to a running command: what `task.send` writes, without blocking the loop.

A command reads its input when it wants to, and may never: what it has not read yet
waits here (at most INPUT_LIMIT bytes), and the loop writes it as the pipe or terminal
takes it, from a writer callback rather than a task, so that `send` stays synchronous
(a button's callback calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios

# What may wait for a command that does not read: more is refused, not queued for ever.
INPUT_LIMIT = 1 << 20


class InputClosed(Exception):
    """Raised by `send` once the input is closed: by `close`, or by the command."""


class InputPipe:
    """The write end of a command's stdin (a pipe), or the master of its terminal.

    `send` writes what the fd takes at once and keeps the rest for the loop to write
    when it can; `close` ends the input once what waits is written: the pipe is closed,
    or a terminal is sent its end-of-file character (the command reads the end of its
    input, as after Ctrl-D), and stays open: a terminal takes input after it still. The
    fd is this object's own (a terminal's master is dup'ed).
    """

    def __init__(self, fd: int, terminal: bool = False) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._terminal = terminal
        self._waiting = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # close() was called: no more sends
        self.closed = False  # nothing more will be written
        self.error: str | None = None  # why the command's input ended, if it ended it
        self._last = b"\n"  # the last byte sent, for a terminal's end of file

    @property
    def hidden(self) -> bool:
        """Whether the terminal does not echo what it is sent now (a password prompt
        turned echo off); a pipe never echoes, and is never hidden."""
        if not self._terminal or self._fd < 0:
            return False
        try:
            return not termios.tcgetattr(self._fd)[3] & termios.ECHO
        except termios.error:
            return False

    @property
    def pending(self) -> int:
        """Bytes sent and not yet taken by the pipe or terminal."""
        return len(self._waiting)

    def send(self, data: bytes) -> None:
        """Write `data` to the command's input, now or as soon as it reads. InputClosed
        once the input is closed; BufferError when more than INPUT_LIMIT would wait."""
        if self.closed or self._closing:
            raise InputClosed(self.error or "its input is closed")
        if not data:
            return
        if len(data) > INPUT_LIMIT:
            raise BufferError(
                f"cannot send {len(data)} bytes at once: at most {INPUT_LIMIT >> 10} KiB may"
                " wait for the command"
            )
        if len(self._waiting) + len(data) > INPUT_LIMIT:
            raise BufferError(
                f"the command has not read {len(self._waiting)} bytes sent before;"
                f" at most {INPUT_LIMIT >> 10} KiB may wait"
            )
        self._last = data[-1:]
        self._waiting += data
        self._write()
        if self.closed and self.error is not None:
            raise InputClosed(self.error)  # it could not be written: not sent

    def close(self) -> None:
        """End the input once what waits is written (a pipe: idempotent)."""
        if self.closed or self._closing:
            return
        if self._terminal:
            # An end of file is the EOF character at the start of a line: after text
            # without a newline, the first one ends that line and the second the input.
            # (A program that put the terminal in raw mode reads it as a character.)
            try:
                eof = termios.tcgetattr(self._fd)[6][termios.VEOF]
            except termios.error:
                eof = b"\x04"
            if eof == b"\x00":  # _POSIX_VDISABLE: `stty eof undef`
                raise ValueError("the terminal has no end-of-file character (turned off)")
            eof = eof if isinstance(eof, bytes) and eof else b"\x04"
            self.send(eof if self._last == b"\n" else eof * 2)
            self._last = b"\n"
            return
        self._closing = True
        self._write()

    def _write(self) -> None:
        while self._waiting and not self.closed:
            try:
                written = os.write(self._fd, self._waiting)
            except BlockingIOError:
                self._watch(True)
                return
            except OSError as exc:
                # EPIPE: every reader closed the pipe; EIO: the terminal has no process.
                reason = (
                    "the command closed its input"
                    if exc.errno in (errno.EPIPE, errno.EIO)
                    else str(exc)
                )
                self._finish(reason)
                return
            del self._waiting[:written]
        self._watch(False)
        if self._closing and not self.closed:
            self._finish(None)

    def _watch(self, on: bool) -> None:
        """Have the loop call back when the fd takes more, or stop it."""
        if on and self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_writer(self._fd, self._write)
        elif not on and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.remove_writer(self._fd)
            self._loop = None

    def _finish(self, error: str | None) -> None:
        self._watch(False)
        self.closed = True
        self.error = error or self.error
        self._waiting.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        """Close at once, dropping what waits (the command has ended)."""
        if not self.closed:
            self._finish(self.error)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._fd >= 0:
                os.close(self._fd)
