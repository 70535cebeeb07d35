"""``/v1/models``: upload (descriptor + safetensors), list, show with layer names, delete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Annotated

import anyio
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from neurflow.service.deps import Services
from neurflow.service.errors import Conflict, Invalid, Unsupported
from neurflow.core.hashing import sha256_file
from neurflow.service.intake import check_weights, parse_descriptor
from neurflow.service.schemas import ModelList, ModelOut, model_out
from neurflow.service.settings import MB, Settings


@dataclass
class ModelUpload:
    """``descriptor``: JSON {arch, num_classes, input_size, mean?, std?, class_names?, name?};
    ``weights``: the ``.safetensors`` state_dict."""

    descriptor: str
    weights: UploadFile


def weights_key(model_id: str) -> str:
    return f"models/{model_id}.safetensors"


def build(settings: Settings) -> type[Controller]:
    class ModelController(Controller):
        path = "/models"
        tags = ["models"]

        @post("/", request_max_body_size=settings.max_weights_mb * MB, summary="Upload a model",
              status_code=201)
        async def upload(self, svc: Services, owner: str,
                         data: Annotated[ModelUpload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> Response[ModelOut]:
            if not isinstance(data.weights, UploadFile):
                raise Invalid("the 'weights' part must be a file upload (a .safetensors file)")
            desc = parse_descriptor(data.descriptor)
            if data.weights.filename and not data.weights.filename.lower().endswith(".safetensors"):
                raise Unsupported(f"weights file {data.weights.filename!r} is not a .safetensors file; pickled "
                                  ".pt/.pth/.bin and TorchScript files are refused")
            record, created = await anyio.to_thread.run_sync(_ingest, svc, owner, desc, data.weights)
            return Response(model_out(record), status_code=201 if created else 200)

        @get("/", summary="List models")
        async def list_models(self, svc: Services, owner: str) -> ModelList:
            rows = await anyio.to_thread.run_sync(svc.catalog.list_models, owner)
            return ModelList(models=[model_out(r, with_layers=False) for r in rows])

        @get("/{model_id:str}", summary="Show a model and its addressable layers")
        async def get_model(self, svc: Services, owner: str, model_id: str) -> ModelOut:
            return model_out(await anyio.to_thread.run_sync(svc.catalog.get_model, owner, model_id))

        @delete("/{model_id:str}", summary="Delete a model")
        async def delete_model(self, svc: Services, owner: str, model_id: str) -> None:
            def work() -> None:
                svc.catalog.get_model(owner, model_id)
                if svc.jobs.active_using(owner, model_id):
                    raise Conflict(f"model {model_id} is used by a queued or running job; cancel it first")
                if svc.catalog.delete_model(owner, model_id):
                    svc.store.delete(weights_key(model_id))

            await anyio.to_thread.run_sync(work)

    return ModelController


def _ingest(svc: Services, owner: str, desc, upload: UploadFile) -> tuple[dict, bool]:
    upload_dir = svc.settings.scratch_path / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=upload_dir, suffix=".safetensors", delete=False) as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp, 1 << 20)
        path = tmp.name
    try:
        layers = check_weights(path, desc)
        model_id = sha256_file(path)
        key = weights_key(model_id)
        if not svc.store.exists(key):
            svc.store.put_file(key, path)
        size = os.path.getsize(path)
    finally:
        os.unlink(path)
    descriptor = json.loads(json.dumps({"arch": desc.arch, "num_classes": desc.num_classes,
                                        "input_size": desc.input_size, "mean": desc.mean, "std": desc.std,
                                        "class_names": desc.class_names, "name": desc.name}))
    return svc.catalog.add_model(owner, model_id, descriptor, [[n, list(s)] for n, s in layers], size)
