"""A fake agent CLI: prints a recorded stream of Claude Code, Gemini CLI or Codex.

    python tests/agents/fake_agent.py KIND SCENARIO [--delay SECONDS]

KIND is claude, gemini or codex; the events are written as each CLI writes them (compact
JSON, UTF-8 unescaped, one line each, flushed), `--delay` seconds apart (0.05 by default).
SCENARIO:
    ok       a fix-the-test session: three tool calls (read, edit, run `pytest -q`),
             assistant text, a successful result with tokens (and cost for claude)
    error    a run that fails: claude's result with is_error true, gemini's warning then
             result with status error, codex's retry notices then turn.failed; exit 0
    cut      ok, cut in the middle of its last line (no newline, incomplete JSON); exit 1
    unknown  ok, with an event of an unknown type and a line that is not JSON
    huge     ok, with a tool result of 1 MiB on one line
    unicode  ok, with emoji, CJK and accented text in messages and tool arguments
"""

from __future__ import annotations

import argparse
import json
import sys
import time

KINDS = ("claude", "gemini", "codex")
SCENARIOS = ("ok", "error", "cut", "unknown", "huge", "unicode")

PLAIN = {
    "prompt": "Fix the failing test in src/calc.py",
    "intro": "I'll read the failing module first.",
    "path": "/home/user/project/src/calc.py",
    "command": "pytest -q",
    "final": "All tests pass now: fixed the off-by-one in `add_range`.",
}
UNICODE = {
    "prompt": "Corrige le test qui échoue dans données/calc_é.py 🙏",
    "intro": "Je lis d'abord le module défaillant 🔍",
    "path": "/home/user/projet/données/calc_é.py",
    "command": "pytest -q -k 'naïve or 日本語'",
    "final": "Tous les tests passent ✅ — 修正しました: add_range() のオフバイワン 🎉",
}
# A file's worth of rows, a little over 1 MiB, for the one-line tool result of "huge".
HUGE_OUTPUT = "".join(f"{n:7d}  row {n}: the quick brown fox jumps\n" for n in range(24_000))
SMALL_OUTPUT = "def add_range(a, b):\n    return sum(range(a, b))\n"
TEST_OUTPUT = "7 passed in 0.41s\n"


def claude_ok(texts: dict, huge: bool) -> list:
    read_output = HUGE_OUTPUT if huge else SMALL_OUTPUT
    return [
        CLAUDE_INIT,
        claude_assistant("msg_01", 1, {"type": "text", "text": texts["intro"]}),
        claude_assistant("msg_01", 1, claude_tool("toolu_01", "Read", file_path=texts["path"])),
        claude_result_of("toolu_01", read_output),
        claude_assistant(
            "msg_02",
            2,
            claude_tool(
                "toolu_02",
                "Edit",
                file_path=texts["path"],
                old_string="range(a, b)",
                new_string="range(a, b + 1)",
            ),
        ),
        claude_result_of("toolu_02", f"The file {texts['path']} has been updated.\n"),
        claude_assistant(
            "msg_03",
            3,
            claude_tool("toolu_03", "Bash", command=texts["command"], description="Run tests"),
        ),
        claude_result_of("toolu_03", TEST_OUTPUT),
        claude_assistant("msg_04", 4, {"type": "text", "text": texts["final"]}),
        claude_final(
            subtype="success",
            is_error=False,
            duration_ms=42137,
            num_turns=4,
            result=texts["final"],
            total_cost_usd=0.0412,
            usage=claude_usage(12, 2900, 39000, 410),
        ),
    ]


def claude_error() -> list:
    return [
        *claude_ok(PLAIN, huge=False)[:4],
        claude_final(
            subtype="success",
            is_error=True,
            duration_ms=9876,
            num_turns=2,
            result='API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
            '"message":"Overloaded"}}',
            total_cost_usd=0.0123,
            usage=claude_usage(3, 2000, 8000, 120),
        ),
    ]


SESSION = "8f0e3a8c-5b1d-4c57-9a63-2f7d1e0b9c41"
CLAUDE_INIT = {
    "type": "system",
    "subtype": "init",
    "cwd": "/home/user/project",
    "session_id": SESSION,
    "tools": ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "TodoWrite"],
    "mcp_servers": [],
    "model": "claude-sonnet-4-5-20250929",
    "permissionMode": "acceptEdits",
    "slash_commands": ["compact", "context", "cost", "init", "review"],
    "apiKeySource": "ANTHROPIC_API_KEY",
    "claude_code_version": "2.0.14",
    "output_style": "default",
    "agents": ["general-purpose"],
    "uuid": "0a6f3c2e-1d4b-4e8a-b5f9-7c2d8e1a3b60",
}
# Per message: (input, cache creation, cache read, output); the result sums them.
CLAUDE_USAGE = {1: (3, 2000, 8000, 120), 2: (3, 300, 10000, 150), 3: (3, 400, 10300, 80)}
CLAUDE_USAGE[4] = (3, 200, 10700, 60)


