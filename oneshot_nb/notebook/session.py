"""One session per shell: the orchestrator, the history store and the loop they run on.

The magics are thin parsers over a session; the extension keeps one session per shell,
so `%reload_ext` and `%unload_ext` followed by `%load_ext` find the same tasks.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from anyio.from_thread import start_blocking_portal
from IPython.core.error import UsageError
from IPython.display import display

from ..engine.options import TaskOptions
from ..engine.orchestrator import AsyncOrchestrator
from ..engine.task import OneshotTask
from ..runners import LocalRunner, Runner
from ..storage import records
from ..storage.store import Store, default_path

if TYPE_CHECKING:
    from ..engine.batch import Batch

T = TypeVar("T")

# The settings that are the orchestrator's defaults for the tasks submitted to it.
TASK_DEFAULTS = ("idle_after", "timeout", "grace", "max_log_bytes")


class Settings(Protocol):
    """What a session reads of its configuration: OneshotMagics' traits."""

    limit: int
    idle_after: float | None
    timeout: float | None
    grace: float
    max_log_bytes: int
    cluster: str | None
    db: str | None


def task_defaults(settings: Settings) -> dict[str, Any]:
    """The settings that are the defaults of each task, by the engine's names."""
    return {name: getattr(settings, name) for name in TASK_DEFAULTS}


def set_default(orchestrator: AsyncOrchestrator, name: str, value: Any) -> None:
    """Make `value` the default `name` of the tasks `orchestrator` is given from now on."""
    orchestrator.options = orchestrator.options.replace(**{name: value})


