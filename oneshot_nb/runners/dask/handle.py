"""A command running on a Dask worker, as the engine sees it: a `Handle`.

Its streams and its exit are long polls to the worker's plugin, each asked for only
when the engine wants more: what the kernel has not asked for stays on the worker (see
worker.py), so a slow kernel slows the command rather than filling memory. Stop is done
by the worker (the same policy as local); the group here only asks for it.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future as ThreadFuture
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream

from ..base import Place, RunnerLost, RunnerStopped
from .command import LONG_POLL
from .connection import ClientClosed, Connection, WorkerGone

# How long closing a handle may take (forgetting it on the worker, releasing its
# task): a worker or scheduler that does not answer must not hold the task's end.
CLOSE_WITHIN = 5.0

logger = logging.getLogger("oneshot_nb")


class DaskHandle:
    """A command a DaskRunner started (see runners/base.py, Handle)."""

    def __init__(
        self,
        link: Connection,
        spec: dict[str, Any],
        future: Any,
        notice: dict,
        direct: bool | None = None,
    ) -> None:
        self.link = link
        self.direct = direct
        self.key: str = spec["key"]
        self.claim: str = spec["claim"]
        self.grace: float = spec["grace"]
        self.future = future
        self.worker: str = notice["worker"]
        self.pid: int | None = notice["pid"]
        self._place = Place("dask", self.worker, notice["pid"], notice.get("start"))
        self.returncode: int | None = None
        self.lost: RunnerLost | None = None
        self.stopped: str | None = None
        self.stdout = RemoteStream(self, "stdout")
        self.stderr = RemoteStream(self, "stderr")
        self.group = RemoteGroup(self)
        self._closed = False
        link.running[self.key] = self

    def place(self) -> Place:
        return self._place

    def request(self, op: str, **kwargs: Any) -> ThreadFuture[dict[str, Any]]:
        """Send `op` to the worker now (on the client's loop); `answer` awaits it."""
        return self.link.soon(
            lambda: self.link.ask(self.worker, op, self.direct, key=self.key, **kwargs)
        )

    async def answer(self, request: ThreadFuture[dict[str, Any]]) -> dict[str, Any]:
        """The worker's reply to `request`: RunnerLost (or RunnerStopped, when the
        worker said it was stopping the command) once the worker is gone or forgot the
        command. Cancelling the await cancels the request."""
        if self.lost is not None:
            request.cancel()
            raise self.lost
        try:
            reply = await asyncio.wrap_future(request)
        except ClientClosed as exc:
            self.stopped = self.stopped or str(exc)
            raise self._lose(str(exc)) from None
        except WorkerGone as exc:
            raise self._lose(f"worker lost: {self.worker} ({exc})") from None
        if reply.get("unknown"):
            raise self._lose(f"worker lost: {self.worker} (it no longer knows the command)")
        return reply

    async def ask(self, op: str, **kwargs: Any) -> dict[str, Any]:
        return await self.answer(self.request(op, **kwargs))

    def _lose(self, message: str) -> RunnerLost:
        if self.lost is None:
            if self.stopped is not None:
                self.lost = _stopped(self.stopped)
            else:
                self.lost = RunnerLost(message, reason="worker lost")
            self.group.gone = True  # out of reach: the worker's reaper ends what is left
        return self.lost

    async def wait(self) -> int:
        while self.returncode is None:
            reply = await self.ask("wait", wait=LONG_POLL)
            if reply.get("stopped"):
                self.stopped = reply["stopped"]
            if reply["exit"] is not None:
                if self.stopped is not None and self.lost is None:
                    self.lost = _stopped(self.stopped)
                self.returncode = reply["exit"]
        if isinstance(self.lost, RunnerStopped):
            raise self.lost
        return self.returncode

    async def aclose(self) -> None:
        """Close the streams, wait for the exit (as long as the worker answers), and
        forget the command there; bounded by CLOSE_WITHIN."""
        await self.stdout.aclose()
        await self.stderr.aclose()
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WITHIN):
            try:
                if self.returncode is None and self.lost is None:
                    await self.wait()
            except RunnerLost:
                pass
            finally:
                await self.link.call(self._forget)

    async def _forget(self) -> None:
        self.link.running.pop(self.key, None)
        if self.lost is None:
            try:
                await self.link.ask(self.worker, "forget", self.direct, key=self.key)
            except Exception as exc:
                logger.debug("oneshot_nb: could not forget %s: %s", self.key, exc)
        await self.link.forget(self.future, self.claim)

    def __repr__(self) -> str:
        return f"<DaskHandle {self.key} on {self.worker} pid {self.pid}>"


