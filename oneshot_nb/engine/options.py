"""What a task is given: its command, and its options, checked once.

Each check raises TypeError for a value of the wrong type and ValueError for a value out
of range, both naming the argument, and changes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ..agents import check_agent

Command = str | Sequence[str]

DEFAULT_IDLE_AFTER = 10.0
DEFAULT_GRACE = 5.0
DEFAULT_MAX_LOG_BYTES = 1 << 20
# A terminal that fits a notebook's log: wide enough for a test runner's lines, and a
# full-screen program (out of scope) at least draws in a familiar size.
DEFAULT_RETRY_DELAY = 1.0
# A retry waits twice as long as the one before, up to this (or the first delay, if
# longer): a command that keeps failing is not hammered, nor left for hours.
RETRY_DELAY_CAP = 60.0
MAX_RETRY_DELAY = 86400.0
# What may be retried beyond a failed command (--retry-on): a spawn that failed.
RETRY_ON = ("spawn",)
DEFAULT_COLS = 120
DEFAULT_ROWS = 30
_NO_ENV: Mapping[str, str] = MappingProxyType({})
# An option left out of a call: its value comes from a TaskOptions. (None is a value:
# timeout=None means never.)
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """How a task runs, checked once when made; shared by the orchestrator (its
    defaults), a batch (one for all its tasks), the magics and each task.

    `idle_after` and `timeout` take None or inf for never (both kept as None). `cwd`
    is made absolute when given; None means the directory current at submit. `env`
    holds the variables added to the kernel's environment, read-only.

    `pty` gives the command a pseudo-terminal of `cols` x `rows` for its stdin, stdout
    and stderr (one stream, reported as stdout); `stdin` gives it a pipe to read input
    from instead of the closed stdin it gets otherwise (a pty task takes input too).
    `agent` ("auto", "claude", "gemini", "codex") reads its output as that agent CLI's
    stream of JSON events and keeps a summary of its progress.

    `retries` runs a command that fails again, up to that many more times, after
    `retry_delay` seconds, doubled for each retry up to RETRY_DELAY_CAP. A stop or a
    timeout is never retried; a spawn that fails only if `retry_on` has "spawn".

    The default `idle_after` of 10 s is long enough that a compiler or a training loop
    between log lines is not called idle, short enough that a hung agent shows soon.
    The default `grace` of 5 s gives a process time to flush and clean up after SIGTERM.
    """

    name: str | None = None
    idle_after: float | None = DEFAULT_IDLE_AFTER
    timeout: float | None = None
    grace: float = DEFAULT_GRACE
    cwd: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: _NO_ENV)
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    pty: bool = False
    cols: int = DEFAULT_COLS
    rows: int = DEFAULT_ROWS
    stdin: bool = False
    agent: str | None = None
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    retry_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name)
        check_options(self.idle_after, self.timeout, self.grace, self.max_log_bytes)
        check_flag("pty", self.pty)
        check_flag("stdin", self.stdin)
        check_size("cols", self.cols)
        check_size("rows", self.rows)
        check_agent(self.agent)
        check_retries(self.retries)
        _check_seconds("retry_delay", self.retry_delay, zero_ok=True)
        if self.retry_delay > MAX_RETRY_DELAY:
            raise ValueError(f"retry_delay must be at most a day, got {self.retry_delay!r}")
        object.__setattr__(self, "retry_delay", float(self.retry_delay) + 0.0)  # not -0.0
        object.__setattr__(self, "retry_on", check_retry_on(self.retry_on))
        put = object.__setattr__  # frozen: the checked forms replace what was given
        put(self, "idle_after", _never_as_none(self.idle_after))
        put(self, "timeout", _never_as_none(self.timeout))
        put(self, "grace", float(self.grace))
        if self.cwd is not None:
            put(self, "cwd", check_cwd(self.cwd))
        if self.env is not _NO_ENV:
            env = check_env(self.env)  # None: no variables
            put(self, "env", MappingProxyType(env) if env else _NO_ENV)

    def replace(self, **changes: Any) -> TaskOptions:
        """A copy with `changes`, checked as a new one is (an unknown name: TypeError)."""
        return dataclasses.replace(self, **changes) if changes else self


def with_changes(options: Any, changes: dict[str, Any]) -> TaskOptions:
    """`options` (None: the defaults) with `changes` (UNSET values left out), checked."""
    if options is None:
        options = _DEFAULTS
    elif not isinstance(options, TaskOptions):
        raise TypeError(f"options must be a TaskOptions, got {type(options).__name__}")
    return options.replace(**{key: value for key, value in changes.items() if value is not UNSET})


def check_runner(runner: Any) -> Any:
    """A runner: anything with a `name` and a `start` method (see runners/base.py). A
    class given for an instance is refused too: its `start` would not be bound. The
    name goes into every history row of its tasks: a short line of text."""
    start = getattr(runner, "start", None)
    if isinstance(runner, type) or not callable(start):
        raise TypeError(
            f"runner must be a runner (with a name and a start method), got {runner!r:.80}"
        )
    name = getattr(runner, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"a runner's name must be a str, got {type(name).__name__}")
    if not name or len(name) > 100 or not name.isprintable():
        raise ValueError(f"a runner's name must be 1 to 100 printable characters, got {name!r:.60}")
    return runner


def check_features(runner: Any, options: TaskOptions) -> None:
    """Refuse, in one line, options that `runner` cannot give a task (a terminal, input),
    as its `features` say; a runner without them gives neither."""
    asked = [name for name in ("pty", "stdin") if getattr(options, name)]
    if asked:
        missing = [name for name in asked if name not in getattr(runner, "features", ())]
        if missing:
            raise ValueError(
                f"the {runner.name!r} runner cannot run a task with"
                f" {' or '.join(f'{name}=True' for name in missing)}: run it on this machine"
            )


OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(TaskOptions))


def _never_as_none(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == math.inf else float(seconds)


def default_name(command: Command) -> str:
    """The name a task gets when none is given: its command, shortened."""
    text = command if isinstance(command, str) else " ".join(command)
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"


def check_command(command: Any, argument: str = "command") -> Command:
    """A shell string, or an argv sequence of str (path-like arguments made str)."""
    if isinstance(command, str):
        if not command.strip():
            raise ValueError(f"{argument} must not be empty")
        if "\0" in command:
            raise ValueError(f"{argument} must not contain a NUL character")
        return command
    if isinstance(command, (bytes, bytearray)) or not isinstance(command, Sequence):
        raise TypeError(
            f"{argument} must be a str or a sequence of str, got {type(command).__name__}"
        )
    argv = [os.fspath(arg) if isinstance(arg, os.PathLike) else arg for arg in command]
    if not argv:
        raise ValueError(f"{argument} must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"{argument} arguments must be str, got {arg!r}")
        if "\0" in arg:
            raise ValueError(f"{argument} arguments must not contain a NUL character: {arg!r}")
    return argv


def check_commands(commands: Any) -> list[Command]:
    """The commands of a batch: a sequence of commands, not one command string."""
    if isinstance(commands, (str, bytes, bytearray)) or not isinstance(commands, Sequence):
        raise TypeError(
            f"commands must be a list of commands (str or argv), got {type(commands).__name__}"
        )
    if not commands:
        raise ValueError("commands must not be empty")
    return [check_command(command, f"commands[{i}]") for i, command in enumerate(commands)]


def check_name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name.strip():
        raise ValueError("name must not be empty (leave it out for the command's own)")
    if "\0" in name:
        raise ValueError("name must not contain a NUL character")
    return name


def check_cwd(cwd: Any) -> str | None:
    """The directory to run in, made absolute now: a task runs where it was submitted,
    whatever the kernel's directory is by the time it gets a slot. None: the current
    directory (None still, when that has been deleted: the command then inherits it)."""
    if cwd is None:
        try:
            return os.getcwd()
        except OSError:
            return None
    if isinstance(cwd, (bytes, bytearray)):
        cwd = os.fsdecode(bytes(cwd))  # lossless: undecodable bytes become surrogates
    if not isinstance(cwd, (str, os.PathLike)):
        raise TypeError(f"cwd must be a str or a path, got {type(cwd).__name__}")
    path = os.fspath(cwd)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("cwd must not be empty")
    if "\0" in path:
        raise ValueError("cwd must not contain a NUL character")
    try:
        return os.path.abspath(path)
    except OSError:  # relative, and the current directory has been deleted
        raise ValueError(
            f"cwd {path!r} is relative and the current directory no longer exists"
        ) from None


def check_options(idle_after: Any, timeout: Any, grace: Any, max_log_bytes: Any) -> None:
    """Raise naming the first option that is out of range.

    `idle_after` and `timeout` may be None or inf: never. `grace` must be finite: an
    infinite grace would leave a process that ignores SIGTERM running for ever.
    """
    _check_seconds("idle_after", idle_after, never_ok=True)
    _check_seconds("timeout", timeout, never_ok=True)
    _check_seconds("grace", grace, zero_ok=True)
    _check_max_log_bytes(max_log_bytes)


def _check_seconds(name: str, value: Any, *, never_ok: bool = False, zero_ok: bool = False) -> None:
    if value is None and never_ok:
        return
    if zero_ok:
        rule = "a finite number of seconds >= 0"
    else:
        rule = "a number of seconds > 0" + (" (None or inf: never)" if never_ok else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {rule}, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 1e308:  # float() of it would overflow
        raise ValueError(f"{name} must be {rule}, got an int of {len(str(abs(value)))} digits")
    valid = value >= 0 if zero_ok else value > 0  # False for nan
    if not valid or (math.isinf(value) and not never_ok):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _check_max_log_bytes(value: Any) -> None:
    rule = "a whole number of bytes >= 0"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_log_bytes must be {rule}, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_log_bytes must be {rule}, got {value!r}")


def check_retries(value: Any) -> int:
    """How many more times a failed command runs: 0 to 1000."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retries must be a whole number, got {type(value).__name__}")
    if not 0 <= value <= 1000:
        raise ValueError(f"retries must be 0 to 1000, got {value!r}")
    return value


