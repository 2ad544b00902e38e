"""%oneshot_history, %oneshot_log and %oneshot_rerun: the history, from the notebook."""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from . import records
from .magics import OneshotMagics
from .parsing import parse_args, whole_number
from .store import REDACTED
from .task import OneshotTask


@magics_class
class HistoryMagics(Magics):
    """Magics that read the history database; `main` runs what they rerun."""

    def __init__(self, shell: Any = None, *, main: OneshotMagics, **kwargs: Any) -> None:
        self.main = main
        super().__init__(shell=shell, **kwargs)

    @magic_arguments()
    @argument("--limit", type=whole_number, metavar="N", help="Show the newest N tasks.")
    @argument("--failed", action="store_true", help="Only tasks that FAILED.")
    @argument("--grep", metavar="TEXT", help="Only tasks whose name or command has TEXT.")
    @argument("--prune", type=float, metavar="DAYS", help="Delete tasks older than DAYS.")
    @line_magic
    def oneshot_history(self, line: str) -> None:
        """Show past and present tasks, newest first, each with its stored log.

        Example: %oneshot_history --limit 20 --failed
        """
        args = parse_args(self.oneshot_history, line)
        self.main._warn_store()
        path = self._history_path()
        if args.prune is not None:
            try:
                count = records.prune(args.prune, path=path)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            print(f"deleted {count} task(s) that ended more than {args.prune:g} days ago")
            return
        found = records.history(args.limit, failed=args.failed, grep=args.grep, path=path)
        if self.main.widgets:
            from .history_view import HistoryTable

            display(HistoryTable(found))
            return
        for record in found:
            code = "" if record.returncode is None else f" exit {record.returncode}"
            # A task that has not ended has no reason yet: print nothing, not "None".
            reason = f" {record.reason}" if record.reason else ""
            print(f"{record.id}  {record.state.value:<11} {record.name}{code}{reason}")

    @magic_arguments()
    @argument("--stream", choices=("stdout", "stderr"), help="Only this stream.")
    @argument("task", help="The task's id.")
    @line_magic
    def oneshot_log(self, line: str) -> None:
        """Print the whole stored log of a task (stdout and stderr in arrival order)."""
        args = parse_args(self.oneshot_log, line)
        record = self._record(args.task)
        data = record.read_log(args.stream)
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    @magic_arguments()
    @argument("--quiet", action="store_true", help="Show no view.")
    @argument("task", help="The id of a task in the history.")
    @line_magic
    def oneshot_rerun(self, line: str) -> OneshotTask:
        """Run a past task's command again, with the same cwd and env overrides.

        Env values that were not saved (their names look secret) come from the kernel's
        environment instead.
        """
        args = parse_args(self.oneshot_rerun, line)
        record = self._record(args.task)
        env = {k: v for k, v in record.env.items() if v != REDACTED}
        task = self.main._submit(
            self.main.orchestrator.submit, record.command, name=record.name, cwd=record.cwd, env=env
        )
        self.main._show(task, args.quiet)
        return task

    def _history_path(self) -> str:
        # The open store, not the db setting: with db = ":memory:", or a file that could
        # not be opened, the setting still names a path, but history is off.
        if self.main.store is None:
            raise UsageError("task history is off (OneshotMagics.db or ONESHOT_NB_DB)")
        return self.main.store.path

    def _record(self, task_id: str) -> records.TaskRecord:
        path = self._history_path()
        try:
            return records.get_record(task_id, path=path)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None


