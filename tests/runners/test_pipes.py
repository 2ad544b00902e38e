"""The output pipes: their shared size budget, and closing them on every path."""

from __future__ import annotations

import gc
import os

import pytest

from oneshot_nb.runners import pipes
from oneshot_nb.runners.pipes import MAX_PIPE, MIN_PIPE, PipeStream, pipe_size


def fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("commands", "size"),
    [(1, 64 << 10), (4, 64 << 10), (8, 32 << 10), (16, 16 << 10), (500, 16 << 10)],
)
def test_pipe_size_splits_the_budget_among_the_commands_running(commands: int, size: int):
    """Each command's pipes get the budget divided by the commands running, within
    MIN_PIPE and MAX_PIPE (two streams per command)."""
    assert pipe_size(2 * commands) == size
    assert MIN_PIPE <= size <= MAX_PIPE


def test_closing_without_a_running_loop_still_closes_the_pipe():
    """close() from plain code (no event loop to tell) closes the fd and stops counting
    the stream, instead of failing half-way."""
    read_end, write_end = os.pipe()
    before = pipes._open_streams
    stream = PipeStream(read_end)
    assert pipes._open_streams == before + 1
    stream.close()
    assert not fd_open(read_end)
    assert pipes._open_streams == before
    stream.close()  # a second close does nothing
    assert pipes._open_streams == before
    os.close(write_end)


def test_a_stream_dropped_unclosed_closes_its_pipe_when_collected():
    """A stream whose task never closed it (its loop gone) does not keep the fd, nor
    keep the pipes of later commands small."""
    read_end, write_end = os.pipe()
    pipe = os.fstat(read_end).st_ino
    before = pipes._open_streams
    stream = PipeStream(read_end)
    del stream
    gc.collect()
    # The number may be handed out again at once (a thread of an earlier test's cluster
    # opens sockets): what must be gone is this pipe.
    assert not fd_open(read_end) or os.fstat(read_end).st_ino != pipe
    assert pipes._open_streams == before
    os.close(write_end)


def test_a_pipe_of_its_own_size_keeps_it_and_takes_no_share_of_the_budget():
    """A Dask worker's pipes (spawn's pipe_size) are 1 MiB whatever runs beside them, and
    do not make the kernel's own pipes smaller."""
    import fcntl

    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    read_end, write_end = os.pipe()
    before = pipes._open_streams
    stream = PipeStream(read_end, 1 << 20)
    try:
        assert pipes._open_streams == before
        if get_size is not None:
            assert fcntl.fcntl(read_end, get_size) == 1 << 20
    finally:
        stream.close()
        os.close(write_end)
    assert pipes._open_streams == before
