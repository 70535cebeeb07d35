"""The objects handlers need: built once per app (:func:`neurflow.service.http.app.build_services`), kept in
``app.state.services`` and handed to handlers by the providers below.

The app layer provides ``settings`` and ``owner`` (the caller's id, from the API key) to every
handler; each controller declares the providers of the components its resource uses
(``catalog``, ``jobs``, ``store``, ``executor``), Litestar's layered dependency injection.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from neurflow.service.executors.base import Executor
from neurflow.service.http.quotas import Quotas
from neurflow.service.jobs.store import JobStore
from neurflow.service.settings import Settings
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    catalog: Catalog
    jobs: JobStore
    store: ArtifactStore
    executor: Executor
    quotas: Quotas


def _services(state: State) -> Services:
    return state.services


def provide_settings(state: State) -> Settings:
    return _services(state).settings


def provide_db(state: State) -> Database:
    return _services(state).db


def provide_catalog(state: State) -> Catalog:
    return _services(state).catalog


def provide_jobs(state: State) -> JobStore:
    return _services(state).jobs


def provide_store(state: State) -> ArtifactStore:
    return _services(state).store


def provide_executor(state: State) -> Executor:
    return _services(state).executor


def provide_quotas(state: State) -> Quotas:
    return _services(state).quotas


def provide_owner(request: Request) -> str:
    return request.user


def provides(*names: str) -> dict[str, Provide]:
    """``Provide`` entries for a controller's ``dependencies``, by component name."""
    return {name: Provide(_PROVIDERS[name], sync_to_thread=False) for name in names}


_PROVIDERS = {"settings": provide_settings, "db": provide_db, "catalog": provide_catalog, "jobs": provide_jobs,
              "store": provide_store, "executor": provide_executor, "owner": provide_owner,
              "quotas": provide_quotas}


# What handlers declare: explicitly named dependencies (Litestar 2.23+ warns about inferred ones).
SettingsDep = NamedDependency[Settings]
DatabaseDep = NamedDependency[Database]
CatalogDep = NamedDependency[Catalog]
JobsDep = NamedDependency[JobStore]
StoreDep = NamedDependency[ArtifactStore]
ExecutorDep = NamedDependency[Executor]
QuotasDep = NamedDependency[Quotas]
Owner = NamedDependency[str]  # the owner id of the caller's API key
