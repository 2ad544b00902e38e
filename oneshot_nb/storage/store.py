"""SQLite history: tasks, transitions and full logs, written off the event loop.

The loop thread only puts small records on a queue (`record`); one writer thread owns
the write connection, merges what has queued into a transaction at most every
`FLUSH_INTERVAL`, and commits. With the loop's own batching (HANDOFF_DELAY), a kernel
killed with SIGKILL loses at most about a quarter of a second of output.
Faults never stop a task, and each is said once through `on_error` (see writer.py:
history pauses and resumes, a deleted file is created again, a bad row is skipped).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from ..engine.events import TaskEvent
from ..engine.machine import TaskState
from ..engine.orchestrator import AsyncOrchestrator
from ..engine.task import OneshotTask
from .database import StoreError, connect, default_path
from .redaction import REDACTED, redact
from .rows import task_row
from .writer import Writer

# The engine-level names, wherever they live now.
__all__ = ["REDACTED", "Store", "StoreError", "connect", "default_path", "redact"]

logger = logging.getLogger("oneshot_nb")

HANDOFF_DELAY = 0.05  # seconds the loop gathers records before handing them over
# ...or this much output, whichever comes first. Each handoff wakes the writer, which
# then takes the GIL from the loop: under a flood, fewer and larger handoffs keep the
# loop responsive.
HANDOFF_BYTES = 4 << 20
# Output waiting for the writer beyond this makes tasks wait before reading more, so a
# slow disk slows a chatty task down instead of growing the kernel's memory. While
# history is paused by a fault, tasks do not wait (the fault may last): output beyond
# this is dropped and counted instead.
HIGH_WATER = 32 << 20
# While paused, at most this many chunks wait too: each costs a couple of hundred bytes
# of bookkeeping whatever its size, and a chatty task writes many small ones.
FAULT_CHUNKS = 65_536
AGENT_SAVE_INTERVAL = 2.0  # seconds between two saves of a running agent's summary


class Store:
    """Writes the history of one kernel's tasks to a SQLite file.

    `record` is the listener to attach to an orchestrator; `gate` is the coroutine a
    task awaits before reading more output (back-pressure from a slow disk). `error`
    says why history stopped for good, `fault` why it is paused (None: it is not);
    `dropped_bytes` counts the output not kept during faults.
    """

    def __init__(self, path: str, on_error: Callable[[str], None] | None = None) -> None:
        # Absolute: a relative path would name another file after a chdir (%cd).
        self.path = path if path == ":memory:" else os.path.abspath(path)
        self.on_error = on_error
        self.session = uuid.uuid4().hex[:12]
        self.lost_records = 0  # records not taken once history stopped
        self._dropped = 0  # output not taken on the loop side while history was paused
        self.closed = False
        self._queue: queue.SimpleQueue[list[tuple[Any, ...]] | None] = queue.SimpleQueue()
        # Counted here, on the loop; the writer counts what is out.
        self._bytes_in = 0
        self._chunks_in = 0
        self._seq: dict[str, int] = {}
        self._agent_saved: dict[str, float] = {}  # when each running agent was saved
        self._agent_later: dict[str, asyncio.TimerHandle] = {}
        self._put = 0
        self._batch: list[tuple[Any, ...]] = []
        self._batch_bytes = 0
        self._batch_lock = threading.Lock()
        self._handoff_timer: asyncio.TimerHandle | None = None
        # Raises here, in the caller, when the file is unusable for good; a fault that
        # may pass (a lock, a full disk) starts history paused instead.
        self._writer = Writer(
            self.path, self.session, self._queue, self._report, lambda: self._dropped
        )

    @property
    def error(self) -> str | None:
        """Why history stopped for good; None while it goes on."""
        return self._writer.error

    @property
    def fault(self) -> str | None:
        """Why history is paused (it is retried); None when it is not."""
        return self._writer.fault

    @property
    def dropped_bytes(self) -> int:
        """Output not kept while history was paused (too much waiting, or more than
        the disk had room for)."""
        return self._dropped + self._writer.dropped_bytes

    def when_open(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the database is open: at once if it is, else on the store's
        thread once the fault met when it was made goes."""
        self._writer.when_open(fn)

    @property
    def skipped_records(self) -> int:
        """Records the database refused, skipped without their batch."""
        return self._writer.skipped_records

    # -- the loop side: cheap, never blocks --------------------------------------------

    def record(self, event: TaskEvent, task: OneshotTask | None) -> None:
        """Queue what `event` of `task` adds to the history (`task` may be None for an
        output event: only its id is needed)."""
        if self.error is not None or self.closed:
            self.lost_records += 1
            return
        if event.kind == "output":
            if event.data:
                if self.fault is not None and self._full():
                    self._dropped += len(event.data)
                    return
                seq = self._seq.get(event.task_id, 0)
                self._seq[event.task_id] = seq + 1
                self._bytes_in += len(event.data)
                self._chunks_in += 1
                self._enqueue(("chunk", event.task_id, seq, event.stream, event.time, event.data))
            return
        assert task is not None
        if event.kind == "transition":
            row = task_row(task, self.session)
            if event.target is TaskState.RUNNING and event.source is TaskState.CREATED:
                place = task.place  # asked now, while the command runs
                if place is not None:
                    row["pid_start"], row["host"] = place.start, place.host
            self._enqueue(("transition", task.id, event, row))
        elif event.kind in ("submitted", "settled"):  # settled: the exit code is known
            if event.kind == "settled":
                self._agent_saved.pop(task.id, None)
                later = self._agent_later.pop(task.id, None)
                if later is not None:
                    later.cancel()
            self._enqueue(("task", task_row(task, self.session)))
        elif event.kind == "agent":
            self._save_agent(task)

    def _save_agent(self, task: OneshotTask) -> None:
        """Save an agent's summary as it goes, not only at its end, so that a kernel
        that dies leaves it: at once, then at most every AGENT_SAVE_INTERVAL per task,
        the last change of an interval saved at its end."""
        saved = self._agent_saved.get(task.id)
        now = time.monotonic()
        if saved is None or now - saved >= AGENT_SAVE_INTERVAL:
            self._agent_saved[task.id] = now
            self._enqueue(("task", task_row(task, self.session)))
        elif task.id not in self._agent_later:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._agent_later[task.id] = loop.call_later(
                saved + AGENT_SAVE_INTERVAL - now, self._save_agent_later, task
            )

    def _save_agent_later(self, task: OneshotTask) -> None:
        self._agent_later.pop(task.id, None)
        if task.id in self._agent_saved and not self.closed and self.error is None:
            self._save_agent(task)  # not once it has settled: its last row says it all

    def attach(self, orchestrator: AsyncOrchestrator) -> None:
        """Record every task of `orchestrator`, and slow its tasks when the disk lags."""
        get = orchestrator.get

        def listener(event: TaskEvent) -> None:
            self.record(event, None if event.kind == "output" else get(event.task_id))

        listener.wants_text = False  # type: ignore[attr-defined]  # the bytes are stored
        orchestrator.listeners.append(listener)
        orchestrator.output_gate = self.gate

    @property
    def queued_bytes(self) -> int:
        """Output recorded and not yet committed (nor given up)."""
        return self._bytes_in - self._writer.bytes_out

    def _full(self) -> bool:
        queued_chunks = self._chunks_in - self._writer.chunks_out
        return self.queued_bytes >= HIGH_WATER or queued_chunks >= FAULT_CHUNKS

    def _enqueue(self, item: tuple[Any, ...]) -> None:
        """Add a record to the batch that the loop hands to the writer as one piece.

        Why batch: a queue item per chunk woke the writer thousands of times a second
        under a flood, and each wake took the GIL from the loop. A batch goes at
        HANDOFF_BYTES of output, after HANDOFF_DELAY, or at once for a flush.
        """
        with self._batch_lock:
            self._batch.append(item)
            if item[0] == "chunk":
                self._batch_bytes += len(item[5])
            urgent = item[0] == "flush" or self._batch_bytes >= HANDOFF_BYTES
            if not urgent and self._handoff_timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    urgent = True  # no loop to come back later: hand it over now
                else:
                    self._handoff_timer = loop.call_later(HANDOFF_DELAY, self._handoff)
        if urgent:
            self._handoff()

    def _handoff(self) -> None:
        with self._batch_lock:
            if self._handoff_timer is not None:
                self._handoff_timer.cancel()
                self._handoff_timer = None
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._put += len(batch)
            if batch:
                self._queue.put(batch)  # under the lock: batches reach the writer in order

    async def gate(self) -> None:
        """Wait while too much output is queued for the disk (but not while history is
        paused by a fault: that may last, and `record` drops the excess instead)."""
        while (
            self.queued_bytes > HIGH_WATER
            and self.error is None
            and self.fault is None
            and not self.closed
        ):
            await anyio.sleep(0.01)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything recorded so far is committed, and return True; return
        False at once if history is paused or off, and after `timeout` seconds."""
        self._enqueue(("flush",))  # ends the writer's wait for more: commit now
        target = self._put
        writer = self._writer
        with writer.flushed:
            writer.flushed.wait_for(
                lambda: writer.written >= target or self.error is not None or bool(self.fault),
                timeout,
            )
            return writer.written >= target

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self.closed = True
        if self._writer.thread.is_alive():
            self._handoff()
            self._queue.put(None)
            self._writer.thread.join(timeout)

    def _report(self, message: str) -> None:
        if self.on_error is None:
            logger.warning(message)
            return
        # Only debug: a warning logged on this thread prints into whatever cell runs
        # now, and on_error already says it where the user looks.
        logger.debug(message)
        try:
            self.on_error(message)
        except Exception:
            logger.exception("oneshot_nb store error callback failed")
