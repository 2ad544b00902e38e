"""Parsing the magics' arguments: the options they share, the options before a verbatim
command, and values."""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from ..agents import AGENT_KINDS
from ..engine.options import RETRY_ON

F = TypeVar("F", bound=Callable[..., Any])


def seconds(text: str) -> float:
    """argparse type: a number of seconds greater than 0, or inf for never."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0 (inf: never), got {text!r}"
        )
    return value


def grace_seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more (a grace must end)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def task_options(magic: F) -> F:
    """Declare the options of every magic that starts tasks (--idle, --timeout,
    --grace, --pty, --cols, --rows, --stdin, --agent, --cluster, --quiet) once, as
    IPython's `script_args` does: used among a magic's @argument lines, it adds them
    there, in this order."""
    shared = [
        argument("--idle", type=seconds, metavar="SECONDS", help="Silence before IDLE."),
        argument("--timeout", type=seconds, metavar="SECONDS", help="Stop a task after this long."),
        argument("--grace", type=grace_seconds, metavar="SECONDS", help="SIGTERM to SIGKILL."),
        argument("--pty", action="store_true", help="Run in a terminal (takes input too)."),
        argument("--cols", type=terminal_size, metavar="N", help="The terminal's width (120)."),
        argument("--rows", type=terminal_size, metavar="N", help="The terminal's height (30)."),
        argument("--stdin", action="store_true", help="Take input (%%oneshot_send) on a pipe."),
        argument(
            "--agent",
            choices=AGENT_KINDS,
            help="Show an agent CLI's JSON stream as progress: auto, claude, gemini, codex.",
        ),
        argument(
            "--cluster",
            metavar="SPEC",
            help="Run on Dask workers: local:N, or a scheduler's tcp://host:port"
            " ('none': on this machine, whatever %%config says).",
        ),
        argument("--retries", type=retry_count, metavar="N", help="Run a failed task again."),
        argument(
            "--retry-delay",
            type=grace_seconds,
            metavar="SECONDS",
            help="Before the first retry (1), doubled for each next.",
        ),
        argument("--retry-on", choices=RETRY_ON, help="Also retry a failed spawn."),
        argument("--after", metavar="ID|NAME[,...]", help="Run once these tasks have COMPLETED."),
        argument("--quiet", action="store_true", help="Show no view."),
    ]
    for option in reversed(shared):
        magic = option(magic)
    return magic


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options of `task_options` that were given, by the engine's names."""
    if (args.cols is not None or args.rows is not None) and not args.pty:
        raise UsageError("--cols and --rows size a terminal: give --pty too")
    if (args.pty or args.stdin) and args.cluster not in (None, "none"):
        # Said before a cluster is started for a task that could not run on it.
        raise UsageError(
            "--pty and --stdin run on this machine only: a Dask worker cannot give a task"
            " a terminal or input"
        )
    given = {
        "idle_after": args.idle,
        "timeout": args.timeout,
        "grace": args.grace,
        "pty": args.pty or None,
        "cols": args.cols,
        "rows": args.rows,
        "stdin": args.stdin or None,
        "agent": args.agent,
        "retries": args.retries,
        "retry_delay": args.retry_delay,
        "retry_on": args.retry_on,
    }
    return {key: value for key, value in given.items() if value is not None}


def retry_count(text: str) -> int:
    """argparse type: how many retries, 0 to 1000 (ASCII digits)."""
    try:
        value = int(text) if text.isascii() else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 0 to 1000 retries, got {text!r}")
    return value


# A batch line's own prefix: its name, and the lines it runs after ("test after build,
# lint: make test"). Only a word (no spaces) then a colon and a space: a command such as
# "echo a:b" or "http://..." is no prefix.
_LINE_PREFIX = re.compile(
    r"(?P<name>[A-Za-z_][\w.-]*)?(?:\s*\bafter\s+(?P<after>[\w.-]+(?:\s*,\s*[\w.-]+)*))?:\s+(?P<command>\S.*)"
)


# What starts like a prefix (a word, maybe "after ...", then a colon and a space or the
# end): a line that does and is not one is refused, not run as a command.
_LOOKS_LIKE_PREFIX = re.compile(r"[A-Za-z_][\w.-]*(?:\s+after\b[^:]*)?:(?:\s|$)")


