"""oneshot_nb's views in JupyterLab, in a real Chromium: what the page shows.

Each test writes its own notebook (first cell: load the extension, grace 0.5 s) and the
scripts it runs into the server's root, opens it in a fresh page and runs cells with
Shift+Enter. Where a test needs what the page showed over time (log lines appearing one by
one, counts of a batch), a MutationObserver in the page records every change of the
cell's output, so nothing depends on a poll catching a moment.

Measured figures (stop latency, click latency) are printed; see them with `pytest -s`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from helpers.processes import group_exists, live_members, pid_exists

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture fails every test with the install command
    expect = PlaywrightError = None  # type: ignore[assignment,misc]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Records a snapshot of `root` on every change below it: window.__records.
# `snapshot` is the body of a function of `root` returning a JSON-able object.
RECORDER = """
(root, snapshot) => {
  const take = new Function("root", snapshot);
  const records = [];
  window.__records = records;
  const push = () => {
    const value = take(root);
    const key = JSON.stringify(value);
    if (!records.length || records[records.length - 1].key !== key) {
      records.push({key, value, t: performance.now()});
    }
  };
  new MutationObserver(push).observe(root, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
  push();
}
"""

# The log's lines, as an expression of `root`.
LINES = (
    "[...root.querySelectorAll('.oneshot-log pre')].map(p => p.textContent)"
    ".join('').split('\\n').filter(line => line !== '')"
)


def record(locator: Any, snapshot: str) -> None:
    locator.evaluate(RECORDER, snapshot)


def records(page: Any) -> list[dict]:
    return page.evaluate("() => window.__records.map(r => ({...r.value, t: r.t}))")


def log_lines(output: Any) -> list[str]:
    return output.evaluate(f"root => {LINES}")


def badge(output: Any) -> Any:
    return output.locator(".oneshot-badge").first


def expect_widget(output: Any) -> None:
    """The ipywidgets frontend drew the view: a widget, not the text repr."""
    expect(output.locator(".oneshot-task, .oneshot-table").first).to_be_visible()
    expect(output).not_to_contain_text("TaskView(")
    expect(output).not_to_contain_text("TaskTable(")


def _compact(states: list[str]) -> list[str]:
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


# -- 1. a live log while the cell is done -----------------------------------------------


@pytest.mark.screenshot
def test_log_streams_after_the_cell_has_finished(notebook):
    server = notebook.server
    server.write_script(
        "train.py",
        """
        import time
        for epoch in range(1, 11):
            print(f"epoch {epoch}/10  loss={1 / epoch:.3f}", flush=True)
            time.sleep(0.2)
        """,
    )
    server.write_notebook("stream.ipynb", ["t = %oneshot --name train python -u train.py"])
    notebook.open("stream.ipynb")
    notebook.run(1)  # returns once the cell shows its execution count
    output = notebook.output(1)
    expect_widget(output)
    record(
        output,
        f"""
        return {{
          lines: {LINES}.length,
          state: root.querySelector('.oneshot-badge')?.dataset.state,
          prompt: root.closest('.jp-Cell').querySelector('.jp-InputPrompt').textContent,
          kernel: document.querySelector('{notebook.KERNEL_STATUS}')?.textContent,
        }};
        """,
    )
    if notebook.screenshot_enabled:
        # For the docs: the view while it runs, half its log in.
        notebook.page.wait_for_function(
            "() => { const r = window.__records.at(-1).value;"
            " return r.state === 'RUNNING' && r.lines >= 6; }"
        )
        notebook.screenshot(output, "task_view.png")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    expect(output.locator(".oneshot-info")).to_contain_text("exit code 0")
    assert log_lines(output) == [f"epoch {e}/10  loss={1 / e:.3f}" for e in range(1, 11)]

    seen = records(notebook.page)
    counts = [r["lines"] for r in seen]
    assert counts == sorted(counts), f"log lines went back: {counts}"
    # Lines came one by one while the badge said RUNNING, the cell showing its count
    # and the kernel idle: the log is live, not printed by a cell that blocks.
    live = {
        r["lines"]
        for r in seen
        if r["state"] == "RUNNING"
        and 0 < r["lines"] < 10
        and re.fullmatch(r"\[\d+\]:", r["prompt"].strip())
        and r["kernel"].endswith("| Idle")
    }
    assert len(live) >= 5, f"expected lines to appear one by one in a finished cell: {seen}"


# -- 2. Stop ----------------------------------------------------------------------------


def _wait_group_gone(pgid: int, timeout: float) -> str:
    """Poll until no process of group `pgid` runs; say how it was seen to be gone."""
    deadline = time.monotonic() + timeout
    while True:
        if not group_exists(pgid):
            return "no such group"
        if not live_members(pgid):
            return "only zombies left, awaiting PID 1"
        assert time.monotonic() < deadline, f"group {pgid} alive: {live_members(pgid)}"
        time.sleep(0.05)  # poll interval


def test_stop_button_interrupts_and_kills_the_group(notebook):
    server = notebook.server
    # It ignores SIGTERM and has a child: Stop must reach the child and escalate to
    # SIGKILL after the 0.5 s grace.
    server.write_script(
        "stubborn.py",
        """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "600"])
        print(f"CHILD={child.pid}", flush=True)
        time.sleep(600)
        """,
    )
    server.write_notebook(
        "stop.ipynb",
        [
            "t = %oneshot --name sleeper python -u stubborn.py",
            'await t.wait_for("RUNNING")\nprint(f"PID={t.pid}")',
        ],
    )
    notebook.open("stop.ipynb")
    notebook.run(1)
    notebook.run(2)
    output = notebook.output(1)
    expect_widget(output)
    expect(output.locator(".oneshot-log")).to_contain_text("CHILD=")
    pid = int(re.search(r"PID=(\d+)", notebook.output(2).inner_text()).group(1))
    child = int(re.search(r"CHILD=(\d+)", output.locator(".oneshot-log").inner_text()).group(1))
    assert group_exists(pid)  # alive before the click
    stop = output.locator("button", has_text="Stop")
    expect(badge(output)).to_have_attribute("data-state", "RUNNING")
    expect(stop).to_be_enabled()
    # Times in the page: the click event, and the first render of INTERRUPTED.
    output.evaluate(
        """root => {
          window.__stop = {};
          root.querySelector('button').addEventListener(
            'click', () => { window.__stop.click = performance.now(); }, {capture: true});
          new MutationObserver(() => {
            const b = root.querySelector('.oneshot-badge');
            if (b && b.dataset.state === 'INTERRUPTED' && !window.__stop.shown) {
              window.__stop.shown = performance.now();
            }
          }).observe(root, {subtree: true, childList: true, attributes: true});
        }"""
    )
    clicked = time.monotonic()
    stop.click()
    expect(badge(output)).to_have_attribute("data-state", "INTERRUPTED", timeout=3000)
    times = notebook.page.evaluate("() => window.__stop")
    latency = (times["shown"] - times["click"]) / 1000
    expect(stop).to_be_disabled()
    how = _wait_group_gone(pid, timeout=10)
    gone = time.monotonic() - clicked
    assert not pid_exists(pid)  # the leader is reaped by the kernel, not just dead
    assert child not in live_members(pid)
    print(
        f"\nstop: click -> INTERRUPTED shown {latency:.3f}s (in the page); "
        f"group gone {gone:.2f}s after the click ({how})"
    )
    assert latency < 1.5, f"INTERRUPTED showed {latency:.2f}s after the click"


# -- 3. a batch under a limit -----------------------------------------------------------


@pytest.mark.screenshot
def test_batch_counts_respect_the_limit(notebook):
    server = notebook.server
    server.write_script(
        "job.py",
        """
        import sys, time
        print(f"job {sys.argv[1]} started", flush=True)
        time.sleep(1)
        print(f"job {sys.argv[1]} done")
        """,
    )
    jobs = "\n".join(f"python -u job.py {n}" for n in range(1, 6))
    server.write_notebook("batch.ipynb", [f"%%oneshot_parallel --limit 2\n{jobs}"])
    notebook.open("batch.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect_widget(output)
    record(
        output,
        """
        const counts = {};
        for (const el of root.querySelectorAll('.oneshot-count')) {
          counts[el.dataset.state] = parseInt(el.textContent.match(/\\d+/)[0]);
        }
        const rows = [...root.querySelectorAll('.oneshot-row .oneshot-badge')];
        return {counts, rows: rows.map(b => b.dataset.state)};
        """,
    )
    rows = output.locator(".oneshot-row")
    expect(rows).to_have_count(5)
    # The first row's log, opened while it runs: it fills in as it goes.
    rows.first.locator("button", has_text="Log").click()
    expect(rows.first.locator(".oneshot-log")).to_contain_text("job 1 started")
    if notebook.screenshot_enabled:
        # Mid-run, for the docs: two done, two running, one waiting.
        notebook.page.wait_for_function(
            """() => { const r = window.__records.at(-1).value.counts;
                       return r.COMPLETED === 2 && r.RUNNING === 2; }"""
        )
        notebook.screenshot(output, "batch_view.png")
    count = output.locator('.oneshot-count[data-state="COMPLETED"]')
    expect(count).to_have_text("COMPLETED 5", timeout=30_000)
    expect(output.locator("button", has_text="Stop all")).to_be_disabled()
    expect(rows.first.locator(".oneshot-log")).to_contain_text("job 1 done")

    seen = [r for r in records(notebook.page) if r["counts"]]
    running = [r["counts"].get("RUNNING", 0) + r["counts"].get("IDLE", 0) for r in seen]
    print(f"\nbatch: RUNNING counts shown {_compact(running)}")
    assert max(running) <= 2, f"more than --limit 2 running: {seen}"
    assert 2 in running, f"never 2 running: {seen}"
    for r, after in zip(seen, [*seen[1:], None], strict=True):
        assert sum(r["counts"].values()) == 5, r
        # The counts agree with the rows beside them once an update has landed: one
        # update is several widget messages, so the page passes through mixed states
        # for a few milliseconds; a state shown for 250 ms is no such passing state.
        if after is None or after["t"] - r["t"] > 250:
            assert len(r["rows"]) == 5, r
            for state, n in r["counts"].items():
                assert r["rows"].count(state) == n, r
    done = [r["counts"].get("COMPLETED", 0) for r in seen]
    assert done == sorted(done), f"COMPLETED went back: {done}"
    final = seen[-1]["counts"]
    assert final["COMPLETED"] == 5 and final["FAILED"] == 0 and final["INTERRUPTED"] == 0


# -- 4. IDLE and back -------------------------------------------------------------------


def test_idle_then_running_again(notebook):
    server = notebook.server
    server.write_script(
        "quiet.py",
        """
        import time
        print("thinking...", flush=True)
        time.sleep(3)
        for i in range(8):
            print(f"answer part {i}", flush=True)
            time.sleep(0.2)
        """,
    )
    server.write_notebook("idle.ipynb", ["%oneshot --idle 2 --name agent python -u quiet.py"])
    notebook.open("idle.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect_widget(output)
    record(
        output,
        """
        const badge = root.querySelector('.oneshot-badge');
        const log = root.querySelector('.oneshot-log')?.textContent || '';
        return {state: badge?.dataset.state, badge: badge?.textContent,
                resumed: log.includes('answer part 0')};
        """,
    )
    # Waits on what the page has shown (the recorder), not on what it shows at the
    # moment a poll looks: a state that lasts two seconds cannot slip past.
    page = notebook.page
    page.wait_for_function("() => window.__records.some(r => r.value.state === 'IDLE')")
    page.wait_for_function(
        """() => { const i = window.__records.findIndex(r => r.value.state === 'IDLE');
                   return window.__records.slice(i).some(r => r.value.state === 'RUNNING'); }"""
    )
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    seen = [r for r in records(page) if r["state"]]
    idle = [r for r in seen if r["state"] == "IDLE"]
    assert all(re.fullmatch(r"IDLE · silent \d+\.\ds", r["badge"]) for r in idle), idle
    back = next(r for r in seen[seen.index(idle[0]) :] if r["state"] == "RUNNING")
    resumed = next(r for r in seen if r["resumed"])
    # The log and the badge flush on their own timers (each at most ~10 Hz), so either
    # may show the change a moment before the other; a moment, not the 2 s of --idle.
    lag = (back["t"] - resumed["t"]) / 1000
    print(f"\nidle: RUNNING shown {lag:+.3f}s after the resumed output")
    assert abs(lag) < 1.0, f"badge and log {lag:.2f}s apart: {seen}"
    states = _compact([r["state"] for r in seen])
    assert states[states.index("IDLE") - 1 :] == ["RUNNING", "IDLE", "RUNNING", "COMPLETED"], states


# -- 5. output is text, never markup ----------------------------------------------------


IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"


def test_markup_in_output_and_command_is_shown_as_text(notebook):
    server = notebook.server
    # The payloads are in the command (shown in the title) and in its stdout and stderr.
    server.write_notebook("xss.ipynb", [f"%oneshot echo '{IMG}'; echo '{SCRIPT}' >&2"])
    notebook.open("xss.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect_widget(output)
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    log = output.locator(".oneshot-log")
    expect(log).to_contain_text(IMG)
    expect(log).to_contain_text(SCRIPT)
    expect(output.locator(".oneshot-title")).to_contain_text(IMG)
    expect(output.locator(".oneshot-task img")).to_have_count(0)
    expect(output.locator(".oneshot-task script")).to_have_count(0)
    # How long a broken <img> takes to fire onerror in this page, as a yardstick for
    # how long to watch that the payload did not.
    control = notebook.page.evaluate(
        """() => new Promise(resolve => {
          const t = performance.now();
          const div = document.createElement('div');
          div.innerHTML = '<img src=x-control onerror="window.__control=1">';
          div.querySelector('img').addEventListener('error', () => {
            div.remove(); resolve(performance.now() - t); });
          document.body.appendChild(div);
        })"""
    )
    watch = max(1000, 10 * control)
    with pytest.raises(PlaywrightError):
        notebook.page.wait_for_function("() => window.__pwned !== undefined", timeout=watch)
    print(f"\nmarkup: a broken <img> fires onerror in {control:.0f} ms; watched {watch:.0f} ms")
    assert notebook.page.evaluate("() => window.__pwned") is None


# -- 6. a carriage-return progress bar --------------------------------------------------


def test_progress_bar_overwrites_its_line(notebook):
    server = notebook.server
    server.write_script(
        "progress.py",
        r"""
        import sys, time
        for i in range(1, 101):
            sys.stdout.write(f"\r{i}%")
            sys.stdout.flush()
            time.sleep(0.01)
        sys.stdout.write("\n")
        print("done")
        """,
    )
    server.write_notebook("progress.ipynb", ["%oneshot --name download python -u progress.py"])
    notebook.open("progress.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect_widget(output)
    record(output, f"return {{lines: {LINES}}};")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    expect(output.locator(".oneshot-log")).to_contain_text("done")
    assert log_lines(output) == ["100%", "done"]
    shown = [r["lines"] for r in records(notebook.page)]
    assert max(len(lines) for lines in shown) <= 2, shown
    progress = {lines[0] for lines in shown if lines and lines[0].endswith("%")}
    assert len(progress) >= 2, f"the bar never moved in place: {shown}"


# -- 7. a flood of output ---------------------------------------------------------------


PROBE = """\
import ipywidgets as widgets
clicks = 0
label = widgets.Label("not clicked")
label.add_class("probe-label")
button = widgets.Button(description="Ping")
button.add_class("probe-button")