def claude_final(**fields: object) -> dict:
    return {
        "type": "result",
        **fields,
        "duration_api_ms": 38020,
        "session_id": SESSION,
        "permission_denials": [],
        "uuid": "5d2e8f1a-7b3c-4a9e-8d6f-1c0b2a4e9f37",
    }


def claude_usage(inputs: int, creation: int, read: int, outputs: int) -> dict:
    return {
        "input_tokens": inputs,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": creation, "ephemeral_1h_input_tokens": 0},
        "output_tokens": outputs,
        "service_tier": "standard",
    }


def claude_assistant(message_id: str, number: int, block: dict) -> dict:
    """One content block: Claude Code prints a line per block, repeating id and usage."""
    return {
        "type": "assistant",
        "message": {
            "model": "claude-sonnet-4-5-20250929",
            "id": f"{message_id}_0Xq7f2Lk9TzVb3",
            "type": "message",
            "role": "assistant",
            "content": [block],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": claude_usage(*CLAUDE_USAGE[number]),
        },
        "parent_tool_use_id": None,
        "session_id": SESSION,
        "uuid": f"7e1c0d2a-3f4b-4c5d-8e6f-{number:012d}",
    }


def claude_tool(tool_id: str, name: str, **arguments: str) -> dict:
    return {"type": "tool_use", "id": f"{tool_id}_Fh2kP8", "name": name, "input": arguments}


def claude_result_of(tool_id: str, output: str) -> dict:
    return {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {"tool_use_id": f"{tool_id}_Fh2kP8", "type": "tool_result", "content": output}
            ],
        },
        "parent_tool_use_id": None,
        "session_id": SESSION,
        "uuid": "3b9d2c1e-0f8a-4d7b-9c6e-5a4f3e2d1c0b",
    }


def gemini_ok(texts: dict, huge: bool) -> list:
    half = len(texts["intro"]) // 2
    return [
        gemini("init", session_id="c4b6e2f0-9d1a-4f3e-8b7c-2a5d6e9f0c13", model="gemini-2.5-pro"),
        gemini("message", role="user", content=texts["prompt"]),
        gemini("message", role="assistant", content=texts["intro"][:half], delta=True),
        gemini("message", role="assistant", content=texts["intro"][half:], delta=True),
        gemini_tool("read_file", 1, absolute_path=texts["path"]),
        gemini_result_of("read_file", 1, HUGE_OUTPUT if huge else ""),
        gemini_tool(
            "replace",
            2,
            file_path=texts["path"],
            old_string="range(a, b)",
            new_string="range(a, b + 1)",
            instruction="Include the upper bound",
        ),
        gemini_result_of("replace", 2, f"Successfully modified file: {texts['path']}"),
        gemini_tool("run_shell_command", 3, command=texts["command"], description="Run tests"),
        gemini_result_of("run_shell_command", 3, TEST_OUTPUT),
        gemini("message", role="assistant", content=texts["final"][:20], delta=True),
        gemini("message", role="assistant", content=texts["final"][20:], delta=True),
        gemini("result", status="success", stats=gemini_stats(42137)),
    ]


def gemini_error() -> list:
    return [
        *gemini_ok(PLAIN, huge=False)[:6],
        gemini("error", severity="warning", message="Loop detected, stopping execution"),
        gemini(
            "result",
            status="error",
            error={
                "type": "Error",
                "message": "[API Error: You have exhausted your capacity on this model.]",
            },
            stats=gemini_stats(0),
        ),
    ]


def gemini(kind: str, **fields: object) -> dict:
    return {"type": kind, "timestamp": "2025-10-20T09:12:01.120Z", **fields}


def gemini_tool(name: str, number: int, **parameters: str) -> dict:
    tool_id = f"{name}-1760951523{number:03d}-7c1f0a"
    return gemini("tool_use", tool_name=name, tool_id=tool_id, parameters=parameters)