class RemoteStream(ByteReceiveStream):
    """One of the command's output streams, read from the worker a reply at a time;
    each read acknowledges what came before it, which frees it there."""

    def __init__(self, handle: DaskHandle, name: str) -> None:
        self._handle = handle
        self._name = name
        self._offset = 0  # the bytes fetched so far
        self._data = b""
        self._at = 0  # how much of `_data` has been given out
        self._eof = False
        self._closed = False
        self._reading: anyio.CancelScope | None = None
        self._next: ThreadFuture[dict[str, Any]] | None = None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while self._at >= len(self._data):
            if self._closed:
                raise anyio.ClosedResourceError
            if self._eof:
                raise anyio.EndOfStream
            request, self._next = self._next or self._read(), None
            self._reading = scope = anyio.CancelScope()
            with scope:
                reply = await self._handle.answer(request)
            self._reading = None
            if self._closed or scope.cancelled_caught:
                raise anyio.ClosedResourceError
            self._data, self._at = reply["data"], 0
            self._offset += len(self._data)
            self._eof = reply["eof"]
            if not self._eof:
                # Asked for now, so that the next reply travels while this one is read;
                # it acknowledges this one, which the kernel holds already.
                self._next = self._read()
        chunk = self._data[self._at : self._at + max_bytes]
        self._at += len(chunk)
        return chunk

    def _read(self) -> ThreadFuture[dict[str, Any]]:
        return self._handle.request("read", stream=self._name, since=self._offset)

    async def aclose(self) -> None:
        self._closed = True
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._reading is not None:
            self._reading.cancel()  # wakes the reader, which sees ClosedResourceError
        await anyio.lowlevel.checkpoint()


class RemoteGroup:
    """The command's process group on the worker, which runs the termination policy
    itself when asked: `terminate` asks for it, `alive` says whether the worker has
    said it is done."""

    def __init__(self, handle: DaskHandle) -> None:
        self._handle = handle
        self._asked = False
        self.gone = False

    def terminate(self) -> None:
        if self._asked or self.gone:
            return
        self._asked = True
        self._send("stop", grace=self._handle.grace)

    def kill(self) -> None:
        if not self.gone:
            self._send("kill")

    def alive(self) -> bool:
        if self._handle.link.closed:
            self.gone = True  # the scheduler releases a closed client's tasks
        return not self.gone

    def _send(self, op: str, **kwargs: Any) -> None:
        handle = self._handle
        if handle.link.closed:
            self.gone = True
            return

        async def ask() -> None:
            try:
                reply = await handle.link.ask(
                    handle.worker, op, handle.direct, key=handle.key, **kwargs
                )
            except Exception:
                self.gone = True  # out of reach: the reaper ends it there
                return
            if not reply.get("alive", False):
                self.gone = True

        handle.link.soon(ask)

    def __repr__(self) -> str:
        return f"<RemoteGroup {self._handle.pid} on {self._handle.worker}>"


def _stopped(message: str) -> RunnerStopped:
    """The worker's word that it stopped the command ("worker closed: ADDRESS", "released
    by the scheduler: ..."), with what comes before the colon as the task's reason."""
    return RunnerStopped(message, reason=message.partition(":")[0])
