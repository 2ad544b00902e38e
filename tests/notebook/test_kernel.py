"""The magics in a real ipykernel, driven the way a notebook drives it: one cell at a
time through jupyter_client, with the replies and outputs a frontend would see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import eventually
from helpers.kernel import Kernel
from helpers.processes import group_gone, kill_group

from oneshot_nb.engine.task import DEFAULT_GRACE

# A command that outlives SIGTERM, so that only the SIGKILL after the grace ends it.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)

# Run in every kernel: load the extension, keep stops short, and give cells a way to
# wait for a condition on the kernel's loop.
SETUP = """\
%load_ext oneshot_nb
%config OneshotMagics.grace = 0.5
import asyncio, json, os, sys, threading, time
from oneshot_nb import TaskState
magics = get_ipython().find_magic("oneshot").__self__
PY = sys.executable

async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in the kernel")
        await asyncio.sleep(0.01)
"""


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    kernel = Kernel(setup=SETUP)
    yield kernel
    kernel.shutdown(now=False)  # as a frontend does: the kernel stops its tasks


# -- scheduling ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_oneshot_returns_while_the_command_runs(kernel):
    """The cell's reply arrives while the command still runs; a later cell sees RUNNING
    and, after awaiting the task, COMPLETED."""
    begin = time.monotonic()
    kernel.ok("t = %oneshot --quiet {PY} -c 'import time; time.sleep(3)'")
    assert time.monotonic() - begin < 2.5
    state = kernel.value(
        "await until(lambda: t.state is not TaskState.CREATED)\nprint(json.dumps(t.state))"
    )
    assert state == "RUNNING"
    assert kernel.value("await t.wait()\nprint(json.dumps(t.state))") == "COMPLETED"


@pytest.mark.timeout(30)
def test_states_advance_between_cells_without_awaiting(kernel):
    """The task progresses on the kernel's loop between cells: cells that only read the
    state see it reach COMPLETED."""
    kernel.ok("t = %oneshot --quiet {PY} -c 'import time; time.sleep(0.5)'")
    seen = []
    deadline = time.monotonic() + 10
    while not seen or seen[-1] != "COMPLETED":
        assert time.monotonic() < deadline, seen
        seen.append(kernel.value("print(json.dumps(t.state))"))
    assert "RUNNING" in seen


@pytest.mark.timeout(30)
def test_one_orchestrator_runs_on_the_kernel_loop_without_a_thread(kernel):
    """Every %oneshot goes to one orchestrator hosted on the kernel's running loop; the
    magics start no thread of their own (only asyncio's child watcher waits on the
    process while it runs)."""
    result = kernel.value(
        """
before = {th.name for th in threading.enumerate()}
count = threading.active_count()
first = %oneshot --quiet {PY} -c 'import time; time.sleep(0.5)'
second = %oneshot --quiet true
await until(lambda: first.state is TaskState.RUNNING)
during = sorted({th.name for th in threading.enumerate()} - before)
await first.wait(); await second.wait()
orchestrator = magics.orchestrator
print(json.dumps({
    "thread": magics.session.portal is None,
    "same": first in orchestrator.tasks and second in orchestrator.tasks,
    "loop": orchestrator._host.get_loop() is asyncio.get_running_loop(),
    "during": during,
    "added": threading.active_count() - count,
}))
"""
    )
    assert result["thread"] and result["same"] and result["loop"]
    assert all(name.startswith(("asyncio-waitpid", "waitpid")) for name in result["during"])
    assert result["added"] == 0


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_command_is_taken_verbatim_and_names_expand(kernel):
    """Quotes and the command's own -c reach the shell as typed; {expr} and $name expand
    from the user's namespace as in !cmd."""
    result = kernel.value(
        """
word = "hello"
t = %oneshot --quiet --timeout 60 sh -c 'echo "a  b"; echo $0'
u = %oneshot --quiet echo {word.upper()} $word
await t.wait(); await u.wait()
print(json.dumps([t.command, t.timeout, t.output, u.output]))
"""
    )
    assert result == ["""sh -c 'echo "a  b"; echo $0'""", 60.0, "a  b\nsh\n", "HELLO hello\n"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%oneshot --bogus ls", "unknown option '--bogus'"),
        ("%oneshot", "no command given"),
        ("%oneshot --idle -1 ls", "expected a number of seconds > 0 (inf: never), got '-1'"),
        ("%%oneshot_parallel --limit 0\nls", "expected a whole number of 1 or more, got '0'"),
        ("%%oneshot_parallel\n# nothing\n\n", "the cell has no commands"),
    ],
)
def test_a_usage_error_is_one_line_and_starts_nothing(kernel, code, message):
    """A mistake is a UsageError shown as one line, without a traceback, and no task is
    submitted."""
    before = kernel.value("print(len(magics.orchestrator.tasks))")
    reply = kernel.run(code)
    assert reply.status == "error"
    assert reply.error.startswith("UsageError: ") and message in reply.error
    assert reply.stderr.strip() == reply.error
    assert kernel.value("print(len(magics.orchestrator.tasks))") == before