class PortalLoop:
    """An asyncio loop in a thread of its own, reached through an anyio BlockingPortal,
    for a shell whose loop does not run between cells (terminal IPython, a script).

    The asyncio backend, not trio: a task's `stop()` from another thread goes through
    `loop.call_soon_threadsafe` on the loop the task runs on.
    """

    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self._portal = self._exit.enter_context(start_blocking_portal("asyncio"))
        self.loop: asyncio.AbstractEventLoop = self._portal.call(_name_the_loop_thread)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn` on the loop and return its result as it is.

        The portal awaits whatever is awaitable, and a task is (`await task`): boxed,
        a task comes back at once, not when it ends.
        """
        return self._portal.call(lambda: (fn(*args, **kwargs),))[0]

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await `fn()` on the loop and return its result."""
        return self._portal.call(fn)

    def close(self) -> None:
        """Stop the portal: the loop closes and its thread ends."""
        self._exit.close()


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block ends, then deliver it as usual.

    For what must be made whole or not at all. A KeyboardInterrupt while anyio's
    start_blocking_portal waits for its new loop hung the magic for good: its
    `finally: thread.join()` waits for a loop that nobody stops (a second Ctrl-C got
    out, leaving the loop thread running). Held, the interrupt is raised once the
    block is done: the portal is then whole, and a later magic uses it.

    Python runs signal handlers on the main thread only, whatever thread the
    signal reaches, so the handler is what holds it back; a signal mask would not
    (the kernel hands a signal that the main thread blocks to another thread). Nor is
    the loop thread's mask changed: the commands it starts would inherit it, and
    then a `kill -INT` would not reach them.
    """
    previous = signal.getsignal(signal.SIGINT)
    # Off the main thread no KeyboardInterrupt is raised; None is a handler that was
    # not set from Python, which could not be set back.
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    held: list[int] = []
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # to this thread: its handler runs now


def _name_the_loop_thread() -> asyncio.AbstractEventLoop:
    # Named from inside: start_blocking_portal takes a thread name from anyio 4.9 only.
    threading.current_thread().name = "oneshot_nb loop"
    return asyncio.get_running_loop()


class Session:
    """What one shell keeps while the extension is loaded, and after an unload: the
    orchestrator, the history store, the loop they run on, and what the running cell
    has shown.

    In a Jupyter kernel the tasks run on the kernel's own loop. Where no loop runs
    between cells (terminal IPython, a script), a PortalLoop runs them instead.
    """

    def __init__(self, shell: Any, settings: Settings) -> None:
        self.shell = shell
        self.settings = settings
        self._orchestrator: AsyncOrchestrator | None = None
        self.portal: PortalLoop | None = None
        # Tasks and batches whose view the running cell has shown already. Reset by the
        # pre_run_cell event: the execution count would not do, as it does not move
        # when a cell runs without history (as nbval runs them).
        self._shown: set[int] = set()
        self.store: Store | None = None
        self.history_off: str | None = None  # why history is off, for the magics to say
        self._store_warnings: list[str] = []  # what the store said, for the next magic

    # -- the orchestrator and its loop --------------------------------------------------

    @property
    def widgets(self) -> bool:
        """Whether views can be shown: only a kernel has a frontend to draw them."""
        return getattr(self.shell, "kernel", None) is not None and self.portal is None

    @property
    def orchestrator(self) -> AsyncOrchestrator:
        """The shell's orchestrator, made on first use on the running loop, or on a
        PortalLoop when none runs between cells."""
        if self._orchestrator is None:
            # A Ctrl-C meanwhile is raised once both are made.
            with interrupts_held():
                if self.portal is None and not self._loop_runs_between_cells():
                    self.portal = PortalLoop()
                orchestrator = self.call(
                    AsyncOrchestrator,
                    self.settings.limit,
                    runner=self.runner_for(self.settings.cluster),
                    **task_defaults(self.settings),
                )
                if self.store is not None:
                    self.store.attach(orchestrator)
                self._orchestrator = orchestrator
                atexit.register(self.close)
        self.warn_store()
        return self._orchestrator

    def _loop_runs_between_cells(self) -> bool:
        # Only a kernel's loop runs between cells; terminal IPython runs its loop just
        # for the cells that await.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return getattr(self.shell, "kernel", None) is not None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn` on the loop the tasks run on, and return its result."""
        if self.portal is not None:
            return self.portal.call(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def configure(self, name: str, value: Any) -> None:
        """Apply a changed setting to the orchestrator, if there is one yet: the limit
        at once, a task default to the tasks submitted from now on."""
        orchestrator = self._orchestrator
        if orchestrator is None:
            return  # made from the settings as they are then
        if name == "limit":
            self.call(setattr, orchestrator, "limit", value)
        elif name == "cluster":
            self.call(setattr, orchestrator, "runner", self.runner_for(value) or LocalRunner())
        else:
            set_default(orchestrator, name, value)

    def close(self) -> None:
        """Stop every task (reason "shutdown"), end the loop thread and close the store.
        Registered with atexit, twice (history and orchestrator), and may be called by
        hand: once the orchestrator is closed there is nothing left to do."""
        orchestrator = self._orchestrator
        if orchestrator is not None and not orchestrator.closed:
            if self.portal is not None:
                self.portal.run(orchestrator.aclose)
                self.portal.close()
            else:
                orchestrator.shutdown_now("shutdown")
        if self.store is not None:
            self.store.close()

    def check_options(self, **options: Any) -> None:
        """The task options a magic was given (None: not given), checked before anything
        starts: a wrong one must not leave a cluster started for nothing."""
        try:
            TaskOptions(**{name: value for name, value in options.items() if value is not None})
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    def runner_for(self, cluster: str | None, given: bool = False) -> Runner | None:
        """The runner of a --cluster (`given`) or of the `cluster` setting: None for
        the default (the setting's runner, or this machine), the local runner for
        'none', else a Dask runner, connected now (once per kernel for each spec). What
        fails is one UsageError line."""
        if cluster is None or (cluster == "none" and not given):
            return None
        if cluster == "none":
            return LocalRunner()
        try:
            from ..runners.dask import DaskRunner
        except ImportError as exc:
            raise UsageError(
                f"running on a cluster needs Dask ({exc}): pip install 'oneshot_nb[dask]'"
            ) from None
        try:
            return DaskRunner(cluster)
        except (TypeError, ValueError, OSError, RuntimeError) as exc:
            raise UsageError(" ".join(str(exc).split())) from None

    # -- submitting ---------------------------------------------------------------------

    def submit(self, command: str | list[str], **options: Any) -> OneshotTask:
        """`orchestrator.submit` on the loop; a value it refuses is a UsageError."""
        orchestrator = self.orchestrator
        try:
            return self.call(orchestrator.submit, command, **options)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    def submit_batch(self, commands: list[str], **options: Any) -> Batch:
        """`orchestrator.submit_batch` on the loop; a value it refuses is a UsageError."""
        orchestrator = self.orchestrator
        try:
            return self.call(orchestrator.submit_batch, commands, **options)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    def send(self, key: str, text: str, eof: bool = False) -> None:
        """Send `text` to the task with id or name `key` (then end its input with
        `eof`), on the loop; what is refused is one UsageError line."""
        orchestrator = self.orchestrator

        def send() -> None:
            task = orchestrator.get(key)
            if text:
                task.send(text)
            if eof:
                task.close_stdin()

        try:
            self.call(send)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        except (TypeError, ValueError, BufferError) as exc:
            raise UsageError(str(exc)) from None

    # -- the history --------------------------------------------------------------------

    def open_history(self) -> None:
        """Open the history database and settle what dead kernels left running.

        A database that cannot be used for good (not a database, a newer schema, no
        permission) turns history off with one warning; tasks run as usual without it.
        A fault that may pass (a lock, a full disk) starts history paused instead, as
        it pauses mid-run, and what dead kernels left is settled once it goes. What
        goes wrong later the next magic says, once.
        """
        db = self.settings.db
        path = db or default_path()
        if path == ":memory:":
            self.history_off = f"{'OneshotMagics.db' if db else 'ONESHOT_NB_DB'} is ':memory:'"
            return
        try:
            store = Store(path, on_error=self._store_failed)
        except Exception as exc:
            self.history_off = f"cannot use {path}: {exc}"
            print(f"oneshot_nb: task history is off: {self.history_off}", file=sys.stderr)
            return
        self.store = store
        records.active_store = store
        atexit.register(self.close)

        from ..storage.recovery import settle_when_open

        # Said now when the store is open; else on its thread once it can write, and
        # then by the next magic.
        settle_when_open(store, lambda message: print(message, file=sys.stderr), self._store_failed)

    def _store_failed(self, message: str) -> None:
        # Called on the store's thread: the warning is shown by the next magic, in the
        # cell that runs it, rather than printed into whatever cell is running now (the
        # store logs it at debug level only, for the same reason). list.append and
        # list.pop are atomic, so the two threads need no lock.
        self._store_warnings.append(message)

    def warn_store(self) -> None:
        """Say, once each, what the store reported since the last magic."""
        while self._store_warnings:
            print(self._store_warnings.pop(0), file=sys.stderr)

    # -- showing ------------------------------------------------------------------------

    def show(self, item: OneshotTask | Batch, quiet: bool) -> None:
        """Show the view now, and note it so that the cell's result does not show it
        again: the view appears once whether or not the result is assigned."""
        self._shown.add(id(item))
        if quiet:
            return
        if self.widgets:
            display(_view(item))
        else:
            print(f"started {item!r}")

    def new_cell(self, info: Any = None) -> None:
        """pre_run_cell: a new cell has shown nothing yet."""
        self._shown.clear()

    def display_result(self, item: OneshotTask | Batch) -> None:
        """Show a task or batch that is a cell's result, unless its magic just did."""
        if id(item) in self._shown:
            return
        if self.widgets:
            display(_view(item))
        else:
            # No frontend can draw a widget here, and a view made anyway would be
            # updated on the loop thread at every chunk of output.
            print(repr(item))


def _view(item: OneshotTask | Batch) -> Any:
    from .views import batch_view, task_view

    return task_view(item) if isinstance(item, OneshotTask) else batch_view(item)
