"""%oneshot, %%oneshot_parallel, %oneshot_stop and %oneshot_tasks: thin parsers over the
shell's session, and the settings (`%config OneshotMagics.<name>`)."""

from __future__ import annotations

from keyword import iskeyword
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Float, Integer, TraitError, Unicode, observe, validate

from ..engine.options import (
    DEFAULT_GRACE,
    DEFAULT_IDLE_AFTER,
    DEFAULT_MAX_LOG_BYTES,
    TaskOptions,
)
from .parsing import (
    batch_line,
    check_cwd,
    first_word,
    given_options,
    parse_args,
    parse_env,
    split_command,
    task_options,
    whole_number,
)
from .session import TASK_DEFAULTS, Session, task_defaults

if TYPE_CHECKING:
    from ..engine.batch import Batch
    from ..engine.orchestrator import AsyncOrchestrator
    from ..engine.task import OneshotTask
    from ..storage.store import Store


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
    cluster = Unicode(
        None,
        allow_none=True,
        help="Where tasks run when no --cluster is given: None (this machine), 'local:N'"
        " (a Dask LocalCluster of N workers) or a Dask scheduler's address tcp://host:port.",
    ).tag(config=True)
    db = Unicode(
        None,
        allow_none=True,
        help="The history database, read when the extension loads. Default: ONESHOT_NB_DB,"
        " else ~/.local/share/oneshot_nb/history.sqlite3; ':memory:' turns history off.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        # Made before the traits load their config, which calls the observer below.
        self.session = Session(shell, self)
        super().__init__(shell=shell, **kwargs)

    @validate("limit")
    def _check_limit(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"limit must be 1 or more, got {proposal['value']}")
        return proposal["value"]

    @validate(*TASK_DEFAULTS)
    def _check_option(self, proposal: Any) -> Any:
        options = {**task_defaults(self), proposal["trait"].name: proposal["value"]}
        try:
            TaskOptions(**options)
        except (TypeError, ValueError) as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @validate("cluster")
    def _check_cluster(self, proposal: Any) -> str | None:
        # Connects now: an address that cannot be reached is refused, not every task.
        try:
            self.session.runner_for(proposal["value"])
        except UsageError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @observe("limit", "cluster", *TASK_DEFAULTS)
    def _apply_config(self, change: Any) -> None:
        self.session.configure(change["name"], change["new"])

    # -- what notebooks and tests reached here before the session held it ------------

    @property
    def orchestrator(self) -> AsyncOrchestrator:
        return self.session.orchestrator

    @property
    def store(self) -> Store | None:
        return self.session.store

    # -- magics -------------------------------------------------------------------------

    @magic_arguments()
    @argument("--name", help="A name for the task (default: the command).")
    @task_options
    @argument("--cwd", metavar="DIR", help="Directory to run in.")
    @argument("--env", action="append", default=[], metavar="KEY=VALUE", help="Repeatable.")
    @argument("command", nargs="*", help="The shell command, verbatim, as with !cmd.")
    @line_magic
    def oneshot(self, line: str) -> OneshotTask:
        """Run a shell command in the background; return its task at once.

        Example::

            t = %oneshot --name train --timeout 3600 python train.py --epochs 3
            await t.wait()
        """
        parser = self.oneshot.parser
        options, command = split_command(line, parser)
        args = parser.parse_args(options)
        if not command:
            raise UsageError("no command given: %oneshot [options] COMMAND")
        env, cwd = parse_env(args.env), check_cwd(args.cwd)
        given = given_options(args)
        self.session.check_options(name=args.name, cwd=cwd, env=env, **given)
        runner = self.session.runner_for(args.cluster, given=True)
        after = [key.strip() for key in args.after.split(",")] if args.after is not None else []
        if "" in after:
            raise UsageError(
                f"--after takes task ids or names, separated by commas, got {args.after!r}"
            )
        task = self.session.submit(
            command, name=args.name, cwd=cwd, env=env, runner=runner, after=after, **given
        )
        self.session.show(task, args.quiet)
        return task

    @magic_arguments()
    @argument("--limit", type=whole_number, metavar="N", help="How many run at once.")
    @task_options
    @argument("--fail-fast", action="store_true", help="Short for --halt soon,fail=1.")
    @argument(
        "--halt",
        metavar="RULE",
        help="Stop the batch: soon|now,fail=N|P%% or soon|now,success=N|P%% (as GNU parallel).",
    )
    @argument("--out", metavar="NAME", help="Also store the batch in this variable.")
    @cell_magic
    def oneshot_parallel(self, line: str, cell: str) -> Batch:
        """Run each line of the cell as a command, at most --limit at a time.

        Each command sees ONESHOT_SLOT (0 .. limit-1, the slot it holds) and
        ONESHOT_TASK_ID in its environment. Blank lines and lines starting with # are
        skipped; {var} and $var expand as in !cmd. A line may start with a name and
        the lines it runs after: `test after build, lint: make test` (`build: make`
        names a line; `after build: ...` only orders it). Example::

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
        lines = []
        for text in cell.splitlines():
            text = text.strip()
            if text and not text.startswith("#"):
                # depth=2 reaches the cell's frame (run_cell_magic's caller): a smaller
                # depth would let this method's locals (line, cell, args) shadow the user's.
                lines.append(batch_line(self.shell.var_expand(text, depth=2)))
        if not lines:
            raise UsageError("the cell has no commands: write one command per line")
        if args.fail_fast and args.halt:
            raise UsageError("give --fail-fast or --halt, not both (--fail-fast is soon,fail=1)")
        if args.after:
            raise UsageError("--after is for %oneshot; in a batch, write 'NAME after OTHER: CMD'")
        given = given_options(args)
        self.session.check_options(**given)
        commands, names, after = zip(*lines, strict=True)
        runner = self.session.runner_for(args.cluster, given=True)
        batch = self.session.submit_batch(
            list(commands),
            limit=args.limit,
            fail_fast=args.fail_fast,
            halt=args.halt,
            names=list(names),
            after=list(after) if any(after) else None,
            runner=runner,
            **given,
        )
        if args.out:
            self.shell.user_ns[args.out] = batch
        self.session.show(batch, args.quiet)
        return batch

    @magic_arguments()
    @argument("--no-newline", action="store_true", help="Send TEXT without a newline.")
    @argument("--eof", action="store_true", help="Then end the task's input (as Ctrl-D).")
    @argument("task", nargs="?", help="The id or name of the task.")
    @argument("text", nargs="*", help="What to send, verbatim.")
    @line_magic
    def oneshot_send(self, line: str) -> None:
        """Send a line of input to a running task started with --pty or --stdin.

        `%oneshot_send build y` sends "y" and a newline to the task named build, as if
        typed; the rest of the line is sent as it is. With --eof the input ends after
        (alone: `%oneshot_send --eof build`). Example::

            t = %oneshot --pty --name ask read -p "continue? " answer
            %oneshot_send ask y
        """
        parser = self.oneshot_send.parser
        words, rest = split_command(line, parser)
        args = parser.parse_args(words)
        key, text = first_word(rest)
        if not key:
            raise UsageError("give a task id or name: %oneshot_send TASK TEXT")
        if not args.no_newline and not (args.eof and not text):
            text += "\n"
        self.session.send(key, text, eof=args.eof)

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
        call, orchestrator = self.session.call, self.session.orchestrator
        if args.all and not args.task:
            call(orchestrator.stop_all)
            return
        try:
            tasks = call(orchestrator.find, args.task) if args.all else []
            if not tasks:
                tasks = [call(orchestrator.get, args.task)]
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
        from ..render.markup import PAGE_SIZE, task_text_row

        args = parse_args(self.oneshot_tasks, line)
        page = args.limit or PAGE_SIZE
        orchestrator = self.session.orchestrator
        if self.session.widgets:
            from .views import tasks_table

            display(tasks_table(orchestrator, args.limit))  # None: the page it shows
            return
        tasks = orchestrator.tasks
        if len(tasks) > page and args.limit is None:
            print(f"({len(tasks) - page} older tasks not shown: %oneshot_tasks --limit N)")
        for t in tasks[-page:]:
            print(task_text_row(t))
