import re
from playwright.sync_api import expect
from test_terminal_browser import badge, log_text


def test_fast(notebook):
    command = """sh -c 'for n in 1 2 3 4 5; do read line; echo "line $n: $line"; done'"""
    notebook.server.write_notebook("fast.ipynb", [f"t = %oneshot --pty --idle 1 --name ask {command}"])
    notebook.open("fast.ipynb")
    notebook.run(1)
    output = notebook.output(1)
    box = output.locator(".oneshot-input").get_by_placeholder("input to the task")
    box.click()
    lines = [f"fast line {n} with some words" for n in range(1, 6)]
    for line in lines:
        box.press_sequentially(line)
        box.press("Enter")
    expect(badge(output)).to_have_attribute("data-state", "COMPLETED")
    said = [line for line in log_text(output).splitlines() if line.startswith(("line"))]
    assert said == [f"line {n}: {line}" for n, line in enumerate(lines, 1)]
