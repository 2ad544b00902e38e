"""The history of a task that ran on a Dask worker: where it ran, and its whole log."""

from __future__ import annotations

import pytest
from helpers import stored_orchestrator

from oneshot_nb import TaskState
from oneshot_nb.notebook.history_view import record_info
from oneshot_nb.runners.dask import DaskRunner
from oneshot_nb.storage.records import get_record

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_the_history_records_the_worker_and_the_log_of_a_remote_task(tmp_path):
    """A remote task's row says runner 'dask' and the worker's address, which the view
    and the history show as where it ran; its log reads back byte for byte."""
    path = tmp_path / "history.sqlite3"
    payload = "printf 'one\\n\\377two' ; printf 'err\\n' >&2"
    async with stored_orchestrator(path, runner=DaskRunner("local:2")) as (orch, _):
        task = orch.submit(payload)
        assert await task.wait() is TaskState.COMPLETED
    record = get_record(task.id, path=str(path))
    assert (record.runner, record.host) == ("dask", task.place.host)
    assert record.host.startswith("tcp://")
    assert record.read_log("stdout") == b"one\n\xfftwo"
    assert record.read_log("stderr") == b"err\n"
    assert f"on {record.host}" in record_info(record)  # what the history view says


async def test_a_local_task_says_nothing_of_where_it_ran(tmp_path):
    path = tmp_path / "history.sqlite3"
    async with stored_orchestrator(path) as (orch, _):
        task = orch.submit("true")
        await task.wait()
    record = get_record(task.id, path=str(path))
    assert record.runner == "local"
    assert not any(part.startswith("on ") for part in record_info(record))
