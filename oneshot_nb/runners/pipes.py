"""The pipes a task's output comes through, read without blocking the event loop.

Why our own pipes rather than the ones anyio's `open_process` makes: their size is the
back-pressure a flooding command feels. The kernel's loop can read only so much; when
many commands print as fast as they can, large pipes let every one of them run ahead and
compete with the loop for the CPUs, and the notebook stops responding. So the pipes of
the commands running at once share a budget: each command's two pipes get PIPE_BUDGET
divided by the number of commands running, which the system rounds up to a power of two
pages, within 16 and 64 KiB: 64 KiB each for up to seven commands, 32 KiB for eight to
fifteen, 16 KiB from sixteen. A pipe is resized when the count changes, right after a
read (a pipe cannot shrink below what it holds).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import termios

import anyio
from anyio.abc import ByteReceiveStream
from anyio.lowlevel import checkpoint

# Split evenly among the commands running, within these bounds (Linux; elsewhere pipes
# keep the system's size).
PIPE_BUDGET = 256 << 10
MIN_PIPE = 16 << 10
MAX_PIPE = 64 << 10
_SET_PIPE_SIZE: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only

_open_streams = 0  # PipeStreams not yet closed: two per running command


def pipe_size(streams: int | None = None) -> int:
    """The size for each pipe when `streams` pipes (two per command) are open."""
    running = max(1, (_open_streams if streams is None else streams) // 2)
    return max(MIN_PIPE, min(MAX_PIPE, PIPE_BUDGET // running))


class FdStream(ByteReceiveStream):
    """A file descriptor we read a command's output from, closed once: the part a
    pipe and a terminal share."""

    _fd: int

    def pending(self) -> int | None:
        """How many bytes it holds, unread (None where the system cannot tell)."""
        if self._fd < 0:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            return None

    def close(self) -> None:
        """Close it; a reader waiting on it wakes, and then sees ClosedResourceError."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            # With no loop running, nobody can be waiting.
            with contextlib.suppress(RuntimeError):
                anyio.notify_closing(fd)
            os.close(fd)

    def __del__(self) -> None:
        # A stream dropped unclosed (its loop gone) must not keep its fd. Quietly: this
        # may run at interpreter exit, or on an object whose __init__ failed.
        with contextlib.suppress(Exception):
            self.close()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()


class PipeStream(FdStream):
    """The read end of a pipe as an anyio byte stream.

    Each `receive` first lets the loop run other work, so a command that writes faster
    than it is read cannot keep the loop to itself; then it reads what the pipe holds,
    waiting for it to become readable if it is empty. Closing it wakes a reader that
    waits, which then sees `ClosedResourceError`.
    """

    def __init__(self, fd: int, size: int | None = None) -> None:
        global _open_streams
        os.set_blocking(fd, False)
        self._fd = fd
        self._fixed = size  # a size of its own, outside the shared budget
        self._size = 0  # the size last set, 0 before any
        if size is None:
            _open_streams += 1
        self._fit()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await checkpoint()  # before reading: a cancellation here loses no data
        while True:
            if self._fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                raise anyio.EndOfStream
            if self._fixed is None and self._size != pipe_size():
                self._fit()  # just emptied: now it can shrink
            return data

    def _fit(self) -> None:
        size = self._fixed or pipe_size()
        if _SET_PIPE_SIZE is None:
            self._size = size
            return
        try:
            fcntl.fcntl(self._fd, _SET_PIPE_SIZE, size)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return  # holds more than that: try again after the next read
        self._size = size  # set, or refused for good (over the system's limit)

    def close(self) -> None:
        global _open_streams
        if self._fd >= 0:
            super().close()
            if self._fixed is None:
                _open_streams -= 1  # nor count towards the budget for the life of the process
