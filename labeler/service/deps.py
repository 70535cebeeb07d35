"""The objects handlers need, built once per app and reached through ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import State

from labeler.service.catalog import Catalog
from labeler.service.db import Database
from labeler.service.jobstore import JobStore
from labeler.service.manager import JobManager
from labeler.service.settings import Settings
from labeler.service.storage import ArtifactStore


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
