"""Recovery's stand-in for a runner whose commands ran on other machines."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Orphan


class SettledThere:
    """The runner `name` (a Dask worker's) as recovery sees it: a dead kernel's
    commands there are ended there (the scheduler releases the kernel's tasks, which
    stops them; a worker's reaper ends what a dead worker ran), so nothing is signalled
    from here, least of all a local pid that only means something on the worker. Its
    tasks are only marked ended. Needs nothing of the runner itself (no Dask here)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        return list(orphans)

    def __repr__(self) -> str:
        return f"SettledThere({self.name!r})"
