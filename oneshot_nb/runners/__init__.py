"""Where commands run: the runner protocol, the local runner, the termination policy.

The engine imports only what this module exports; the rest is each runner's own.
"""

from .base import Command, Group, Handle, Orphan, Place, Runner, RunnerLost, RunnerStopped
from .local import LocalRunner, is_running
from .procfs import start_time
from .remote import SettledThere
from .terminate import end_group, end_groups_now
from .usage import GroupUsage

__all__ = [
    "Command",
    "Group",
    "GroupUsage",
    "Handle",
    "LocalRunner",
    "Orphan",
    "Place",
    "Runner",
    "RunnerLost",
    "RunnerStopped",
    "SettledThere",
    "end_group",
    "end_groups_now",
    "is_running",
    "start_time",
]
