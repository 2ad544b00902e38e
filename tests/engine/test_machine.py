"""The state machine: six states, six events, which transitions are allowed, and what
its listeners are told of a task's run."""

from __future__ import annotations

from typing import Any
from unittest.mock import Mock

import pytest
from helpers import py, wait_for_line
from statemachine.exceptions import TransitionNotAllowed

from oneshot_nb import AsyncOrchestrator, OneshotStateMachine, TaskState
from oneshot_nb.engine.machine import FINAL_STATES

STATES = ["CREATED", "RUNNING", "IDLE", "INTERRUPTED", "COMPLETED", "FAILED"]
EVENTS = ["start", "detect_silence", "detect_activity", "retry", "interrupt", "finish", "fail"]

GRACE = 0.3
LONG = py("import time; print('up', flush=True); time.sleep(100)")

# (source, event) -> target; every pair not listed must raise TransitionNotAllowed.
ALLOWED = {
    ("CREATED", "start"): "RUNNING",
    ("CREATED", "interrupt"): "INTERRUPTED",
    ("CREATED", "fail"): "FAILED",
    ("CREATED", "retry"): "CREATED",  # a spawn that failed, with retries left
    ("RUNNING", "detect_silence"): "IDLE",
    ("RUNNING", "interrupt"): "INTERRUPTED",
    ("RUNNING", "finish"): "COMPLETED",
    ("RUNNING", "fail"): "FAILED",
    ("RUNNING", "retry"): "CREATED",  # an attempt that failed, with retries left
    ("IDLE", "detect_silence"): "IDLE",  # a new reason for the silence
    ("IDLE", "detect_activity"): "RUNNING",
    ("IDLE", "interrupt"): "INTERRUPTED",
    ("IDLE", "finish"): "COMPLETED",
    ("IDLE", "fail"): "FAILED",
    ("IDLE", "retry"): "CREATED",
}

# How to reach each state from CREATED through real events, not `start_value`.
PATHS = {
    "CREATED": [],
    "RUNNING": ["start"],
    "IDLE": ["start", "detect_silence"],
    "INTERRUPTED": ["start", "interrupt"],
    "COMPLETED": ["start", "finish"],
    "FAILED": ["start", "fail"],
}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def after_transition(self, event: object, source: object, target: object) -> None:
        self.seen.append((str(event), source.id, target.id))  # type: ignore[attr-defined]


def machine_in(state: str, listener: Recorder | None = None) -> OneshotStateMachine:
    machine = OneshotStateMachine("t1", listeners=[listener] if listener else [])
    for event in PATHS[state]:
        machine.send(event)
    assert machine.current_state_value == state
    return machine


def test_machine_has_exactly_the_six_states_and_seven_events():
    """A state or event added, renamed or lost breaks every layer that names them."""
    assert [s.id for s in OneshotStateMachine.states] == STATES
    assert [e.id for e in OneshotStateMachine.events] == EVENTS


def test_final_states_are_interrupted_completed_failed():
    """Only the three end states are final; a task in any other state is still live."""
    finals = {s.id for s in OneshotStateMachine.states if s.final}
    assert finals == {"INTERRUPTED", "COMPLETED", "FAILED"}
    assert {s.value for s in FINAL_STATES} == finals
    assert [s.value for s in TaskState if s.is_final] == ["INTERRUPTED", "COMPLETED", "FAILED"]


def test_new_machine_starts_created():
    """A task is CREATED until it gets a slot and its process starts."""
    machine = OneshotStateMachine("t1")
    assert machine.task_state is TaskState.CREATED
    assert machine.CREATED.is_active


