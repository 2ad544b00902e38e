"""A table of many tasks in JupyterLab, in a real Chromium: a page of rows, and more on a
click of its "Show more" button (see tests/browser/test_browser.py for the set-up)."""

from __future__ import annotations

import itertools

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture fails every test with the install command
    expect = None  # type: ignore[assignment]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_batch_shows_a_page_of_rows_and_the_rest_on_a_click(notebook):
    jobs = "\n".join(f"echo job {n}" for n in range(60))
    notebook.server.write_notebook("page.ipynb", [f"%%oneshot_parallel --limit 8\n{jobs}"])
    notebook.open("page.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    expect(output.locator(".oneshot-table")).to_be_visible()
    completed = output.locator('.oneshot-count[data-state="COMPLETED"]')
    expect(completed).to_have_text("COMPLETED 60", timeout=30_000)
    rows = output.locator(".oneshot-row")
    expect(rows).to_have_count(50)
    expect(output).to_contain_text("the first 50 of 60 tasks")
    expect(output.locator("button", has_text="Stop all")).to_be_disabled()
    more = output.locator("button", has_text="Show 10 more")
    more.click()
    expect(rows).to_have_count(60)
    expect(more).to_be_hidden()
    expect(rows.nth(59)).to_contain_text("echo job 59")
    rows.first.locator("button", has_text="Log").click()
    expect(rows.first.locator(".oneshot-log")).to_have_text("job 0")
    # Each row is one line: its text gives way to its buttons, nothing spills or wraps.
    line = rows.first.locator(".widget-hbox").first
    boxes = line.evaluate(
        "line => [...line.children].map(k => { const r = k.getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
        " spill: k.scrollWidth > k.clientWidth + 1}; })"
    )
    assert len(boxes) == 3 and not any(box["spill"] for box in boxes), boxes
    assert all(a["right"] <= b["left"] + 1 for a, b in itertools.pairwise(boxes)), boxes
    info = rows.first.locator(".oneshot-info")
    assert info.evaluate("e => e.getClientRects().length") == 1
