"""Runners of our own, around the local one: what a Dask or ssh runner looks like to the
engine and to the history."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from oneshot_nb.runners import LocalRunner, Place
from oneshot_nb.runners.local import Child

HOST = os.uname().nodename


class Relabelled:
    """A local child (a `Handle`) that says it runs on another runner and host."""

    def __init__(self, child: Child, runner: NamedRunner) -> None:
        self.child = child
        self.pid = child.pid
        self.stdout = child.stdout
        self.stderr = child.stderr
        self.group = child.group
        self._runner = runner

    def place(self) -> Place:
        return dataclasses.replace(
            self.child.place(), runner=self._runner.name, host=self._runner.host
        )

    async def wait(self) -> int:
        return await self.child.wait()

    async def aclose(self) -> None:
        await self.child.aclose()


class NamedRunner(LocalRunner):
    """The local runner under another name (and host): what a Dask or ssh runner looks
    like to the engine. Keeps the commands it was asked to start."""

    handle_class: type[Relabelled] = Relabelled

    def __init__(self, name: str, host: str = HOST) -> None:
        self.name = name
        self.host = host
        self.commands: list[Any] = []

    async def start(
        self, command: Any, cwd: str | None, env: Mapping[str, str], options: Any = None
    ) -> Relabelled:
        self.commands.append(command)
        child = await super().start(command, cwd, env, options)
        return self.handle_class(child, self)

    def __repr__(self) -> str:
        return f"NamedRunner({self.name!r})"