def batch_line(text: str) -> tuple[str, str | None, list[str]]:
    """A line of %%oneshot_parallel: its command, its name (None: the command's), and
    the names of the lines it runs after. UsageError for a line that starts like a
    prefix and is not one (`a after b c: x`, `a after : x`, `a:` with no command)."""
    found = _LINE_PREFIX.fullmatch(text)
    if found is None or not (found["name"] or found["after"]):
        if _LOOKS_LIKE_PREFIX.match(text):
            raise UsageError(
                f"cannot read the line {text!r:.60}: write 'NAME: COMMAND' or"
                " 'NAME after OTHER, ...: COMMAND'"
            )
        return text, None, []
    after = [name.strip() for name in (found["after"] or "").split(",") if name.strip()]
    return found["command"], found["name"], after


def terminal_size(text: str) -> int:
    """argparse type: a terminal's width or height, 1 to 1000 characters."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000 characters, got {text!r}")
    return value


def option_names(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """The options of `parser` that take a value, and those that do not (flags), each
    in the order they were declared."""
    # argparse lists its actions only in `_actions`; what the magic declares is there.
    options = [action for action in parser._actions if action.option_strings]
    values = [name for action in options if action.nargs != 0 for name in action.option_strings]
    flags = [name for action in options if action.nargs == 0 for name in action.option_strings]
    return values, flags


def option_words(options: str) -> list[str]:
    """The options part of a line as the shell would split it (quotes and backslashes
    taken away), so that `--name "my task"` names the task `my task`."""
    try:
        return shlex.split(options)
    except ValueError as exc:
        message = str(exc)
        raise UsageError(f"cannot read the arguments: {message[:1].lower()}{message[1:]}") from None


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


def split_command(line: str, parser: argparse.ArgumentParser) -> tuple[list[str], str]:
    """Split a %oneshot line into its option words (those `parser` declares) and the
    command, kept verbatim: the first word that is no option starts the command.

    Why not argparse on the whole line: it would take the command's own options
    (`sh -c '...'`) as the magic's and drop their quotes. A value option's words are
    joined as `--name=VALUE`, so that a value starting with '-' stays a value.
    """
    value_options, flag_options = option_names(parser)
    pos = 0
    words: list[str] = []
    while True:
        start = _skip_space(line, pos)
        if start >= len(line):
            return words, ""
        word, end = _read_word(line, start)
        if _unclosed(line, start, end):
            raise UsageError(f"cannot read the options: no closing quotation in {line[start:]!r}")
        if word == "--":
            return words, line[end:].strip()
        name = word.split("=", 1)[0]
        if name in flag_options or (name in value_options and "=" in word):
            words.append(word)
            pos = end
        elif name in value_options:
            value_start = _skip_space(line, end)
            if value_start >= len(line):
                raise UsageError(f"{name} needs a value")
            value, pos = _read_word(line, value_start)
            if value == "--":
                raise UsageError(f"{name} needs a value before the command, got '--'")
            if _unclosed(line, value_start, pos):
                raise UsageError(
                    f"cannot read the options: no closing quotation in {line[value_start:]!r}"
                )
            words.append(f"{name}={value}")
        elif word.startswith("-"):
            raise UsageError(
                f"unknown option {word!r}: options are {', '.join(value_options + flag_options)}"
                " and go before the command (use -- to start a command with '-')"
            )
        else:
            return words, line[start:].strip()


def first_word(text: str) -> tuple[str, str]:
    """The first shell word of `text` (quotes taken away) and the rest, verbatim."""
    start = _skip_space(text, 0)
    word, end = _read_word(text, start)
    if _unclosed(text, start, end):
        raise UsageError(f"cannot read the arguments: no closing quotation in {text[start:]!r}")
    return word, text[end:].lstrip()


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos].isspace():
        pos += 1
    return pos


def _unclosed(line: str, start: int, end: int) -> bool:
    """Whether the word at line[start:end] opens a quote it does not close."""
    try:
        shlex.split(line[start:end])
    except ValueError:
        return True
    return False


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
    """--cwd as an absolute path, checked now: a relative one is taken from the
    directory the kernel is in when the task is submitted."""
    if cwd is None:
        return None
    path = os.path.expanduser(cwd)
    if "\0" in path or not os.path.exists(path):
        raise UsageError(f"--cwd: no such directory: {cwd}")
    if not os.path.isdir(path):
        raise UsageError(f"--cwd: not a directory: {cwd}")
    try:
        return os.path.abspath(path)
    except OSError:  # relative, and the kernel's directory has been deleted
        raise UsageError(
            f"--cwd: {cwd} is relative and the kernel's directory no longer exists"
        ) from None
