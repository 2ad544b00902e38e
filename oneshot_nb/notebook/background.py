"""An event loop in a thread, for callers that have none running (terminal IPython,
plain scripts). In a Jupyter kernel the kernel's own loop is used instead."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Runs an asyncio loop in a daemon thread; `call` runs a function on it and
    returns its result, so objects that belong to the loop are only touched there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="oneshot_nb loop", daemon=True
        )
        self._thread.start()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result()

    def run(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
