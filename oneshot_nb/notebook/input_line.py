"""The line of input to a task as one widget whose page sends the text with the line.

A Text widget with Send beside it lost text: the page holds back a widget's state
updates while an earlier one still waits for the kernel's reply, but sends messages and
clicks at once, so a busy kernel (another cell running) or fast typing got Enter before
the last keys, "y" of "yes", and the late update could put sent text back in the box.
Here the page owns the text: Enter or Send sends it in the message itself and empties
the box there, so nothing the kernel does can race with the typing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget

# Plain DOM with the classes of ipywidgets' own Text and Button, so that it looks like
# them; no build step and nothing fetched: anywidget imports this text as a module.
ESM = """
function button(label, title, width) {
  const element = document.createElement("button");
  element.className = "jupyter-widgets jupyter-button widget-button";
  element.textContent = label;
  element.title = title;
  element.style.width = width;
  return element;
}

function render({ model, el }) {
  el.classList.add("oneshot-input-line");
  const box = document.createElement("div");
  box.className = "jupyter-widgets widget-inline-hbox widget-text";
  const input = document.createElement("input");
  input.type = "text";
  input.placeholder = "input to the task";
  box.append(input);
  const send = button("Send", "Send the line and a newline (Enter)", "70px");
  const eof = button("EOF", "End the task's input, as Ctrl-D in a terminal", "60px");
  const sendLine = () => {
    model.send({ event: "send", text: input.value });
    input.value = "";
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      sendLine();
    }
  });
  send.addEventListener("click", sendLine);
  eof.addEventListener("click", () => model.send({ event: "eof" }));
  model.on("msg:custom", (message) => {
    // Unless something new was typed since it was sent.
    if (message.event === "refused" && input.value === "") input.value = message.text;
  });
  el.append(box, send, eof);
}

export default { render };
"""

# The text box takes the room the buttons leave, as the Text widget's layout said.
CSS = """
.oneshot-input-line { display: flex; flex: 1 1 auto; align-items: center; gap: 8px;
  min-width: 0; margin: 0; }
.oneshot-input-line > .widget-text { flex: 1 1 auto; width: auto; min-width: 10em; }
.oneshot-input-line > .widget-button { flex: none; }
"""


class InputLine(anywidget.AnyWidget):
    """A text box, Send and EOF. The page sends `{"event": "send", "text": LINE}` on
    Enter or Send and `{"event": "eof"}` on EOF; they call `on_send(LINE)` and
    `on_eof()`. Without a page, `_handle_custom_msg(message, [])` does what it would."""

    _esm = ESM
    _css = CSS

    def __init__(
        self, on_send: Callable[[str], None], on_eof: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.on_send = on_send
        self.on_eof = on_eof
        self.on_msg(self._on_msg)

    def give_back(self, text: str) -> None:
        """Put a line the task refused back in the box, which the page emptied."""
        self.send({"event": "refused", "text": text})

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "send" and isinstance(content.get("text"), str):
            self.on_send(content["text"])
        elif content.get("event") == "eof":
            self.on_eof()
