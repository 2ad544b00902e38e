"""The kernel's end of a Dask cluster: one `Connection` per `distributed.Client`.

All Dask work runs on the client's own event loop (a thread of its own for a client
made in a cell, or the kernel's loop for an asynchronous one); `call` runs a coroutine
there and awaits it from the kernel's loop. Requests to a worker go to it directly, or
relayed by the scheduler when the kernel cannot reach it (a cluster behind a gateway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from distributed import Client
from distributed.core import send_recv

from ..._version import __version__
from .worker import Commands, run_command

T = TypeVar("T")
# How long a worker that does not answer is given to show up again (or be dropped by
# the scheduler, which tells a lost worker at once when its process dies).
LOST_AFTER = 3.0
LOST_POLL = 0.2
# How long a claim outlives its task's release (see Connection.forget).
CLAIM_KEPT = 60.0
WORKER_CONNECT = 2.0  # seconds to connect to a worker

logger = logging.getLogger("oneshot_nb")


class WorkerGone(Exception):
    """The worker a command runs on is gone, or answers no more."""


class ClientClosed(WorkerGone):
    """The kernel's Dask client was closed: the scheduler stops its tasks."""


class Connection:
    """A client, its worker plugin registered, and the notices its workers send when a
    command starts (or cannot)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.loop: asyncio.AbstractEventLoop = client.loop.asyncio_loop
        self.topic = f"oneshot_nb-{client.id}"
        self._relayed: set[str] = set()
        self._reached: set[str] = set()
        self._notices: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._claims: deque[tuple[float, str]] = deque()  # to clear once due
        self.running: dict[str, Any] = {}  # key: DaskHandle, for notices that stop it

    # -- running on the client's loop ----------------------------------------------------

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await `make()` on the client's loop, from whichever loop this runs on.
        Cancelling the await cancels it there."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            return await make()
        return await asyncio.wrap_future(self.soon(make))

    def soon(self, make: Callable[[], Awaitable[T]]) -> ThreadFuture[T]:
        """Start `make()` on the client's loop; from any thread, without waiting."""

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    def close(self) -> None:
        """Clear the claims still kept (their tasks are released), before the client
        closes: the scheduler would otherwise keep them for good."""
        claims, self._claims = self._claims, deque()
        if claims and not self.closed:
            try:
                self.client.sync(
                    lambda: asyncio.gather(
                        *(self.client.scheduler.event_clear(name=name) for _, name in claims),
                        return_exceptions=True,
                    ),
                    callback_timeout=5,
                )
            except Exception as exc:
                logger.debug("oneshot_nb: could not clear the claims: %s", exc)

    @property
    def closed(self) -> bool:
        return self.loop.is_closed() or self.client.status in ("closing", "closed")

    # -- set-up ---------------------------------------------------------------------------

    async def ready(self) -> None:
        """Register the worker plugin and subscribe to the notices, once (on the
        client's loop). A worker that cannot load the plugin (no oneshot_nb, another
        version) makes this raise, with the worker's reason."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._set_up())
        await asyncio.shield(self._ready)

    async def _set_up(self) -> None:
        self.client.subscribe_topic(self.topic, self._notice)
        try:
            await self.client.register_plugin(Commands(__version__), name="oneshot_nb")
        except Exception as exc:
            self._ready = None  # a later start tries again (a worker was fixed)
            why = _why(exc)
            if "No module named" in why:
                why += " (install oneshot_nb where the workers run: see the README)"
            raise RuntimeError(f"the Dask workers could not set up oneshot_nb: {why}") from None

    def _notice(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if not isinstance(msg, dict):
            return
        if "stopped" in msg:  # a worker closing stops a running command
            handle = self.running.get(msg.get("key"))
            if handle is not None:
                handle.stopped = handle.stopped or str(msg["stopped"])
            return
        waiter = self._notices.pop(msg.get("key"), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    # -- starting a command ---------------------------------------------------------------

    async def submit(self, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Submit the Dask task that runs `spec`'s command; once it has started on a
        worker, its future and the worker's notice (worker, host, pid, start, or error).
        Cancelled (a stop while it waits for a worker): the task is cancelled too."""
        await self.ready()
        key = spec["key"]
        waiter: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._notices[key] = waiter
        future = self.client.submit(run_command, spec, key=key, pure=False)
        result = asyncio.ensure_future(self._result(future))
        try:
            await asyncio.wait([waiter, result], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._notices.pop(key, None)
            result.cancel()
            await self.forget(future, spec["claim"])
            raise
        self._notices.pop(key, None)
        if waiter.done():
            result.cancel()  # its result is not wanted: fetching it would race the release
            return future, waiter.result()
        answer = await result if result.done() and not result.cancelled() else None
        await self.forget(future, spec["claim"])
        if self.closed:
            raise ClientClosed("client closed: the Dask client was closed before it started")
        raise RuntimeError(f"the Dask task ended before its command started: {answer}")

    async def _result(self, future: Any) -> str:
        try:
            value = await future
        except Exception as exc:
            return _why(exc)
        return repr(value)

    async def forget(self, future: Any, claim: str) -> None:
        """Release the task's future, and its claim CLAIM_KEPT later (best effort: the
        scheduler releases a closed client's tasks anyway).

        Why later: a worker that died may have handed Dask a copy to run again before
        the release reached the scheduler; that copy must still find the claim. Once
        the release is in, Dask runs no copy of a key nobody wants."""
        try:
            future.release()
        except Exception as exc:
            logger.debug("oneshot_nb: could not release %s: %s", future, exc)
        now = time.monotonic()
        self._claims.append((now + CLAIM_KEPT, claim))
        due = []
        while self._claims and self._claims[0][0] <= now:
            due.append(self._claims.popleft()[1])
        if due:
            await asyncio.gather(
                *(self.client.scheduler.event_clear(name=name) for name in due),
                return_exceptions=True,
            )

    # -- asking a worker ------------------------------------------------------------------

    async def ask(
        self, worker: str, op: str, direct: bool | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """`op` on `worker`'s plugin (on the client's loop): `direct` True to the worker
        itself, False relayed by the scheduler, None directly unless the worker cannot
        be reached so. WorkerGone once the worker has left the cluster, or answers
        neither directly nor through the scheduler."""
        deadline = None
        while True:
            try:
                return await self._ask_once(worker, op, direct, kwargs)
            except (OSError, asyncio.TimeoutError) as exc:
                if self.closed:
                    raise ClientClosed("client closed: the Dask client was closed") from None
                now = time.monotonic()
                deadline = deadline or now + LOST_AFTER
                if now >= deadline or not await self._known(worker):
                    raise WorkerGone(_why(exc)) from None
                await asyncio.sleep(LOST_POLL)

    async def _ask_once(
        self, worker: str, op: str, direct: bool | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if direct is False or (direct is None and worker in self._relayed):
            return await self._relay(worker, op, kwargs)
        try:
            reply = await self._direct(worker, op, kwargs)
        except OSError:
            if direct or worker in self._reached or not await self._known(worker):
                raise
            # Never reached from here, and the scheduler has it: behind a gateway.
            reply = await self._relay(worker, op, kwargs)
            self._relayed.add(worker)
            return reply
        self._reached.add(worker)
        return reply

    async def _direct(self, worker: str, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        # As the client's pooled rpc does, but a worker that died refuses connections
        # at once: without a short timeout, distributed would retry for 30 s.
        pool = self.client.rpc
        comm = await pool.connect(worker, timeout=WORKER_CONNECT)
        try:
            return await send_recv(comm=comm, op=f"oneshot_{op}", **kwargs)
        finally:
            pool.reuse(worker, comm)

    async def _relay(self, worker: str, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        replies = await self.client.scheduler.broadcast(
            msg={"op": f"oneshot_{op}", **kwargs}, workers=[worker], on_error="raise"
        )
        return replies[worker]

    async def _known(self, worker: str) -> bool:
        try:
            return worker in await self.client.scheduler.ncores(workers=[worker])
        except Exception:
            return False


def _why(exc: BaseException) -> str:
    """An exception as one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
