"""--cluster and %config OneshotMagics.cluster: tasks on Dask workers from the magics, and
every wrong spec one UsageError line that starts nothing."""

from __future__ import annotations

import sys
import time

import pytest
from helpers import oneshot
from IPython.core.error import UsageError
from traitlets import TraitError

from oneshot_nb import OneshotTask, TaskState
from oneshot_nb.runners.dask import runner as dask_runner

pytestmark = pytest.mark.timeout(60)

CLUSTER = "local:2"  # the spec the Dask runner tests use too: one cluster per process


def wait(magics, task: OneshotTask) -> TaskState:
    return magics.session.portal.run(task.wait)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("local:0", "local:N takes a number of workers from 1"),
        ("local:x", "local:N takes a number of workers from 1"),
        ("nonsense", "cluster must be 'local:N' or a scheduler address"),
        ("tcp://host name:1", "cluster must be 'local:N' or a scheduler address"),
    ],
)
def test_a_wrong_cluster_is_one_usage_error_and_starts_nothing(ip, magics, db, spec, said):
    before = len(magics.orchestrator.tasks)
    with pytest.raises(UsageError, match=said) as caught:
        ip.run_line_magic("oneshot", f"--cluster '{spec}' true")
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match=said):
        ip.run_cell_magic("oneshot_parallel", f"--cluster '{spec}'", "true\ntrue")
    assert len(magics.orchestrator.tasks) == before


def test_an_unreachable_scheduler_is_one_line_and_starts_nothing(ip, magics, db, monkeypatch):
    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT", 1.0)
    before = len(magics.orchestrator.tasks)
    with pytest.raises(
        UsageError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1"
    ):
        ip.run_line_magic("oneshot", "--cluster tcp://127.0.0.1:1 true")
    assert len(magics.orchestrator.tasks) == before


def test_without_dask_the_cluster_option_says_which_extra_to_install(ip, magics, db, monkeypatch):
    monkeypatch.setitem(sys.modules, "oneshot_nb.runners.dask", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'oneshot_nb\[dask\]'"):
        ip.run_line_magic("oneshot", "--cluster local:2 true")


def test_oneshot_cluster_runs_the_command_on_a_worker(ip, magics, db):
    task = oneshot(ip, f"--cluster {CLUSTER} --quiet sh -c 'echo $ONESHOT_WORKER'")
    assert wait(magics, task) is TaskState.COMPLETED
    assert task.place.runner == "dask"
    assert task.output.strip() == task.place.host
    assert task.place.host.startswith("tcp://")


def test_a_batch_runs_on_the_cluster_under_the_kernels_limit(ip, magics, db):
    batch = ip.run_cell_magic(
        "oneshot_parallel",
        f"--cluster {CLUSTER} --limit 2 --quiet",
        "sh -c 'echo $ONESHOT_SLOT'\nsh -c 'echo $ONESHOT_SLOT'\nsh -c 'echo $ONESHOT_SLOT'",
    )
    states = magics.session.portal.run(batch.wait)
    assert states == [TaskState.COMPLETED] * 3
    assert {task.place.runner for task in batch.tasks} == {"dask"}
    assert {task.output.strip() for task in batch.tasks} <= {"0", "1"}


def test_oneshot_stop_stops_a_task_on_a_worker(ip, magics, db):
    task = oneshot(ip, f"--cluster {CLUSTER} --quiet --name far --grace 1 sleep 60")
    magics.session.portal.run(lambda: task.wait_for("RUNNING"))
    ip.run_line_magic("oneshot_stop", "far")
    assert wait(magics, task) is TaskState.INTERRUPTED
    assert task.reason == "stopped"


def test_the_cluster_setting_sends_every_task_there_but_cluster_none(ip, magics, db):
    with pytest.raises(TraitError, match="local:N takes"):
        magics.cluster = "local:0"
    assert magics.cluster is None
    magics.cluster = CLUSTER
    try:
        there = oneshot(ip, "--quiet true")
        here = oneshot(ip, "--quiet --cluster none true")
        assert wait(magics, there) is wait(magics, here) is TaskState.COMPLETED
        assert (there.place.runner, here.place.runner) == ("dask", "local")
    finally:
        magics.cluster = None
    back = oneshot(ip, "--quiet true")
    assert wait(magics, back) is TaskState.COMPLETED
    assert back.place.runner == "local"


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("--cluster local:3 --name '' echo x", "name must not be empty"),
        ("--cluster local:3 --env 'A=1' --env '1B=2' echo x", "env"),
    ],
)
def test_a_wrong_option_beside_the_cluster_starts_no_cluster(ip, magics, db, line, said):
    """The options are checked before the cluster is started: a mistyped name must not
    leave a LocalCluster of three processes running for nothing."""
    with pytest.raises(UsageError, match=said):
        ip.run_line_magic("oneshot", line)
    assert "local:3" not in dask_runner._connections


def test_halt_now_stops_the_rest_of_a_batch_on_the_cluster(ip, magics, db):
    """One remote command failing stops the others of its batch, on their workers."""
    batch = ip.run_cell_magic(
        "oneshot_parallel",
        f"--cluster {CLUSTER} --limit 2 --halt now,fail=1 --grace 1 --quiet",
        "sh -c 'sleep 0.5; exit 1'\nsleep 30",
    )
    states = magics.session.portal.run(batch.wait)
    assert states == [TaskState.FAILED, TaskState.INTERRUPTED]
    assert batch.tasks[1].reason == "halted: now,fail=1"
    assert {task.place.runner for task in batch.tasks} == {"dask"}


def test_a_port_where_nothing_listens_is_refused_at_once(ip, magics, db):
    """distributed retries a refused connection for its whole timeout (10 s here): a
    mistyped port must not hold the cell that long when the system says at once that
    nothing listens there."""
    began = time.monotonic()
    with pytest.raises(UsageError, match="connection refused"):
        ip.run_line_magic("oneshot", "--cluster tcp://127.0.0.1:1 true")
    assert time.monotonic() - began < dask_runner.CONNECT_TIMEOUT / 2
