"""Events: what a task announces, listeners, and bounded subscriptions that never block."""

from __future__ import annotations

import logging

import anyio
import pytest
from helpers import py, wait_until

from oneshot_nb import AsyncOrchestrator, OneshotTask, Subscription, TaskEvent, TaskState
from oneshot_nb.engine.events import EventHub, notify

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

CREATED, RUNNING, IDLE = TaskState.CREATED, TaskState.RUNNING, TaskState.IDLE
INTERRUPTED, COMPLETED, FAILED = TaskState.INTERRUPTED, TaskState.COMPLETED, TaskState.FAILED

# Writes 2 MiB to stdout: at most 64 KiB per read, so at least 32 output events.
CHATTY = py("import sys; sys.stdout.buffer.write(b'x' * (2 << 20))")


def without_output(events: list[TaskEvent]) -> list[tuple]:
    return [(e.kind, e.event, e.source, e.target, e.reason) for e in events if e.kind != "output"]


def output(kind: str, task_id: str = "t") -> TaskEvent:
    return TaskEvent(task_id, kind, 0.0, stream="stdout", data=b"x", text="x")  # type: ignore[arg-type]


def transition(target: TaskState, task_id: str = "t") -> TaskEvent:
    return TaskEvent(task_id, "transition", 0.0, "finish", RUNNING, target, "exit")


# -- what a task announces ---------------------------------------------------------------


async def test_every_transition_and_output_chunk_becomes_an_event():
    """Listeners see `submitted`, each transition with its reason, and each output chunk."""
    async with AsyncOrchestrator() as orch:
        events: list[TaskEvent] = []
        orch.listeners.append(events.append)
        task = orch.submit(py("import sys; print('out'); print('err', file=sys.stderr)"))
        await task.wait()
    assert without_output(events) == [
        ("submitted", None, None, None, None),
        ("transition", "start", CREATED, RUNNING, None),
        ("transition", "finish", RUNNING, COMPLETED, "exit"),
        ("settled", None, None, COMPLETED, "exit"),
    ]
    assert all(e.task_id == task.id for e in events)
    times = [e.time for e in events]
    assert times == sorted(times)
    assert task.created_at <= times[0] and times[-2] == task.ended_at
    outputs = [e for e in events if e.kind == "output"]
    for stream, expected in [("stdout", b"out\n"), ("stderr", b"err\n")]:
        chunks = [e for e in outputs if e.stream == stream]
        assert b"".join(e.data for e in chunks) == expected
        assert "".join(e.text for e in chunks) == expected.decode()
    # Output comes between the start and the end.
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["submitted", "transition"] and kinds[-2:] == ["transition", "settled"]


async def test_a_bytes_only_listener_gets_the_output_undecoded():
    """A listener with `wants_text = False` (the store) gets every byte, and the chunks
    are not decoded for it, nor for one with `wants_output = False` (a table)."""
    async with AsyncOrchestrator() as orch:
        raw: list[TaskEvent] = []

        def bytes_only(event: TaskEvent) -> None:
            raw.append(event)

        def states_only(event: TaskEvent) -> None:
            pass

        bytes_only.wants_text = False  # type: ignore[attr-defined]
        states_only.wants_output = False  # type: ignore[attr-defined]
        orch.listeners.extend([bytes_only, states_only])
        task = orch.submit(py("print('h\\u00e9llo ' * 1000)"))
        await task.wait()
    outputs = [e for e in raw if e.kind == "output"]
    assert b"".join(e.data for e in outputs) == ("h\u00e9llo " * 1000 + "\n").encode()
    assert outputs and [e.text for e in outputs] == [""] * len(outputs)


