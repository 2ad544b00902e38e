"""One JupyterLab server and one Chromium for the browser tests, and a notebook driver.

Nothing here skips. When Chromium, playwright or JupyterLab is missing every browser test
fails with the command that installs it: CI installs them, so a skip would only hide a
broken set-up. See BROWSER.md in the shared notes for why Debian's chromium and these flags.

Screenshots for the docs are written only when ONESHOT_SCREENSHOTS=1 (`make screenshots`):
their bytes change on every run (elapsed times, task ids), so an ordinary `make test` must
not rewrite files that git tracks.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

CHROMIUM = os.environ.get("ONESHOT_CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps trying hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium"
INSTALL_TEST_EXTRA = "make test (or: .venv/bin/pip install -e '.[test]')"

SCREENSHOTS = os.environ.get("ONESHOT_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parents[2] / "docs"

SETUP_CELL = "%load_ext oneshot_nb\n%config OneshotMagics.grace = 0.5"
SERVER_START_TIMEOUT = 90.0  # seconds; a cold start on a slow CI machine takes a while
EXPECT_TIMEOUT = 15_000  # ms; generous, every wait is on a real condition
KERNEL_TIMEOUT = 60_000  # ms for a notebook to open and its kernel to become idle
# The status bar's kernel item: "Python 3 (ipykernel) | Idle" once the kernel answers.
KERNEL_STATUS = '#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]'

# JupyterLab user settings for the run: no news or update pop-ups over the page, and
# every cell rendered (no windowing) so that locators find cells out of view too.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in a real Chromium")
    config.addinivalue_line("markers", "screenshot: writes docs/*.png with ONESHOT_SCREENSHOTS=1")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    # Kept on the item so that the page fixture can screenshot a failed test.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- the server -----------------------------------------------------------------------


class LabServer:
    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen, log: Path):
        self.root = root
        self.port = port
        self.token = token
        self.process = process
        self.log = log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def shutdown_kernels(self) -> None:
        """End every session, and with it its kernel, so the next test starts clean."""
        for session in self.api("GET", "sessions"):
            try:
                self.api("DELETE", f"sessions/{session['id']}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise

    def write_notebook(self, name: str, cells: list[str]) -> str:
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(source) for source in [SETUP_CELL, *cells]],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            },
        )
        nbformat.write(notebook, self.root / name)
        return name

    def write_script(self, name: str, code: str) -> str:
        (self.root / name).write_text(textwrap.dedent(code).lstrip())
        return name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.fail(f"the browser tests need jupyterlab in this environment: {INSTALL_TEST_EXTRA}")
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    settings = base / "settings"
    for name, value in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {
        **os.environ,
        # The kernel's `python` is this environment's, whatever the caller's PATH.
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        # Nothing from the user's own Jupyter or IPython set-up, nothing left behind.
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "IPYTHONDIR": str(base / "ipython"),
        # The kernels' task history goes to a file of the run's, never the user's.
        "ONESHOT_NB_DB": str(base / "history.sqlite3"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    port = _free_port()
    token = secrets.token_hex(16)
    log = base / "jupyterlab.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--allow-root",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )  # fmt: skip
    server = LabServer(root, port, token, process, log)
    try:
        _wait_for_server(server)
        yield server
    finally:
        process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_server(server: LabServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            code = server.process.returncode
            pytest.fail(f"jupyter lab exited with {code}:\n{server.log_tail()}")
        try:
            server.api("GET", "")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            wait = SERVER_START_TIMEOUT
            pytest.fail(f"jupyter lab did not answer in {wait}s:\n{server.log_tail()}")
        time.sleep(0.2)  # a poll interval, not a stand-in for a condition


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"the browser tests need the playwright package: {INSTALL_TEST_EXTRA}")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: {INSTALL_CHROMIUM}")
    expect.set_options(timeout=EXPECT_TIMEOUT)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


class Notebook:
    """A notebook open in the page: cells by index, run with Shift+Enter."""

    KERNEL_STATUS = KERNEL_STATUS

    def __init__(self, page: Any, server: LabServer) -> None:
        self.page = page
        self.server = server

    def open(self, name: str) -> Notebook:
        from playwright.sync_api import expect

        self.page.goto(self.server.url(name))
        self.page.wait_for_selector(".jp-Notebook", timeout=KERNEL_TIMEOUT)
        # Not the toolbar's .jp-Notebook-ExecutionIndicator: it says "idle" before any
        # kernel exists, and a cell run then is silently dropped.
        expect(self.page.locator(KERNEL_STATUS)).to_have_text(
            re.compile(r"^Python 3.*\| Idle$"), timeout=KERNEL_TIMEOUT
        )
        self.run(0)
        return self

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int) -> Any:
        """The output area of cell `index` (without the prompt column)."""
        return self.cell(index).locator(".jp-OutputArea-output").first

    def prompt(self, index: int) -> Any:
        return self.cell(index).locator(".jp-InputPrompt")

    def run(self, index: int, wait: bool = True) -> None:
        """Run cell `index`; with `wait`, until its execution count shows (cell done)."""
        self.cell(index).locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")
        if wait:
            self.wait_done(index)

    def wait_done(self, index: int) -> None:
        from playwright.sync_api import expect

        expect(self.prompt(index)).to_have_text(re.compile(r"\[\d+\]"))

    @property
    def screenshot_enabled(self) -> bool:
        return SCREENSHOTS

    def screenshot(self, locator: Any, name: str) -> Path | None:
        """Write docs/NAME from `locator`'s element when ONESHOT_SCREENSHOTS=1."""
        if not SCREENSHOTS:
            return None
        DOCS.mkdir(exist_ok=True)
        path = DOCS / name
        locator.screenshot(path=path, animations="disabled")
        return path


@pytest.fixture
def notebook(
    request: pytest.FixtureRequest,
    browser: Any,  # first: without a browser there is no point starting the server
    lab_server: LabServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Notebook]:
    """A fresh page; the test writes its notebook and calls `notebook.open(name)`."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 1000},
        # Sharp screenshots for the docs; CSS pixels, and so the layout, are the same.
        device_scale_factor=2 if SCREENSHOTS else 1,
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    driver = Notebook(page, lab_server)
    try:
        yield driver
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            shots = tmp_path_factory.getbasetemp() / "browser-failures"
            shots.mkdir(exist_ok=True)
            path = shots / f"{request.node.name}.png"
            try:
                page.screenshot(path=path, full_page=True)
                print(f"screenshot of the failed page: {path}", file=sys.stderr)
            except Exception as exc:  # the page may be what broke
                print(f"no screenshot: {exc}", file=sys.stderr)
            if errors:
                print("errors in the page:\n" + "\n".join(errors), file=sys.stderr)
            print(f"jupyter lab log:\n{lab_server.log_tail()}", file=sys.stderr)
        context.close()
        lab_server.shutdown_kernels()
