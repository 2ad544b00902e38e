"""nbval runs these notebooks as tests. Each notebook's kernel gets a history file of
its own: the user's history is neither read nor written, and no notebook sees the tasks
(or the settling of the tasks) of a kernel that ran before it."""

import os
import tempfile

import pytest

_history: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Runs before nbval's own setup, which starts the notebook's kernel with this
    # process's environment.
    notebook = str(item.path)
    if notebook not in _history:
        folder = tempfile.mkdtemp(prefix="oneshot-nbval-history-")
        _history[notebook] = os.path.join(folder, "history.sqlite3")
    os.environ["ONESHOT_NB_DB"] = _history[notebook]
