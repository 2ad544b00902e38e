"""`%load_ext oneshot_nb` and `%unload_ext oneshot_nb`: one session per shell, and the
magics, pre-run hook and display of tasks and batches that reach it."""

from __future__ import annotations

import weakref
from typing import Any

from IPython.core.magic import Magics

from ..engine.batch import Batch
from ..engine.task import OneshotTask
from .history_magics import HistoryMagics
from .magics import OneshotMagics

# The magics of each shell that loaded the extension, kept when it unloads: loading it
# again (`%reload_ext`, or `%unload_ext` then `%load_ext`) gets the same ones back, and
# with them the same session, so the tasks running stay within reach of %oneshot_stop
# and %oneshot_tasks, and no second history writer opens.
_loaded: weakref.WeakKeyDictionary[Any, tuple[OneshotMagics, HistoryMagics]] = (
    weakref.WeakKeyDictionary()
)

_SHOWN = (OneshotTask, Batch)  # what the session displays when it is a cell's result


def load(shell: Any) -> OneshotMagics:
    """Register the magics with `shell`, the pre-run hook and the display of tasks and
    batches; the first time, make the shell's session, open its history and settle
    what a dead kernel left behind."""
    if shell not in _loaded:
        main = OneshotMagics(shell=shell)
        main.session.open_history()
        _loaded[shell] = main, HistoryMagics(shell=shell, session=main.session)
    main, history = _loaded[shell]
    session = main.session
    if session.new_cell not in shell.events.callbacks["pre_run_cell"]:
        shell.events.register("pre_run_cell", session.new_cell)
    printers = shell.display_formatter.ipython_display_formatter
    for kind in _SHOWN:
        printers.for_type(kind, session.display_result)
    shell.register_magics(main, history)
    return main


def unload(shell: Any) -> None:
    """Take the magics, the pre-run hook and the display of tasks and batches away
    from `shell`.

    Running tasks keep running, and the session keeps its settings and history: they
    are stopped when the interpreter exits, as before the unload. Loading the
    extension again brings the same session back, the tasks with it.
    """
    if shell not in _loaded:
        return
    main, history = _loaded[shell]
    session = main.session
    for magics in (main, history):
        _unregister_magics(shell.magics_manager, magics)
    if session.new_cell in shell.events.callbacks["pre_run_cell"]:
        shell.events.unregister("pre_run_cell", session.new_cell)
    printers = shell.display_formatter.ipython_display_formatter
    for kind in _SHOWN:
        if printers.for_type(kind) == session.display_result:
            printers.pop(kind)


def _unregister_magics(manager: Any, magics: Magics) -> None:
    """The inverse of `manager.register(magics)`, which IPython does not provide: a
    name that another extension has taken since is left to it."""
    for kind, table in manager.magics.items():
        for name, function in magics.magics[kind].items():
            if table.get(name) == function:
                del table[name]
    name = type(magics).__name__
    if manager.registry.get(name) is magics:
        del manager.registry[name]
