"""Claude Code's stream: `claude -p ... --output-format stream-json --verbose`.

One JSON object a line: `system` (subtype `init` first), `assistant` and `user` messages
shaped like the Messages API (`message.content` holds `text`, `tool_use`, `tool_result`
blocks), and a final `result` (`subtype`, `is_error`, `num_turns`, `duration_ms`,
`total_cost_usd`, `usage`, `result` text; error subtypes carry `errors`).

Claude Code prints one `assistant` line per content block, each repeating the API
message's `id` and `usage`: a turn is a distinct message id, and usage is kept per id.
"""

from __future__ import annotations

from oneshot_nb.agents.fields import (
    as_amount,
    as_count,
    as_str,
    one_line,
    remember,
    seconds,
    token_sum,
    tool_label,
)
from oneshot_nb.agents.summary import MESSAGE_CHARS, RESULT_CHARS, AgentResult, AgentSummary

# Anthropic's input_tokens leaves out the cached part of the prompt, which in Claude
# Code is nearly all of it: without the cache fields a 40k-token context reads as "12
# tokens". With them the total compares with Gemini's and Codex's, whose input counts
# include cached tokens.
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use"})
# Known types that say nothing the summary shows (tool results, partial messages with
# --include-partial-messages, hooks, retries, rate limits).
QUIET_TYPES = frozenset({"system", "user", "stream_event", "rate_limit_event"})


class ClaudeParser:
    """Keeps the summary of one Claude Code stream.

    Turns: while streaming, each top-level `assistant` message with a new id (one
    without an id counts on its own); the result's `num_turns` replaces the count.
    Tokens: the four USAGE_KEYS summed, per message while streaming, then the result's
    `usage`. A sub-agent's messages (`parent_tool_use_id` set) count their tools and
    tokens, not turns, and their text is not the agent's message.
    """

    kind = "claude"
    # Lines that start so are events it would ignore (tool results: most of the bytes),
    # left unparsed. Claude Code writes "type" first; written otherwise, they are parsed.
    quiet_prefixes = (b'{"type":"user"',)

    def __init__(self) -> None:
        self.summary = AgentSummary(self.kind)
        self._message_ids: dict[str, None] = {}  # see fields.remember
        self._tool_ids: dict[str, None] = {}
        self._message_tokens: dict[str | int, int] = {}
        self._anonymous = 0  # messages without an id, each its own
        self._streamed_tokens = 0

    @staticmethod
    def recognises(event: dict) -> bool:
        """Whether the event can only be Claude Code's."""
        kind = as_str(event.get("type"))
        if kind == "system":
            return event.get("subtype") == "init"
        if kind in ("assistant", "user"):
            return isinstance(event.get("message"), dict)
        if kind == "result":
            return "is_error" in event or "num_turns" in event
        return False

    def handle(self, event: dict) -> bool:
        """Applies one event; False if its type is unknown."""
        kind = as_str(event.get("type"))
        if kind == "assistant":
            self._assistant(event)
        elif kind == "result":
            self._result(event)
        else:
            return kind in QUIET_TYPES
        return True

    def _assistant(self, event: dict) -> None:
        message = event.get("message")
        if not isinstance(message, dict) or self.summary.result is not None:
            return
        top_level = event.get("parent_tool_use_id") is None
        message_id = as_str(message.get("id"))
        new = message_id is None or remember(self._message_ids, message_id)
        if new and top_level:
            self.summary.turns += 1
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    self._block(block, top_level)
        self._add_usage(message_id, message.get("usage"))

    def _block(self, block: dict, top_level: bool) -> None:
        kind = as_str(block.get("type"))
        if kind == "text" and top_level:
            text = one_line(block.get("text"), MESSAGE_CHARS)
            if text is not None:
                self.summary.last_message = text
        elif kind in TOOL_BLOCKS:
            tool_id = as_str(block.get("id"))
            if tool_id is None or remember(self._tool_ids, tool_id):
                self.summary.tool_calls += 1
            label = tool_label(block.get("name"), block.get("input"))
            if label is not None:
                self.summary.last_tool = label

    def _add_usage(self, message_id: str | None, usage: object) -> None:
        tokens = token_sum(usage, USAGE_KEYS)
        if tokens is None:
            return
        # The later lines of a message repeat its usage, possibly grown: the last wins.
        if message_id is None:
            self._anonymous += 1
        key: str | int = message_id if message_id is not None else self._anonymous
        self._streamed_tokens += tokens - (self._message_tokens.get(key) or 0)
        remember(self._message_tokens, key, tokens)
        self.summary.tokens = self._streamed_tokens

    def _result(self, event: dict) -> None:
        summary = self.summary
        turns = as_count(event.get("num_turns"))
        if turns is not None:
            summary.turns = turns
        cost = as_amount(event.get("total_cost_usd"))
        if cost is not None:
            summary.cost_usd = cost
        tokens = token_sum(event.get("usage"), USAGE_KEYS)
        if tokens is not None:
            summary.tokens = tokens
        duration = seconds(event.get("duration_ms"))
        subtype = as_str(event.get("subtype"))
        text = one_line(event.get("result"), RESULT_CHARS)
        # error_during_execution can come with is_error false: the subtype says it too.
        if event.get("is_error") is True or (subtype or "").startswith("error"):
            error = text or _joined(event.get("errors")) or subtype or "error"
            summary.error = error
            summary.result = AgentResult(ok=False, message=error, duration_s=duration)
        else:
            message = text or summary.last_message
            summary.result = AgentResult(ok=True, message=message, duration_s=duration)


def _joined(errors: object) -> str | None:
    if not isinstance(errors, list):
        return None
    return one_line("; ".join(error for error in errors if isinstance(error, str)), RESULT_CHARS)
