"""Commands on Dask workers (the `dask` extra): `DaskRunner`.

runner.py is the kernel's side (connecting, starting), handle.py a running command as
the engine sees it, connection.py the client and its requests to workers, worker.py
what runs on each worker (its plugin and the Dask task), command.py a command there (its
unsent output), reaper.py the process that ends a dead worker's commands.
"""

from .runner import DaskRunner, check_cluster

__all__ = ["DaskRunner", "check_cluster"]