@pytest.mark.parametrize("source", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_transition_is_allowed_or_raises(source: str, event: str):
    """Each (state, event) pair either reaches its one target or raises and changes nothing."""
    machine = machine_in(source)
    target = ALLOWED.get((source, event))
    if target is None:
        with pytest.raises(TransitionNotAllowed):
            machine.send(event)
        assert machine.current_state_value == source
    else:
        machine.send(event)
        assert machine.task_state is TaskState(target)


@pytest.mark.parametrize(
    ("source", "event"),
    [
        ("CREATED", "finish"),
        ("IDLE", "start"),
        ("RUNNING", "start"),
        ("CREATED", "detect_activity"),
        ("COMPLETED", "interrupt"),
        ("FAILED", "start"),
        ("INTERRUPTED", "fail"),
    ],
)
def test_named_illegal_transitions_raise_through_their_methods(source: str, event: str):
    """Calling the event method (`machine.finish()`) is guarded like `send`."""
    machine = machine_in(source)
    with pytest.raises(TransitionNotAllowed):
        getattr(machine, event)()
    assert machine.current_state_value == source


def test_listener_records_every_transition_in_order():
    """Views and the store learn of changes through `after_transition(event, source, target)`."""
    recorder = Recorder()
    machine = OneshotStateMachine("t1", listeners=[recorder])
    machine.start()
    machine.detect_silence()
    machine.detect_activity()
    machine.finish()
    assert recorder.seen == [
        ("start", "CREATED", "RUNNING"),
        ("detect_silence", "RUNNING", "IDLE"),
        ("detect_activity", "IDLE", "RUNNING"),
        ("finish", "RUNNING", "COMPLETED"),
    ]


def test_rejected_transition_is_not_recorded():
    """A listener must never hear of a transition that did not happen."""
    recorder = Recorder()
    machine = machine_in("COMPLETED", recorder)
    with pytest.raises(TransitionNotAllowed):
        machine.interrupt()
    assert recorder.seen == [("start", "CREATED", "RUNNING"), ("finish", "RUNNING", "COMPLETED")]


@pytest.mark.parametrize("source", ["CREATED", "RUNNING", "IDLE"])
def test_entering_interrupted_terminates_the_process_once(source: str):
    """Interrupt is the one transition with a side effect: it asks the process to terminate."""
    machine = machine_in(source)
    machine.process = Mock()
    machine.interrupt()
    machine.process.terminate.assert_called_once_with()


@pytest.mark.parametrize("event", ["finish", "fail"])
def test_other_final_transitions_do_not_terminate(event: str):
    """Finishing or failing must not signal a process group that has already exited."""
    machine = machine_in("RUNNING")
    machine.process = Mock()
    machine.send(event)
    machine.process.terminate.assert_not_called()


def test_interrupt_without_a_process_is_fine():
    """A task stopped before it spawned has no process to terminate."""
    machine = OneshotStateMachine("t1")
    machine.interrupt()
    assert machine.task_state is TaskState.INTERRUPTED


def test_task_state_is_a_str_enum():
    """States compare equal to their names and format as them, for tables and the store."""
    assert [s.value for s in TaskState] == STATES
    for state in TaskState:
        assert isinstance(state, str)
        assert state == state.value
        assert str(state) == state.value
        assert f"{state}" == state.value
    assert TaskState("IDLE") is TaskState.IDLE


def test_task_state_follows_the_machine():
    """`task_state` is the machine's current state as a TaskState, after every event."""
    machine = OneshotStateMachine("t1")
    for event, expected in [
        ("start", TaskState.RUNNING),
        ("detect_silence", TaskState.IDLE),
        ("fail", TaskState.FAILED),
    ]:
        machine.send(event)
        assert machine.task_state is expected


# -- the reason, as an argument of the machine's events -------------------------------------


class ReasonListener:
    """A listener of the state machine: what each transition was given as `reason`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def after_transition(self, event: Any, source: Any, target: Any, reason: Any = None) -> None:
        self.seen.append((target.id, reason))


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_machines_listeners_get_why_a_task_ended_as_the_events_reason(tmp_path):
    """The events that end a task carry `reason` as an argument, so a listener added
    with `machine.add_listener` learns why: "timeout", "stopped", "exit" and "spawn
    error". An engine that set the reason on the task only, or gave the events none,
    breaks this."""
    async with AsyncOrchestrator(grace=GRACE) as orch:
        timed_out = orch.submit(LONG, timeout=0.3)
        stopped = orch.submit(LONG)
        exited = orch.submit(py("print('bye')"))
        unstartable = orch.submit(py("pass"), cwd=tmp_path / "missing")
        listeners = {}
        for task in (timed_out, stopped, exited, unstartable):
            listeners[task] = ReasonListener()
            task.machine.add_listener(listeners[task])
        await wait_for_line(stopped, "up")
        stopped.stop()
        await orch.wait_all()
    assert listeners[timed_out].seen == [("RUNNING", None), ("INTERRUPTED", "timeout")]
    assert listeners[stopped].seen == [("RUNNING", None), ("INTERRUPTED", "stopped")]
    assert listeners[exited].seen == [("RUNNING", None), ("COMPLETED", "exit")]
    assert listeners[unstartable].seen == [("FAILED", "spawn error")]
    assert [task.reason for task in listeners] == ["timeout", "stopped", "exit", "spawn error"]
