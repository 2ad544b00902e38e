"""IPython magics: thin parsers that hand commands to one orchestrator per kernel."""

from __future__ import annotations

import asyncio
import atexit
import sys
import weakref
from collections.abc import Callable
from keyword import iskeyword
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Float, Integer, TraitError, Unicode, observe, validate

from ..engine.batch import Batch
from ..engine.orchestrator import AsyncOrchestrator
from ..engine.task import DEFAULT_GRACE, DEFAULT_IDLE_AFTER, DEFAULT_MAX_LOG_BYTES, OneshotTask
from ..storage import records
from ..storage.store import Store, default_path
from .background import BackgroundLoop
from .parsing import (
    check_cwd,
    grace_seconds,
    parse_args,
    parse_env,
    seconds,
    split_command,
    whole_number,
)

T = TypeVar("T")


@magics_class
class OneshotMagics(Magics):
    """%oneshot, %%oneshot_parallel, %oneshot_stop and %oneshot_tasks.

    In a Jupyter kernel the tasks run on the kernel's own event loop and show live
    widgets. Where no loop runs (terminal IPython, a script), they run on a loop in a
    background thread instead and show plain text; `%oneshot_tasks` lists them.
    """

    limit = Integer(
        8, help="How many %oneshot tasks run at once; also the default --limit of a batch."
    ).tag(config=True)
    idle_after = Float(
        DEFAULT_IDLE_AFTER, allow_none=True, help="Seconds of silence before a task is IDLE."
    ).tag(config=True)
    timeout = Float(
        None, allow_none=True, help="Seconds after which a task is stopped (None: never)."
    ).tag(config=True)
    grace = Float(
        DEFAULT_GRACE, help="Seconds between SIGTERM and SIGKILL when a task is stopped."
    ).tag(config=True)
    max_log_bytes = Integer(
        DEFAULT_MAX_LOG_BYTES, help="Bytes of output each task keeps in memory."
    ).tag(config=True)
    db = Unicode(
        None,
        allow_none=True,
        help="The history database, read when the extension loads. Default: ONESHOT_NB_DB,"
        " else ~/.local/share/oneshot_nb/history.sqlite3; ':memory:' turns history off.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        # Set before the traits load their config, which calls the observers below.
        self._orchestrator: AsyncOrchestrator | None = None
        self._thread: BackgroundLoop | None = None
        # Tasks and batches whose view the running cell has shown already. Reset by the
        # pre_run_cell event: the execution count would not do, as it does not move
        # when a cell runs without history (as nbval runs them).
        self._shown: set[int] = set()
        self.store: Store | None = None
        self._store_warnings: list[str] = []  # what the store said, for the next magic
        super().__init__(shell=shell, **kwargs)

    @validate("limit")
    def _check_limit(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"limit must be 1 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("idle_after", "timeout", "grace", "max_log_bytes")
    def _check_option(self, proposal: Any) -> Any:
        options = self._options()
        options[proposal["trait"].name] = proposal["value"]
        try:
            AsyncOrchestrator(1, **options)
        except (TypeError, ValueError) as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @observe("limit", "idle_after", "timeout", "grace", "max_log_bytes")
    def _apply_config(self, change: Any) -> None:
        orchestrator = self._orchestrator
        if orchestrator is None:
            return
        if change["name"] == "limit":
            self._call(setattr, orchestrator, "limit", change["new"])
        else:
            orchestrator.options = orchestrator.options.replace(**{change["name"]: change["new"]})

    def _options(self) -> dict[str, Any]:
        return {
            "idle_after": self.idle_after,
            "timeout": self.timeout,
            "grace": self.grace,
            "max_log_bytes": self.max_log_bytes,
        }

    # -- the kernel's orchestrator ----------------------------------------------------

    @property
    def widgets(self) -> bool:
        """Whether views can be shown: only a kernel has a frontend to draw them."""
        return getattr(self.shell, "kernel", None) is not None and self._thread is None

    @property
    def orchestrator(self) -> AsyncOrchestrator:
        """The kernel's orchestrator, made on first use on the running loop, or on a
        background loop when none runs."""
        if self._orchestrator is None:
            # Only a kernel's loop runs between cells; terminal IPython runs its loop
            # just for cells that await, so tasks there get a loop of their own.
            try:
                asyncio.get_running_loop()
                running = getattr(self.shell, "kernel", None) is not None
            except RuntimeError:
                running = False
            if not running:
                self._thread = BackgroundLoop()
            self._orchestrator = self._call(AsyncOrchestrator, self.limit, **self._options())
            if self.store is not None:
                self.store.attach(self._orchestrator)
            atexit.register(self._at_exit)
        self._warn_store()
        return self._orchestrator

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._thread is not None:
            return self._thread.call(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def _at_exit(self) -> None:
        orchestrator = self._orchestrator
        # Registered twice (history and orchestrator) and also called by hand: once the
        # orchestrator is closed its thread is gone, and there is nothing left to do.
        if orchestrator is not None and not orchestrator.closed:
            if self._thread is not None:
                self._thread.run(orchestrator.aclose())
                self._thread.close()
            else:
                orchestrator.shutdown_now("shutdown")
        if self.store is not None:
            self.store.close()

    # -- the history ------------------------------------------------------------------

    history_off: str | None = None  # why history is off, for the history magics to say

    def open_history(self) -> None:
        """Open the history database and settle what dead kernels left running.

        A database that cannot be used for good (not a database, a newer schema, no
        permission) turns history off with one warning; tasks run as usual without it.
        A fault that may pass (a lock, a full disk) starts history paused instead, as
        it pauses mid-run, and what dead kernels left is settled once it goes. What
        goes wrong later the next magic says, once.
        """
        path = self.db or default_path()
        if path == ":memory:":
            self.history_off = f"{'OneshotMagics.db' if self.db else 'ONESHOT_NB_DB'} is ':memory:'"
            return
        try:
            store = Store(path, on_error=self._store_failed)
        except Exception as exc:
            self.history_off = f"cannot use {path}: {exc}"
            print(f"oneshot_nb: task history is off: {self.history_off}", file=sys.stderr)
            return
        self.store = store
        records.active_store = self.store
        atexit.register(self._at_exit)

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

    def _warn_store(self) -> None:
        """Say, once each, what the store reported since the last magic."""
        while self._store_warnings:
            print(self._store_warnings.pop(0), file=sys.stderr)

    # -- showing ----------------------------------------------------------------------

    def _show(self, item: OneshotTask | Batch, quiet: bool) -> None:
        """Show the view now, and note it so that the cell's result does not show it
        again: the view appears once whether or not the result is assigned."""
        self._shown.add(id(item))
        if quiet:
            return
        if self.widgets:
            display(self._view(item))
        else:
            print(f"started {item!r}")

    def _view(self, item: OneshotTask | Batch) -> Any:
        from .views import batch_view, task_view

        return task_view(item) if isinstance(item, OneshotTask) else batch_view(item)

    def new_cell(self, info: Any = None) -> None:
        self._shown.clear()

    def display_result(self, item: OneshotTask | Batch) -> None:
        """Show a task or batch that is a cell's result, unless its magic just did."""
        if id(item) in self._shown:
            return
        if self.widgets:
            display(self._view(item))
        else:
            # No frontend can draw a widget here, and a view made anyway would be
            # updated on the loop thread at every chunk of output.
            print(repr(item))

    # -- magics -----------------------------------------------------------------------

    @magic_arguments()
    @argument("--name", help="A name for the task (default: the command).")
    @argument("--idle", type=seconds, metavar="SECONDS", help="Silence before IDLE.")
    @argument("--timeout", type=seconds, metavar="SECONDS", help="Stop after this long.")
    @argument("--grace", type=grace_seconds, metavar="SECONDS", help="SIGTERM to SIGKILL.")
    @argument("--cwd", metavar="DIR", help="Directory to run in.")
    @argument("--env", action="append", default=[], metavar="KEY=VALUE", help="Repeatable.")
    @argument("--quiet", action="store_true", help="Show no view.")
    @argument("command", nargs="*", help="The shell command, verbatim, as with !cmd.")
    @line_magic
    def oneshot(self, line: str) -> OneshotTask:
        """Run a shell command in the background; return its task at once.

        Example::

            t = %oneshot --name train --timeout 3600 python train.py --epochs 3
            await t.wait()
        """
        options, command = split_command(line)
        args = self.oneshot.parser.parse_args(options)
        if not command:
            raise UsageError("no command given: %oneshot [options] COMMAND")
        submit: dict[str, Any] = {"name": args.name, "env": parse_env(args.env)}
        submit["cwd"] = check_cwd(args.cwd)
        submit.update(timing_options(args))
        task = self._submit(self.orchestrator.submit, command, **submit)
        self._show(task, args.quiet)
        return task

    @magic_arguments()
    @argument("--limit", type=whole_number, metavar="N", help="How many run at once.")
    @argument("--idle", type=seconds, metavar="SECONDS", help="Silence before IDLE.")
    @argument("--timeout", type=seconds, metavar="SECONDS", help="Stop each after this long.")
    @argument("--grace", type=grace_seconds, metavar="SECONDS", help="SIGTERM to SIGKILL.")
    @argument("--fail-fast", action="store_true", help="Stop the rest when one fails.")
    @argument("--out", metavar="NAME", help="Also store the batch in this variable.")
    @argument("--quiet", action="store_true", help="Show no view.")
    @cell_magic
    def oneshot_parallel(self, line: str, cell: str) -> Batch:
        """Run each line of the cell as a command, at most --limit at a time.

        Each command sees ONESHOT_SLOT (0 .. limit-1, the slot it holds) and
        ONESHOT_TASK_ID in its environment. Blank lines and lines starting with # are
        skipped; {var} and $var expand as in !cmd. Example::

            %%oneshot_parallel --limit 2 --out jobs
            python train.py --seed 1
            python train.py --seed 2
        """
        args = parse_args(self.oneshot_parallel, line)
        if args.out is not None and (
            not args.out.isidentifier() or iskeyword(args.out) or args.out.startswith("__")
        ):
            # A dunder name (__builtins__, __name__) is the shell's own, not a variable.
            raise UsageError(f"--out takes a variable name, got {args.out!r}")
        commands = []
        for text in cell.splitlines():
            text = text.strip()
            if text and not text.startswith("#"):
                # depth=2 reaches the cell's frame (run_cell_magic's caller): a smaller
                # depth would let this method's locals (line, cell, args) shadow the user's.
                commands.append(self.shell.var_expand(text, depth=2))
        if not commands:
            raise UsageError("the cell has no commands: write one command per line")
        submit: dict[str, Any] = {"limit": args.limit, "fail_fast": args.fail_fast}
        submit.update(timing_options(args))
        batch = self._submit(self.orchestrator.submit_batch, commands, **submit)
        if args.out:
            self.shell.user_ns[args.out] = batch
        self._show(batch, args.quiet)
        return batch

    def _submit(self, submit: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return self._call(submit, *args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    @magic_arguments()
    @argument("--all", action="store_true", help="Every task, or every task of that name.")
    @argument("task", nargs="?", help="The id or name of the task to stop.")
    @line_magic
    def oneshot_stop(self, line: str) -> None:
        """Stop a task by id or name, every task with --all, or with `--all NAME` every
        task of that name.

        A name finds the task of that name that has not ended; when several share it,
        give an id (they are listed) or --all.
        """
        args = parse_args(self.oneshot_stop, line)
        if not args.all and not args.task:
            raise UsageError("give a task id or name, or --all")
        orchestrator = self.orchestrator
        if args.all and not args.task:
            self._call(orchestrator.stop_all)
            return
        try:
            tasks = self._call(orchestrator.find, args.task) if args.all else []
            if not tasks:
                tasks = [self._call(orchestrator.get, args.task)]
        except KeyError as exc:
            raise UsageError(exc.args[0].replace("give an id", "give an id, or --all")) from None
        for task in tasks:
            task.stop()

    @magic_arguments()
    @argument("--limit", type=whole_number, metavar="N", help="Rows per page (50).")
    @line_magic
    def oneshot_tasks(self, line: str) -> None:
        """Show a live table of every task in this kernel, the newest first: a page of
        rows, and a button for more. As text, the newest N (--limit) are printed,
        oldest of them first, as a log reads."""
        from ..render.markup import PAGE_SIZE, text_row

        args = parse_args(self.oneshot_tasks, line)
        page = args.limit or PAGE_SIZE
        orchestrator = self.orchestrator
        if self.widgets:
            from .views import tasks_table

            display(tasks_table(orchestrator, args.limit))  # None: the page it shows
            return
        tasks = orchestrator.tasks
        if len(tasks) > page and args.limit is None:
            print(f"({len(tasks) - page} older tasks not shown: %oneshot_tasks --limit N)")
        for t in tasks[-page:]:
            print(text_row(t.id, t.state, t.name, t.returncode, t.reason, t.error))


def timing_options(args: Any) -> dict[str, float]:
    """The engine's names for the --idle, --timeout and --grace that were given."""
    given = {"idle_after": args.idle, "timeout": args.timeout, "grace": args.grace}
    return {key: value for key, value in given.items() if value is not None}


# The magics loaded into each shell. `%reload_ext oneshot_nb` loads the extension again:
# it gets the same magics back, so the tasks running stay within reach of %oneshot_stop
# and %oneshot_tasks, and no second history writer opens.
_loaded: weakref.WeakKeyDictionary[Any, OneshotMagics] = weakref.WeakKeyDictionary()


def load(shell: Any) -> OneshotMagics:
    """Register the magics with `shell`, and the display of tasks and batches; open
    the history and settle what a dead kernel left behind (once per shell)."""
    from .history_magics import HistoryMagics

    magics = _loaded.get(shell)
    if magics is None:
        magics = _loaded[shell] = OneshotMagics(shell=shell)
        magics.open_history()
        shell.events.register("pre_run_cell", magics.new_cell)
        printers = shell.display_formatter.ipython_display_formatter
        printers.for_type(OneshotTask, magics.display_result)
        printers.for_type(Batch, magics.display_result)
    shell.register_magics(magics)
    shell.register_magics(HistoryMagics(shell=shell, main=magics))
    return magics
