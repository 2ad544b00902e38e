"""Codex's stream: `codex exec --json ...` (codex-rs/exec/src/exec_events.rs).

Events: `thread.started`, `turn.started`, `item.started` / `item.updated` /
`item.completed` with an `item` {id, type, ...}, `turn.completed` {usage: input_tokens,
cached_input_tokens, output_tokens}, `turn.failed` {error: {message}} and `error`
{message}. Item types: agent_message (text), reasoning, command_execution (command,
aggregated_output, exit_code, status), file_change (changes [{path, kind}], status),
mcp_tool_call (server, tool, arguments), web_search (query), todo_list, error.
"""

from __future__ import annotations

from oneshot_nb.agents.fields import (
    RAW_TEXT_FACTOR,
    as_str,
    one_line,
    remember,
    token_sum,
    tool_label,
    unwrap_shell,
)
from oneshot_nb.agents.summary import MESSAGE_CHARS, RESULT_CHARS, AgentResult, AgentSummary

TOOL_ITEMS = frozenset({"command_execution", "mcp_tool_call", "file_change", "web_search"})
# "assistant_message" (and the "item_type" key) are the names of the first releases
# of the --json format.
MESSAGE_ITEMS = frozenset({"agent_message", "assistant_message"})
ITEM_EVENTS = frozenset({"item.started", "item.updated", "item.completed"})
QUIET_TYPES = frozenset({"thread.started", "item.plan.delta", "request_user_input"})
# cached_input_tokens is the part of input_tokens read from the cache, not an addition.
USAGE_KEYS = ("input_tokens", "output_tokens")
# Codex prints its stream retries as `error` events ("Reconnecting... 2/5 (stream
# disconnected before completion)") and may still succeed: they are not failures.
RETRY_PREFIX = "Reconnecting..."


class CodexParser:
    """Keeps the summary of one `codex exec --json` stream.

    Turns: `turn.started` events. Tool calls: command, MCP, file change and web search
    items, each id once. Tokens: input_tokens + output_tokens of the latest
    `turn.completed`, whose usage is the thread's running total (exec_events'
    usage_from_last_total), so turns are not summed. Failure: `turn.failed`, or an
    `error` event other than a retry notice; a later `turn.completed` means Codex
    recovered and clears it.
    """

    kind = "codex"

    def __init__(self) -> None:
        self.summary = AgentSummary(self.kind)
        self._tool_ids: dict[str, None] = {}  # see fields.remember
        self._final_text: str | None = None

    @staticmethod
    def recognises(event: dict) -> bool:
        """Whether the event can only be Codex's."""
        kind = as_str(event.get("type"))
        if kind in ("thread.started", "turn.started", "turn.completed", "turn.failed"):
            return True
        return kind in ITEM_EVENTS and isinstance(event.get("item"), dict)

    def handle(self, event: dict) -> bool:
        """Applies one event; False if its type is unknown."""
        kind = as_str(event.get("type"))
        if kind == "turn.started":
            self.summary.turns += 1
        elif kind in ITEM_EVENTS:
            item = event.get("item")
            if isinstance(item, dict):
                self._item(item, completed=kind == "item.completed")
        elif kind == "turn.completed":
            self._completed(event)
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self._fail(one_line(message, RESULT_CHARS) or "turn failed")
        elif kind == "error":
            message = as_str(event.get("message"))
            if message is None or not message.startswith(RETRY_PREFIX):
                self._fail(one_line(message, RESULT_CHARS) or "error")
        else:
            return kind in QUIET_TYPES
        return True

    def _item(self, item: dict, completed: bool) -> None:
        kind = as_str(item.get("type")) or as_str(item.get("item_type"))
        if kind in MESSAGE_ITEMS:
            text = as_str(item.get("text"))
            if text is not None:
                self._final_text = text[: RESULT_CHARS * RAW_TEXT_FACTOR]
                self.summary.last_message = one_line(text, MESSAGE_CHARS)
        elif kind in TOOL_ITEMS:
            item_id = as_str(item.get("id"))
            # Without an id, started and completed cannot be matched: count completions.
            new = completed if item_id is None else remember(self._tool_ids, item_id)
            if new:
                self.summary.tool_calls += 1
            label = _label(kind, item)
            if label is not None:
                self.summary.last_tool = label

    def _completed(self, event: dict) -> None:
        tokens = token_sum(event.get("usage"), USAGE_KEYS)
        if tokens is not None:
            self.summary.tokens = tokens
        self.summary.error = None
        message = one_line(self._final_text, RESULT_CHARS)
        self.summary.result = AgentResult(ok=True, message=message)

    def _fail(self, message: str) -> None:
        self.summary.error = message
        self.summary.result = AgentResult(ok=False, message=message)


def _label(kind: str, item: dict) -> str | None:
    if kind == "command_execution":
        command = as_str(item.get("command"))
        return tool_label("shell", {"command": unwrap_shell(command) if command else None})
    if kind == "file_change":
        changes = item.get("changes")
        first = changes[0] if isinstance(changes, list) and changes else None
        return tool_label("edit", {"path": first.get("path")} if isinstance(first, dict) else None)
    if kind == "mcp_tool_call":
        server, tool = as_str(item.get("server")), as_str(item.get("tool"))
        name = f"{server}.{tool}" if server and tool else tool or server
        return tool_label(name, item.get("arguments"))
    return tool_label("web_search", {"query": item.get("query")})
