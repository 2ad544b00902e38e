"""The Dask runner: commands run on the workers of a Dask cluster.

`DaskRunner("local:2")` starts a LocalCluster of two worker processes (once per
kernel), `DaskRunner("tcp://10.0.0.5:8786")` connects to a running scheduler, and
`DaskRunner(client)` uses a `distributed.Client` the notebook already has. Each
connects when made: a scheduler that cannot be reached, or workers that cannot load
oneshot_nb, is one error there, before any task exists.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from distributed import Client, LocalCluster

from ..base import Command, Orphan, RunnerStopped
from .connection import ClientClosed, Connection, _why
from .handle import DaskHandle

MAX_LOCAL_WORKERS = 256
# A scheduler that does not answer within this is called unreachable (distributed's own
# default, 30 s, is long to hold a cell for a mistyped address).
CONNECT_TIMEOUT = 10.0

logger = logging.getLogger("oneshot_nb")

# One cluster or connection per kernel for each spec ("local:2", an address): every
# task and every magic that names it shares it.
_connections: dict[str, tuple[LocalCluster | None, Connection]] = {}
_by_client: dict[str, Connection] = {}


# What of the kernel's environment for a task a worker gets: the task's own variables.
TASK_VARIABLES = ("ONESHOT_TASK_ID", "ONESHOT_SLOT", "ONESHOT_ATTEMPT")


class DaskRunner:
    """Runs commands on Dask workers (see the module's docstring for `cluster`).

    `timeout`: seconds to wait for the scheduler (CONNECT_TIMEOUT when None).
    `direct`: None asks each worker directly and falls back to relaying through the
    scheduler for a worker the kernel cannot reach; False always relays; True never.
    """

    name = "dask"

    def __init__(
        self,
        cluster: str | Client,
        *,
        timeout: float | None = None,
        direct: bool | None = None,
    ) -> None:
        if direct not in (None, True, False):
            raise TypeError(f"direct must be None, True or False, got {direct!r}")
        self.direct = direct
        wait = _check_timeout(timeout)
        if isinstance(cluster, Client):
            self.cluster = getattr(cluster.scheduler, "address", None) or repr(cluster)
            self.link = _link(cluster)
            self.local_cluster = None
        else:
            self.cluster = check_cluster(cluster)
            self.local_cluster, self.link = _connect(self.cluster, wait)
        if not self.link.client.asynchronous:
            try:
                self.link.client.sync(self.link.ready)  # its errors here, before any task
            except Exception:
                if not isinstance(cluster, Client):
                    self.close()  # nobody holds a runner that could
                raise

    @property
    def client(self) -> Client:
        return self.link.client

    async def start(
        self, command: Command, cwd: str | None, env: Mapping[str, str], options: Any = None
    ) -> DaskHandle:
        task_id = env.get("ONESHOT_TASK_ID") or secrets.token_hex(4)
        key = f"oneshot-{task_id}-{secrets.token_hex(4)}"
        own = dict(getattr(options, "env", None) or {})
        own.update({k: v for k, v in env.items() if k in TASK_VARIABLES})
        spec = {
            "key": key,
            "claim": f"oneshot_nb-claim-{self.link.client.id}-{key}",
            "topic": self.link.topic,
            "command": command if isinstance(command, str) else list(command),
            # The worker's own environment, with the task's variables: the kernel's
            # PATH or HOME mean nothing on another machine.
            "env": own,
            "cwd": getattr(options, "cwd", None),
            "kernel_cwd": cwd,
            "grace": float(getattr(options, "grace", 5.0)),
        }
        try:
            future, notice = await self.link.call(lambda: self.link.submit(spec))
        except ClientClosed as exc:
            raise RunnerStopped(str(exc), reason="client closed") from None
        if "error" in notice:
            await self.link.call(lambda: self.link.forget(future, spec["claim"]))
            raise _start_error(notice)
        return DaskHandle(self.link, spec, future, notice, self.direct)

    def settle(self, orphans: Sequence[Orphan]) -> list[Orphan]:
        """A dead kernel's commands on workers are ended there (the scheduler releases
        its tasks, which stops them; a worker's reaper ends what a dead worker ran):
        nothing to signal from here, they can be marked ended."""
        return list(orphans)

    def close(self) -> None:
        """Close the client, and the local cluster if this kernel started one: for every
        runner of this cluster in the kernel, which share them. Tasks still running
        there end INTERRUPTED, "client closed" (the scheduler stops them)."""
        _connections.pop(self.cluster, None)
        _by_client.pop(self.link.client.id, None)
        self.link.close()
        self.link.client.close()
        if self.local_cluster is not None:
            self.local_cluster.close()

    def __repr__(self) -> str:
        return f"DaskRunner({self.cluster!r})"


def check_cluster(cluster: Any) -> str:
    """`local`, `local:N` or a scheduler's address, checked; one line if not."""
    if not isinstance(cluster, str):
        raise TypeError(
            f"cluster must be 'local:N', a scheduler address or a distributed.Client,"
            f" got {type(cluster).__name__}"
        )
    if cluster == "local" or cluster.startswith("local:"):
        count = cluster.partition(":")[2] or str(os.cpu_count() or 1)
        if not re.fullmatch(r"[0-9]{1,4}", count) or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise ValueError(
                f"local:N takes a number of workers from 1 to {MAX_LOCAL_WORKERS},"
                f" got {cluster!r:.60}"
            )
        return f"local:{int(count)}"
    if not re.fullmatch(r"((tcp|tls|ws|wss)://)?[^\s/]+:[0-9]{1,5}", cluster):
        raise ValueError(
            f"cluster must be 'local:N' or a scheduler address like tcp://host:8786"
            f" (tcp, tls, ws or wss), got {cluster!r:.80}"
        )
    return cluster if "://" in cluster else f"tcp://{cluster}"


def _check_timeout(timeout: Any) -> float:
    if timeout is None:
        return CONNECT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _connect(cluster: str, timeout: float) -> tuple[LocalCluster | None, Connection]:
    known = _connections.get(cluster)
    if known is not None:
        if not known[1].closed:
            return known
        if known[0] is not None:
            known[0].close()  # its client was closed: the cluster must not outlive it
    refused = None if cluster.startswith("local:") else _refused(cluster)
    if refused is not None:
        raise OSError(f"cannot reach the Dask scheduler at {cluster}: {refused}")
    local = None
    try:
        if cluster.startswith("local:"):
            local = LocalCluster(
                n_workers=int(cluster[6:]),
                threads_per_worker=1,
                processes=True,
                # A free port for the scheduler's HTTP server (and the dashboard, where
                # bokeh is installed): 8787 may be another cluster's.
                dashboard_address=":0",
            )
            client = Client(local, set_as_default=False)
        else:
            client = Client(cluster, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        if local is not None:
            local.close()
        raise OSError(f"cannot reach the Dask scheduler at {cluster}: {_why(exc)}") from None
    _connections[cluster] = (local, _link(client))
    return _connections[cluster]


def _refused(address: str) -> str | None:
    """Why nothing listens at `address`, when the system says so at once (a port that
    refuses): distributed would retry for the whole timeout. None when it may listen."""
    host, _, port = address.partition("://")[2].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
    except ConnectionRefusedError as exc:
        return f"{(exc.strerror or str(exc)).lower()} (nothing listens there)"
    except (OSError, ValueError):
        pass  # unreachable, unknown, slow: distributed says, within its timeout
    return None


def _link(client: Client) -> Connection:
    link = _by_client.get(client.id)
    if link is None or link.closed:
        link = _by_client[client.id] = Connection(client)
    return link


def _start_error(notice: dict[str, Any]) -> Exception:
    """The worker's reason a command could not start, as the exception a local start
    would have raised (FileNotFoundError for a missing directory), naming the worker."""
    kind, _, message = notice["error"].partition(": ")
    cls = getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls, message = OSError, notice["error"]
    return cls(f"{message} (on {notice['worker']})")
