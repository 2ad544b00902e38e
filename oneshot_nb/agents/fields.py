"""Reading the fields of an agent's event: every value is checked, none is trusted.

An event is whatever JSON the CLI printed: a field may be missing, of another type, a
huge number or NaN. These helpers return None for anything unusable, so the parsers
never raise on odd input and the summary only ever holds plain, bounded values.
"""

from __future__ import annotations

import re

# Larger counts are garbage, not usage: they would also overflow float formatting.
MAX_COUNT = 10**15
# Text is cut to this many characters before its whitespace is collapsed, so a 1 MB
# message costs a slice, not a split of the whole text.
RAW_TEXT_FACTOR = 8
# C0 controls and DEL (ANSI escapes, NUL) become spaces: a view shows plain text.
# C0 and C1 controls (an escape sequence may start with either) and the marks that
# reorder text on screen (bidi overrides and isolates): a message is shown, not obeyed.
_CONTROLS = dict.fromkeys(
    [
        *range(0x20),
        *range(0x7F, 0xA0),
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ],
    " ",
)
# The ids (messages, tool calls) a parser remembers to count each once: a long session's
# oldest are let go, so that its memory stays bounded.
KEEP_IDS = 4096
# The shell wrapper Codex puts around a command: `bash -lc 'pytest -q'`.
_SHELL_WRAPPER = re.compile(r"(?:\S*/)?(?:bash|zsh|sh) -lc (.+)", re.DOTALL)
# Parameters that name what a tool works on, most telling first (Bash/shell: command;
# Read/Edit/Write: file_path; Grep/Glob: pattern; Gemini's read_file: absolute_path).
ARGUMENT_KEYS = (
    "command",
    "file_path",
    "absolute_path",
    "notebook_path",
    "pattern",
    "query",
    "url",
    "path",
    "dir_path",
    "description",
    "prompt",
)
TOOL_NAME_CHARS = 60
TOOL_ARGUMENT_CHARS = 60


def as_str(value: object) -> str | None:
    """The value if it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def as_count(value: object) -> int | None:
    """A non-negative integer below MAX_COUNT; booleans and floats are not counts."""
    if type(value) is int and 0 <= value < MAX_COUNT:
        return value
    return None


def as_amount(value: object) -> float | None:
    """A finite non-negative number below MAX_COUNT, as a float."""
    if type(value) not in (int, float):
        return None
    number = float(value)  # type: ignore[arg-type]
    if 0 <= number < MAX_COUNT:  # NaN and the infinities fail it too
        return number
    return None


def seconds(milliseconds: object) -> float | None:
    """Milliseconds as seconds. Zero is unknown: Gemini reports 0 when it failed early."""
    number = as_amount(milliseconds)
    return number / 1000 if number else None


def token_sum(usage: object, keys: tuple[str, ...]) -> int | None:
    """The sum of the usage fields that are counts; None when none of them is."""
    if not isinstance(usage, dict):
        return None
    counts = [as_count(usage.get(key)) for key in keys]
    present = [count for count in counts if count is not None]
    return sum(present) if present else None


def remember(seen: dict, key: object, value: object = None) -> bool:
    """Note `key` (with `value`) in `seen`, the newest KEEP_IDS kept; whether it is new."""
    new = key not in seen
    seen[key] = value
    if len(seen) > KEEP_IDS:
        del seen[next(iter(seen))]
    return new


def one_line(value: object, limit: int) -> str | None:
    """Text on one line: whitespace collapsed, controls dropped, at most `limit`
    characters with … when cut. None for anything that is not text, or is blank."""
    if not isinstance(value, str):
        return None
    raw = value[: limit * RAW_TEXT_FACTOR]
    text = " ".join(raw.translate(_CONTROLS).split())
    if len(text) > limit or (len(raw) < len(value) and text):
        text = text[: limit - 1].rstrip() + "…"
    if not text:
        return None
    # JSON may carry lone surrogates ("\ud83d"): they cannot be encoded to UTF-8 later,
    # by the database or the widget.
    return text.encode("utf-8", "replace").decode("utf-8")


def tool_label(name: object, arguments: object) -> str | None:
    """ "Name: argument" for a tool call, the argument being what the tool works on (see
    ARGUMENT_KEYS), else its first string parameter. None without a name."""
    label = one_line(name, TOOL_NAME_CHARS)
    if label is None:
        return None
    argument = one_line(_main_argument(arguments), TOOL_ARGUMENT_CHARS)
    return f"{label}: {argument}" if argument else label


def unwrap_shell(command: str) -> str:
    """The command inside Codex's `bash -lc '...'` wrapper, or the command as given."""
    match = _SHELL_WRAPPER.fullmatch(command.strip())
    if match is None:
        return command
    inner = match.group(1)
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        inner = inner[1:-1]
    return inner


def _main_argument(arguments: object) -> str | None:
    if not isinstance(arguments, dict):
        return None
    for key in ARGUMENT_KEYS:
        value = as_str(arguments.get(key))
        if value is not None and value.strip():
            return value
    for value in arguments.values():
        if isinstance(value, str) and value.strip():
            return value
    return None
