"""Tasks in a pseudo-terminal, and input to running tasks: real processes throughout."""

from __future__ import annotations

import hashlib
import os
import time

import anyio
import pytest
from helpers import py, wait_for_line, wait_until
from helpers.processes import PGRP, group_gone, live_members, pids_where, process_gone

from oneshot_nb import AsyncOrchestrator, OneshotTask, TaskState
from oneshot_nb.engine.input import WAITING_FOR_INPUT
from oneshot_nb.runners.stdin import INPUT_LIMIT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PROMPT = 'read -p "continue? " answer; echo "got $answer"'


async def run_alone(task: OneshotTask) -> TaskState:
    return await task.run()


# -- a terminal -------------------------------------------------------------------------


async def test_a_pty_task_sees_a_terminal_on_all_three_streams_of_the_size_asked():
    task = OneshotTask(
        py(
            """
            import os, sys
            print([f.isatty() for f in (sys.stdin, sys.stdout, sys.stderr)])
            print(os.environ["TERM"], tuple(os.get_terminal_size()))
            print(os.ttyname(0) == os.ttyname(1) == os.ttyname(2))
            """
        ),
        pty=True,
        cols=99,
        rows=17,
    )
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "[True, True, True]\nxterm-256color (99, 17)\nTrue\n"


async def test_a_pty_task_has_the_terminal_as_its_controlling_terminal():
    """/dev/tty opens: the session has a controlling terminal, so a prompt that reads
    /dev/tty (as ssh and sudo do) works."""
    task = OneshotTask("echo hi > /dev/tty && echo ok", pty=True)
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "hi\nok\n"


async def test_colour_escapes_and_carriage_returns_come_through_a_pty_byte_exact():
    """Output processing is off: the bytes read are the bytes written ("\\n" stays
    "\\n", escapes and "\\r" are untouched)."""
    written = b"\x1b[31mred\x1b[0m\n50%\r100%\n\xe2\x9c\x93 done\n"
    task = OneshotTask(py(f"import sys; sys.stdout.buffer.write({written!r})"), pty=True)
    assert await task.run() is TaskState.COMPLETED
    assert task.output.encode() == written
    assert task.bytes_written == {"stdout": len(written), "stderr": 0}


async def test_stderr_of_a_pty_task_is_its_stdout_in_order():
    task = OneshotTask(
        py("import sys; print('one', flush=True); print('two', file=sys.stderr, flush=True)"),
        pty=True,
    )
    assert await task.run() is TaskState.COMPLETED
    assert task.output_chunks() == [("stdout", "one\ntwo\n")]


async def test_a_pty_task_past_its_timeout_is_interrupted_with_its_session():
    task = OneshotTask("echo start; sleep 30", pty=True, timeout=0.5, grace=0.2)
    assert await task.run() is TaskState.INTERRUPTED
    assert (task.reason, task.output) == ("timeout", "start\n")
    await wait_until(lambda: group_gone(task.pid))


async def test_a_pty_task_ending_with_a_code_fails_with_it():
    task = OneshotTask("echo bye; exit 3", pty=True)
    assert await task.run() is TaskState.FAILED
    assert (task.returncode, task.output) == (3, "bye\n")


