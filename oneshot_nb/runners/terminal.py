"""A pseudo-terminal for a command that wants one: its master read as a byte stream.

Why a pty: many programs behave differently when they see a terminal (colours, progress
bars, prompts, line-buffered output). The command's stdin, stdout and stderr are the
terminal's slave, so its output is one stream; the kernel holds the master.

Output processing (OPOST) is off, so the bytes read are the bytes the program wrote
(a "\\n" stays "\\n", not "\\r\\n"): the history holds what it wrote, and reading is about
half again as fast. Full-screen programs (cursor addressing) are out of scope.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

import anyio
from anyio.abc import ByteReceiveStream
from anyio.lowlevel import checkpoint

from .pipes import FdStream

TERM = "xterm-256color"
# A terminal hands out at most a few KiB per read: reading until it is empty (up to what
# the caller asked for) before waiting again wakes the loop a tenth as often.
READ_PIECE = 1 << 16


def open_terminal(cols: int, rows: int) -> tuple[int, int]:
    """A new pty of `cols` x `rows`, output processing off: (master, slave)."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def take_terminal() -> None:
    """In the child, after setsid: make its stdin (the slave) the controlling terminal
    of its new session, so that it gets the terminal's signals and /dev/tty works."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def foreground_group(master: int) -> int | None:
    """The process group the terminal runs in the foreground (the one that may read
    it), or None once it has none."""
    try:
        group = os.tcgetpgrp(master)
    except OSError:
        return None
    return group if group > 0 else None


class TerminalStream(FdStream):
    """The master of a pty as an anyio byte stream: what the command wrote to it.

    Its end is EIO (every process has closed the slave), not an empty read. Like a
    pipe, a master that is not read holds the command back: nothing is lost.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._ended = False

    @property
    def fd(self) -> int:
        return self._fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await checkpoint()  # before reading: a cancellation here loses no data
        while True:
            if self._fd < 0:
                raise anyio.ClosedResourceError
            if self._ended:
                raise anyio.EndOfStream
            pieces: list[bytes] = []
            size = 0
            while size < max_bytes:
                try:
                    piece = os.read(self._fd, min(READ_PIECE, max_bytes - size))
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    self._ended = True
                    break
                if not piece:
                    self._ended = True
                    break
                pieces.append(piece)
                size += len(piece)
            if pieces:
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if not self._ended:
                await anyio.wait_readable(self._fd)

    def pending(self) -> int | None:
        return 0 if self._ended else super().pending()


class NoStream(ByteReceiveStream):
    """A stream that has ended: a terminal task's stderr, which is its stdout."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await checkpoint()
        raise anyio.EndOfStream

    def pending(self) -> int:
        return 0

    async def aclose(self) -> None:
        await checkpoint()
