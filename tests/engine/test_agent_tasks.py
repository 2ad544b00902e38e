"""Agent CLIs as tasks: the fake agents (tests/agents/fake_agent.py) run as real
processes, their streams read into `task.agent` as they come, and the history keeps
the summary beside the byte-exact log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from helpers import stored_orchestrator

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskEvent, TaskState
from oneshot_nb.storage.records import get_record

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

FAKE = str(Path(__file__).parents[1] / "agents" / "fake_agent.py")


def fake(kind: str, scenario: str, delay: float = 0.0) -> list[str]:
    return [sys.executable, FAKE, kind, scenario, "--delay", str(delay)]


def recorded(kind: str, scenario: str) -> bytes:
    return subprocess.run(fake(kind, scenario), capture_output=True, check=False).stdout


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
async def test_an_agent_task_keeps_a_summary_and_its_log_byte_exact(kind, tmp_path):
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(fake(kind, "ok", 0.01), agent=kind)
        events: list[TaskEvent] = []
        task.listeners.append(events.append)
        assert await task.wait() is TaskState.COMPLETED
    summary = task.agent
    assert summary is not None and summary.kind == kind
    assert summary.tool_calls == 3
    assert summary.last_tool is not None and "pytest -q" in summary.last_tool
    assert summary.result is not None and summary.result.ok
    assert summary.tokens
    assert any(event.kind == "agent" for event in events)
    record = get_record(task.id, path=str(path))
    assert record.read_log() == recorded(kind, "ok")
    assert record.agent == summary  # saved with the task, read back whole


async def test_auto_recognises_each_cli_from_its_first_events():
    async with AsyncOrchestrator() as orch:
        tasks = {
            kind: orch.submit(fake(kind, "ok"), agent="auto")
            for kind in ("claude", "gemini", "codex")
        }
        await orch.wait_all()
    assert {kind: task.agent.kind for kind, task in tasks.items() if task.agent} == {
        "claude": "claude",
        "gemini": "gemini",
        "codex": "codex",
    }


async def test_plain_output_given_auto_has_no_summary_and_is_plain_log():
    task = OneshotTask(["printf", "just a log\\n{not json}\\n"], agent="auto")
    assert await task.run() is TaskState.COMPLETED
    assert task.agent is None
    assert task.output == "just a log\n{not json}\n"


@pytest.mark.parametrize("kind", ["claude", "gemini", "codex"])
async def test_an_agent_that_reports_an_error_fails_with_its_message_though_it_exits_0(kind):
    task = OneshotTask(fake(kind, "error"), agent=kind)
    assert await task.run() is TaskState.FAILED
    assert task.returncode == 0
    assert task.agent is not None and task.agent.error
    assert task.reason == task.agent.error
    assert "\n" not in task.reason


async def test_a_stream_cut_mid_line_keeps_what_came_before_and_the_exit_code():
    task = OneshotTask(fake("claude", "cut"), agent="claude")
    assert await task.run() is TaskState.FAILED
    assert (task.returncode, task.reason) == (1, "exit")
    assert task.agent is not None and task.agent.tool_calls == 3
    assert task.output.encode() == recorded("claude", "cut")


async def test_unknown_events_and_non_json_lines_are_plain_log_not_errors():
    task = OneshotTask(fake("codex", "unknown"), agent="codex")
    assert await task.run() is TaskState.COMPLETED
    assert task.agent is not None and task.agent.result is not None
    assert task.output.encode() == recorded("codex", "unknown")


async def test_a_one_megabyte_tool_result_on_one_line_is_read_and_kept():
    task = OneshotTask(fake("claude", "huge"), agent="claude", max_log_bytes=4 << 20)
    assert await task.run() is TaskState.COMPLETED
    assert task.agent is not None and task.agent.tool_calls == 3
    assert task.bytes_written["stdout"] == len(recorded("claude", "huge")) > 1 << 20


async def test_non_ascii_text_reaches_the_summary_whole():
    task = OneshotTask(fake("claude", "unicode"), agent="claude")
    assert await task.run() is TaskState.COMPLETED
    assert task.agent is not None
    assert "✅" in (task.agent.result.message or task.agent.last_message or "")


async def test_an_agent_stopped_mid_run_is_interrupted_with_its_summary_so_far():
    task = OneshotTask(fake("gemini", "ok", 0.5), agent="gemini", grace=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        with anyio.fail_after(10):
            while task.agent is None or task.agent.tool_calls < 1:
                await anyio.sleep(0.02)
        task.stop()
    assert task.state is TaskState.INTERRUPTED
    assert task.agent is not None and task.agent.result is None


async def test_a_batch_of_agents_each_keeps_its_own_summary():
    async with AsyncOrchestrator() as orch:
        batch = orch.submit_batch([fake("claude", "ok"), fake("claude", "error")], agent="claude")
        assert await batch.wait() == [TaskState.COMPLETED, TaskState.FAILED]
    ok, failed = batch.tasks
    assert ok.agent is not None and ok.agent.cost_usd is not None
    assert failed.agent is not None and failed.agent.error
