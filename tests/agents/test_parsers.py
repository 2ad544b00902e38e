"""The agent CLI parsers and AgentWatch: recorded streams of claude, gemini and codex in
awkward chunkings, garbage, and the fake agent run as a real process."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import oneshot_nb.agents
from oneshot_nb.agents import (
    AGENT_KINDS,
    PARSERS,
    AgentResult,
    AgentSummary,
    AgentWatch,
    check_agent,
)
from oneshot_nb.agents.fields import one_line

from . import fake_agent

FAKE_AGENT = Path(fake_agent.__file__)
PLAIN_FINAL = fake_agent.PLAIN["final"]
UNICODE_FINAL = fake_agent.UNICODE["final"]
CLAUDE_ERROR = (
    'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
)
GEMINI_ERROR = "[API Error: You have exhausted your capacity on this model.]"
CODEX_ERROR = "stream disconnected before completion: stream closed before response.completed"

# What each fake scenario must leave in the summary.
OK = {
    "claude": AgentSummary(
        kind="claude",
        turns=4,
        tool_calls=3,
        last_tool="Bash: pytest -q",
        last_message=PLAIN_FINAL,
        tokens=42322,  # the four usage fields of the result: 12 + 2900 + 39000 + 410
        cost_usd=0.0412,
        result=AgentResult(ok=True, message=PLAIN_FINAL, duration_s=42.137),
    ),
    "gemini": AgentSummary(
        kind="gemini",
        turns=4,
        tool_calls=3,
        last_tool="run_shell_command: pytest -q",
        last_message=PLAIN_FINAL,
        tokens=19001,
        result=AgentResult(ok=True, message=PLAIN_FINAL, duration_s=42.137),
    ),
    "codex": AgentSummary(
        kind="codex",
        turns=1,
        tool_calls=3,
        last_tool="shell: pytest -q",
        last_message=PLAIN_FINAL,
        tokens=25885,  # 24763 input (cached included) + 1122 output
        result=AgentResult(ok=True, message=PLAIN_FINAL),
    ),
}
ERROR = {
    "claude": AgentSummary(
        kind="claude",
        turns=2,
        tool_calls=1,
        last_tool="Read: /home/user/project/src/calc.py",
        last_message="I'll read the failing module first.",
        tokens=10123,
        cost_usd=0.0123,
        result=AgentResult(ok=False, message=CLAUDE_ERROR, duration_s=9.876),
        error=CLAUDE_ERROR,
    ),
    "gemini": AgentSummary(
        kind="gemini",
        turns=1,
        tool_calls=1,
        last_tool="read_file: /home/user/project/src/calc.py",
        last_message="I'll read the failing module first.",
        tokens=19001,
        result=AgentResult(ok=False, message=GEMINI_ERROR),  # duration_ms 0: unknown
        error=GEMINI_ERROR,
    ),
    "codex": AgentSummary(
        kind="codex",
        turns=1,
        tool_calls=1,
        last_tool="shell: cat src/calc.py",
        result=AgentResult(ok=False, message=CODEX_ERROR),
        error=CODEX_ERROR,
    ),
}
UNICODE_TOOL = {
    "claude": "Bash: pytest -q -k 'naïve or 日本語'",
    "gemini": "run_shell_command: pytest -q -k 'naïve or 日本語'",
    "codex": "shell: pytest -q -k 'naïve or 日本語'",
}
# Cut before its result: what streamed is all there is (Claude's tokens stream too).
CUT = {
    "claude": replace(OK["claude"], cost_usd=None, result=None),
    "gemini": replace(OK["gemini"], tokens=None, result=None),
    "codex": replace(OK["codex"], tokens=None, result=None),
}
UNICODE = {
    kind: replace(
        summary,
        last_tool=UNICODE_TOOL[kind],
        last_message=UNICODE_FINAL,
        result=replace(summary.result, message=UNICODE_FINAL),
    )
    for kind, summary in OK.items()
}


def expected(kind: str, scenario: str) -> tuple[AgentSummary, int]:
    """The summary and skipped_lines a scenario leaves once finished."""
    if scenario == "error":
        return ERROR[kind], 0
    if scenario == "cut":
        return CUT[kind], 1
    if scenario == "unicode":
        return UNICODE[kind], 0
    return OK[kind], 2 if scenario == "unknown" else 0


def recorded(kind: str, scenario: str = "ok") -> bytes:
    return b"".join(fake_agent.stream(kind, scenario))


def watched(data: bytes, kind: str = "auto", size: int = 1 << 16) -> AgentWatch:
    watch = AgentWatch(kind)
    for start in range(0, len(data), size):
        watch.feed(data[start : start + size])
    watch.finish()
    return watch


def lines_of(*events: dict | bytes) -> bytes:
    return b"".join(
        (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\n"
        for event in events
    )


# The interface


def test_exported_names_are_exactly_the_interface():
    assert sorted(oneshot_nb.agents.__all__) == sorted(
        ["AGENT_KINDS", "PARSERS", "AgentResult", "AgentSummary", "AgentWatch", "check_agent"]
    )
    assert AGENT_KINDS == ("auto", "claude", "gemini", "codex")
    assert list(PARSERS) == ["claude", "gemini", "codex"]


def test_the_package_imports_only_the_standard_library():
    """oneshot_nb.agents is wired into the engine, views and store: it must import
    none of them, nor anything outside the standard library."""
    package = Path(oneshot_nb.agents.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
    outside = {
        name
        for name in imported
        if not name.startswith("oneshot_nb.agents")
        and name.split(".")[0] not in sys.stdlib_module_names
    }
    assert outside == set()
    assert "oneshot_nb.agents.summary" in imported


def test_check_agent_accepts_none_and_the_kinds():
    assert check_agent(None) is None
    assert [check_agent(kind) for kind in AGENT_KINDS] == list(AGENT_KINDS)


def test_check_agent_rejects_other_values_in_one_line():
    with pytest.raises(ValueError) as error:
        check_agent("x")
    assert str(error.value) == "agent must be one of auto, claude, gemini, codex, got 'x'"
    with pytest.raises(ValueError, match="got 'Claude'"):
        check_agent("Claude")
    with pytest.raises(TypeError) as type_error:
        check_agent(3)
    assert str(type_error.value) == "agent must be a str or None, got int"


@pytest.mark.parametrize("kind", ["x", None, "", 3])
def test_a_watch_needs_a_known_kind(kind):
    with pytest.raises(ValueError, match="agent must be one of auto, claude, gemini, codex"):
        AgentWatch(kind)


def test_a_fixed_kind_has_a_summary_from_the_start():
    watch = AgentWatch("gemini")
    assert watch.summary == AgentSummary(kind="gemini")
    assert watch.failed is None
    assert watch.skipped_lines == 0
    assert AgentWatch("auto").summary is None


# The recorded streams, whole


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
@pytest.mark.parametrize("scenario", fake_agent.SCENARIOS)
def test_each_recorded_stream_gives_its_summary(kind, scenario):
    summary, skipped = expected(kind, scenario)
    for watch_kind in ("auto", kind):
        watch = watched(recorded(kind, scenario), watch_kind)
        assert watch.summary == summary
        assert watch.skipped_lines == skipped
        assert watch.failed == summary.error


def test_the_progress_lines_of_the_recorded_runs():
    lines = {kind: watched(recorded(kind)).summary.line() for kind in OK}
    assert lines == {
        "claude": "✓ done in 42.1s · 4 turns · 3 tools · Bash: pytest -q · "
        "“All tests pass now: fixed the off-by-one in `add_range`.” · 42.3k tokens · $0.0412",
        "gemini": "✓ done in 42.1s · 4 turns · 3 tools · run_shell_command: pytest -q · "
        "“All tests pass now: fixed the off-by-one in `add_range`.” · 19.0k tokens",
        "codex": "✓ done · 1 turn · 3 tools · shell: pytest -q · "
        "“All tests pass now: fixed the off-by-one in `add_range`.” · 25.9k tokens",
    }
    assert watched(recorded("codex", "error")).summary.line() == (
        f"✗ error: {CODEX_ERROR} · 1 turn · 1 tool · shell: cat src/calc.py"
    )


# Chunkings


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
def test_byte_by_byte_gives_the_same_summary(kind):
    data = recorded(kind, "unicode")
    watch = AgentWatch("auto")
    for index in range(len(data)):
        watch.feed(data[index : index + 1])
    assert watch.finish() is False
    assert watch.summary == UNICODE[kind]
    assert watch.skipped_lines == 0


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
def test_a_split_inside_a_utf8_character_is_joined(kind):
    data = recorded(kind, "unicode")
    for character in ("é", "日", "🎉"):
        encoded = character.encode()
        middle = data.index(encoded) + 1  # inside the character's bytes
        watch = AgentWatch(kind)
        watch.feed(data[:middle])
        watch.feed(data[middle:])
        watch.finish()
        assert watch.summary == UNICODE[kind], character


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
def test_random_chunkings_give_the_same_summary(kind):
    data = recorded(kind, "huge")
    chunker = random.Random(12)
    for _ in range(5):
        watch = AgentWatch("auto")
        start = 0
        while start < len(data):
            size = chunker.choice([1, 2, 3, 7, 100, 4096, 65536, 300_000])
            watch.feed(data[start : start + size])
            start += size
        watch.finish()
        assert watch.summary == OK[kind]
        assert watch.skipped_lines == 0


def test_feed_says_when_the_summary_changed():
    watch = AgentWatch("claude")
    init, text, read, result_of = fake_agent.stream("claude", "ok")[:4]
    assert watch.feed(init) is False  # known, shows nothing
    assert watch.feed(text[:50]) is False  # a line still being written
    assert watch.feed(text[50:]) is True
    assert watch.feed(read) is True
    assert watch.feed(result_of) is False
    assert watch.feed(b"\n\n  \n") is False
    assert watch.feed(b"") is False
    assert watch.skipped_lines == 0


def test_feed_takes_any_bytes_like_object():
    data = recorded("codex")
    watch = AgentWatch("codex")
    watch.feed(bytearray(data[:500]))
    watch.feed(memoryview(data)[500:])
    assert watch.summary == OK["codex"]


def test_auto_says_changed_when_it_recognises_the_cli():
    watch = AgentWatch("auto")
    assert watch.feed(b"starting...\n") is False
    assert watch.summary is None
    assert watch.feed(fake_agent.stream("codex", "ok")[0]) is True
    assert watch.summary == AgentSummary(kind="codex")


def test_a_last_line_without_newline_is_read_at_finish():
    lines = fake_agent.stream("claude", "ok")
    watch = AgentWatch("claude")
    watch.feed(b"".join(lines)[:-1])  # the result, complete but for its newline
    assert watch.summary.result is None
    assert watch.finish() is True
    assert watch.summary == OK["claude"]
    assert watch.finish() is False


def test_a_cut_last_line_is_skipped_at_finish():
    watch = AgentWatch("gemini")
    watch.feed(recorded("gemini", "cut"))
    assert watch.skipped_lines == 0
    assert watch.finish() is False
    assert watch.skipped_lines == 1
    assert watch.summary == CUT["gemini"]


# Long lines


class SmallWatch(AgentWatch):
    MAX_LINE = 100


def test_a_line_past_max_line_is_skipped_and_not_buffered():
    watch = SmallWatch("codex")
    long_line = json.dumps({"type": "turn.started", "pad": "x" * 1000}).encode()
    for start in range(0, len(long_line), 30):
        watch.feed(long_line[start : start + 30])
        assert sum(len(piece) for piece in watch._pieces) <= 100
    watch.feed(b'\n{"type":"turn.started"}\n')
    assert watch.skipped_lines == 1
    assert watch.summary.turns == 1


def test_a_whole_line_past_max_line_in_one_chunk_is_skipped():
    watch = SmallWatch("codex")
    long_line = json.dumps({"type": "turn.started", "pad": "x" * 1000}).encode()
    watch.feed(long_line + b'\n{"type":"turn.started"}\n' + long_line[:90])
    watch.feed(long_line[90:] + b"\n")
    assert watch.skipped_lines == 2
    assert watch.summary.turns == 1


def test_a_long_line_in_small_chunks_is_joined_once():
    """A 20 MB line in 4 KiB chunks: joined once, not copied at each chunk (which
    would copy about 50 GB)."""
    text = "y" * (20 << 20)
    line = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": text}})
    data = b'{"type":"turn.started"}\n' + line.encode() + b"\n"
    watch = AgentWatch("codex")
    watch.MAX_LINE = 32 << 20
    started = time.perf_counter()
    for start in range(0, len(data), 4096):
        watch.feed(data[start : start + 4096])
    elapsed = time.perf_counter() - started
    assert watch.summary.last_message == "y" * 199 + "…"
    assert elapsed < 5


# Garbage


GARBAGE_SKIPPED = [
    b"[1, 2]",
    b"42",
    b'"text"',
    b"null",
    b"{not json",
    b'{"type": NaN}',
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"type":"result","num_turns":' + b"9" * 5000 + b"}",
    b'{"type":"assistant","message":"\xff"}',
    b"\xff\xfe{}",
    b'{"type":["assistant"]}',
]


@pytest.mark.parametrize("kind", ["auto", "claude", "gemini", "codex"])
def test_garbage_lines_are_counted_never_raised(kind):
    watch = AgentWatch(kind)
    for line in GARBAGE_SKIPPED:
        watch.feed(line + b"\n")
    watch.feed(b"   \n\r\n")
    assert watch.finish() is False
    assert watch.skipped_lines == len(GARBAGE_SKIPPED)
    assert watch.summary == (None if kind == "auto" else AgentSummary(kind=kind))


def test_claude_fields_of_the_wrong_type_are_ignored():
    watch = AgentWatch("claude")
    watch.feed(
        lines_of(
            {"type": "assistant"},
            {"type": "assistant", "message": {"id": 5, "content": "hi", "usage": [1]}},
            {
                "type": "assistant",
                "message": {
                    "id": "m",
                    "content": [
                        1,
                        None,
                        {"type": "tool_use", "name": 7, "input": []},
                        {"type": "text", "text": {"a": 1}},
                    ],
                    "usage": {
                        "input_tokens": True,
                        "output_tokens": 2.5,
                        "cache_read_input_tokens": -3,
                    },
                },
            },
            {
                "type": "result",
                "total_cost_usd": "0.1",
                "usage": [],
                "is_error": "yes",
                "duration_ms": -5,
                "result": 7,
                "num_turns": "3",
            },
        )
    )
    assert watch.skipped_lines == 0
    assert watch.summary == AgentSummary(
        kind="claude", turns=2, tool_calls=1, result=AgentResult(ok=True)
    )


def test_gemini_fields_of_the_wrong_type_are_ignored():
    watch = AgentWatch("gemini")
    watch.feed(
        lines_of(
            {"type": "message", "role": ["assistant"], "content": "x"},
            {"type": "message", "role": "assistant", "content": 5, "delta": True},
            {"type": "tool_use", "tool_name": None, "parameters": "ls"},
            {"type": "error", "severity": "warning", "message": "careful"},
            {
                "type": "result",
                "status": "success",
                "stats": {"total_tokens": 1e400, "duration_ms": "9"},
            },
        )
    )
    assert watch.skipped_lines == 0
    assert watch.summary == AgentSummary(
        kind="gemini", turns=1, tool_calls=1, result=AgentResult(ok=True)
    )


def test_codex_fields_of_the_wrong_type_are_ignored():
    watch = AgentWatch("codex")
    watch.feed(
        lines_of(
            {"type": "item.started", "item": "command_execution"},
            {"type": "item.started", "item": {"type": "command_execution", "command": ["ls"]}},
            {"type": "item.completed", "item": {"type": "command_execution", "command": 3}},
            {"type": "item.completed", "item": {"id": "i", "type": "file_change", "changes": {}}},
            {"type": "turn.completed", "usage": {"input_tokens": 10**20, "output_tokens": 7}},
            {"type": "turn.failed", "error": "boom"},
        )
    )
    assert watch.skipped_lines == 0
    assert watch.summary == AgentSummary(
        kind="codex",
        tool_calls=2,  # the completion without an id, and item "i"
        last_tool="edit",
        tokens=7,
        result=AgentResult(ok=False, message="turn failed"),
        error="turn failed",
    )


def test_a_parser_bug_skips_the_line(monkeypatch):
    def broken(self, event):
        raise KeyError("bug")

    monkeypatch.setattr(PARSERS["codex"], "handle", broken)
    watch = AgentWatch("auto")
    watch.feed(b'{"type":"turn.started"}\n{"type":"turn.started"}\n')
    assert watch.summary == AgentSummary(kind="codex")
    assert watch.skipped_lines == 2


# Recognising the CLI


def test_events_before_recognition_are_replayed():
    """An `error` event alone could be Codex's or Gemini's: it waits for the next."""
    watch = AgentWatch("auto")
    watch.feed(lines_of({"type": "error", "message": "boom"}))
    assert watch.summary is None
    watch.feed(lines_of({"type": "turn.started"}))
    assert watch.summary.kind == "codex"
    assert watch.summary.error == "boom"
    assert watch.summary.turns == 1
    assert watch.skipped_lines == 0


def test_a_plain_log_stays_a_plain_log():
    watch = AgentWatch("auto")
    watch.feed(b"collecting ...\n" * 10 + b'{"level": "info"}\n' * 3)
    assert watch.finish() is False
    assert watch.summary is None
    assert watch.skipped_lines == 13


def test_auto_gives_up_after_fifty_unknown_objects():
    """A log of other JSON: the watch stops reading it, even if an agent's event
    comes later."""
    watch = AgentWatch("auto")
    watch.feed(b'{"level": "info"}\n' * 49)
    assert watch.skipped_lines == 0
    watch.feed(b'{"level": "info"}\n' + fake_agent.stream("claude", "ok")[0])
    assert watch.skipped_lines == 50
    assert watch.feed(recorded("claude")) is False
    assert watch.summary is None
    assert watch.skipped_lines == 50


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({"type": "system", "subtype": "init"}, "claude"),
        ({"type": "assistant", "message": {}}, "claude"),
        ({"type": "result", "is_error": False}, "claude"),
        ({"type": "init", "session_id": "s"}, "gemini"),
        ({"type": "message", "role": "user", "content": "hi"}, "gemini"),
        ({"type": "result", "status": "success"}, "gemini"),
        ({"type": "error", "severity": "warning", "message": "w"}, "gemini"),
        ({"type": "thread.started", "thread_id": "t"}, "codex"),
        ({"type": "item.completed", "item": {"id": "i", "type": "reasoning"}}, "codex"),
        ({"type": "system", "subtype": "compact_boundary"}, None),
        ({"type": "result"}, None),
        ({"type": "error", "message": "e"}, None),
        ({"type": "item.completed", "item": "x"}, None),
    ],
)
def test_which_event_names_which_cli(event, kind):
    watch = AgentWatch("auto")
    watch.feed(lines_of(event))
    assert (watch.summary.kind if watch.summary else None) == kind


# Each CLI's rules


def test_claude_counts_a_turn_per_message_id_and_its_usage_once():
    lines = fake_agent.stream("claude", "ok")
    watch = AgentWatch("claude")
    watch.feed(b"".join(lines[:3]))  # init, then msg_01's text and tool_use lines
    assert (watch.summary.turns, watch.summary.tool_calls, watch.summary.tokens) == (1, 1, 10123)
    assert watch.summary.last_tool == "Read: /home/user/project/src/calc.py"
    watch.feed(b"".join(lines[3:5]))
    assert (watch.summary.turns, watch.summary.tokens) == (2, 10123 + 10453)
    watch.feed(b"".join(lines[5:9]))
    assert (watch.summary.turns, watch.summary.tool_calls, watch.summary.tokens) == (4, 3, 42322)


def test_claude_result_num_turns_replaces_the_count():
    watch = AgentWatch("claude")
    watch.feed(
        lines_of(
            {
                "type": "result",
                "subtype": "error_max_turns",
                "is_error": True,
                "num_turns": 7,
                "duration_ms": 61000,
            }
        )
    )
    assert watch.summary.turns == 7
    assert watch.failed == "error_max_turns"
    assert watch.summary.line() == "✗ error: error_max_turns · 7 turns"


def test_claude_error_subtype_fails_even_with_is_error_false():
    watch = AgentWatch("claude")
    watch.feed(
        lines_of(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": False,
                "errors": ["Stream closed", 3, "Aborted"],
            }
        )
    )
    assert watch.summary.result == AgentResult(ok=False, message="Stream closed; Aborted")
    assert watch.failed == "Stream closed; Aborted"


def test_claude_subagent_messages_count_tools_not_turns():
    watch = AgentWatch("claude")
    watch.feed(
        lines_of(
            {
                "type": "assistant",
                "parent_tool_use_id": "toolu_task",
                "message": {
                    "id": "sub",
                    "content": [
                        {"type": "text", "text": "sub-agent musing"},
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "Grep",
                            "input": {"path": "src", "pattern": "def add_range"},
                        },
                    ],
                },
            },
        )
    )
    assert watch.summary == AgentSummary(
        kind="claude", tool_calls=1, last_tool="Grep: def add_range"
    )


def test_gemini_deltas_of_one_turn_make_one_turn():
    lines = fake_agent.stream("gemini", "ok")
    watch = AgentWatch("gemini")
    watch.feed(b"".join(lines[:4]))  # init, the prompt, two pieces of text
    assert watch.summary.turns == 1
    assert watch.summary.last_message == "I'll read the failing module first."
    watch.feed(lines[4])  # the same turn's tool call
    assert (watch.summary.turns, watch.summary.tool_calls) == (1, 1)
    watch.feed(b"".join(lines[5:7]))  # its result, then the next turn's tool call
    assert (watch.summary.turns, watch.summary.tool_calls) == (2, 2)


def test_gemini_a_whole_message_replaces_the_pieces_of_its_turn():
    watch = AgentWatch("gemini")
    watch.feed(
        lines_of(
            {"type": "message", "role": "assistant", "content": "Half a ", "delta": True},
            {"type": "message", "role": "assistant", "content": "The whole answer."},
            {"type": "result", "status": "success"},
        )
    )
    assert watch.summary.turns == 1
    assert watch.summary.last_message == "The whole answer."
    assert watch.summary.result == AgentResult(ok=True, message="The whole answer.")


def test_gemini_warnings_are_not_failures_but_errors_are():
    watch = AgentWatch("gemini")
    watch.feed(lines_of({"type": "error", "severity": "warning", "message": "Loop detected"}))
    assert watch.failed is None
    watch.feed(lines_of({"type": "error", "severity": "error", "message": "Max turns"}))
    assert watch.failed == "Max turns"
    watch.feed(lines_of({"type": "result", "status": "success", "stats": {"duration_ms": 1500}}))
    assert watch.summary.result == AgentResult(ok=False, message="Max turns", duration_s=1.5)


def test_codex_counts_each_item_once_and_retries_are_not_failures():
    watch = AgentWatch("codex")
    lines = fake_agent.stream("codex", "error")
    watch.feed(b"".join(lines[:4]))  # up to item_1 started
    assert watch.summary.tool_calls == 1
    watch.feed(b"".join(lines[4:7]))  # item_1 completed, two retry notices
    assert watch.summary.tool_calls == 1
    assert watch.failed is None
    watch.feed(lines[7])
    assert watch.failed == CODEX_ERROR


def test_codex_recovers_from_an_error_when_the_turn_completes():
    watch = AgentWatch("codex")
    watch.feed(lines_of({"type": "turn.started"}, {"type": "error", "message": "hiccup"}))
    assert watch.failed == "hiccup"
    watch.feed(lines_of({"type": "turn.completed", "usage": {"input_tokens": 5}}))
    assert watch.failed is None
    assert watch.summary.result == AgentResult(ok=True)
    assert watch.summary.tokens == 5


def test_codex_tool_labels():
    watch = AgentWatch("codex")
    labels = []
    for item in [
        {
            "type": "mcp_tool_call",
            "server": "github",
            "tool": "search_issues",
            "arguments": {"query": "is:open assignee:@me"},
        },
        {"type": "web_search", "query": "python json recursion limit"},
        {"item_type": "command_execution", "command": "/bin/zsh -lc 'ls -la'"},
        {"type": "file_change", "changes": [{"path": "a.py", "kind": "add"}, {"path": "b.py"}]},
    ]:
        watch.feed(lines_of({"type": "item.completed", "item": item}))
        labels.append(watch.summary.last_tool)
    assert labels == [
        "github.search_issues: is:open assignee:@me",
        "web_search: python json recursion limit",
        "shell: ls -la",
        "edit: a.py",
    ]
    assert watch.summary.tool_calls == 4


# The summary


def test_summary_round_trips_through_json():
    summary = watched(recorded("claude", "unicode")).summary
    assert AgentSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    failed = watched(recorded("gemini", "error")).summary
    assert AgentSummary.from_dict(json.loads(json.dumps(failed.to_dict()))) == failed


@pytest.mark.parametrize(
    ("garbage", "result"),
    [
        ({}, None),
        (
            {
                "kind": 5,
                "turns": "3",
                "tool_calls": True,
                "tokens": -1,
                "cost_usd": float("nan"),
                "result": "ok",
                "error": ["a"],
                "last_tool": 7,
            },
            None,
        ),
        (
            {"turns": 10**30, "tokens": 2.5, "cost_usd": "1", "result": {"ok": "yes"}},
            AgentResult(ok=False),
        ),
        (None, None),
        ([1, 2], None),
        ("summary", None),
    ],
)
def test_summary_from_garbage_is_defaults(garbage, result):
    summary = AgentSummary.from_dict(garbage)
    assert summary == AgentSummary(kind="unknown", result=result)
    assert summary.line() == ("✗ error" if result else "")


def test_summary_from_dict_bounds_its_text():
    summary = AgentSummary.from_dict(
        {"kind": "claude", "last_message": "word " * 100, "error": "e\n" * 400, "turns": 3}
    )
    assert summary.last_message == ("word " * 40)[:199].rstrip() + "…"
    assert len(summary.error) == 300
    assert summary.turns == 3


def test_line_leaves_out_what_is_unknown():
    assert AgentSummary(kind="claude").line() == ""
    assert AgentSummary(kind="codex", turns=1, tokens=999).line() == "1 turn · 999 tokens"
    assert AgentSummary(kind="codex", tokens=1).line() == "1 token"
    assert AgentSummary(kind="codex", tokens=999_949).line() == "999.9k tokens"
    assert AgentSummary(kind="codex", tokens=999_950).line() == "1.0M tokens"
    assert AgentSummary(kind="codex", cost_usd=12.5).line() == "$12.50"
    done = AgentSummary(kind="codex", result=AgentResult(ok=True, duration_s=3725.0))
    assert done.line() == "✓ done in 1h02m"
    done.result.duration_s = 192.4
    assert done.line() == "✓ done in 3m12s"
    failed = AgentSummary(kind="codex", result=AgentResult(ok=False, message="bad " * 50))
    assert failed.line() == "✗ error: " + ("bad " * 25)[:99].rstrip() + "…"


def test_line_never_raises_on_fields_of_the_wrong_type():
    summary = AgentSummary(
        kind="claude",
        turns="x",
        tool_calls=None,
        last_tool=5,
        last_message=["a"],
        tokens=float("inf"),
        cost_usd="free",
        result="done",
        error=0,
    )
    assert summary.line() == ""
    assert AgentSummary(kind="claude", result=AgentResult(ok="yes")).line() == "✗ error"


def test_one_line_text_is_clean_and_bounded():
    assert one_line("  a\n\tb \x1b[31mred\x00 ", 50) == "a b [31mred"
    assert one_line("\ud83d broken surrogate", 50) == "? broken surrogate"
    assert one_line("x" * 10, 10) == "x" * 10
    assert one_line("x" * 11, 10) == "x" * 9 + "…"
    assert one_line(" \n ", 10) is None
    assert one_line(b"bytes", 10) is None


# The fake agent, run as a process


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
@pytest.mark.parametrize("scenario", fake_agent.SCENARIOS)
def test_the_fake_agent_process_streams_its_scenario(kind, scenario):
    done = subprocess.run(
        [sys.executable, str(FAKE_AGENT), kind, scenario, "--delay", "0"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == (1 if scenario == "cut" else 0), done.stderr
    assert done.stdout == recorded(kind, scenario)
    summary, skipped = expected(kind, scenario)
    watch = watched(done.stdout, "auto", size=1 << 16)
    assert (watch.summary, watch.skipped_lines) == (summary, skipped)
    if scenario == "huge":
        assert max(len(line) for line in done.stdout.split(b"\n")) > 1 << 20
    if scenario == "cut":
        assert not done.stdout.endswith(b"\n")


def test_the_fake_agent_is_watched_as_it_streams():
    """Read from the pipe as the lines come: the line shows progress before the end."""
    process = subprocess.Popen(
        [sys.executable, str(FAKE_AGENT), "claude", "ok", "--delay", "0.02"],
        stdout=subprocess.PIPE,
    )
    watch = AgentWatch("auto")
    shown = []
    try:
        while chunk := os.read(process.stdout.fileno(), 1 << 16):
            if watch.feed(chunk):
                shown.append(watch.summary.line())
    finally:
        process.stdout.close()
        assert process.wait(timeout=30) == 0
    assert watch.finish() is False
    assert len(shown) >= 3
    assert not shown[0].startswith("✓")
    assert shown[-1] == OK["claude"].line()


def test_a_long_session_keeps_a_bounded_memory_of_ids_and_counts_each_once():
    """Ids are remembered to count a message or a tool call once, the newest KEEP_IDS
    of them: a session of a million events does not grow the watch without end."""
    from oneshot_nb.agents.fields import KEEP_IDS

    watch = AgentWatch("claude")
    for n in range(3 * KEEP_IDS):
        block = {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {"command": "ls"}}
        line = {"type": "assistant", "message": {"id": f"m{n}", "content": [block]}}
        watch.feed(lines_of(line, line))  # each line twice, as Claude Code repeats them
    parser = watch._parser
    assert watch.summary.turns == watch.summary.tool_calls == 3 * KEEP_IDS
    assert len(parser._message_ids) == len(parser._tool_ids) == KEEP_IDS


def test_controls_and_bidi_marks_do_not_reach_the_summary():
    watch = AgentWatch("claude")
    text = "ok\x9b31m \u202eevil\u202c \x1b]8;;x\x07 done"
    watch.feed(lines_of({"type": "result", "is_error": True, "result": text}))
    assert watch.failed == "ok 31m evil ]8;;x done"
