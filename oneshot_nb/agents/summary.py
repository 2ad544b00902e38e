"""What an agent CLI's run looks like so far: the summary a view shows and history keeps."""

from __future__ import annotations

from dataclasses import dataclass

from oneshot_nb.agents.fields import as_amount, as_count, as_str, one_line

MESSAGE_CHARS = 200  # last_message
RESULT_CHARS = 300  # AgentResult.message and AgentSummary.error
LAST_TOOL_CHARS = 2 * 60 + 2  # "name: argument", each part cut to 60
KIND_CHARS = 40
# The progress line is one line of a view: its quoted message and its error are cut
# shorter than the fields that hold them.
LINE_MESSAGE_CHARS = 60
LINE_ERROR_CHARS = 100


@dataclass(slots=True)
class AgentResult:
    """How the run ended, as the CLI reported it."""

    ok: bool
    message: str | None = None  # the CLI's final text or error, one line, <= 300 chars
    duration_s: float | None = None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "message": self.message, "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, d: object) -> AgentResult:
        """Tolerant of missing keys and wrong types: anything unusable becomes its default
        (ok is True only if it is exactly true)."""
        if not isinstance(d, dict):
            return cls(ok=False)
        return cls(
            ok=d.get("ok") is True,
            message=one_line(d.get("message"), RESULT_CHARS),
            duration_s=as_amount(d.get("duration_s")),
        )


@dataclass(slots=True)
class AgentSummary:
    """A running summary of one agent CLI's stream (see AgentWatch).

    `tokens` is the total the CLI reports, cached tokens included (see each parser);
    `result` is set when the run ends, `error` when it failed.
    """

    kind: str  # "claude" | "gemini" | "codex"
    turns: int = 0
    tool_calls: int = 0
    last_tool: str | None = None  # "Bash: pytest -q"
    last_message: str | None = None  # last assistant text, one line, <= 200 chars
    tokens: int | None = None
    cost_usd: float | None = None
    result: AgentResult | None = None
    error: str | None = None  # one line, <= 300 chars

    def line(self) -> str:
        """The compact progress line, plain text; the parts not known are left out, and
        it never raises, whatever the fields hold:

        "✓ done in 42.1s · 3 turns · 5 tools · Bash: pytest -q · “All tests pass…” ·
        12.3k tokens · $0.0412"
        """
        parts = [_outcome(self.result, self.error)]
        turns = as_count(self.turns)
        if turns:
            parts.append(_plural(turns, "turn"))
        tool_calls = as_count(self.tool_calls)
        if tool_calls:
            parts.append(_plural(tool_calls, "tool"))
        parts.append(one_line(self.last_tool, LAST_TOOL_CHARS))
        message = one_line(self.last_message, LINE_MESSAGE_CHARS)
        if message:
            parts.append(f"“{message}”")
        tokens = as_count(self.tokens)
        if tokens is not None:
            parts.append(tokens_text(tokens))
        cost = as_amount(self.cost_usd)
        if cost is not None:
            parts.append(cost_text(cost))
        return " · ".join(part for part in parts if part)

    def to_dict(self) -> dict:
        """JSON-able, for the history; from_dict reads it back."""
        return {
            "kind": self.kind,
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "last_tool": self.last_tool,
            "last_message": self.last_message,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "result": self.result.to_dict() if self.result is not None else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: object) -> AgentSummary:
        """Tolerant of missing keys and garbage (a database is data): it never raises;
        a value of the wrong type becomes the field's default, text is cut to the field's
        bounds, and anything but a dict gives an empty summary of kind "unknown"."""
        if not isinstance(d, dict):
            return cls(kind="unknown")
        result = d.get("result")
        return cls(
            kind=one_line(as_str(d.get("kind")), KIND_CHARS) or "unknown",
            turns=as_count(d.get("turns")) or 0,
            tool_calls=as_count(d.get("tool_calls")) or 0,
            last_tool=one_line(d.get("last_tool"), LAST_TOOL_CHARS),
            last_message=one_line(d.get("last_message"), MESSAGE_CHARS),
            tokens=as_count(d.get("tokens")),
            cost_usd=as_amount(d.get("cost_usd")),
            result=AgentResult.from_dict(result) if isinstance(result, dict) else None,
            error=one_line(d.get("error"), RESULT_CHARS),
        )


def _outcome(result: AgentResult | None, error: object) -> str | None:
    if error or (isinstance(result, AgentResult) and result.ok is not True):
        message = one_line(error, LINE_ERROR_CHARS)
        if message is None and isinstance(result, AgentResult):
            message = one_line(result.message, LINE_ERROR_CHARS)
        return f"✗ error: {message}" if message else "✗ error"
    if isinstance(result, AgentResult):
        duration = as_amount(result.duration_s)
        return f"✓ done in {duration_text(duration)}" if duration is not None else "✓ done"
    return None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# How a summary says its figures; the views and tables say them the same way.


def tokens_text(count: int) -> str:
    """ "950 tokens", "12.3k tokens", "1.2M tokens"."""
    if count < 1000:
        return _plural(count, "token")
    if count < 999_950:  # 999,950 would round up to "1000.0k"
        return f"{count / 1000:.1f}k tokens"
    if count < 999_950_000:
        return f"{count / 1_000_000:.1f}M tokens"
    return f"{count / 1_000_000_000:.1f}G tokens"


def cost_text(cost_usd: float) -> str:
    """ "$0.0412" below a dollar, "$3.10" above."""
    return f"${cost_usd:.4f}" if cost_usd < 1 else f"${cost_usd:.2f}"


def duration_text(seconds: float) -> str:
    """ "42.1s", "3m12s", "1h02m": as every elapsed time in the views reads."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
