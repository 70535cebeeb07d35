"""``/v1/models``: upload (descriptor + safetensors), list, show with layer names, delete.

The upload's body limit is the app's ``max_weights_mb`` setting, set on this controller's router
layer by :func:`neurflow.service.http.app.create_app`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Annotated

import anyio
import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from neurflow.core.hashing import sha256_file
from neurflow.service.errors import Conflict, Invalid, Unsupported
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, QuotasDep, SettingsDep, StoreDep, provides
from neurflow.service.http.schemas import DEFAULT_PAGE, Cursor, ModelList, ModelOut, PageLimit, model_out
from neurflow.service.intake.models import ModelDescriptor, check_weights, parse_descriptor
from neurflow.service.settings import Settings
from neurflow.service.storage import weights
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog


@dataclass
class ModelUpload:
    """``descriptor``: JSON {arch, num_classes, input_size, mean?, std?, class_names?, name?};
    ``weights``: the ``.safetensors`` state_dict."""

    descriptor: str
    weights: UploadFile


class ModelController(Controller):
    path = "/models"
    tags = ["models"]
    dependencies = provides("catalog", "jobs", "store", "quotas")

    @post("/", summary="Upload a model", status_code=201)
    async def upload(self, catalog: CatalogDep, store: StoreDep, quotas: QuotasDep, settings: SettingsDep, owner: Owner,
                     data: Annotated[ModelUpload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> Response[ModelOut]:
        if not isinstance(data.weights, UploadFile):
            raise Invalid("the 'weights' part must be a file upload (a .safetensors file)")
        desc, warnings = parse_descriptor(data.descriptor)
        if data.weights.filename and not data.weights.filename.lower().endswith(".safetensors"):
            raise Unsupported(f"weights file {data.weights.filename!r} is not a .safetensors file; pickled "
                              ".pt/.pth/.bin and TorchScript files are refused")
        with quotas.uploads.hold(owner):
            record, created = await anyio.to_thread.run_sync(_ingest, catalog, store, settings, owner, desc,
                                                             data.weights)
        return Response(msgspec.structs.replace(model_out(record), warnings=warnings),
                        status_code=201 if created else 200)

    @get("/", summary="List models")
    async def list_models(self, catalog: CatalogDep, owner: Owner, limit: PageLimit = DEFAULT_PAGE,
                          cursor: Cursor = None) -> ModelList:
        rows, after = await anyio.to_thread.run_sync(catalog.page, "models", owner, limit, cursor)
        return ModelList(models=[model_out(r, with_layers=False) for r in rows], next=after)

    @get("/{model_id:str}", summary="Show a model and its addressable layers")
    async def get_model(self, catalog: CatalogDep, owner: Owner, model_id: str) -> ModelOut:
        return model_out(await anyio.to_thread.run_sync(catalog.get_model, owner, model_id))

    @delete("/{model_id:str}", summary="Delete a model")
    async def delete_model(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                           model_id: str) -> None:
        def in_use() -> None:
            if jobs.model_in_use(owner, model_id):
                raise Conflict(f"model {model_id} is used by a queued or running job; cancel it first")

        await anyio.to_thread.run_sync(lambda: weights.unregister(catalog, store, owner, model_id, check=in_use))


def _ingest(catalog: Catalog, store: ArtifactStore, settings: Settings, owner: str, desc: ModelDescriptor,
            upload: UploadFile) -> tuple[dict, bool]:
    upload_dir = settings.scratch_path / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=upload_dir, suffix=".safetensors", delete=False) as tmp:
        path = tmp.name
        try:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, tmp, 1 << 20)
        except BaseException:
            os.unlink(path)  # a full scratch disk keeps no partial upload
            raise
    try:
        layers = check_weights(path, desc)
        model_id = sha256_file(path)
        return weights.register(catalog, store, owner, model_id, path, msgspec.to_builtins(desc),
                                [[n, list(s)] for n, s in layers], os.path.getsize(path))
    finally:
        os.unlink(path)