# -- showing ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_view_is_displayed_exactly_once(kernel):
    """A task's view shows once whether or not the result is assigned, not at all with
    --quiet, and again when a later cell shows the task."""
    cells = [
        ("t1 = %oneshot true", 1),
        ("%oneshot true", 1),
        ("t3 = %oneshot --quiet true", 0),
        ("%oneshot --quiet true", 0),
        ("t5 = %oneshot true\nt5", 1),
        ("t1", 1),
        ("t3", 1),
        ("%%oneshot_parallel --out b\ntrue\ntrue", 1),
        ("b", 1),
    ]
    shown = [(code, kernel.ok(code).views) for code, _ in cells]
    kernel.ok("await magics.orchestrator.wait_all()")
    assert shown == cells
    [shown_again] = [m for m in kernel.ok("t1").messages if m["msg_type"] == "display_data"]
    assert shown_again["content"]["data"]["text/plain"] == "TaskView('true')"


@pytest.mark.timeout(30)
def test_oneshot_tasks_displays_a_widget_table(kernel):
    """%oneshot_tasks displays one live table widget of every task."""
    reply = kernel.ok("%oneshot_tasks")
    assert reply.views == 1
    [message] = [m for m in reply.messages if m["msg_type"] == "display_data"]
    assert message["content"]["data"]["text/plain"].startswith("TaskTable(")


# -- batches ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_parallel_never_runs_more_than_its_limit(kernel):
    """With --limit 2, five commands never have more than two running at once; each sees
    ONESHOT_SLOT in {0, 1} and ONESHOT_TASK_ID equal to its id; --out stores the batch."""
    kernel.ok(
        """
active = []
def watch(event):
    if event.kind == "transition":
        active.append(magics.orchestrator.statistics().active)
magics.orchestrator.listeners.append(watch)
"""
    )
    line = (
        "{PY} -c 'import os, time; "
        'print(os.environ["ONESHOT_SLOT"], os.environ["ONESHOT_TASK_ID"]); time.sleep(0.3)\''
    )
    kernel.ok("%%oneshot_parallel --limit 2 --quiet --out batch\n" + "\n".join([line] * 5))
    result = kernel.value(
        """
await batch.wait()
magics.orchestrator.listeners.remove(watch)
print(json.dumps({
    "kind": type(batch).__name__,
    "peak": max(active),
    "states": [t.state for t in batch],
    "seen": [t.output.split() for t in batch],
    "own": [[str(t.slot), t.id] for t in batch],
}))
"""
    )
    assert result["kind"] == "Batch"
    assert result["peak"] == 2
    assert result["states"] == ["COMPLETED"] * 5
    assert result["seen"] == result["own"]
    assert {slot for slot, _ in result["seen"]} == {"0", "1"}


@pytest.mark.timeout(30)
def test_halt_now_stops_the_rest_of_the_batch(kernel):
    """With --halt now,fail=1 the first failure interrupts the running tasks (reason
    "halted: now,fail=1") and the waiting ones never start."""
    kernel.ok(
        "%%oneshot_parallel --limit 2 --halt now,fail=1 --quiet --out ff\n"
        "sh -c 'sleep 0.5; exit 3'\n" + "sleep 30\n" * 4
    )
    result = kernel.value(
        "await ff.wait()\nprint(json.dumps([[t.state, t.reason, t.returncode, t.pid] for t in ff]))"
    )
    assert result[0][:3] == ["FAILED", "exit", 3]
    halted = "halted: now,fail=1"
    assert result[1][:2] == ["INTERRUPTED", halted] and result[1][3] is not None
    assert [r[:2] for r in result[2:]] == [["INTERRUPTED", halted]] * 3
    assert [r[3] for r in result[2:]] == [None] * 3
    eventually(lambda: group_gone(result[1][3]))


