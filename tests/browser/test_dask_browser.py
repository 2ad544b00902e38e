"""A task on a Dask worker in JupyterLab, in a real Chromium: its view says where it runs,
streams its log, and its Stop button ends its process group on the worker."""

from __future__ import annotations

import re
import time

import pytest
from helpers.processes import group_exists, live_members

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture fails every test with the install command
    expect = None  # type: ignore[assignment]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_remote_task_shows_its_worker_and_stops_from_the_page(notebook):
    server = notebook.server
    # It ignores SIGTERM and has a child: the worker must reach the child and escalate
    # to SIGKILL after the grace, as for a local task.
    server.write_script(
        "remote_stubborn.py",
        """
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "600"])
        print(f"CHILD={child.pid} WORKER={os.environ['ONESHOT_WORKER']}", flush=True)
        time.sleep(600)
        """,
    )
    server.write_notebook(
        "remote.ipynb",
        [
            "t = %oneshot --cluster local:1 --grace 0.5 --name far python -u remote_stubborn.py",
            'await t.wait_for("RUNNING")\nprint(f"PID={t.pid} HOST={t.place.host}")',
        ],
    )
    notebook.open("remote.ipynb")
    notebook.run(1)
    notebook.run(2)
    output = notebook.output(1)
    log = output.locator(".oneshot-log")
    expect(log).to_contain_text("CHILD=", timeout=20000)
    said = notebook.output(2).inner_text()
    pid = int(re.search(r"PID=(\d+)", said).group(1))
    host = re.search(r"HOST=(\S+)", said).group(1)
    assert host.startswith("tcp://")
    assert f"WORKER={host}" in log.inner_text()  # ONESHOT_WORKER is the place
    expect(output.locator(".oneshot-info")).to_contain_text(f"on {host}")
    child = int(re.search(r"CHILD=(\d+)", log.inner_text()).group(1))
    assert group_exists(pid)  # the worker is on this machine: its group is visible here
    expect(output.locator(".oneshot-badge")).to_have_attribute("data-state", "RUNNING")
    clicked = time.monotonic()
    output.locator("button", has_text="Stop").click()
    expect(output.locator(".oneshot-badge")).to_have_attribute(
        "data-state", "INTERRUPTED", timeout=5000
    )
    deadline = time.monotonic() + 5
    while live_members(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_members(pid), f"group {pid} still has {live_members(pid)}"
    assert child not in live_members(pid)
    print(f"\nremote stop: group gone {time.monotonic() - clicked:.2f}s after the click")
