"""Checking what a task is given: the command, the times, the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

Command = str | Sequence[str]


def default_name(command: Command) -> str:
    """The name a task gets when none is given: its command, shortened."""
    text = command if isinstance(command, str) else " ".join(command)
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"


def check_command(command: Command) -> Command:
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("command must not be empty")
        if "\0" in command:
            raise ValueError("command must not contain a NUL character")
        return command
    if isinstance(command, (bytes, bytearray)):
        raise ValueError("command must be a str or a sequence of str, not bytes")
    argv = [os.fspath(arg) if isinstance(arg, os.PathLike) else arg for arg in command]
    if not argv:
        raise ValueError("command must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise ValueError(f"command arguments must be str, got {arg!r}")
        if "\0" in arg:
            raise ValueError(f"command arguments must not contain a NUL character: {arg!r}")
    return argv


def check_options(
    idle_after: float | None, timeout: float | None, grace: float, max_log_bytes: int
) -> None:
    """Raise ValueError naming the first option that is out of range."""
    _check_seconds("idle_after", idle_after, optional=True)
    _check_seconds("timeout", timeout, optional=True)
    _check_seconds("grace", grace, allow_zero=True)
    _check_max_log_bytes(max_log_bytes)


def _check_seconds(
    name: str, value: float | None, *, optional: bool = False, allow_zero: bool = False
) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")


def _check_max_log_bytes(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_log_bytes must be a whole number of bytes >= 0, got {value!r}")


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a mapping of str to str, got {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"env keys and values must be str, got {key!r}: {value!r}")
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"env has an invalid variable name or value: {key!r}")
    return dict(env)
