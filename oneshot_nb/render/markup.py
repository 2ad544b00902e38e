"""What the views and the text tables say about a task, as strings: no widgets here.

Every value that comes from a task or from the history database (names, commands, ids,
reasons, errors, states) is escaped where it enters HTML: a database is data, not markup,
whoever wrote it.
"""

from __future__ import annotations

import html
import math
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..agents.summary import cost_text, duration_text, tokens_text
from ..engine.input import WAITING_FOR_INPUT
from ..engine.machine import TaskState
from ..engine.options import Command, default_name

if TYPE_CHECKING:
    from ..agents import AgentSummary
    from ..engine.task import OneshotTask
    from ..engine.usage import Usage

STATE_COLOURS = {
    TaskState.CREATED: "#616161",
    TaskState.RUNNING: "#1565c0",
    TaskState.IDLE: "#b26a00",
    TaskState.INTERRUPTED: "#6a1b9a",
    TaskState.COMPLETED: "#2e7d32",
    TaskState.FAILED: "#c62828",
}

# Layout the widgets' own properties cannot express: the log keeps its newest line in
# view, and a long command gives way (with an ellipsis) instead of crushing the buttons.
# A table row is one HTML widget (.oneshot-line) laid out by the same rules.
CSS = """<style>
.oneshot-log { display: flex; flex-direction: column-reverse; }
.oneshot-log > .jp-OutputArea { flex: none; }
.oneshot-head > * { flex: none; }
.oneshot-head > .oneshot-title-box { flex: 1 1 0; min-width: 0; overflow: hidden; }
.oneshot-title-box > .widget-html-content { min-width: 0; overflow: hidden; }
.oneshot-title { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.oneshot-badge { display: inline-block; min-width: 11ch; text-align: center; }
.oneshot-line { display: flex; align-items: center; gap: 8px; min-width: 0; width: 100%; }
.oneshot-line > * { flex: none; }
.oneshot-line > .oneshot-title { flex: 1 1 0; min-width: 0; }
.oneshot-info { white-space: nowrap; }
.oneshot-agent { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style>"""

PAGE_SIZE = 50  # rows a table shows at first, and how many more each "Show more" adds
TITLE_CHARS = 500  # of a command shown in a title; the tooltip holds a little more
NAME_CHARS = 200  # of a name shown in a title: a row is sent again on every tick
TOOLTIP_CHARS = 2000
TOOLTIP_LINES = 20  # of a task's attempts in a tooltip
AGENT_CHARS = 400  # of an agent's progress line: AgentSummary.line() is bounded, and this too


seconds_text = duration_text  # an elapsed time, as an agent's summary says its own


def state_badge(state: TaskState, extra: str = "") -> str:
    """A coloured label for a state; `extra` follows the state's name inside it."""
    value = html.escape(state.value)
    return (
        f'<span class="oneshot-badge oneshot-{value.lower()}" data-state="{value}"'
        f' style="background:{STATE_COLOURS[state]};color:white;padding:1px 7px;'
        f'border-radius:4px;font-weight:600;font-family:monospace;white-space:nowrap">'
        f"{value}{html.escape(extra)}</span>"
    )


def badge_html(task: OneshotTask) -> str:
    extra = f" · silent {seconds_text(task.silent_for)}" if task.state is TaskState.IDLE else ""
    return state_badge(task.state, extra)


def info_html(task: OneshotTask) -> str:
    """Elapsed time while it runs, and where when not on this machine; what it waits
    for or which attempt it is on; exit code and what the reason adds once it has ended;
    what it costs. A task that ran more than once has its attempts in the tooltip."""
    parts = [] if task.elapsed is None else [seconds_text(task.elapsed)]
    place = task.place
    if place is not None:
        parts += where(place.runner, place.host)
    parts += policy_parts(task)
    attempts = task.attempts
    if task.state.is_final:
        parts += outcome(task.returncode, task.reason, task.error) + attempts_parts(attempts)
    parts += usage_parts(task.usage, task.state)
    return info_span(parts, attempts_title(attempts))


def where(runner: str, host: str | None) -> list[str]:
    """Where a task ran, as an info part: only for another runner than this machine's
    ("on tcp://10.0.0.7:39211", a Dask worker)."""
    return [] if runner == "local" or not host else [f"on {host}"]


def why_ended(returncode: int | None, reason: str | None, error: str | None) -> str:
    """What the reason a task ended adds to its exit code, or "" when it adds nothing.

    "exit" says no more than the code; "signal" is said as the signal's name; a spawn
    error is followed by the error itself. Other reasons ("stopped", "timeout", "kernel
    died", "fail-fast", ...) are said as they are.
    """
    if reason == "signal" and returncode is not None and returncode < 0:
        said = f"killed by {signal_name(-returncode)}"
    elif reason in (None, "exit", "signal"):
        said = ""
    elif reason == "spawn error" and error:
        return f"spawn error: {error}"
    else:
        said = reason
    return " · ".join(part for part in (said, error) if part)


