"""A command running on a Dask worker: its output not yet sent, its exit, its stop.

The worker plugin (worker.py) keeps one `Running` per command; each output stream has an
`Outbox` that the kernel empties by reading (see worker.py for the protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import anyio

from ..local import Child
from ..terminate import end_group

# Unsent output kept per stream; past it the pipe is not read until the kernel catches
# up. Large enough for a read to carry a full reply while the next is being produced.
OUTBOX = 4 << 20
# The most one read gives back: the kernel holds no more than this, unread, per stream.
REPLY = 2 << 20
# How long a read or a wait is held open when there is nothing to say.
LONG_POLL = 10.0


class Signal:
    """Wakes whoever waits for the next change (a fresh event for each)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class Outbox:
    """One stream's output not yet acknowledged by the kernel: the bytes from offset
    `base` on, as the chunks read (no copy until a reply needs one). The kernel asks for
    what follows the offset it has; what is before is dropped, so a reply lost in
    transit can be asked for again."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.base = 0
        self.size = 0  # bytes held, a partly acknowledged first chunk whole
        self.eof = False
        # A reply said the end: the kernel has it all and asks no more (no read comes to
        # acknowledge that last reply).
        self.told_end = False
        self.grown = Signal()  # more output, or its end
        self.drained = Signal()  # the kernel acknowledged some

    @property
    def end(self) -> int:
        return self.base + self.size

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self.grown.fire()

    def ack(self, since: int) -> None:
        dropped = False
        while self.chunks and since >= self.base + len(self.chunks[0]):
            chunk = self.chunks.popleft()
            self.base += len(chunk)
            self.size -= len(chunk)
            dropped = True
        if dropped:
            self.drained.fire()

    def take(self, since: int, limit: int) -> bytes:
        """Up to `limit` bytes from offset `since` (at least `base`): one chunk as it
        is, or one copy of the pieces."""
        skip, parts, taken = since - self.base, [], 0
        for chunk in self.chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece = memoryview(chunk)[skip : skip + limit - taken]
            skip = 0
            parts.append(piece)
            taken += len(piece)
            if taken >= limit:
                break
        if len(parts) == 1 and len(parts[0]) == len(parts[0].obj):
            return parts[0].obj  # a whole chunk: no copy
        return b"".join(parts)


class Running:
    """A command on this worker, from its start until the kernel forgets it."""

    def __init__(self, key: str, child: Child, grace: float, topic: str) -> None:
        self.key = key
        self.topic = topic  # where its kernel hears of it
        self.child = child
        self.grace = grace
        self.boxes = {"stdout": Outbox(), "stderr": Outbox()}
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.stopped: str | None = None  # why the worker stopped it, if it did
        self.stopping: asyncio.Task[None] | None = None
        self.released = False  # by the scheduler: no kernel will forget it
        self.pumps: list[asyncio.Task[None]] = []

    async def pump(self, name: str) -> None:
        stream = getattr(self.child, name)
        box = self.boxes[name]
        try:
            while True:
                while box.size >= OUTBOX:
                    await box.drained.wait(LONG_POLL)  # the kernel has not caught up
                try:
                    data = await stream.receive(REPLY)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                box.append(data)
        finally:
            box.eof = True
            box.grown.fire()

    def exit(self, code: int) -> None:
        self.returncode = code
        self.exited.set()

    def stop(self, grace: float, why: str | None = None) -> asyncio.Task[None]:
        """End the group by the termination policy, once; `why` when the worker does so
        of its own accord (it is closing), for the kernel to tell."""
        if self.stopping is None:
            self.stopped = why
            self.stopping = asyncio.ensure_future(end_group(self.child.group, grace))
        return self.stopping

    def alive(self) -> bool:
        return self.child.group.alive()

    def drained(self) -> bool:
        """Whether its kernel has had all of its output (and there is no more)."""
        return all(box.told_end for box in self.boxes.values())

    def close(self) -> None:
        self.child.stdout.close()
        self.child.stderr.close()
        for pump in self.pumps:
            pump.cancel()
