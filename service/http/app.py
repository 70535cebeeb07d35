"""``create_app(settings)``: the Litestar application.

Run it with ``neurflow serve`` or ``uvicorn --factory neurflow.service.http.app:create_app`` (settings then
come from ``NEURFLOW_*`` env vars and ``NEURFLOW_CONFIG``). The web process opens the database, the
artifact store and the executor; models load only in worker processes, and torch is never imported
here (uploaded weights are checked against their architecture in a child process,
:mod:`neurflow.service.intake.weightcheck`).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from litestar import Controller, Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from neurflow import __version__
from neurflow.service import errors
from neurflow.service.executors.factory import create_executor
from neurflow.service.http import openapi
from neurflow.service.http.bodylimits import multipart_field_limit
from neurflow.service.http.controllers.atlas import AtlasController
from neurflow.service.http.controllers.audits import AuditController
from neurflow.service.http.controllers.diffs import DiffController
from neurflow.service.http.controllers.circuits import CircuitController
from neurflow.service.http.controllers.datasets import DatasetController
from neurflow.service.http.controllers.debug import DebugController
from neurflow.service.http.controllers.exports import ExportController
from neurflow.service.http.controllers.health import health
from neurflow.service.http.controllers.jobs import JobController
from neurflow.service.http.controllers.labelstudio_backend import LabelStudioBackendController
from neurflow.service.http.controllers.models import ModelController
from neurflow.service.http.controllers.report import ReportController
from neurflow.service.http.deps import Services, provides
from neurflow.service.http.methods import allow_from_document
from neurflow.service.http.problems import exception_handlers, problem_details
from neurflow.service.http.quotas import Quotas
from neurflow.service.http.security import auth_middleware, rate_limit
from neurflow.service.intake import weightcheck
from neurflow.service.jobs.limits import DataRequest, EngineRequest
from neurflow.service.jobs.store import JobStore
from neurflow.service.settings import MB, Settings, load_settings
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.db import Database

log = logging.getLogger("neurflow.service")


def _private_paths(settings: Settings) -> dict[str, str]:
    import sys
    from pathlib import Path

    import neurflow

    paths = {str(settings.data_path): "<data>", sys.prefix: "<python>", sys.base_prefix: "<python>",
             str(Path(neurflow.__file__).resolve().parents[1]): "<neurflow>", str(Path.home()): "~"}
    paths.update({str(p): "<assets>" for p in settings.asset_paths})
    if "://" not in settings.artifact_url:  # a local artifact root (may lie outside the data dir)
        paths[str(Path(settings.artifact_url).expanduser().resolve())] = "<artifacts>"
    return paths


def build_services(settings: Settings) -> Services:
    errors.register_private_paths(_private_paths(settings))
    settings.data_path.mkdir(parents=True, exist_ok=True)
    (settings.data_path / "assets").mkdir(exist_ok=True)
    db = Database(settings.db_path)
    catalog = Catalog(db)
    for i, key in enumerate(settings.api_keys):
        catalog.add_key(key, f"configured-{i}")
    jobs_store = JobStore(db)
    store = ArtifactStore(settings.artifact_url, cache_dir=settings.scratch_path / "cache")
    return Services(settings=settings, db=db, catalog=catalog, jobs=jobs_store, store=store,
                    executor=create_executor(settings, jobs_store, catalog),
                    quotas=Quotas(settings.max_streams_per_key, settings.max_uploads_per_key))


def _upload_limit(controller: type[Controller], mb: int) -> Router:
    """A router layer that gives an upload controller its body limit from the settings."""
    return Router(path="/", route_handlers=[controller], request_max_body_size=mb * MB)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        weightcheck.start_checker()  # torch is imported there, never here
        await services.executor.start()
        try:
            yield
        finally:
            await services.executor.stop()
            weightcheck.stop_checker()

    v1 = Router(path="/v1", security=[{"apiKey": []}], route_handlers=[
        _upload_limit(ModelController, settings.max_weights_mb),
        _upload_limit(DatasetController, settings.max_dataset_mb),
        _upload_limit(DebugController, settings.max_image_mb),
        JobController, CircuitController, ExportController, ReportController, AtlasController, AuditController,
        DiffController])
    app = Litestar(
        route_handlers=[v1, health, Router(path="/", route_handlers=[LabelStudioBackendController],
                                           request_max_body_size=settings.max_predict_kb * 1024)],
        dependencies=provides("settings", "owner"),
        state=State({"services": services}),
        lifespan=[lifespan],
        middleware=[auth_middleware(services.catalog, settings.auth, settings.auth_failures_per_minute),
                    rate_limit(settings.rate_limit_per_minute).middleware,
                    multipart_field_limit(settings.max_body_kb * 1024), allow_from_document],
        plugins=[problem_details()],
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_kb * 1024,
        cors_config=CORSConfig(allow_origins=settings.cors_origins, allow_headers=["X-API-Key", "Content-Type"])
        if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="NeurFlow service", version=__version__,
            description="Upload a model and images, run NeurFlow jobs, get labeled circuits.",
            components=Components(security_schemes={
                "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")}),
            render_plugins=[]),
        debug=False,
    )
    openapi.document_bounds(app, [EngineRequest, DataRequest])
    openapi.document_problems(app)
    openapi.forbid_unknown_fields(app)
    return app
