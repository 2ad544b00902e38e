"""Event types and their fan-out: sync listeners and bounded async subscriptions."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import anyio

from .machine import TaskState

logger = logging.getLogger("oneshot_nb")

EventKind = Literal["submitted", "transition", "output", "agent", "usage", "settled", "dropped"]
Listener = Callable[["TaskEvent"], None]
# What a slow subscriber may lose (counted, and said by a `dropped` event): an agent
# event comes with a line of output, and as often, a usage event every second; what
# they say is the task's own state.
DROPPABLE = frozenset({"output", "agent", "usage"})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """Something that happened to a task: its submission, a state transition, a
    chunk of output, or its end (`settled`: the process reaped and its output read,
    so `returncode` is known; it comes after the final transition, which a stop makes
    at once).

    A transition carries `event` (its name), `source`, `target` and `reason` (an IDLE
    one may say why: "waiting for input"); an output chunk carries `stream` ("stdout",
    "stderr", or "stdin" for input sent to the task), the raw `data` and its decoded
    `text` (empty when every listener has said it wants bytes only, see `OutputWanted`).
    An `agent` event says an agent task's summary (`task.agent`) changed, a `usage`
    event that its CPU and memory were sampled (`task.usage`).
    A `dropped` event stands where a slow subscriber lost `count` output events; its
    `task_id` is that of the first event lost.
    """

    task_id: str
    kind: EventKind
    time: float
    event: str | None = None
    source: TaskState | None = None
    target: TaskState | None = None
    reason: str | None = None
    stream: str | None = None
    data: bytes = b""
    text: str = ""
    count: int = 0


class OutputWanted(IntEnum):
    """How much of a task's output its listeners want, as a task asks before each chunk.

    A listener says so with attributes: `wants_output = False` (a table of states: no
    output events for it) or `wants_text = False` (the store: the bytes, not decoded).
    Events are made for the most any listener wants, and every listener gets them.
    Decoding is the largest cost of an output event, so a task whose only listener is
    the store skips it.
    """

    NOTHING = 0
    BYTES = 1
    TEXT = 2


def wanted_by(listener: Listener) -> OutputWanted:
    if not getattr(listener, "wants_output", True):
        return OutputWanted.NOTHING
    if not getattr(listener, "wants_text", True):
        return OutputWanted.BYTES
    return OutputWanted.TEXT


def most_wanted(listeners: Iterable[Listener]) -> OutputWanted:
    """The most that any of `listeners` wants of the output."""
    return max(map(wanted_by, listeners), default=OutputWanted.NOTHING)


def notify(listeners: list[Listener], event: TaskEvent) -> None:
    """Call each listener; one that raises is logged and does not stop the others."""
    for listener in tuple(listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("oneshot_nb listener %r failed on %s event", listener, event.kind)


class Subscription:
    """An async iterator of events with a bounded queue.

    Why bounded: a subscriber that reads slower than processes write must not block the
    engine nor grow memory without end. When `maxsize` output events are waiting, newer
    output events are dropped and counted in `dropped`; the subscriber then receives one
    `dropped` event saying how many it lost, at the place where they were lost.
    Transitions are never dropped: a task makes only a handful of them, and losing the
    final one would leave a view wrong for ever.
    """

    def __init__(self, maxsize: int, on_close: Callable[[Subscription], None]) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be a whole number, got {type(maxsize).__name__}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize!r}")
        self.maxsize = maxsize
        self.dropped = 0
        self._queue: deque[TaskEvent] = deque()
        self._outputs = 0
        self._gap = 0
        self._gap_task = ""  # the task whose output was the first to be dropped
        self._closed = False
        self._on_close = on_close
        self._ready: anyio.Event | None = None

    def put(self, event: TaskEvent) -> None:
        if self._closed:
            return
        if event.kind in DROPPABLE:
            if self._outputs >= self.maxsize:
                if not self._gap:
                    self._gap_task = event.task_id
                self._gap += 1
                self.dropped += 1
                return
            self._flush_gap()
            self._outputs += 1
        else:
            self._flush_gap()
        self._queue.append(event)
        self._wake()

    def _flush_gap(self) -> None:
        if self._gap:
            self._queue.append(TaskEvent(self._gap_task, "dropped", time.time(), count=self._gap))
            self._gap = 0

    def _wake(self) -> None:
        if self._ready is not None:
            self._ready.set()
            self._ready = None

    def close(self) -> None:
        """Stop receiving; iteration ends once the queued events are read."""
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> TaskEvent:
        while not self._queue:
            if self._closed:
                if self._gap:
                    self._flush_gap()
                    continue
                raise StopAsyncIteration
            self._ready = ready = anyio.Event()
            await ready.wait()
        event = self._queue.popleft()
        if event.kind in DROPPABLE:
            self._outputs -= 1
        return event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventHub:
    """Fans events out to sync listeners, then to subscriptions."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._subscriptions: list[Subscription] = []
        self._closed = False

    def publish(self, event: TaskEvent) -> None:
        if self.listeners:
            notify(self.listeners, event)
        for subscription in self._subscriptions:
            subscription.put(event)

    def wanted(self) -> OutputWanted:
        """What of the output the listeners and subscribers want (see OutputWanted):
        output events are not made for nobody, nor decoded for bytes-only listeners."""
        if self._subscriptions:
            return OutputWanted.TEXT
        return most_wanted(self.listeners)

    def wanted_with(
        self, listeners: list[Listener], publish: Listener
    ) -> Callable[[], OutputWanted]:
        """What a task's output is wanted as, asked before each chunk: by the hub's
        listeners and subscribers, and by the task's own `listeners` (a view, a batch)
        beside `publish` (the hub's, as the task holds it), each as much as it says."""

        def wanted() -> OutputWanted:
            hub = self.wanted()
            if hub is OutputWanted.TEXT or (len(listeners) == 1 and listeners[0] is publish):
                return hub
            return max(hub, most_wanted(one for one in listeners if one is not publish))

        return wanted

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        subscription = Subscription(maxsize, self._subscriptions.remove)
        self._subscriptions.append(subscription)
        if self._closed:
            subscription.close()  # nothing more will come: iteration ends at once
        return subscription

    def close(self) -> None:
        self._closed = True
        for subscription in tuple(self._subscriptions):
            subscription.close()