def gemini_result_of(name: str, number: int, output: str) -> dict:
    tool_id = f"{name}-1760951523{number:03d}-7c1f0a"
    return gemini("tool_result", tool_id=tool_id, status="success", output=output)


def gemini_stats(duration_ms: int) -> dict:
    return {
        "total_tokens": 19001,
        "input_tokens": 18102,
        "output_tokens": 632,
        "cached": 12288,
        "input": 5814,
        "duration_ms": duration_ms,
        "tool_calls": 3,
    }


def codex_ok(texts: dict, huge: bool) -> list:
    read = "bash -lc 'cat src/calc.py'"
    # Codex shows the argv it ran, quoted: bash -lc 'pytest -q'.
    quote = "'" if "'" not in texts["command"] else '"'
    command = f"bash -lc {quote}{texts['command']}{quote}"
    steps = ("Fix add_range", "Run the tests")
    todo = [{"text": step, "completed": False} for step in steps]
    done = [{"text": step, "completed": True} for step in steps]
    return [
        {"type": "thread.started", "thread_id": "0199ff3a-6c2d-7e41-9b8a-3d5f1c2e4a70"},
        {"type": "turn.started"},
        codex("item.completed", "item_0", "reasoning", text="**Inspecting the failing module**"),
        *codex_command("item_1", read, HUGE_OUTPUT if huge else SMALL_OUTPUT),
        codex("item.started", "item_2", "todo_list", items=todo),
        codex(
            "item.completed",
            "item_3",
            "file_change",
            changes=[{"path": texts["path"], "kind": "update"}],
            status="completed",
        ),
        *codex_command("item_4", command, TEST_OUTPUT),
        codex("item.completed", "item_5", "agent_message", text=texts["final"]),
        codex("item.completed", "item_2", "todo_list", items=done),
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 1122},
        },
    ]


def codex_error() -> list:
    cause = "stream disconnected before completion: stream closed before response.completed"
    return [
        *codex_ok(PLAIN, huge=False)[:5],
        {"type": "error", "message": f"Reconnecting... 1/5 ({cause})"},
        {"type": "error", "message": f"Reconnecting... 2/5 ({cause})"},
        {"type": "turn.failed", "error": {"message": cause}},
    ]


def codex(kind: str, item_id: str, item_type: str, **fields: object) -> dict:
    return {"type": kind, "item": {"id": item_id, "type": item_type, **fields}}


def codex_command(item_id: str, command: str, output: str) -> list:
    return [
        codex(
            "item.started",
            item_id,
            "command_execution",
            command=command,
            aggregated_output="",
            exit_code=None,
            status="in_progress",
        ),
        codex(
            "item.completed",
            item_id,
            "command_execution",
            command=command,
            aggregated_output=output,
            exit_code=0,
            status="completed",
        ),
    ]


STREAMS = {
    "claude": (claude_ok, claude_error),
    "gemini": (gemini_ok, gemini_error),
    "codex": (codex_ok, codex_error),
}
# What "unknown" slips in: an event type the parsers do not know, and a line of text.
UNKNOWN_EVENT = {
    "claude": {"type": "telemetry", "event": "heartbeat", "ts": 1760951523},
    "gemini": {"type": "debug_trace", "message": "scheduler idle", "depth": 2},
    "codex": {"type": "session.heartbeat", "seq": 3},
}
NOT_JSON = "Warning: could not load /home/user/.config/agent/colors.json"


def stream(kind: str, scenario: str) -> list[bytes]:
    """The lines the fake prints, each ending in a newline but the cut one."""
    ok, error = STREAMS[kind]
    if scenario == "error":
        events = error()
    else:
        texts = UNICODE if scenario == "unicode" else PLAIN
        events = ok(texts, huge=scenario == "huge")
    if scenario == "unknown":
        events[2:2] = [UNKNOWN_EVENT[kind]]
        events[6:6] = [NOT_JSON]
    lines = [encode(event) + b"\n" for event in events]
    if scenario == "cut":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    return lines


def encode(event: dict | str) -> bytes:
    if isinstance(event, str):
        return event.encode()
    # As JSON.stringify and serde_json write: compact, non-ASCII as UTF-8.
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between lines")
    args = parser.parse_args()
    out = sys.stdout.buffer
    for index, line in enumerate(stream(args.kind, args.scenario)):
        if index and args.delay > 0:
            time.sleep(args.delay)
        out.write(line)
        out.flush()
    return 1 if args.scenario == "cut" else 0


if __name__ == "__main__":
    sys.exit(main())
