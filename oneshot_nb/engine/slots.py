"""A capacity limit whose holders know which of the `limit` slots they hold."""

from __future__ import annotations

import heapq

import anyio


class Slots:
    """An `anyio.CapacityLimiter` plus slot numbers 0 .. limit-1.

    The number lets a command pin a resource per slot (a GPU, a port) through the
    ONESHOT_SLOT variable; the lowest free number is handed out first.

    Memory follows the slots in use, not the limit: numbers from `_next` up have never
    been handed out (or were given back above a lowered limit) and are not listed, so a
    limit of 10**11 costs no more than a limit of 8.
    """

    def __init__(self, limit: int) -> None:
        self.limiter = anyio.CapacityLimiter(_check_limit(limit))
        self._held: set[int] = set()
        self._free: list[int] = []  # a heap of numbers below _next that are not held
        self._next = 0

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    @limit.setter
    def limit(self, value: int) -> None:
        _check_limit(value)
        # A number above a lowered limit stays with its holder and is not handed out again.
        self._free = [slot for slot in self._free if slot < value]
        heapq.heapify(self._free)
        self._next = min(self._next, value)
        self.limiter.total_tokens = value

    @property
    def held(self) -> frozenset[int]:
        """The slot numbers in use."""
        return frozenset(self._held)

    async def acquire(self) -> int:
        await self.limiter.acquire()
        if self._free:
            slot = heapq.heappop(self._free)
        else:
            # After the limit was lowered and raised again, a holder may keep a number
            # at or above _next: skip it (at most as many as hold one).
            slot = self._next
            while slot in self._held:
                slot += 1
            self._next = slot + 1
        self._held.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self._held.discard(slot)
        if slot < min(self.limit, self._next):
            heapq.heappush(self._free, slot)
        self.limiter.release()


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be a whole number, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    return limit
