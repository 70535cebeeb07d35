"""The objects handlers need, built once per app and reached through ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import State

from neurflow.service.catalog import Catalog
from neurflow.service.db import Database
from neurflow.service.jobstore import JobStore
from neurflow.service.manager import JobManager
from neurflow.service.settings import Settings
from neurflow.service.storage import ArtifactStore


@dataclass
class Services:
    settings: Settings
    db: Database
    catalog: Catalog
    jobs: JobStore
    store: ArtifactStore
    manager: JobManager


def provide_services(state: State) -> Services:
    return state.services


def provide_owner(request: Request) -> str:
    return request.user


dependencies_spec = {"svc": provide_services, "owner": provide_owner}
