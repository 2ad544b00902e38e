"""Parsing the magics' arguments: the options before a verbatim command, and values."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from IPython.core.error import UsageError

# Options of %oneshot that take a value, and those that do not. The first word that is
# neither starts the command, which is kept exactly as typed.
VALUE_OPTIONS = ("--name", "--idle", "--timeout", "--grace", "--cwd", "--env")
FLAG_OPTIONS = ("--quiet",)


def seconds(text: str) -> float:
    """argparse type: a number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected seconds greater than 0, got {text!r}")
    return value


def seconds_or_zero(text: str) -> float:
    """argparse type: a number of seconds, 0 or more."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return seconds(text)


def option_words(options: str) -> list[str]:
    """The options part of a line as the shell would split it (quotes and backslashes
    taken away), so that `--name "my task"` names the task `my task`."""
    try:
        return shlex.split(options)
    except ValueError as exc:
        raise UsageError(f"cannot read the options: {exc}") from None


def parse_args(magic: Any, line: str) -> argparse.Namespace:
    """The arguments of a magic declared with @magic_arguments, read with the shell's
    rules (quotes and backslashes), as %oneshot reads its options. Every parse error is
    one UsageError line.

    Why not IPython's parse_argstring: it keeps the quotes around a quoted word, so
    `%oneshot_stop "my task"` would look for a task named with the quotes.
    """
    return magic.parser.parse_args(option_words(line))


def whole_number(text: str) -> int:
    """argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def split_command(line: str) -> tuple[str, str]:
    """Split a %oneshot line into its options and the command, kept verbatim.

    Why not argparse on the whole line: it would take the command's own options
    (`sh -c '...'`) as the magic's and drop their quotes.
    """
    pos = 0
    while True:
        start = _skip_space(line, pos)
        if start >= len(line):
            return line, ""
        word, end = _read_word(line, start)
        if word == "--":
            return line[:start], line[end:].strip()
        name = word.split("=", 1)[0]
        if name in FLAG_OPTIONS or (name in VALUE_OPTIONS and "=" in word):
            pos = end
        elif name in VALUE_OPTIONS:
            value_start = _skip_space(line, end)
            if value_start >= len(line):
                raise UsageError(f"{name} needs a value")
            pos = _read_word(line, value_start)[1]
        elif word.startswith("-"):
            raise UsageError(
                f"unknown option {word!r}: options are {', '.join(VALUE_OPTIONS + FLAG_OPTIONS)}"
                " and go before the command (use -- to start a command with '-')"
            )
        else:
            return line[:start], line[start:].strip()


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos].isspace():
        pos += 1
    return pos


def _read_word(line: str, pos: int) -> tuple[str, int]:
    """One shell word from `pos`: its text without quotes, and where it ends."""
    word = []
    quote = None
    while pos < len(line):
        char = line[pos]
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"' and pos + 1 < len(line):
                pos += 1
                word.append(line[pos])
            else:
                word.append(char)
        elif char in "'\"":
            quote = char
        elif char == "\\" and pos + 1 < len(line):
            pos += 1
            word.append(line[pos])
        elif char.isspace():
            break
        else:
            word.append(char)
        pos += 1
    return "".join(word), pos


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise UsageError(f"--env takes KEY=VALUE with a variable name as KEY, got {pair!r}")
        env[key] = value
    return env


def check_cwd(cwd: str | None) -> str | None:
    if cwd is None:
        return None
    path = os.path.expanduser(cwd)
    if not os.path.isdir(path):
        raise UsageError(f"--cwd: no such directory: {cwd}")
    return path