async def test_stop_of_a_pty_task_ends_its_whole_session(tmp_path):
    """The terminal's session is the task's group: a child in the background (which a
    closing terminal would only HUP) dies with it too."""
    pid_file = tmp_path / "child.pid"
    task = OneshotTask(
        f"(trap '' HUP; sleep 100) & echo $! > {pid_file}; echo started; sleep 100",
        pty=True,
        grace=0.5,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await wait_for_line(task, "started")
        child = int(pid_file.read_text())
        assert pids_where(PGRP, task.pid)
        task.stop()
    assert task.state is TaskState.INTERRUPTED
    assert group_gone(task.pid)
    await wait_until(lambda: process_gone(child))


async def test_a_pty_flood_is_drained_byte_exact_with_the_log_bounded():
    size = 256 << 20
    task = OneshotTask(
        py(
            f"""
            import sys
            block = bytes(range(256)) * 256
            for _ in range({size} // len(block)):
                sys.stdout.buffer.write(block)
            """
        ),
        pty=True,
        max_log_bytes=1 << 20,
    )
    digest = hashlib.sha256()
    task.listeners.append(lambda e: e.kind == "output" and digest.update(e.data))
    assert await task.run() is TaskState.COMPLETED
    expected = hashlib.sha256((bytes(range(256)) * 256) * (size // 65536)).hexdigest()
    assert task.bytes_written["stdout"] == size
    assert digest.hexdigest() == expected
    assert len(task.output.encode("utf-8", "surrogateescape")) <= 1 << 21


async def test_a_pty_task_goes_idle_waiting_for_input_and_goes_on_when_sent_it():
    task = OneshotTask(PROMPT, pty=True, idle_after=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        assert await task.wait_for(TaskState.IDLE) is TaskState.IDLE
        assert task.reason == WAITING_FOR_INPUT
        assert task.transitions[-1].reason == WAITING_FOR_INPUT
        assert task.output == "continue? "
        task.send("y\n")
    assert task.state is TaskState.COMPLETED
    # The terminal echoes the answer: the log reads as the session happened.
    assert task.output == "continue? y\ngot y\n"
    assert task.bytes_sent == 2


async def test_a_silent_task_that_does_not_read_is_plain_idle():
    task = OneshotTask("sleep 0.8", pty=True, idle_after=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        assert await task.wait_for(TaskState.IDLE) is TaskState.IDLE
        assert task.reason is None
    assert task.state is TaskState.COMPLETED


async def test_input_sent_before_the_command_starts_is_written_once_it_has():
    task = OneshotTask(PROMPT, pty=True)
    task.send("early\n")
    assert await task.run() is TaskState.COMPLETED
    assert task.output.endswith("got early\n")


async def test_close_stdin_of_a_pty_task_is_an_end_of_file():
    task = OneshotTask("cat; echo after-eof", pty=True, idle_after=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        task.send("partial")  # no newline: the first EOF ends the line, the second the input
        task.close_stdin()
    assert task.state is TaskState.COMPLETED
    assert task.output.endswith("after-eof\n")
    assert not task.accepts_input


# -- a pipe for stdin -----------------------------------------------------------------------


async def test_a_stdin_task_reads_what_it_is_sent_and_the_log_shows_it_in_order():
    task = OneshotTask(
        py("import sys\nfor line in sys.stdin: print('echo:', line.strip(), flush=True)"),
        stdin=True,
        idle_after=0.3,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        assert await task.wait_for(TaskState.IDLE) is TaskState.IDLE
        assert task.reason == WAITING_FOR_INPUT
        task.send("one\n")
        await wait_for_line(task, "echo: one")
        task.send(b"two\n")
        await wait_for_line(task, "echo: two")
        task.close_stdin()
    assert task.state is TaskState.COMPLETED
    assert task.output == "one\necho: one\ntwo\necho: two\n"
    assert task.read_output("stdout") == "echo: one\necho: two\n"
    assert task.read_output("stdin") == "one\ntwo\n"


async def test_a_task_without_input_has_a_closed_stdin_and_refuses_send():
    task = OneshotTask("cat; echo done")
    with pytest.raises(ValueError, match="does not take input: start it with pty=True or stdin"):
        task.send("x")
    with pytest.raises(ValueError, match="does not take input"):
        task.close_stdin()
    assert await task.run() is TaskState.COMPLETED
    assert task.output == "done\n"  # cat read end of file at once: no hang


async def test_send_to_an_ended_task_is_refused_in_one_line():
    task = OneshotTask("true", stdin=True)
    assert await task.run() is TaskState.COMPLETED
    with pytest.raises(ValueError, match=rf"cannot send to task {task.id}: it has ended"):
        task.send("late\n")
    assert task.bytes_sent == 0


async def test_send_takes_only_text_or_bytes():
    task = OneshotTask("cat", stdin=True)
    with pytest.raises(TypeError, match="send\\(\\) takes str or bytes, got int"):
        task.send(3)  # type: ignore[arg-type]
    task.close_stdin()
    assert await task.run() is TaskState.COMPLETED


async def test_input_a_command_closed_is_refused_after():
    """A command that closes its stdin: what is sent after is refused in one line."""
    task = OneshotTask(
        py("import os, time\nos.close(0)\nprint('closed', flush=True)\ntime.sleep(30)"),
        stdin=True,
        grace=0.2,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await wait_for_line(task, "closed")
        with pytest.raises(ValueError, match="the command closed its input"):
            task.send("x\n")
        assert not task.accepts_input
        task.stop()


async def test_more_than_the_input_limit_unread_is_refused():
    """A command that never reads: what waits for it is bounded, and the excess is
    refused, not queued for ever."""
    task = OneshotTask("sleep 30", stdin=True, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.RUNNING)
        task.send(b"x" * INPUT_LIMIT)  # the pipe takes 64 KiB, the rest waits
        with pytest.raises(BufferError, match="has not read"):
            task.send(b"y" * (128 << 10))
        task.stop()
    assert task.bytes_sent == INPUT_LIMIT


async def test_stdin_to_a_task_with_a_cancelled_pipe_reader_leaves_no_fd(tmp_path):
    """A stdin task stopped while input waits: the writer is removed and its fd closed."""
    before = len(os.listdir("/proc/self/fd"))
    task = OneshotTask("sleep 30", stdin=True, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.RUNNING)
        task.send(b"x" * (512 << 10))
        task.stop()
    assert task.state is TaskState.INTERRUPTED
    await wait_until(lambda: len(os.listdir("/proc/self/fd")) <= before)


async def test_an_orchestrator_submits_pty_and_stdin_tasks():
    async with AsyncOrchestrator() as orch:
        term = orch.submit(PROMPT, pty=True, cols=80, rows=24, idle_after=0.3)
        piped = orch.submit("read x; echo got $x", stdin=True)
        piped.send("p\n")
        await term.wait_for(TaskState.IDLE)
        term.send("t\n")
        assert await orch.wait_all() == [TaskState.COMPLETED, TaskState.COMPLETED]
    assert term.output.endswith("got t\n")
    assert piped.output == "p\ngot p\n"
    assert (term.options.cols, term.options.rows) == (80, 24)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"pty": "yes"}, TypeError, "pty must be True or False"),
        ({"stdin": 1}, TypeError, "stdin must be True or False"),
        ({"pty": True, "cols": 0}, ValueError, "cols must be 1 to 1000"),
        ({"pty": True, "rows": 10**6}, ValueError, "rows must be 1 to 1000"),
        ({"pty": True, "cols": 1.5}, TypeError, "cols must be a whole number"),
        ({"agent": "gpt"}, ValueError, "agent must be one of auto, claude, gemini, codex"),
        ({"agent": 3}, TypeError, "agent must be a str or None"),
    ],
)
def test_bad_terminal_and_agent_options_are_refused_in_one_line(options, error, message):
    with pytest.raises(error, match=message):
        OneshotTask("true", **options)


def test_a_runner_without_terminals_refuses_a_pty_task_at_submit():
    class Elsewhere:
        name = "elsewhere"

        async def start(self, *args):  # pragma: no cover - never started
            raise AssertionError

    with pytest.raises(ValueError, match="the 'elsewhere' runner cannot run a task with pty=True"):
        OneshotTask("true", pty=True, runner=Elsewhere())


async def test_a_hangup_ignoring_pty_child_does_not_keep_the_task_running():
    """When the session leader exits the terminal hangs up; a child that ignores SIGHUP
    and holds the terminal keeps output open: a stop still ends the session."""
    task = OneshotTask("trap '' HUP; sleep 100 & echo bg; sleep 0.1", pty=True, grace=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await wait_for_line(task, "bg")
        await anyio.sleep(0.4)
        task.stop()
    assert task.state in (TaskState.INTERRUPTED, TaskState.COMPLETED)
    await wait_until(lambda: group_gone(task.pid))
    assert not live_members(task.pid)


async def test_input_sent_to_an_idle_task_makes_it_running_again():
    """A send is activity: the 'waiting for input' IDLE ends at once, not when (or if)
    the command next writes."""
    task = OneshotTask("read x; sleep 0.6; echo done $x", stdin=True, idle_after=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        assert task.reason == WAITING_FOR_INPUT
        task.send("y\n")
        assert task.state is TaskState.RUNNING and task.reason is None
        # Silent again, but not reading: plain IDLE this time.
        assert await task.wait_for(TaskState.IDLE) is TaskState.IDLE
        assert task.reason is None
    assert task.state is TaskState.COMPLETED
    assert task.read_output("stdout") == "done y\n"


async def test_input_typed_where_the_terminal_does_not_echo_is_not_kept():
    """A password prompt turns echo off: the command gets what was sent, the history
    and the views only that input went."""
    task = OneshotTask(
        'stty -echo; printf "password: "; read pw; stty echo; echo; echo "length ${#pw}"',
        pty=True,
        idle_after=0.3,
    )
    sent: list[bytes] = []
    task.listeners.append(lambda e: e.stream == "stdin" and sent.append(e.data))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        task.send("hunter22\n")
    assert task.state is TaskState.COMPLETED
    assert "length 8" in task.output
    assert "hunter22" not in task.output
    assert sent == [b"<hidden input>\n"]


async def test_send_and_close_from_another_thread_keep_their_order_and_raise_there():
    """From a thread other than the loop's (terminal IPython's), a send then a
    close_stdin before the command has started reach it in that order, and what the
    loop refuses is raised in that thread."""
    task = OneshotTask("cat", stdin=True)
    task.bind_to_running_loop()
    refused: list[BaseException] = []

    def from_a_thread() -> None:
        task.send("first\n")
        try:
            task.send(b"x" * (2 << 20))
        except BufferError as exc:
            refused.append(exc)
        task.close_stdin()

    await anyio.to_thread.run_sync(from_a_thread)
    assert await task.run() is TaskState.COMPLETED
    assert task.read_output("stdout") == "first\n"
    assert len(refused) == 1 and "has not started" in str(refused[0])


async def test_input_sent_before_a_start_that_never_comes_is_not_recorded():
    """Input waits for the command; a task stopped before it started never wrote it,
    and its history holds no input."""
    async with AsyncOrchestrator(limit=1) as orch:
        blocker = orch.submit("sleep 30", grace=0.1)
        queued = orch.submit("cat", stdin=True)
        events: list = []
        queued.listeners.append(events.append)
        queued.send("never\n")
        with pytest.raises(BufferError, match="has not started"):
            queued.send(b"y" * (1 << 20))
        queued.stop()
        blocker.stop()
    assert queued.state is TaskState.INTERRUPTED
    assert queued.bytes_sent == 0
    assert not [e for e in events if e.kind == "output"]


async def test_a_terminal_takes_input_after_its_end_of_file():
    """A terminal's end of file is a character, not a close: a program that reads to
    the end of its input and then prompts can still be answered."""
    task = OneshotTask('sort; read -p "again? " x; echo "then $x"', pty=True, idle_after=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        task.send("b\na\n")
        task.close_stdin()
        await wait_for_line(task, "a")
        assert task.accepts_input
        await wait_until(lambda: task.output.endswith("again? "))
        task.send("yes\n")
    assert task.state is TaskState.COMPLETED
    assert task.output.endswith("then yes\n")


async def test_a_task_that_starts_reading_while_idle_says_so_then():
    """Silent first (plain IDLE), then blocked reading: the reason follows, without
    output to wake it (IDLE -> IDLE with the new reason)."""
    task = OneshotTask("sleep 1; read x; echo got $x", stdin=True, idle_after=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        assert task.reason is None
        await wait_until(lambda: task.reason == WAITING_FOR_INPUT, timeout=5)
        assert task.state is TaskState.IDLE
        assert task.transitions[-1].source is TaskState.IDLE
        task.send("z\n")
    assert task.read_output("stdout") == "got z\n"


async def test_a_prompt_on_dev_tty_or_on_a_thread_is_waiting_for_input():
    """sudo and ssh ask on /dev/tty; some programs read on a thread of their own."""
    for command in (
        'read -p "password: " x < /dev/tty; echo ok',
        py(
            """
            import threading
            answer = []
            reader = threading.Thread(target=lambda: answer.append(input("name? ")))
            reader.start(); reader.join(); print("ok", answer[0])
            """
        ),
    ):
        task = OneshotTask(command, pty=True, idle_after=0.3)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_alone, task)
            await wait_until(lambda t=task: t.reason == WAITING_FOR_INPUT, timeout=5)
            task.send("me\n")
        assert task.state is TaskState.COMPLETED, command
        assert "ok" in task.output


async def test_a_send_from_a_thread_the_loop_waits_on_does_not_hang_it():
    """A cell that blocks the loop's thread on a thread pool that sends: each send gives
    up waiting for the loop after a moment, and the input is written once it is free."""
    from concurrent.futures import ThreadPoolExecutor

    task = OneshotTask("cat", stdin=True, idle_after=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.RUNNING)
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # blocks the loop, as a cell's code would
            list(pool.map(task.send, ["a\n", "b\n"]))
        assert time.monotonic() - started < 10
        await wait_until(lambda: task.read_output("stdout").count("\n") == 2)
        task.close_stdin()
    assert sorted(task.read_output("stdout").split()) == ["a", "b"]


async def test_input_and_ends_of_input_sent_before_the_start_keep_their_order():
    """A terminal's EOF asked for between two sends, before the command started, comes
    between them: the first program reads to its end, the prompt after gets the rest."""
    task = OneshotTask('cat; read -p "again? " x; echo "then $x"', pty=True)
    task.send("one\n")
    task.close_stdin()
    task.send("two\n")
    assert await task.run() is TaskState.COMPLETED
    assert task.output.endswith("then two\n")


async def test_ending_the_input_of_a_terminal_without_an_eof_character_is_refused():
    task = OneshotTask("stty eof undef; echo ready; cat", pty=True, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await wait_for_line(task, "ready")
        with pytest.raises(ValueError, match="has no end-of-file character"):
            task.close_stdin()
        task.stop()
    assert "\x00" not in task.output


async def test_a_reason_that_keeps_changing_is_said_a_bounded_number_of_times(monkeypatch):
    """A program that reads, then works, then reads again in silence: the IDLE reason
    follows it, but at most REASON_CHANGES times in a spell of silence."""
    from oneshot_nb.engine import supervision

    monkeypatch.setattr(supervision, "INPUT_RECHECK", 0.05)
    flapper = py(
        """
        import os, signal, time
        def give_up(*_):
            raise TimeoutError
        signal.signal(signal.SIGALRM, give_up)
        while True:
            signal.setitimer(signal.ITIMER_REAL, 0.15)
            try:
                os.read(0, 1)
            except TimeoutError:
                pass
            time.sleep(0.15)
        """
    )
    task = OneshotTask(flapper, stdin=True, idle_after=0.1, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_alone, task)
        await task.wait_for(TaskState.IDLE)
        await anyio.sleep(4)
        task.stop()
    changes = [t for t in task.transitions if t.source is t.target is TaskState.IDLE]
    assert 3 <= len(changes) <= supervision.REASON_CHANGES
