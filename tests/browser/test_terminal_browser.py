"""Input to a running task and an agent's progress line in JupyterLab, in a real Chromium
(issue #12; see tests/browser/test_browser.py for the set-up).

A task started with --pty or --stdin shows a line of input under its log: typing into
it and pressing Send (or Enter) must reach the command, which then goes on; EOF ends its
input. An agent task shows its progress line above the log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import live_members

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture fails every test with the install command
    expect = None  # type: ignore[assignment]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FAKE_AGENT = Path(__file__).resolve().parents[1] / "agents" / "fake_agent.py"
SHOW_PID = 'await t.wait_for("RUNNING")\nprint(f"PID={t.pid}")'

# Records what the cell shows at every change below it, from before its run on:
# window.__records, the badge's state and the agent's progress line each time.
RECORDER = """
cell => {
  const records = [];
  window.__records = records;
  const push = () => {
    const value = {
      state: cell.querySelector('.oneshot-badge')?.dataset.state ?? null,
      agent: cell.querySelector('.oneshot-agent')?.textContent ?? null,
    };
    const last = records.at(-1);
    if (!last || last.state !== value.state || last.agent !== value.agent) records.push(value);
  };
  new MutationObserver(push).observe(cell, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
  push();
}
"""


def started(notebook: Any, name: str, command: str) -> tuple[Any, int]:
    """Open a notebook whose cell 1 starts `t = %oneshot COMMAND` and cell 2 prints its
    pid once it runs; the task's output area and its pid."""
    notebook.server.write_notebook(name, [f"t = %oneshot {command}", SHOW_PID])
    notebook.open(name)
    notebook.run(1)
    notebook.run(2)
    output = notebook.output(1)
    expect(output.locator(".oneshot-task")).to_be_visible()
    pid = int(re.search(r"PID=(\d+)", notebook.output(2).inner_text()).group(1))
    return output, pid


def badge(output: Any) -> Any:
    return output.locator(".oneshot-badge").first


def log_text(output: Any) -> str:
    return output.locator(".oneshot-log").inner_text()


def test_typed_line_and_send_let_a_terminal_task_go_on(notebook):
    command = """sh -c 'read -p "continue? " answer; echo "you said $answer"'"""
    output, pid = started(notebook, "ask.ipynb", f"--pty --idle 1 --name ask {command}")
    bar = output.locator(".oneshot-input")
    box = bar.get_by_placeholder("input to the task")
    expect(badge(output)).to_have_attribute("data-state", "IDLE")
    expect(bar.locator(".oneshot-waiting")).to_have_text("waiting for input")
    expect(output.locator(".oneshot-log")).to_contain_text("continue?")
    box.click()
    box.press_sequentially("yes")
    expect(box).to_have_value("yes")
    bar.locator("button", has_text="Send").click()
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    expect(output.locator(".oneshot-log")).to_contain_text("you said yes")
    expect(bar).to_be_hidden()
    # The terminal echoes the line: the view must not show it a second time.
    log = log_text(output)
    assert log.count("continue? yes") == 1, log
    assert log.count("yes") == 2, log  # the echo and "you said yes", nothing else
    assert not live_members(pid)


def test_enter_send_and_eof_feed_a_piped_task(notebook):
    command = """python3 -u -c "import sys; [print('got', l.strip()) for l in sys.stdin]" """
    output, pid = started(notebook, "lines.ipynb", f"--stdin --name lines {command}")
    bar = output.locator(".oneshot-input")
    box = bar.get_by_placeholder("input to the task")
    log = output.locator(".oneshot-log")
    expect(bar).to_be_visible()
    box.click()
    box.press_sequentially("one")
    box.press("Enter")
    expect(log).to_contain_text("got one")
    expect(box).to_have_value("")  # sent, so emptied
    box.press_sequentially("two")
    bar.locator("button", has_text="Send").click()
    expect(log).to_contain_text("got two")
    expect(badge(output)).to_have_attribute("data-state", re.compile("RUNNING|IDLE"))
    bar.locator("button", has_text="EOF").click()
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    expect(output.locator(".oneshot-info")).to_contain_text("exit code 0")
    expect(bar).to_be_hidden()
    got = [line for line in log_text(output).splitlines() if line.startswith("got")]
    assert got == ["got one", "got two"], log_text(output)
    assert not live_members(pid)


def test_agent_task_shows_its_progress_line(notebook):
    # 0.2 s between the fake's ten lines, 2 s in all: at 0.05 s the run lasts half a
    # second, five view updates, and a slow machine might show only its end.
    command = f"python3 {FAKE_AGENT} claude ok --delay 0.2"
    notebook.server.write_notebook("agent.ipynb", [f"%oneshot --agent claude --name fix {command}"])
    notebook.open("agent.ipynb")
    notebook.cell(1).evaluate(RECORDER)
    notebook.run(1)
    output = notebook.output(1)
    line = output.locator(".oneshot-agent")
    expect(line).to_contain_text("Bash: pytest -q")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    expect(line).to_have_attribute("data-agent", "claude")
    expect(line).to_contain_text("✓ done")
    expect(line).to_contain_text("$0.0412")
    expect(line).to_contain_text("Bash: pytest -q")
    expect(line).to_have_css("color", "rgb(46, 125, 50)")  # green: it succeeded
    seen = notebook.page.evaluate("() => window.__records")
    # The line moved on while the task ran, the tool calls one by one, before its end.
    running = [r["agent"] for r in seen if r["state"] == "RUNNING" and r["agent"]]
    live = [text for text in running if "✓" not in text]
    assert len(live) >= 3, seen
    assert any("Bash: pytest -q" in text for text in live), seen
    tools = ["Read", "Edit", "Bash"]  # the fake's calls, in order
    shown = [next((t for t in tools if f"{t}: " in text), None) for text in live]
    calls = [tool for tool in shown if tool is not None]
    assert calls == sorted(calls, key=tools.index), seen


def test_a_line_typed_while_the_kernel_is_busy_arrives_whole(notebook):
    """The line reaches the command whole: the box's text used to follow Enter's message
    as a state update that the page holds back while an earlier one awaits the kernel's
    reply, so a busy kernel (another cell running) or fast typing sent "y" of "yes"."""
    command = (
        """sh -c 'read -p "continue? " answer; echo "you said $answer";"""
        """ for n in 1 2 3 4 5; do read line; echo "line $n: $line"; done'"""
    )
    notebook.server.write_notebook(
        "busy.ipynb",
        [
            f"t = %oneshot --pty --idle 1 --name ask {command}",
            "import asyncio\nawait asyncio.sleep(4)",
        ],
    )
    notebook.open("busy.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    bar = output.locator(".oneshot-input")
    box = bar.get_by_placeholder("input to the task")
    log = output.locator(".oneshot-log")
    expect(badge(output)).to_have_attribute("data-state", "IDLE")
    notebook.run(2, wait=False)
    expect(notebook.page.locator(notebook.KERNEL_STATUS)).to_have_text(re.compile(r"\| Busy$"))
    box.click()
    box.press_sequentially("yes", delay=150)
    box.press("Enter")
    expect(box).to_have_value("")
    notebook.wait_done(2)
    expect(log).to_contain_text("you said yes")
    expect(box).to_have_value("")  # no late update put the old text back
    lines = [f"fast line {n} with some words" for n in range(1, 6)]
    for line in lines:
        box.press_sequentially(line)
        box.press("Enter")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    said = [line for line in log_text(output).splitlines() if line.startswith(("you", "line"))]
    assert said == ["you said yes", *[f"line {n}: {line}" for n, line in enumerate(lines, 1)]]