# -- stopping --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stop_button_kills_the_whole_process_group(kernel):
    """Clicking Stop in the kernel interrupts the task (reason "stopped") and no process
    of its group survives, a background child included."""
    pid = kernel.value(
        "t = %oneshot sh -c 'sleep 60 & sleep 60'\n"
        "await until(lambda: t.state is TaskState.RUNNING)\n"
        "print(json.dumps(t.pid))"
    )
    assert not group_gone(pid)
    result = kernel.value(
        "t.view.stop_button.click()\n"
        "await t.wait()\n"
        "print(json.dumps([t.state, t.reason, t.view.stop_button.disabled]))"
    )
    assert result[:2] == ["INTERRUPTED", "stopped"]
    eventually(lambda: group_gone(pid))


@pytest.mark.timeout(30)
def test_oneshot_stop_by_id_by_name_and_all(kernel):
    """%oneshot_stop stops the task with that id or name, an unknown one is a UsageError
    that stops nothing, and --all stops every task."""
    kernel.ok(
        """
a = %oneshot --quiet --name alpha sleep 30
b = %oneshot --quiet --name beta sleep 30
c = %oneshot --quiet sleep 30
await until(lambda: all(x.state is TaskState.RUNNING for x in (a, b, c)))
"""
    )
    states = kernel.value(
        "%oneshot_stop {a.id}\n%oneshot_stop beta\nawait a.wait(); await b.wait()\n"
        "print(json.dumps([[x.state, x.reason] for x in (a, b, c)]))"
    )
    assert states == [["INTERRUPTED", "stopped"], ["INTERRUPTED", "stopped"], ["RUNNING", None]]
    reply = kernel.run("%oneshot_stop nosuch")
    assert reply.error == "UsageError: no task with id or name 'nosuch'"
    assert kernel.value("print(json.dumps(c.state))") == "RUNNING"
    state = kernel.value(
        "%oneshot_stop --all\nawait c.wait()\nprint(json.dumps([c.state, c.reason]))"
    )
    assert state == ["INTERRUPTED", "stopped"]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_config_changes_the_running_orchestrator_and_later_tasks(kernel):
    """%config OneshotMagics.limit changes the orchestrator in use; idle_after becomes the
    default of tasks submitted after it."""
    try:
        result = kernel.value(
            """
%config OneshotMagics.limit = 4
%config OneshotMagics.idle_after = 2
t = %oneshot --quiet true
print(json.dumps([magics.limit, magics.orchestrator.limit, t.idle_after]))
"""
        )
        assert result == [4, 4, 2.0]
    finally:
        kernel.ok("%config OneshotMagics.limit = 8\n%config OneshotMagics.idle_after = 10")


@pytest.mark.timeout(30)
def test_invalid_config_is_refused_and_changes_nothing(kernel):
    """limit 0 or a negative grace raises TraitError (which %config reports on stderr),
    and neither the setting nor the orchestrator changes."""
    before = kernel.value(
        "print(json.dumps([magics.limit, magics.orchestrator.limit, "
        "magics.grace, magics.orchestrator.options.grace]))"
    )
    assert kernel.run("magics.limit = 0").error.startswith("TraitError: limit must be 1 or more")
    grace_rule = "grace must be a finite number of seconds >= 0"
    assert kernel.run("magics.grace = -1").error.startswith(f"TraitError: {grace_rule}")
    assert "limit must be 1 or more" in kernel.ok("%config OneshotMagics.limit = 0").stderr
    assert grace_rule in kernel.ok("%config OneshotMagics.grace = -1").stderr
    after = kernel.value(
        "print(json.dumps([magics.limit, magics.orchestrator.limit, "
        "magics.grace, magics.orchestrator.options.grace]))"
    )
    assert after == before


