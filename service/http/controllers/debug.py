"""``POST /v1/circuits/{id}/debug``: why did the model predict this? The groups of a circuit that fire
on an uploaded image, their crops and the target logit with each group ablated.

A job of its own kind (it runs the user's model in a worker); the answer waits up to ``wait``
seconds (default: the ``sync_wait_s`` setting). The upload's body limit is the ``max_image_mb``
setting, set on this controller's router layer by :func:`neurflow.service.http.app.create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from litestar import Controller, Response, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from neurflow.service.errors import Invalid
from neurflow.service.http.answers import submitted
from neurflow.service.http.controllers.circuits import model_present
from neurflow.service.http.deps import (
    CatalogDep,
    ExecutorDep,
    JobsDep,
    Owner,
    QuotasDep,
    SettingsDep,
    StoreDep,
    provides,
)
from neurflow.service.intake.imagecheck import ReencodeImage, run_check
from neurflow.service.jobs.policy import circuit_ref
from neurflow.service.jobs.types import DebugJob
from neurflow.service.storage import keys
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import new_id
from neurflow.service.storage.circuits import load_circuit


@dataclass
class DebugUpload:
    """``image``: a PNG/JPEG; ``layer``: restrict to one circuit layer; ``threshold``: firing threshold."""

    image: UploadFile
    layer: str | None = None
    threshold: str | None = None


def _threshold(raw: str | None) -> float | None:
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"threshold must be a number, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise Invalid("threshold must lie in [0, 1]")
    return value


def _reencoded(raw: bytes, settings: Settings, job_id: str) -> bytes:
    """The uploaded image decoded and written again as PNG, in the image checker's child process."""
    work = settings.scratch_path / "uploads"
    work.mkdir(parents=True, exist_ok=True)
    src, dest = work / f"{job_id}.upload", work / f"{job_id}.png"
    try:
        src.write_bytes(raw)
        run_check(ReencodeImage(src=str(src), dest=str(dest), max_pixels=settings.max_image_pixels,
                                name="the uploaded image"), settings.image_check_memory_mb, settings.max_image_checks)
        return dest.read_bytes()
    finally:
        src.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)


class DebugController(Controller):
    path = "/circuits"
    tags = ["circuits"]
    dependencies = provides("catalog", "jobs", "store", "executor", "quotas")

    @post("/{circuit_id:str}/debug",
          summary="Why did the model predict this? Groups that fire on an image, their crops and ablations")
    async def debug(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, executor: ExecutorDep,
                    quotas: QuotasDep, settings: SettingsDep, owner: Owner, circuit_id: str,
                    data: Annotated[DebugUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                    wait: float | None = Parameter(default=None, ge=0, le=600,
                                                   description="seconds to wait; default: the server's sync_wait_s"),
                    ) -> Response:
        if not isinstance(data.image, UploadFile):
            raise Invalid("the 'image' part must be a file upload (PNG or JPEG)")
        threshold = _threshold(data.threshold)
        raw = await data.image.read()

        def work() -> dict[str, Any]:
            row = catalog.get_circuit(owner, circuit_id)
            model = model_present(catalog, owner, row, "upload it again to debug images")
            if data.layer:
                circuit = load_circuit(store, row["key"], with_arrays=False)
                if data.layer not in [layer.name for layer in circuit.layers]:
                    raise Invalid(f"layer {data.layer!r} is not a layer of this circuit; its layers: "
                                  f"{', '.join(layer.name for layer in circuit.layers)}")
            job_id = new_id("job")
            store.put_bytes(keys.debug_input(job_id), _reencoded(raw, settings, job_id))
            job = DebugJob(circuit=circuit_ref(row), model=model, image_key=keys.debug_input(job_id),
                           layer=data.layer or None, threshold=threshold)
            return jobs.create(job_id, owner, job, 1, settings.max_jobs_per_key)

        with quotas.uploads.hold(owner):
            job = await anyio.to_thread.run_sync(work)
        return await submitted(jobs, executor, owner, job, settings.sync_wait_s if wait is None else wait)
