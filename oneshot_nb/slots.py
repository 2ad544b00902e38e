"""A capacity limit whose holders know which of the `limit` slots they hold."""

from __future__ import annotations

import heapq

import anyio


class Slots:
    """An `anyio.CapacityLimiter` plus slot numbers 0 .. limit-1.

    The number lets a command pin a resource per slot (a GPU, a port) through the
    ONESHOT_SLOT variable; the lowest free number is handed out first.
    """

    def __init__(self, limit: int) -> None:
        self.limiter = anyio.CapacityLimiter(_check_limit(limit))
        self._held: set[int] = set()
        self._free = list(range(limit))

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    @limit.setter
    def limit(self, value: int) -> None:
        # A number above a lowered limit stays with its holder and is not handed out again.
        self._free = [slot for slot in range(_check_limit(value)) if slot not in self._held]
        self.limiter.total_tokens = value

    async def acquire(self) -> int:
        await self.limiter.acquire()
        slot = heapq.heappop(self._free)
        self._held.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self._held.discard(slot)
        if slot < self.limit:
            heapq.heappush(self._free, slot)
        self.limiter.release()


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    return limit