def on_click(_):
    global clicks
    clicks += 1
    label.value = f"clicked {clicks}"

button.on_click(on_click)
widgets.HBox([button, label])
"""


def test_flood_keeps_the_page_responsive_and_shows_the_tail(notebook):
    server = notebook.server
    server.write_script(
        "flood.py",
        """
        import sys, time
        for burst in range(20):
            sys.stdout.write("".join(f"line {burst * 5000 + i}\\n" for i in range(5000)))
            sys.stdout.flush()
            time.sleep(0.1)
        """,
    )
    server.write_notebook("flood.ipynb", [PROBE, "%oneshot --name flood python -u flood.py"])
    notebook.open("flood.ipynb")
    notebook.run(1)
    page = notebook.page
    button = notebook.output(1).locator(".probe-button")
    label = notebook.output(1).locator(".probe-label")
    expect(button).to_be_visible()
    page.evaluate(
        """([button, label]) => {
          window.__clicks = [];
          button.addEventListener('click', () => {
            window.__clicks.push({click: performance.now()}); }, {capture: true});
          new MutationObserver(() => {
            const last = window.__clicks.at(-1);
            if (last && !last.shown && label.textContent === `clicked ${window.__clicks.length}`) {
              last.shown = performance.now();
              last.state = document.querySelector('.oneshot-badge')?.dataset.state;
            }
          }).observe(label, {subtree: true, childList: true, characterData: true});
        }""",
        [button.element_handle(), label.element_handle()],
    )
    notebook.run(2, wait=False)
    output = notebook.output(2)
    expect(badge(output)).to_have_attribute("data-state", "RUNNING")
    # Click while the output pours in, each time waiting to see the kernel's answer.
    n = 0
    while badge(output).get_attribute("data-state") != "COMPLETED" or n == 0:
        n += 1
        button.click()
        expect(label).to_have_text(f"clicked {n}")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    clicks = page.evaluate("() => window.__clicks")
    latencies = [(c["shown"] - c["click"]) / 1000 for c in clicks]
    during = [lat for lat, c in zip(latencies, clicks, strict=True) if c["state"] != "COMPLETED"]
    print(
        f"\nflood: {len(latencies)} clicks, {len(during)} during the flood; latency max "
        f"{max(latencies):.3f}s, all {[round(x, 3) for x in latencies]}"
    )
    assert during, "no click landed while the command was writing"
    assert max(latencies) < 1.0, latencies

    log = output.locator(".oneshot-log")
    expect(log).to_contain_text("line 99999")
    lines = log_lines(output)
    assert lines[-1] == "line 99999"
    assert len(lines) <= 1000, f"{len(lines)} lines sent to the page"
    note = output.locator(".oneshot-hidden")
    expect(note).to_have_text(re.compile(r"\d+ earlier lines not shown"))
    hidden = int(re.match(r"\d+", note.inner_text()).group(0))
    assert hidden + len(lines) == 100_000, (hidden, len(lines))


# -- the log follows its newest line ----------------------------------------------------

# The newest line of a log and whether it is inside the log's scroll box, as the user
# would see it: in the DOM is not enough when the box shows its top.
NEWEST_IN_VIEW = """
log => {
  const pre = [...log.querySelectorAll('pre')].at(-1);
  const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
  let node, last;
  while ((node = walker.nextNode())) if (node.textContent.trim()) last = node;
  const text = last.textContent.replace(/\\n$/, '');
  const range = document.createRange();
  range.setStart(last, text.lastIndexOf('\\n') + 1);
  range.setEnd(last, text.length);
  const line = range.getBoundingClientRect();
  const box = log.getBoundingClientRect();
  return {
    newest: range.toString(),
    inView: line.top >= box.top - 1 && line.bottom <= box.bottom + 1,
    line: [line.top, line.bottom], box: [box.top, box.bottom], scrollTop: log.scrollTop,
  };
}
"""


def test_log_keeps_its_newest_line_in_view(notebook):
    server = notebook.server
    server.write_script(
        "chatty.py",
        """
        import time
        for i in range(60):
            print(f"step {i}", flush=True)
            time.sleep(0.01)
        time.sleep(2)
        print("finished")
        """,
    )
    server.write_notebook("follow.ipynb", ["%oneshot --name chatty python -u chatty.py"])
    notebook.open("follow.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect_widget(output)
    log = output.locator(".oneshot-log")
    # More lines than the box holds, while the task still runs.
    expect(log).to_contain_text("step 59")
    expect(badge(output)).to_have_attribute("data-state", "RUNNING")
    view = log.evaluate(NEWEST_IN_VIEW)
    assert view["newest"] == "step 59"
    assert view["inView"], f"the newest line is scrolled out of the log's view: {view}"
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    view = log.evaluate(NEWEST_IN_VIEW)
    assert view["newest"] == "finished"
    assert view["inView"], f"the newest line is scrolled out of the log's view: {view}"


# -- a long command does not crush the header -------------------------------------------


# In each header line (task view, table rows): buttons whose label is cut (an ellipsis
# in place of "Stop"), infos that wrap, items whose content spills out of their box, and
# items drawn over their neighbour.
CRUSHED = """
root => {
  const found = {buttons: [], infos: [], spilled: [], overlapping: []};
  const name = el => el.textContent.trim().slice(0, 30);
  for (const b of root.querySelectorAll('button')) {
    if (b.scrollWidth > b.clientWidth + 1) found.buttons.push(name(b));
  }
  for (const e of root.querySelectorAll('.oneshot-info')) {
    if (e.getClientRects().length > 1) found.infos.push(name(e));
  }
  const lines = root.querySelectorAll('.oneshot-task > .widget-hbox, .oneshot-row > .widget-hbox');
  for (const line of lines) {
    const items = [...line.children].filter(k => k.getBoundingClientRect().width > 0);
    items.forEach((item, i) => {
      if (item.scrollWidth > item.clientWidth + 1) found.spilled.push(name(item));
      const prev = items[i - 1];
      if (prev && item.getBoundingClientRect().left < prev.getBoundingClientRect().right - 1) {
        found.overlapping.push(name(item));
      }
    });
  }
  return found;
}
"""


def test_long_command_leaves_buttons_and_info_whole(notebook):
    server = notebook.server
    command = "echo " + " ".join(f"--option-{i}=value-{i}" for i in range(16))
    server.write_notebook("long.ipynb", [f"%oneshot {command}", "%oneshot_tasks"])
    notebook.open("long.ipynb")
    notebook.run(1)
    notebook.run(2)
    task, table = notebook.output(1), notebook.output(2)
    expect_widget(task)
    expect_widget(table)
    expect(badge(task)).to_have_attribute("data-state", "COMPLETED")
    expect(badge(table)).to_have_attribute("data-state", "COMPLETED")
    for output in (task, table):
        crushed = output.evaluate(CRUSHED)
        assert not any(crushed.values()), f"squeezed by the long title: {crushed}"
