"""Only oneshot_nb/runners/ signals processes or reads /proc: the engine and storage go
through a runner, so that one that runs commands elsewhere can stand in for it."""

from __future__ import annotations

import ast
from pathlib import Path

import oneshot_nb

SIGNALLING_CALLS = {("os", "killpg"), ("os", "kill"), ("signal", "pidfd_send_signal")}


def signalling_and_proc(source: str) -> list[tuple[int, str]]:
    """(line, what) for each os.killpg/os.kill/signal.pidfd_send_signal call (or
    import of those names) and each string constant starting with '/proc'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in SIGNALLING_CALLS
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "signal"):
            for alias in node.names:
                if (node.module, alias.name) in SIGNALLING_CALLS:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("/proc")
        ):
            found.append((node.lineno, repr(node.value)))
    return found


def test_the_scan_finds_signalling_and_proc_reading():
    """The scan below would pass vacuously if it found nothing anywhere."""
    source = (
        "import os, signal\nfrom os import killpg\nos.killpg(1, 9)\nos.kill(1, 0)\n"
        "signal.pidfd_send_signal(3, 9)\nopen(f'/proc/{pid}/stat')\n"
    )
    assert [what for _, what in signalling_and_proc(source)] == [
        "from os import killpg", "os.killpg", "os.kill", "signal.pidfd_send_signal", "'/proc/'"
    ]  # fmt: skip


def test_nothing_outside_the_runners_signals_processes_or_reads_proc():
    """Only oneshot_nb/runners/ sends signals or reads /proc: the engine and storage go
    through a runner, so that one that runs commands elsewhere can stand in for it.
    Lists each offender by file and line."""
    package = Path(oneshot_nb.__file__).parent
    runners = package / "runners"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if runners in path.parents:
            continue
        for line, what in signalling_and_proc(path.read_text()):
            offenders.append(f"{path.relative_to(package.parent)}:{line}: {what}")
    assert offenders == []
    inside = [
        what for path in runners.rglob("*.py") for _, what in signalling_and_proc(path.read_text())
    ]
    assert "os.killpg" in inside  # the scan sees the runners' own
