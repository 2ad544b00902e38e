"""A real ipykernel, driven the way a notebook drives it: one cell at a time through
jupyter_client, with the replies and outputs a frontend would see.

Start kernels with the `kernels` fixture (tests/conftest.py): it shuts down what a test
leaves running, and the tests that use it are marked `kernel`, which `make test-fast`
leaves out.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager, start_new_kernel

WIDGET = "application/vnd.jupyter.widget-view+json"


def text(messages: list[dict[str, Any]], name: str) -> str:
    """What the cells whose `messages` these are wrote to one stream."""
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


@dataclass
class Reply:
    """What a frontend sees of one executed cell."""

    status: str
    error: str = ""  # "Ename: evalue" when status is "error"
    traceback: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return text(self.messages, "stdout")

    @property
    def stderr(self) -> str:
        return text(self.messages, "stderr")

    @property
    def views(self) -> int:
        """How many widget views the cell displayed, as display data or as its result."""
        shown = [m for m in self.messages if m["msg_type"] in ("display_data", "execute_result")]
        return sum(1 for m in shown if WIDGET in m["content"]["data"])

    def value(self) -> Any:
        """The JSON the cell printed last."""
        return json.loads(self.stdout.strip().splitlines()[-1])


class Kernel:
    """A python3 kernel whose history database is `db` (":memory:": none). Cells are
    dedented, so that a test may indent them with its own code."""

    def __init__(self, *arguments: str, db: str = ":memory:", setup: str = "") -> None:
        env = {**os.environ, "ONESHOT_NB_DB": db}
        self.manager: KernelManager
        self.manager, self.client = start_new_kernel(
            startup_timeout=60, kernel_name="python3", extra_arguments=list(arguments), env=env
        )
        self._shut_down = False
        if setup:
            self.ok(setup)

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 60) -> Reply:
        """Run a cell and return what it showed, whether it raised or not."""
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(
            textwrap.dedent(code), timeout=timeout, output_hook=messages.append
        )
        content = reply["content"]
        result = Reply(content["status"], messages=messages)
        if content["status"] == "error":
            result.error = f"{content['ename']}: {content['evalue']}"
            result.traceback = "\n".join(content.get("traceback", []))
        return result

    def ok(self, code: str, timeout: float = 60) -> Reply:
        """Run a cell; fail the test if it raises."""
        reply = self.run(code, timeout)
        assert reply.status == "ok", f"{reply.error}\n{reply.stderr}\n{reply.traceback}"
        return reply

    def value(self, code: str, timeout: float = 60) -> Any:
        """Run a cell; the JSON it printed last."""
        return self.ok(code, timeout).value()

    def stdout(self, code: str, timeout: float = 60) -> str:
        """Run a cell; what it printed."""
        return self.ok(code, timeout).stdout

    def shutdown(self, now: bool = True) -> None:
        """Shut the kernel down (`now=False`: as a frontend asks, letting it stop its
        tasks); a second call does nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=now)
