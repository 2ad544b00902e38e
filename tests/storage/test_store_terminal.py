"""The history of tasks that take input: the input as its own stream, a terminal's log
byte-exact, and an agent's summary saved as it runs."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from helpers import query, stored_orchestrator, wait_for_line

from oneshot_nb import TaskState
from oneshot_nb.storage.records import get_record

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

FAKE = str(Path(__file__).parents[1] / "agents" / "fake_agent.py")


async def test_a_pipe_tasks_input_is_stored_as_stdin_between_its_output(tmp_path):
    """The log reads as the session happened: what was sent, where it was sent."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit(
            [
                sys.executable,
                "-c",
                "import sys\nfor l in sys.stdin.buffer:"
                " sys.stdout.buffer.write(b'got ' + l); sys.stdout.flush()",
            ],
            stdin=True,
        )
        task.send("one\n")
        await wait_for_line(task, "got one")
        task.send(b"two\xff\n")
        task.close_stdin()
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    assert record.pty is False
    assert record.read_log("stdin") == b"one\ntwo\xff\n"
    assert record.read_log("stdout") == b"got one\ngot two\xff\n"
    assert record.read_log() == b"one\ngot one\ntwo\xff\ngot two\xff\n"
    streams = [stream for stream, _ in record.read_chunks()[0]]
    assert streams[0] == "stdin" and "stdout" in streams


async def test_a_pty_tasks_log_is_its_output_and_its_input_is_kept_apart(tmp_path):
    """A terminal echoes what it is sent: the log is the terminal's output, byte for
    byte, without the input a second time; the input is in its own stream."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path, idle_after=0.3) as (orch, _):
        task = orch.submit('printf "\\033[1mname?\\033[0m "; read x; echo "hi $x"', pty=True)
        await task.wait_for(TaskState.IDLE)
        task.send("ada\n")
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    assert record.pty is True
    assert record.read_log() == b"\x1b[1mname?\x1b[0m ada\nhi ada\n"
    assert record.read_log("stdin") == b"ada\n"
    assert [s for s, _ in record.read_chunks()[0]] == ["stdout"] * len(record.read_chunks()[0])
    transitions = record.transitions()
    assert transitions[1][:3] == ("detect_silence", "RUNNING", "IDLE")
    assert transitions[1][4] == "waiting for input"


async def test_an_agents_summary_is_in_the_history_while_it_runs(tmp_path):
    """A kernel that dies mid-run leaves the summary as of its last save (every 2 s)."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, store):
        task = orch.submit([sys.executable, FAKE, "claude", "ok", "--delay", "0.3"], agent="claude")
        with anyio.fail_after(20):
            while task.agent is None or task.agent.tool_calls < 1:
                await anyio.sleep(0.05)
        store.flush()
        saved = query(path, "SELECT agent FROM tasks WHERE id = ?", task.id)[0][0]
        assert saved is not None and '"kind": "claude"' in saved
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    assert record.agent == task.agent
    assert record.agent is not None and record.agent.result is not None


async def test_a_garbled_agent_column_reads_as_no_summary(tmp_path):
    """A database is data: a summary that is not JSON, or not an object, leaves the
    rest of the task readable."""
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit("true", agent="auto")
        await task.wait()
    for garbage in ("{not json", "[1, 2]", '"text"', '{"kind": 5, "turns": "many"}'):
        db = sqlite3.connect(path)
        db.execute("UPDATE tasks SET agent = ? WHERE id = ?", (garbage, task.id))
        db.commit()
        db.close()
        record = get_record(task.id, path=str(path))
        assert record.state is TaskState.COMPLETED
        assert record.agent is None or isinstance(record.agent.turns, int)


async def test_an_agents_last_change_before_a_silence_is_saved(tmp_path):
    """Changes that come within the save interval are not lost to a quiet agent: the
    last one is saved at the interval's end, with the task still running."""
    path = tmp_path / "history.sqlite3"
    command = f"{sys.executable} {FAKE} claude ok --delay 0.02 | head -n -1; sleep 30"
    async with stored_orchestrator(path) as (orch, store):
        task = orch.submit(command, agent="claude", grace=0.2)
        with anyio.fail_after(10):
            while task.agent is None or task.agent.tool_calls < 3:
                await anyio.sleep(0.05)
        await anyio.sleep(2.5)  # past the interval that began with the first save

        def saved_tools() -> int:
            store.flush()
            row = query(path, "SELECT agent FROM tasks WHERE id = ?", task.id)[0][0]
            return json.loads(row)["tool_calls"]

        assert not task.state.is_final
        assert saved_tools() == 3
        task.stop()
