"""Agent CLIs as progress: claude, gemini and codex stream NDJSON on stdout, read into
a compact summary as it comes. Pure standard library: nothing else of oneshot_nb."""

from oneshot_nb.agents.registry import AGENT_KINDS, PARSERS, check_agent
from oneshot_nb.agents.summary import AgentResult, AgentSummary
from oneshot_nb.agents.watch import AgentWatch

__all__ = [
    "AGENT_KINDS",
    "PARSERS",
    "AgentResult",
    "AgentSummary",
    "AgentWatch",
    "check_agent",
]
