"""``create_executor``: the executor ``settings.executor`` names (``local`` or ``ray``).

Apart from the interface (:mod:`neurflow.service.executors.base`) so that neither executor imports the
module that imports it; each is imported only when chosen (Ray is an optional extra).
"""

from __future__ import annotations

from neurflow.service.executors.base import Executor
from neurflow.service.jobs.store import JobStore
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import Catalog

EXECUTORS = ("local", "ray")


def create_executor(settings: Settings, jobs: JobStore, catalog: Catalog) -> Executor:
    """The executor ``settings.executor`` names."""
    executor = settings.executor
    if executor == "ray":
        from neurflow.service.executors.ray import RayExecutor

        return RayExecutor(settings, jobs, catalog)
    if executor != "local":
        raise ValueError(f"executor {executor!r} is unknown; use one of {', '.join(EXECUTORS)}")
    from neurflow.service.executors.local import LocalExecutor

    return LocalExecutor(settings, jobs, catalog)
