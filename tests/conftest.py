"""Fixtures for the whole suite; shared helpers are in helpers.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

# Every kernel and shell the suite starts (nbval's included) inherits this: tests never
# write to, or settle tasks in, the user's own history database.
os.environ["ONESHOT_NB_DB"] = os.path.join(
    tempfile.mkdtemp(prefix="oneshot-test-history-"), "history.sqlite3"
)


@pytest.fixture
def anyio_backend() -> str:
    # The kernel runs asyncio; the engine's notebook mode is asyncio-only.
    return "asyncio"


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The process's one InteractiveShell, put back as it was: a test loads the magics
    into it as %load_ext would (a module may define its own `ip` with more to undo)."""
    shell = InteractiveShell.instance()
    before = list(shell.configurables)
    yield shell
    shell.configurables[:] = before
    shell.reset()
