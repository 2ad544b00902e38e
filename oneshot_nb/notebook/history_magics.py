"""%oneshot_history, %oneshot_log and %oneshot_rerun: the history, from the notebook."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from ..engine.task import OneshotTask
from ..render.markup import PAGE_SIZE, attempts_parts, cost_parts, text_row
from ..storage import records
from ..storage.database import StoreError
from ..storage.rows import TERMINAL
from .parsing import parse_args, whole_number

if TYPE_CHECKING:
    from .session import Session


@magics_class
class HistoryMagics(Magics):
    """Magics that read the history database of a session, which runs what they rerun."""

    def __init__(self, shell: Any = None, *, session: Session, **kwargs: Any) -> None:
        self.session = session
        super().__init__(shell=shell, **kwargs)

    @magic_arguments()
    @argument("--limit", type=whole_number, metavar="N", help="Tasks per page, newest first (50).")
    @argument("--failed", action="store_true", help="Only tasks that FAILED.")
    @argument("--grep", metavar="TEXT", help="Only tasks whose name or command has TEXT.")
    @argument("--prune", type=float, metavar="DAYS", help="Delete tasks older than DAYS.")
    @line_magic
    def oneshot_history(self, line: str) -> None:
        """Show past and present tasks, newest first, each with its stored log: a page of
        them, and a button for more (as text, --limit N prints the newest N).

        Example: %oneshot_history --limit 20 --failed
        """
        args = parse_args(self.oneshot_history, line)
        self.session.warn_store()
        path = self._history_path()
        if args.prune is not None:
            try:
                count = records.prune(args.prune, path=path)
            except (StoreError, ValueError) as exc:
                raise UsageError(str(exc)) from None
            print(f"deleted {count} task(s) that ended more than {args.prune:g} days ago")
            return
        page = args.limit or PAGE_SIZE
        # Only the page shown is read, and one record more to know whether there are more.
        try:
            found = records.history(page + 1, failed=args.failed, grep=args.grep, path=path)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        if self.session.widgets:
            from .history_view import HistoryTable

            def more(offset: int, limit: int) -> list[records.TaskRecord]:
                return records.history(
                    limit, offset=offset, failed=args.failed, grep=args.grep, path=path
                )

            display(HistoryTable(found, more, page))
            return
        for r in found[:page]:
            print(_text_row(r))
        if len(found) > page and args.limit is None:
            print(f"(the newest {page}; %oneshot_history --limit N shows more)")

    @magic_arguments()
    @argument(
        "--stream",
        choices=("stdout", "stderr", "stdin"),
        help="Only this stream (stdin: the input the task was sent).",
    )
    @argument("task", help="The task's id.")
    @line_magic
    def oneshot_log(self, line: str) -> None:
        """Print the whole stored log of a task: stdout, stderr and the input it was sent
        through a pipe, in arrival order (a terminal's input is in its output already)."""
        args = parse_args(self.oneshot_log, line)
        record = self._record(args.task)
        try:
            data = record.read_log(args.stream)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    @magic_arguments()
    @argument("--quiet", action="store_true", help="Show no view.")
    @argument(
        "--env-from-kernel",
        action="store_true",
        help="Take the env values that were not saved from the kernel's environment now.",
    )
    @argument("task", help="The id of a task in the history.")
    @line_magic
    def oneshot_rerun(self, line: str) -> OneshotTask:
        """Run a past task's command again, with the same cwd and env overrides.

        It runs in a terminal, takes input or is read as an agent as it was. Env values
        that were not saved (secret-looking names, passwords in URLs) are
        refused with their names, unless --env-from-kernel takes the kernel's own.
        A command that lost a password in a URL cannot run again.
        """
        args = parse_args(self.oneshot_rerun, line)
        record = self._record(args.task)
        env = _rerun_env(record, args.env_from_kernel)
        # In a terminal, with input, read as an agent, as it was (a stored value this
        # version does not know is left out; a wrong one is refused by the submit).
        terminal = {name: value for name, value in record.terminal.items() if name in TERMINAL}
        if record.pty and not terminal:  # its options unreadable: a terminal, as it had
            terminal = {"pty": True}
        task = self.session.submit(
            record.command, name=record.name, cwd=record.cwd, env=env, **terminal
        )
        self.session.show(task, args.quiet)
        return task

    def _history_path(self) -> str:
        # The open store, not the db setting: with db = ":memory:", or a file that could
        # not be opened, the setting still names a path, but history is off.
        self.session.warn_store()  # what went wrong with the store, said before its data
        if self.session.store is None:
            reason = self.session.history_off or "OneshotMagics.db or ONESHOT_NB_DB"
            raise UsageError(f"task history is off: {reason}")
        # Absolute, as the store holds it: reads go to the file it writes after a %cd.
        return self.session.store.path

    def _record(self, task_id: str) -> records.TaskRecord:
        path = self._history_path()
        try:
            return records.get_record(task_id, path=path)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        except StoreError as exc:
            raise UsageError(str(exc)) from None


def _text_row(r: records.TaskRecord) -> str:
    """A past task as a line of text (see render.markup.text_row), its attempts (when
    more than one) and what it cost after its outcome."""
    extra = attempts_parts(r.attempts) + cost_parts(r.peak_rss, r.cpu_seconds)
    return text_row(r.id, r.state, r.name, r.returncode, r.reason, r.error, r.agent, extra)


def _rerun_env(record: records.TaskRecord, from_kernel: bool) -> dict[str, str]:
    """The env overrides to rerun `record` with: its own, and for the values that were
    not saved, the kernel's (only when asked: the value may have changed since)."""
    if record.command_redacted:
        raise UsageError(
            f"cannot rerun task {record.id}: its command held a password in a URL, which"
            " was not saved; run it again with %oneshot"
        )
    missing = record.redacted_env
    if missing and not from_kernel:
        raise UsageError(
            f"cannot rerun task {record.id}: the values of {', '.join(missing)} were not"
            " saved; --env-from-kernel takes the kernel's"
        )
    absent = [name for name in missing if name not in os.environ]
    if absent:
        raise UsageError(
            f"cannot rerun task {record.id}: the values of {', '.join(absent)} were not"
            " saved, and the kernel has none"
        )
    # Given explicitly, so that the rerun's own record is redacted as the original's.
    return {
        name: os.environ[name] if name in missing else value for name, value in record.env.items()
    }