def check_retry_on(value: Any) -> tuple[str, ...]:
    """What else is retried: names of RETRY_ON (a str is one name)."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list, frozenset, set)):
        raise TypeError(
            f"retry_on must be a name or names of {RETRY_ON}, got {type(value).__name__}"
        )
    for name in names:
        if name not in RETRY_ON:
            raise ValueError(f"retry_on takes {', '.join(RETRY_ON)}, got {name!r:.40}")
    return tuple(sorted(set(names)))


def retry_delay(first: float, retry: int) -> float:
    """The wait before retry number `retry` (1 for the first): `first`, doubled for
    each retry before it, at most RETRY_DELAY_CAP (or `first`, if longer)."""
    return min(first * 2 ** min(retry - 1, 64), max(first, RETRY_DELAY_CAP))


def check_size(name: str, value: Any) -> int:
    """A terminal's width or height: 1 to 1000 characters (a window size is 16 bits; a
    wider one only makes every line a program pads longer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of characters, got {type(value).__name__}")
    if not 1 <= value <= 1000:
        raise ValueError(f"{name} must be 1 to 1000 characters, got {value!r}")
    return value


def check_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, got {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"env keys and values must be str, got {key!r}: {value!r}")
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"env has an invalid variable name or value: {key!r}")
    return dict(env)


_environ: tuple[dict[bytes, bytes], Mapping[str, str]] | None = None


def environ_now() -> Mapping[str, str]:
    """The process's environment as it is now, never to be changed by the caller.

    One snapshot serves every task submitted while the environment stays the same: a
    copy per task took 20 µs and a few KiB, which 10,000 queued tasks feel. Comparing
    os.environ's own bytes with those of the snapshot costs a fraction of a µs.
    """
    global _environ
    raw: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)
    if raw is None:  # not CPython's os._Environ: no cheap way to tell it changed
        return dict(os.environ)
    if _environ is None or _environ[0] != raw:
        _environ = (dict(raw), dict(os.environ))
    return _environ[1]


def check_task_id(task_id: Any) -> str | None:
    if task_id is None:
        return None
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
    if not task_id or "\0" in task_id:
        raise ValueError(f"task_id must be a non-empty str without NUL, got {task_id!r}")
    return task_id


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


_DEFAULTS = TaskOptions()  # after the checks it runs are defined
