"""Fixtures for the Dask runner's tests: one shared `local:2` cluster for the behaviour
tests, clusters of a test's own for the tests that kill or close workers.

No __init__.py here: pytest would import this directory as a package named `dask`
wherever its parent is on sys.path, and hide the real one from distributed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dask import DaskProcesses, all_gone, cluster_pids, local_cluster

from oneshot_nb.runners.dask import DaskRunner


@pytest.fixture(scope="module")
def shared_runner() -> Iterator[DaskRunner]:
    """`DaskRunner("local:2")`, as a notebook makes it: two worker processes of one
    thread each, started once for the module. Closed after it, and its workers and
    their reapers gone."""
    runner = DaskRunner("local:2")
    try:
        yield runner
    finally:
        pids = cluster_pids(runner.client)
        runner.close()
    all_gone(pids)


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    """`dask scheduler` and `dask worker` processes (see DaskProcesses), ended after."""
    processes = DaskProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def two_workers() -> Iterator[DaskRunner]:
    """A DaskRunner on a LocalCluster of the test's own, two workers under nannies."""
    with local_cluster(workers=2) as runner:
        yield runner