async def test_listeners_of_a_task_that_want_no_output_do_not_make_it_decoded():
    """A fail-fast batch listens to its tasks for transitions only: with the store (a
    bytes-only listener) as the only other listener, the output is still not decoded;
    a listener of the task's own that wants text (a log view) makes it decoded."""
    async with AsyncOrchestrator() as orch:
        raw: list[TaskEvent] = []

        def bytes_only(event: TaskEvent) -> None:
            raw.append(event)

        bytes_only.wants_text = False  # type: ignore[attr-defined]
        orch.listeners.append(bytes_only)
        batch = orch.submit_batch([py("print('a' * 100)")] * 2, fail_fast=True)
        await batch.wait()
        outputs = [e for e in raw if e.kind == "output"]
        for task in batch:
            mine = [e for e in outputs if e.task_id == task.id]
            assert b"".join(e.data for e in mine) == b"a" * 100 + b"\n"
        assert {e.text for e in outputs} == {""}
        raw.clear()
        task = orch.submit(py("import time; time.sleep(0.3); print('b' * 100)"))
        task.listeners.append(lambda event: None)  # wants text, as a log view does
        await task.wait()
    # print() may write the line and its newline apart (PYTHONUNBUFFERED=1).
    assert "".join(e.text for e in raw if e.kind == "output") == "b" * 100 + "\n"


# Three writes, each ending inside a character: "\xc3\xa9" is "é", "\xe2\x82\xac" is "€".
PARTS = (b"one \xc3", b"\xa9 two \xe2\x82", b"\xac three")


@pytest.mark.parametrize("gap", ["bytes only", "nobody"])
async def test_text_wanted_again_after_a_gap_continues_from_the_chunk_before(gap: str, tmp_path):
    """When text is wanted again after output that nobody decoded (only a bytes-only
    listener, or no listener at all), decoding starts at the end of the chunk just
    before: a character cut there comes out whole, and nothing held from before the
    gap is glued to it."""
    async with AsyncOrchestrator() as orch:
        texts: list[str] = []

        def text_listener(event: TaskEvent) -> None:
            if event.kind == "output":
                texts.append(event.text)
                orch.listeners.remove(text_listener)  # text for one chunk only

        def bytes_only(event: TaskEvent) -> None:
            pass

        bytes_only.wants_text = False  # type: ignore[attr-defined]
        if gap == "bytes only":
            orch.listeners.append(bytes_only)
        orch.listeners.append(text_listener)
        # Each write waits for the test to have read the one before (go0, go1).
        go = [tmp_path / "go0", tmp_path / "go1"]
        task = orch.submit(
            py(
                "import os, sys, time; out = sys.stdout.buffer\n"
                f"out.write({PARTS[0]!r}); out.flush()\n"
                f"while not os.path.exists({str(go[0])!r}): time.sleep(0.005)\n"
                f"out.write({PARTS[1]!r}); out.flush()\n"
                f"while not os.path.exists({str(go[1])!r}): time.sleep(0.005)\n"
                f"out.write({PARTS[2]!r}); out.flush()\n"
            )
        )
        await wait_until(lambda: task.bytes_written["stdout"] == len(PARTS[0]))
        go[0].touch()
        await wait_until(lambda: task.bytes_written["stdout"] == len(PARTS[0] + PARTS[1]))
        orch.listeners.append(text_listener)  # before the third write
        go[1].touch()
        await task.wait()
    assert texts == ["one ", "\u20ac three"]