def outcome(returncode: int | None, reason: str | None, error: str | None) -> list[str]:
    """The exit code and what the reason adds to it, as the parts of an info line."""
    parts = [] if returncode is None else [f"exit code {returncode}"]
    why = why_ended(returncode, reason, error)
    return [*parts, why] if why else parts


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def info_span(parts: list[str], title: str = "") -> str:
    text = " · ".join(html.escape(part) for part in parts)
    tip = f' title="{html.escape(title, quote=True)}"' if title else ""
    return f'<span class="oneshot-info"{tip} style="color:#555">{text}</span>'


def command_text(command: Command) -> str:
    return command if isinstance(command, str) else " ".join(command)


def title_html(name: str, command: Command, task_id: str) -> str:
    """Name, command and id; the command once when the name is only its short form."""
    text = command_text(command)
    code = html.escape(shortened(text, TITLE_CHARS))
    if name == default_name(command):
        label = f"<code><b>{code}</b></code>"
    else:
        shown = html.escape(shortened(name, NAME_CHARS))
        label = f'<b>{shown}</b> <code style="color:#555">{code}</code>'
    return (
        f'<span class="oneshot-title" title="{html.escape(text[:TOOLTIP_CHARS], quote=True)}">'
        f'{label} <span style="color:#999">#{html.escape(task_id)}</span></span>'
    )


def shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def line_html(*parts: str) -> str:
    """Badge, title and info side by side: a table row's text as one HTML value."""
    return f'<div class="oneshot-line">{"".join(parts)}</div>'


def text_row(
    task_id: str,
    state: TaskState,
    name: str,
    returncode: int | None,
    reason: str | None,
    error: str | None,
    agent: AgentSummary | None = None,
    extra: Sequence[str] = (),
) -> str:
    """One line of a text table: id, state, name, exit code and what the reason adds,
    for an agent task its turns and cost after two spaces, and the `extra` parts (what
    it waits for, its attempts, what it cost) after two more.

    Control characters in the name (an ANSI escape, a newline) are shown escaped: a
    terminal would act on them, and a row must stay one line."""
    code = "" if returncode is None else f" exit {returncode}"
    why = why_ended(returncode, reason, error)
    brief = agent_brief(agent)
    more = " · ".join(extra)
    return (
        f"{task_id}  {state.value:<11} {printable(name)}{code}{' ' + why if why else ''}"
        f"{'  ' + printable(brief) if brief else ''}{'  ' + printable(more) if more else ''}"
    )


def task_text_row(task: OneshotTask) -> str:
    """A live task as a line of a text table (%oneshot_tasks): see text_row."""
    attempts = attempts_parts(task.attempts) if task.state.is_final else []
    extra = [*policy_parts(task), *attempts, *usage_parts(task.usage, task.state)]
    return text_row(
        task.id, task.state, task.name, task.returncode, task.reason, task.error, task.agent, extra
    )


