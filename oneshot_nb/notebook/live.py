"""When views update: a throttle per widget, and one ticker for every elapsed time.

Views learn of changes from their tasks' listeners (state-machine callbacks and output
events), never by polling, and send at most one update per widget per `UPDATE_INTERVAL`:
events only mark a view dirty, a timer on the loop flushes it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

UPDATE_INTERVAL = 0.1  # at most ~10 updates a second per widget
TICK_INTERVAL = 1.0  # how often elapsed times move on
TICK_SLICES = 10  # views tick in this many turns spread over TICK_INTERVAL


class Throttle:
    """Calls `flush` soon after `poke`, but never twice within `interval` seconds."""

    def __init__(self, flush: Callable[[], None], interval: float = UPDATE_INTERVAL) -> None:
        self._flush = flush
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._last = float("-inf")
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # no loop, nothing to wait on: flush at once

    def poke(self) -> None:
        if self._loop is None or self._loop.is_closed():
            self._flush()
        elif self._handle is None:
            delay = max(0.0, self._last + self._interval - self._loop.time())
            self._handle = self._loop.call_later(delay, self._run)

    def now(self) -> None:
        """Flush at once, for what should not wait (a final state, a click); a flush
        already waiting is not needed any more, and the next one keeps the interval."""
        self.cancel()
        if self._loop is not None:
            self._last = self._loop.time()
        self._flush()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        assert self._loop is not None
        self._last = self._loop.time()
        self._flush()


class _Ticker:
    """One timer for all live views, so that elapsed times tick without a timer each.

    Each view ticks once every TICK_INTERVAL, in one of TICK_SLICES turns handed out in
    order: sixteen views started by one cell would otherwise all update in the same
    loop callback, a burst that the event loop's lag shows once a second. A turn visits
    only its own views, so a table's many rows cost each turn a tenth of them.
    """

    def __init__(self) -> None:
        self._turns: list[weakref.WeakSet[_Live]] = [weakref.WeakSet() for _ in range(TICK_SLICES)]
        self._turn_of: weakref.WeakKeyDictionary[_Live, int] = weakref.WeakKeyDictionary()
        self._turn = 0  # the turn the next tick serves
        self._next_turn = 0  # the turn the next view added gets
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, view: _Live) -> None:
        if view not in self._turn_of:  # a view added again keeps its turn
            self._turn_of[view] = self._next_turn
            self._turns[self._next_turn].add(view)
            self._next_turn = (self._next_turn + 1) % TICK_SLICES
        # A timer left on a loop that has since closed never fires: start one on this loop.
        if self._handle is None or (self._loop is not None and self._loop.is_closed()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._loop = loop
            self._handle = loop.call_later(TICK_INTERVAL / TICK_SLICES, self._tick, loop)

    def discard(self, view: _Live) -> None:
        turn = self._turn_of.pop(view, None)
        if turn is not None:
            self._turns[turn].discard(view)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        turn, self._turn = self._turn, (self._turn + 1) % TICK_SLICES
        for view in list(self._turns[turn]):
            if not view.tick():
                self.discard(view)
        if self._turn_of and not loop.is_closed():
            self._handle = loop.call_later(TICK_INTERVAL / TICK_SLICES, self._tick, loop)


ticker = _Ticker()


class _Live:
    def tick(self) -> bool:
        """Move elapsed times on; False once there is nothing left to tick."""
        raise NotImplementedError