@pytest.mark.timeout(60)
def test_config_given_to_the_kernel_is_honoured(kernels):
    """--OneshotMagics.* on the kernel's command line (as c.OneshotMagics.* in a config
    file) sets the limit of the orchestrator and of batches, and task defaults."""
    kernel = kernels("--OneshotMagics.limit=3", "--OneshotMagics.idle_after=2.5", setup=SETUP)
    result = kernel.value(
        "t = %oneshot --quiet true\n"
        "print(json.dumps([magics.limit, magics.orchestrator.limit, t.idle_after]))"
    )
    assert result == [3, 3, 2.5]
    kernel.ok("%%oneshot_parallel --quiet --out jobs\ntrue")
    assert kernel.value("await jobs.wait()\nprint(json.dumps(jobs.limit))") == 3


# -- unloading -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_unload_ext_then_load_ext_keeps_the_running_task_within_reach(kernel):
    """%unload_ext oneshot_nb takes the magics away while a task runs on in the kernel;
    %load_ext brings the same magics back: the task stops by name, and a new task's
    view is displayed once again."""
    kernel.ok(
        "t = %oneshot --quiet --name kept sleep 30\n"
        "await until(lambda: t.state is TaskState.RUNNING)"
    )
    kernel.ok("%unload_ext oneshot_nb")
    gone = kernel.run("%oneshot true")
    assert gone.error.startswith("UsageError: Line magic function `%oneshot` not found")
    assert kernel.value("print(json.dumps(t.state))") == "RUNNING"
    kernel.ok("%load_ext oneshot_nb")
    state = kernel.value(
        """
same = get_ipython().find_magic("oneshot").__self__ is magics
%oneshot_stop kept
await t.wait()
print(json.dumps([same, t.state, t.reason]))
"""
    )
    assert state == [True, "INTERRUPTED", "stopped"]
    assert kernel.ok("u = %oneshot true\nu").views == 1


# -- shutdown --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_kernel_shutdown_leaves_no_process(tmp_path: Path, kernels):
    """Shutting the kernel down stops every task, one that ignores SIGTERM included (after
    the grace), with reason "shutdown"; no process of theirs survives the kernel."""
    kernel = kernels(setup=SETUP)
    record = tmp_path / "transitions.txt"
    try:
        pids = kernel.value(
            f"""
record = open({str(record)!r}, "a")
def write(event):
    if event.kind == "transition" and event.target.is_final:
        record.write(f"{{event.task_id}} {{event.target.value}} {{event.reason}}\\n")
        record.flush()
magics.orchestrator.listeners.append(write)
plain = %oneshot --quiet sh -c 'sleep 60 & sleep 60'
stubborn_code = {STUBBORN!r}
stubborn = %oneshot --quiet {{PY}} -c "$stubborn_code"
await until(lambda: plain.state is TaskState.RUNNING and "ready" in stubborn.output)
print(json.dumps({{t.id: t.pid for t in (plain, stubborn)}}))
"""
        )
        assert not any(group_gone(pid) for pid in pids.values())
    finally:
        kernel.shutdown(now=False)
    eventually(lambda: all(group_gone(pid) for pid in pids.values()), timeout=10)
    assert sorted(record.read_text().splitlines()) == sorted(
        f"{task_id} INTERRUPTED shutdown" for task_id in pids
    )


@pytest.mark.timeout(60)
def test_kernel_shutdown_with_the_default_grace_leaves_no_process(kernels):
    """A task that ignores SIGTERM does not outlive a kernel shut down by its frontend,
    with the default grace too: jupyter_client SIGTERMs a kernel still running 2.5 s
    into its shutdown, so the wait at exit must end (and SIGKILL) before that."""
    kernel = kernels(setup=SETUP)
    try:
        pid = kernel.value(
            f"""
%config OneshotMagics.grace = {DEFAULT_GRACE}
stubborn_code = {STUBBORN!r}
stubborn = %oneshot --quiet {{PY}} -c "$stubborn_code"
await until(lambda: "ready" in stubborn.output)
print(json.dumps(stubborn.pid))
"""
        )
    finally:
        kernel.shutdown(now=False)
    try:
        eventually(lambda: group_gone(pid), timeout=3)
    finally:
        if not group_gone(pid):
            kill_group(pid)