def printable(text: str) -> str:
    """`text` with each character that is not printable shown as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- input and agents -------------------------------------------------------------------


def waiting_html(state: TaskState, reason: str | None) -> str:
    """The words "waiting for input" in the IDLE colour while a task is IDLE for that
    reason, else "" (a task reading its input is the one silence the user can end)."""
    if state is not TaskState.IDLE or reason != WAITING_FOR_INPUT:
        return ""
    colour = STATE_COLOURS[TaskState.IDLE]
    return (
        f'<span class="oneshot-waiting" style="color:{colour};white-space:nowrap">'
        f"{html.escape(reason)}</span>"
    )


def agent_html(agent: AgentSummary | None) -> str:
    """An agent task's progress line (AgentSummary.line()), one line cut with an
    ellipsis, green once it is done and red once it failed; "" while it says nothing."""
    if agent is None:
        return ""
    text = shortened(agent.line(), AGENT_CHARS)
    if not text:
        return ""
    result = agent.result
    if agent.error or (result is not None and not result.ok):
        colour = STATE_COLOURS[TaskState.FAILED]
    elif result is not None:
        colour = STATE_COLOURS[TaskState.COMPLETED]
    else:
        colour = "#555"
    return (
        f'<span class="oneshot-agent" data-agent="{html.escape(agent.kind, quote=True)}"'
        f' title="{html.escape(text, quote=True)}" style="color:{colour}">'
        f"{html.escape(text)}</span>"
    )


def agent_brief(agent: AgentSummary | None) -> str:
    """What a history row says of an agent run: "7 turns · $0.0412" (its tokens when it
    reports no cost); "" when it says nothing of either."""
    if agent is None:
        return ""
    turns = agent.turns if _is_count(agent.turns) else 0
    parts = [f"{turns} turn{'' if turns == 1 else 's'}"] if turns else []
    if _is_amount(agent.cost_usd):
        parts.append(cost_text(agent.cost_usd))
    elif _is_count(agent.tokens):
        parts.append(tokens_text(agent.tokens))
    return " · ".join(parts)


def agents_total(agents: Iterable[AgentSummary]) -> str:
    """The tokens and the cost of `agents` ("12.3k tokens · $0.0412"), each summed over
    those that report it; "" when none reports either."""
    tokens = cost = None
    for agent in agents:
        if _is_count(agent.tokens):
            tokens = (tokens or 0) + agent.tokens
        if _is_amount(agent.cost_usd):
            cost = (cost or 0.0) + agent.cost_usd
    parts = [] if tokens is None else [tokens_text(tokens)]
    return " · ".join(parts if cost is None else [*parts, cost_text(cost)])


# -- what a task costs, and its batch policies ------------------------------------------


def size_text(nbytes: int) -> str:
    """ "840 kB", "3.2 MB", "212 MB", "1.4 GB", "2.1 TB": decimal units, rounded as a
    glance wants."""
    if nbytes < 999_500:
        return f"{nbytes / 1000:.0f} kB"
    if nbytes < 9_950_000:
        return f"{nbytes / 1e6:.1f} MB"
    if nbytes < 999_500_000:
        return f"{nbytes / 1e6:.0f} MB"
    if nbytes < 999_950_000_000:
        return f"{nbytes / 1e9:.1f} GB"
    return f"{nbytes / 1e12:.1f} TB"


def cpu_text(seconds: float) -> str:
    """ "0.4 CPU s", "3.4 CPU s", "212 CPU s", "12,345 CPU s"."""
    return f"{seconds:.1f} CPU s" if seconds < 9.95 else f"{seconds:,.0f} CPU s"


def usage_parts(usage: Usage | None, state: TaskState) -> list[str]:
    """What a task costs, as info parts: "CPU 98%" and "212 MB" (its process group's
    resident memory) while it runs, "peak 212 MB" and "3.4 CPU s" once it has ended;
    none before its first sample, between two attempts, or from a runner that cannot
    say (task.usage None)."""
    if usage is None:
        return []
    if state.is_final:
        return cost_parts(usage.peak_rss, usage.cpu_seconds)
    if state is TaskState.CREATED or not _is_count(usage.rss):
        return []
    cpu = usage.cpu_percent
    return ([f"CPU {cpu:.0f}%"] if _is_amount(cpu) else []) + [size_text(usage.rss)]


def cost_parts(peak_rss: object, cpu_seconds: object) -> list[str]:
    """What an ended task cost, as the view and the history say it: "peak 212 MB",
    "3.4 CPU s" (each left out when unknown: a task that ended before its first sample,
    or a history row from before they were kept)."""
    parts = [f"peak {size_text(peak_rss)}"] if _is_count(peak_rss) else []
    return parts + ([cpu_text(cpu_seconds)] if _is_amount(cpu_seconds) else [])


def policy_parts(task: OneshotTask, now: float | None = None) -> list[str]:
    """What a task that has not ended waits for, or which attempt it is on: "waiting
    for build, lint" (the tasks it runs after), "retry 2/3 in 4s" and how the attempt
    before ended (between two attempts), "attempt 2/3" (a retried task, running or
    waiting for a slot)."""
    if task.state.is_final:
        return []
    total, attempt = task.options.retries + 1, task.attempt
    if task.state is TaskState.CREATED:
        waiting = task.waiting_for
        if waiting:
            return [f"waiting for {shortened(', '.join(waiting), NAME_CHARS)}"]
        if task.retry_at is not None:
            left = task.retry_at - (time.time() if now is None else now)
            said = [f"retry {attempt + 1}/{total} in {countdown_text(left)}"]
            last = task.attempts[-1] if task.attempts else None
            return said + (outcome(last.returncode, last.reason, None) if last else [])
    return [f"attempt {attempt}/{total}"] if attempt > 1 else []


def countdown_text(seconds: float) -> str:
    """ "4s", whole seconds rounded up, so that "0s" means now; "3m12s" from a minute."""
    seconds = max(0.0, seconds)
    return f"{math.ceil(seconds)}s" if seconds < 59 else duration_text(seconds)


def attempts_parts(attempts: Sequence[Any]) -> list[str]:
    """ "3 attempts" for a task that ran more than once; else nothing."""
    return [f"{len(attempts)} attempts"] if len(attempts) > 1 else []


def attempts_title(attempts: Sequence[Any]) -> str:
    """One line per attempt of a task that ran more than once, as a tooltip says them:
    "attempt 1: exit code 1 · 2.1s"; "" for a task that ran once. `attempts` are the
    engine's (task.attempts) or the history's dicts of the same fields."""
    if len(attempts) < 2:
        return ""
    lines = []
    for index, attempt in enumerate(attempts[:TOOLTIP_LINES]):
        said = attempt if isinstance(attempt, Mapping) else attempt.to_dict()
        code, reason = said.get("returncode"), said.get("reason")
        parts = outcome(code if _is_code(code) else None, _text_or_none(reason), None)
        started, ended = said.get("started_at"), said.get("ended_at")
        if _is_amount(started) and _is_amount(ended) and ended >= started:
            parts.append(seconds_text(ended - started))
        number = said.get("number")
        label = number if _is_count(number) else index + 1
        lines.append(f"attempt {label}: {' · '.join(parts) or 'ended'}")
    if len(attempts) > TOOLTIP_LINES:
        lines.append(f"... {len(attempts) - TOOLTIP_LINES} more")
    return "\n".join(lines)


def _is_code(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_amount(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value < float("inf")  # NaN compares false
    )
