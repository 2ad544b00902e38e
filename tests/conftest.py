"""Fixtures for the whole suite; shared helpers are in helpers.py."""

from __future__ import annotations

import os
import tempfile

import pytest

# Every kernel and shell the suite starts (nbval's included) inherits this: tests never
# write to, or settle tasks in, the user's own history database.
os.environ["ONESHOT_NB_DB"] = os.path.join(
    tempfile.mkdtemp(prefix="oneshot-test-history-"), "history.sqlite3"
)


@pytest.fixture
def anyio_backend() -> str:
    # The kernel runs asyncio; the engine's notebook mode is asyncio-only.
    return "asyncio"
