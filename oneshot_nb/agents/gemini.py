"""Gemini CLI's stream: `gemini -p ... --output-format stream-json`.

Events (packages/core/src/output/types.ts): `init` (session_id, model), `message` (role
user or assistant, content, delta), `tool_use` (tool_name, tool_id, parameters),
`tool_result` (tool_id, status, output, error), `error` (severity warning or error,
message) and a final `result` (status success or error, error {type, message}, stats
{total_tokens, input_tokens, output_tokens, cached, input, duration_ms, tool_calls}).

The model's text arrives in pieces (`delta: true`), and no event marks a turn: a turn
starts with the first model output (text or tool call) after the user's message or the
tool results it answers.
"""

from __future__ import annotations

from oneshot_nb.agents.fields import (
    RAW_TEXT_FACTOR,
    as_count,
    as_str,
    one_line,
    remember,
    seconds,
    tool_label,
)
from oneshot_nb.agents.summary import MESSAGE_CHARS, RESULT_CHARS, AgentResult, AgentSummary

MODEL_ROLES = frozenset({"assistant", "model"})
# The text of a turn kept to build last_message and the result's message: more could
# not show.
TURN_TEXT_CHARS = RESULT_CHARS * RAW_TEXT_FACTOR


class GeminiParser:
    """Keeps the summary of one Gemini CLI stream.

    Tokens: the result's `stats.total_tokens` (input, cached included, plus output).
    Failure: an `error` event of severity "error" (warnings are not failures) or a
    result with status "error".
    """

    kind = "gemini"

    def __init__(self) -> None:
        self.summary = AgentSummary(self.kind)
        self._in_turn = False
        self._text: list[str] = []  # the current turn's text, up to TURN_TEXT_CHARS
        self._text_chars = 0
        self._tool_ids: dict[str, None] = {}  # see fields.remember

    @staticmethod
    def recognises(event: dict) -> bool:
        """Whether the event can only be Gemini CLI's."""
        kind = as_str(event.get("type"))
        if kind == "init":
            return "session_id" in event or "model" in event
        if kind == "message":
            return "role" in event
        if kind == "tool_use":
            return "tool_name" in event
        if kind == "tool_result":
            return "tool_id" in event
        if kind == "result":
            return "status" in event or "stats" in event
        if kind == "error":
            return "severity" in event
        return False

    def handle(self, event: dict) -> bool:
        """Applies one event; False if its type is unknown."""
        kind = as_str(event.get("type"))
        if kind == "message":
            self._message(event)
        elif kind == "tool_use":
            self._tool_use(event)
        elif kind == "tool_result":
            self._in_turn = False
        elif kind == "error":
            if event.get("severity") == "error":
                self.summary.error = one_line(event.get("message"), RESULT_CHARS) or "error"
        elif kind == "result":
            self._result(event)
        else:
            return kind == "init"
        return True

    def _model_output(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self.summary.turns += 1
            self._text = []
            self._text_chars = 0

    def _message(self, event: dict) -> None:
        if as_str(event.get("role")) not in MODEL_ROLES:
            self._in_turn = False  # the user's prompt: the next output starts a turn
            return
        self._model_output()
        content = as_str(event.get("content"))
        if content is None:
            return
        if event.get("delta") is not True:  # a whole message replaces the pieces
            self._text = []
            self._text_chars = 0
        room = TURN_TEXT_CHARS - self._text_chars
        if room > 0:
            self._text.append(content[:room])
            self._text_chars += min(len(content), room)
            text = one_line("".join(self._text), MESSAGE_CHARS)
            if text is not None:
                self.summary.last_message = text

    def _tool_use(self, event: dict) -> None:
        self._model_output()
        tool_id = as_str(event.get("tool_id"))
        if tool_id is None or remember(self._tool_ids, tool_id):
            self.summary.tool_calls += 1
        label = tool_label(event.get("tool_name"), event.get("parameters"))
        if label is not None:
            self.summary.last_tool = label

    def _result(self, event: dict) -> None:
        summary = self.summary
        stats = event.get("stats")
        duration = None
        if isinstance(stats, dict):
            tokens = as_count(stats.get("total_tokens"))
            if tokens is not None:
                summary.tokens = tokens
            duration = seconds(stats.get("duration_ms"))
        if event.get("status") == "error":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            summary.error = one_line(message, RESULT_CHARS) or summary.error or "error"
        if summary.error is not None:
            summary.result = AgentResult(ok=False, message=summary.error, duration_s=duration)
        else:
            message = one_line("".join(self._text), RESULT_CHARS) or summary.last_message
            summary.result = AgentResult(ok=True, message=message, duration_s=duration)