async def test_transition_events_of_an_idle_then_stopped_task():
    """A task that goes IDLE and is stopped announces exactly those transitions."""
    task = OneshotTask(
        py("import time; print('up', flush=True); time.sleep(100)"), idle_after=0.2, grace=0.3
    )
    events: list[TaskEvent] = []
    task.listeners.append(events.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(task.run)
        await wait_until(lambda: task.state is IDLE, timeout=10)
        task.stop()
    assert without_output(events) == [
        ("transition", "start", CREATED, RUNNING, None),
        ("transition", "detect_silence", RUNNING, IDLE, None),
        ("transition", "interrupt", IDLE, INTERRUPTED, "stopped"),
        ("settled", None, None, INTERRUPTED, "stopped"),
    ]
    assert [t.time for t in task.transitions] == [e.time for e in events if e.kind == "transition"]


async def test_spawn_error_announces_one_transition_to_failed():
    """A task that cannot spawn announces CREATED -> FAILED with reason "spawn error"."""
    task = OneshotTask(["oneshot-nb-no-such-program-1f3a"])
    events: list[TaskEvent] = []
    task.listeners.append(events.append)
    await task.run()
    assert without_output(events) == [
        ("transition", "fail", CREATED, FAILED, "spawn error"),
        ("settled", None, None, FAILED, "spawn error"),
    ]


# -- subscriptions -----------------------------------------------------------------------


async def test_async_for_over_events_receives_what_listeners_see():
    """`async for event in orch.events()` yields the same events, in the same order."""
    async with AsyncOrchestrator() as orch:
        heard: list[TaskEvent] = []
        orch.listeners.append(heard.append)
        received: list[TaskEvent] = []
        subscription = orch.events()
        task = orch.submit(py("print('a'); print('b')"))
        with anyio.fail_after(10):
            async for event in subscription:
                received.append(event)
                if event.kind == "settled":
                    break
    assert received == heard
    assert received[-2].target is received[-1].target is COMPLETED
    assert "".join(e.text for e in received if e.kind == "output") == task.output


async def test_slow_subscriber_neither_blocks_the_engine_nor_loses_transitions():
    """maxsize=5: the task completes unread, 5 outputs wait, the rest are counted and said."""
    async with AsyncOrchestrator() as orch:
        outputs = 0

        def count(event: TaskEvent) -> None:
            nonlocal outputs
            outputs += event.kind == "output"

        orch.listeners.append(count)
        subscription = orch.events(maxsize=5)
        task = orch.submit(CHATTY)
        with anyio.fail_after(10):
            assert await task.wait() is COMPLETED  # nobody has read the subscription
    assert outputs > 5
    assert subscription.dropped == outputs - 5
    received: list[TaskEvent] = []
    with anyio.fail_after(5):
        async for event in subscription:  # ends because the orchestrator closed
            received.append(event)
    assert [e.kind for e in received] == (
        ["submitted", "transition"] + ["output"] * 5 + ["dropped", "transition", "settled"]
    )
    dropped = received[-3]
    assert dropped.count == subscription.dropped
    assert dropped.task_id == task.id
    assert (received[1].target, received[-2].target) == (RUNNING, COMPLETED)
    assert task.bytes_written["stdout"] == 2 << 20


async def test_fast_and_slow_subscribers_are_independent():
    """One subscriber dropping events costs another nothing."""
    async with AsyncOrchestrator() as orch:
        slow = orch.events(maxsize=1)
        fast = orch.events(maxsize=10_000)
        task = orch.submit(CHATTY)
        await task.wait()
    fast_events = [e async for e in fast]
    slow_events = [e async for e in slow]
    assert fast.dropped == 0
    assert b"".join(e.data for e in fast_events if e.kind == "output") == b"x" * (2 << 20)
    assert slow.dropped == sum(e.kind == "output" for e in fast_events) - 1
    assert [e.kind for e in slow_events].count("output") == 1


async def test_iteration_ends_when_the_orchestrator_closes():
    """A subscriber waiting for the next event is released when the orchestrator closes."""
    orch = AsyncOrchestrator()
    subscription = orch.events()
    received: list[TaskEvent] = []

    async def consume() -> None:
        async for event in subscription:
            received.append(event)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            task = orch.submit(py("pass"))
            await task.wait()
            await orch.aclose()
    assert [e.kind for e in received] == ["submitted", "transition", "transition", "settled"]


# -- Subscription and EventHub, without processes ----------------------------------------


async def test_subscription_drops_only_output_beyond_maxsize():
    """Past maxsize, outputs are dropped and counted; transitions are always queued."""
    closed: list[Subscription] = []
    subscription = Subscription(2, closed.append)
    for _ in range(5):
        subscription.put(output("output"))
    subscription.put(transition(COMPLETED))
    subscription.put(transition(FAILED, "u"))
    subscription.close()
    received = [e async for e in subscription]
    assert [(e.kind, e.count) for e in received] == [
        ("output", 0),
        ("output", 0),
        ("dropped", 3),
        ("transition", 0),
        ("transition", 0),
    ]
    assert subscription.dropped == 3
    assert closed == [subscription]


async def test_subscription_accepts_output_again_once_read():
    """Room freed by reading is room for new output: the bound is on what waits."""
    subscription = Subscription(1, lambda s: None)
    subscription.put(output("output"))
    first = await subscription.__anext__()
    subscription.put(output("output"))
    second = await subscription.__anext__()
    assert (first.kind, second.kind, subscription.dropped) == ("output", "output", 0)


async def test_subscription_announces_a_gap_left_at_close():
    """Outputs dropped just before close are still announced by a final `dropped` event."""
    subscription = Subscription(1, lambda s: None)
    for _ in range(4):
        subscription.put(output("output"))
    subscription.close()
    assert [(e.kind, e.count) async for e in subscription] == [("output", 0), ("dropped", 3)]


async def test_dropped_event_names_the_task_whose_output_was_lost_first():
    """With several tasks, the gap is put on the task that lost output, not on whichever
    task's event happened to come after it."""
    subscription = Subscription(1, lambda s: None)
    subscription.put(output("output", "a"))
    subscription.put(output("output", "b"))
    subscription.put(output("output", "a"))
    subscription.put(transition(COMPLETED, "c"))
    subscription.close()
    received = [(e.kind, e.task_id, e.count) async for e in subscription]
    assert received == [("output", "a", 0), ("dropped", "b", 2), ("transition", "c", 0)]


async def test_subscribing_after_the_orchestrator_closed_ends_at_once():
    """Iteration ends when the orchestrator closes, also for a subscription made after."""
    orch = AsyncOrchestrator()
    async with orch:
        pass
    with anyio.fail_after(2):
        assert [event async for event in orch.events()] == []


async def test_closed_subscription_ignores_new_events_and_closes_once():
    """After close nothing is queued, and the hub is told only once."""
    closed: list[Subscription] = []
    with Subscription(3, closed.append) as subscription:
        subscription.put(transition(COMPLETED))
    subscription.put(transition(FAILED))
    subscription.close()
    assert [e.target async for e in subscription] == [COMPLETED]
    assert closed == [subscription]


def test_subscription_maxsize_must_be_positive():
    """A queue that can hold nothing would drop every output: refused."""
    with pytest.raises(ValueError, match="maxsize"):
        Subscription(0, lambda s: None)


async def test_hub_fans_out_to_listeners_and_subscriptions_until_closed():
    """Every listener and every open subscription gets each event; closing ends them."""
    hub = EventHub()
    heard: list[TaskEvent] = []
    hub.listeners.append(heard.append)
    first, second = hub.subscribe(), hub.subscribe()
    event = transition(COMPLETED)
    hub.publish(event)
    second.close()
    hub.publish(transition(FAILED))
    hub.close()
    assert heard == [event, transition(FAILED)]
    assert [e async for e in first] == [event, transition(FAILED)]
    assert [e async for e in second] == [event]


def test_a_raising_listener_is_logged_and_the_others_still_run(caplog):
    """One faulty listener must not silence the rest, and its error must not vanish."""
    heard: list[TaskEvent] = []

    def broken(event: TaskEvent) -> None:
        raise ValueError("listener bug")

    caplog.set_level(logging.ERROR, logger="oneshot_nb")
    notify([broken, heard.append], transition(COMPLETED))
    assert heard == [transition(COMPLETED)]
    [record] = caplog.records
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


def test_task_event_is_frozen():
    """Events are shared by every listener; one must not be able to change them for all."""
    event = transition(COMPLETED)
    with pytest.raises(AttributeError):
        event.reason = "other"  # type: ignore[misc]
