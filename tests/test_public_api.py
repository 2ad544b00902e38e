"""The exported names are a contract: later layers and users import them."""

import subprocess
import sys

import oneshot_nb


def test_exported_names_are_exactly_the_public_api():
    assert sorted(oneshot_nb.__all__) == sorted(
        [
            "AsyncOrchestrator",
            "Batch",
            "OneshotStateMachine",
            "OneshotTask",
            "OrchestratorClosed",
            "OrchestratorStatistics",
            "Slots",
            "Subscription",
            "TaskEvent",
            "TaskRecord",
            "TaskState",
            "Transition",
            "history",
        ]
    )
    for name in oneshot_nb.__all__:
        assert getattr(oneshot_nb, name) is not None


def test_task_state_is_a_str_enum_of_the_six_states():
    from oneshot_nb import TaskState

    assert [s.value for s in TaskState] == [
        "CREATED", "RUNNING", "IDLE", "INTERRUPTED", "COMPLETED", "FAILED"
    ]
    assert TaskState.RUNNING == "RUNNING"
    assert isinstance(TaskState.IDLE, str)


def test_engine_imports_neither_ipython_nor_ipywidgets():
    """The engine must stay usable from plain scripts and other front ends."""
    code = (
        "import sys, oneshot_nb, oneshot_nb.orchestrator, oneshot_nb.task;"
        "bad = [m for m in sys.modules"
        " if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
