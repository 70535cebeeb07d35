"""``create_app(settings)``: the Litestar application.

Run it with ``neurflow serve`` or ``uvicorn --factory neurflow.service.app:create_app`` (settings then
come from ``NEURFLOW_*`` env vars and ``NEURFLOW_CONFIG``). The web process opens the database, the
artifact store and the job manager; models load only in worker processes, and torch is never imported
here (uploaded weights are checked against their architecture in a child process,
:mod:`neurflow.service.weightcheck`).
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
from neurflow.service import errors, openapi, weightcheck
from neurflow.service.api.atlas import AtlasController
from neurflow.service.api.circuits import CircuitController
from neurflow.service.api.datasets import DatasetController
from neurflow.service.api.debug import DebugController
from neurflow.service.api.exports import ExportController
from neurflow.service.api.health import health
from neurflow.service.api.jobs import JobController
from neurflow.service.api.labelstudio_backend import LabelStudioBackendController
from neurflow.service.api.models import ModelController
from neurflow.service.api.report import ReportController
from neurflow.service.bodylimits import multipart_field_limit
from neurflow.service.catalog import Catalog
from neurflow.service.db import Database
from neurflow.service.deps import Services, provides
from neurflow.service.jobstore import JobStore
from neurflow.service.limits import DataRequest, EngineRequest
from neurflow.service.methods import allow_from_document
from neurflow.service.executor import create_executor
from neurflow.service.security import auth_middleware, rate_limit
from neurflow.service.settings import MB, Settings, load_settings
from neurflow.service.storage import ArtifactStore

log = logging.getLogger("neurflow.service")


def _private_paths(settings: Settings) -> dict[str, str]:
    import sys
    from pathlib import Path

    import neurflow

    paths = {str(settings.data_path): "<data>", sys.prefix: "<python>", sys.base_prefix: "<python>",
             str(Path(neurflow.__file__).resolve().parents[1]): "<neurflow>", str(Path.home()): "~"}
    paths.update({str(p): "<assets>" for p in settings.asset_paths})
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
                    manager=create_executor(settings, jobs_store, catalog))


def _upload_limit(controller: type[Controller], mb: int) -> Router:
    """A router layer that gives an upload controller its body limit from the settings."""
    return Router(path="/", route_handlers=[controller], request_max_body_size=mb * MB)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        weightcheck.start_checker()  # torch is imported there, never here
        await services.manager.start()
        try:
            yield
        finally:
            await services.manager.stop()
            weightcheck.stop_checker()

    v1 = Router(path="/v1", security=[{"apiKey": []}], route_handlers=[
        _upload_limit(ModelController, settings.max_weights_mb),
        _upload_limit(DatasetController, settings.max_dataset_mb),
        _upload_limit(DebugController, settings.max_image_mb),
        JobController, CircuitController, ExportController, ReportController, AtlasController])
    app = Litestar(
        route_handlers=[v1, health, Router(path="/", route_handlers=[LabelStudioBackendController],
                                           request_max_body_size=settings.max_predict_kb * 1024)],
        dependencies=provides("settings", "owner"),
        state=State({"services": services}),
        lifespan=[lifespan],
        middleware=[auth_middleware(services.catalog, settings.auth), rate_limit(settings.rate_limit_per_minute).middleware,
                    multipart_field_limit(settings.max_body_kb * 1024), allow_from_document],
        plugins=[errors.problem_details()],
        exception_handlers=errors.exception_handlers,
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
