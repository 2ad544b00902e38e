"""Fixtures for the whole suite; shared helpers are in the helpers package.

A test that starts a real kernel does it through the `kernels` fixture (or the module
`kernel` fixture of notebook/test_kernel.py): it is then marked `kernel`, as nbval's
notebook cells are, and `make test-fast` leaves it out.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers.processes import kill_group
from IPython.core.interactiveshell import InteractiveShell

from oneshot_nb.notebook import extension
from oneshot_nb.notebook.magics import OneshotMagics
from oneshot_nb.storage import records

if TYPE_CHECKING:
    from helpers.kernel import Kernel

# Every kernel and shell the suite starts (nbval's included) inherits this: tests never
# write to, or settle tasks in, the user's own history database.
os.environ["ONESHOT_NB_DB"] = os.path.join(
    tempfile.mkdtemp(prefix="oneshot-test-history-"), "history.sqlite3"
)

KERNEL_FIXTURES = {"kernels", "kernel"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # nbval runs each notebook in a kernel of its own.
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & KERNEL_FIXTURES or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(autouse=True)
def close_new_widgets() -> Iterator[None]:
    """Closes the widgets a test made. ipywidgets keeps every open widget, and a view
    keeps its tasks alive: after the batch of 10,000, each later gc.collect() (IPython
    runs one on every reset) took two seconds."""
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    yield
    for key in set(_instances) - before:
        widget = _instances.get(key)
        if widget is not None:
            widget.close()


@pytest.fixture
def anyio_backend() -> str:
    # The kernel runs asyncio; the engine's notebook mode is asyncio-only.
    return "asyncio"


# -- a shell, and the extension loaded into it ------------------------------------------------


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The process's one InteractiveShell, put back as it was after the test: its
    configurables, the names in its namespace, and no OneshotMagics config (%config
    merges even a value it refuses into the shell's config, which magics loaded later
    would read). Not shell.reset(): its gc.collect() took a tenth of a second a test."""
    shell = InteractiveShell.instance()
    before = list(shell.configurables)
    names = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - names:
        del shell.user_ns[name]
    shell.config.pop("OneshotMagics", None)
    shell.configurables[:] = before


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A history database of this test's own, which ONESHOT_NB_DB names; no store of an
    earlier test is the active one. A module may override it (":memory:": none)."""
    path = str(tmp_path / "history.sqlite3")
    monkeypatch.setenv("ONESHOT_NB_DB", path)
    monkeypatch.setattr(records, "active_store", None)
    return path


@pytest.fixture
def load_magics(ip: InteractiveShell, db: str) -> Iterator[Callable[[], OneshotMagics]]:
    """Loads the extension into `ip` when called, as %load_ext does, stops kept short
    (grace 0.5 s). After the test its tasks are stopped, its history closed and the
    extension unloaded and forgotten: the next test loads fresh magics."""
    loaded: list[OneshotMagics] = []

    def load_them() -> OneshotMagics:
        magics = extension.load(ip)
        magics.grace = 0.5
        loaded.append(magics)
        return magics

    yield load_them
    for magics in loaded:
        magics.session.close()
    extension.unload(ip)
    extension._loaded.pop(ip, None)


@pytest.fixture
def magics(load_magics: Callable[[], OneshotMagics]) -> OneshotMagics:
    """The extension's magics, loaded into `ip` as %load_ext loads them."""
    return load_magics()


# -- real kernels ------------------------------------------------------------------------------


@pytest.fixture
def kernels() -> Iterator[Callable[..., Kernel]]:
    """Starts real kernels (`kernels(*arguments, db=..., setup=...)`, as Kernel takes
    them); shuts down after the test those it has not shut down itself."""
    from helpers.kernel import Kernel

    started: list[Kernel] = []

    def start(*arguments: str, **options: Any) -> Kernel:
        kernel = Kernel(*arguments, **options)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        with contextlib.suppress(Exception):  # a kernel the test killed cannot answer
            kernel.shutdown()


# -- processes and disks of our own -----------------------------------------------------------


@pytest.fixture
def spawned() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts processes in sessions of their own (as tasks run); kills what is left."""
    started: list[subprocess.Popen] = []

    def start(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        kill_group(process.pid)
        process.wait()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[str]:
    """A real 4 MiB file system (tmpfs), which a test can fill (helpers.fill)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
