"""The agent CLIs we read: one parser each. A new CLI is a module and a line in PARSERS."""

from __future__ import annotations

from typing import Protocol

from oneshot_nb.agents.claude import ClaudeParser
from oneshot_nb.agents.codex import CodexParser
from oneshot_nb.agents.gemini import GeminiParser
from oneshot_nb.agents.summary import AgentSummary


class Parser(Protocol):
    """Reads one CLI's events into its summary."""

    kind: str
    summary: AgentSummary
    # Optional: lines starting with one of these are events it ignores, which AgentWatch
    # then does not even decode (json.loads is most of what reading a stream costs).
    # quiet_prefixes: tuple[bytes, ...]

    @staticmethod
    def recognises(event: dict) -> bool:
        """Whether the event can only be this CLI's (for "auto")."""
        ...

    def handle(self, event: dict) -> bool:
        """Applies one JSON object event to the summary; False if its type is unknown.
        It may raise on a bug: AgentWatch counts that event as skipped."""
        ...


# In the order "auto" asks them; no event is recognised by two of them.
PARSERS: dict[str, type[Parser]] = {
    "claude": ClaudeParser,
    "gemini": GeminiParser,
    "codex": CodexParser,
}
AGENT_KINDS = ("auto", *PARSERS)  # "auto" detects the CLI from its first events


def check_agent(value: object) -> str | None:
    """The agent option checked: None, or one of AGENT_KINDS.

    Raises TypeError if it is not a str, ValueError if it is not a known kind.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"agent must be a str or None, got {type(value).__name__}")
    if value not in AGENT_KINDS:
        raise ValueError(agent_kind_error(value))
    return value


def agent_kind_error(value: object) -> str:
    return f"agent must be one of {', '.join(AGENT_KINDS)}, got {value!r}"
