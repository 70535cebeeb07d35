"""``/v1/circuits``: the labeled circuit documents, their patches and mosaics, relabel, debug, evaluate.

Relabel, debug and evaluate run in a worker (they load CLIP or the user's model) as jobs of their
own kind. Relabel answers 202 with the job; debug and evaluate wait up to ``wait`` seconds and
answer 200 with the result, or 202 with the job to poll when it takes longer.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from neurflow.service.api.datasets import images_key
from neurflow.service.api.models import weights_key
from neurflow.service.catalog import new_id
from neurflow.service.deps import Services
from neurflow.service.errors import ApiError, Conflict, Invalid, NotFound
from neurflow.service.intake import decode_image
from neurflow.service.jobstore import TERMINAL
from neurflow.service.policy import check_labeling
from neurflow.service.schemas import CircuitList, CircuitOut, EvaluateIn, JobOut, RelabelIn, circuit_out
from neurflow.service.settings import MB, Settings

_GROUP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXEMPLAR = re.compile(r"^(\d{1,6})\.png$")
PNG_HEADERS = {"Cache-Control": "private, max-age=86400, immutable"}


@dataclass
class DebugUpload:
    """``image``: a PNG/JPEG; ``layer``: restrict to one circuit layer; ``threshold``: firing threshold."""

    image: UploadFile
    layer: str | None = None
    threshold: str | None = None


class JobFailed(ApiError):
    status, title, slug = 422, "The task failed", "task-failed"


async def wait_job(svc: Services, owner: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await anyio.to_thread.run_sync(svc.jobs.get, owner, job_id)
        left = deadline - time.monotonic()
        if job["state"] in TERMINAL or left <= 0:
            return job
        await svc.manager.wait_change(job_id, min(1.0, left))


def _answer(job: dict[str, Any]) -> Response:
    if job["state"] == "succeeded":
        return Response(job["result"], status_code=200, headers={"X-Job-Id": job["id"]})
    if job["state"] in ("failed", "cancelled"):
        raise JobFailed(f"{job['kind']} job {job['id']} {job['state']}: {job['error']}", job_id=job["id"])
    return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


def _png(svc: Services, key: str, what: str) -> Response:
    try:
        data = svc.store.get_bytes(key)
    except (KeyError, ValueError):
        raise NotFound(f"no {what}") from None
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


def build(settings: Settings) -> type[Controller]:
    class CircuitController(Controller):
        path = "/circuits"
        tags = ["circuits"]

        @get("/", summary="List circuits (optionally of one job)")
        async def list_circuits(self, svc: Services, owner: str, job_id: str | None = None) -> CircuitList:
            rows = await anyio.to_thread.run_sync(svc.catalog.list_circuits, owner, job_id)
            return CircuitList(circuits=[circuit_out(r) for r in rows])

        @get("/{circuit_id:str}", summary="The labeled circuit document (neurflow.circuit/1)",
             media_type="application/json")
        async def document(self, svc: Services, owner: str, circuit_id: str) -> Response[bytes]:
            def work() -> bytes:
                row = svc.catalog.get_circuit(owner, circuit_id)
                return svc.store.get_bytes(row["key"] + "/circuit.json")

            return Response(await anyio.to_thread.run_sync(work), media_type="application/json")

        @get("/{circuit_id:str}/info", summary="Catalog entry of a circuit (job, class, summary, links)")
        async def info(self, svc: Services, owner: str, circuit_id: str) -> CircuitOut:
            return circuit_out(await anyio.to_thread.run_sync(svc.catalog.get_circuit, owner, circuit_id))

        @get("/{circuit_id:str}/groups/{group_id:str}/mosaic.png", summary="Mosaic of a group's exemplar patches",
             media_type="image/png")
        async def mosaic(self, svc: Services, owner: str, circuit_id: str, group_id: str) -> Response[bytes]:
            if not _GROUP_ID.match(group_id):
                raise NotFound(f"no group {group_id!r}")

            def work() -> Response:
                row = svc.catalog.get_circuit(owner, circuit_id)
                return _png(svc, f"{row['key']}/patches/{group_id}/mosaic.png", f"group {group_id!r} in this circuit")

            return await anyio.to_thread.run_sync(work)

        @get("/{circuit_id:str}/groups/{group_id:str}/exemplars/{name:str}", media_type="image/png",
             summary="One exemplar patch of a group: .../exemplars/{k}.png, k from 0 in exemplar order")
        async def exemplar(self, svc: Services, owner: str, circuit_id: str, group_id: str, name: str) -> Response[bytes]:
            m = _EXEMPLAR.match(name)
            if not _GROUP_ID.match(group_id) or not m:
                raise NotFound(f"no exemplar {name!r} of group {group_id!r}; use .../exemplars/<k>.png")
            k = int(m.group(1))

            def work() -> Response:
                row = svc.catalog.get_circuit(owner, circuit_id)
                return _png(svc, f"{row['key']}/patches/{group_id}/{k}.png", f"exemplar {k} of group {group_id!r}")

            return await anyio.to_thread.run_sync(work)

        @delete("/{circuit_id:str}", summary="Delete a circuit")
        async def delete_circuit(self, svc: Services, owner: str, circuit_id: str) -> None:
            def work() -> None:
                row = svc.catalog.delete_circuit(owner, circuit_id)
                if not svc.catalog.db.one("SELECT 1 FROM circuits WHERE key=?", (row["key"],)):
                    svc.store.delete(row["key"])

            await anyio.to_thread.run_sync(work)

        @post("/{circuit_id:str}/labels", status_code=202,
              summary="Relabel with another vocabulary, CLIP model or captioner (no engine rerun)")
        async def relabel(self, svc: Services, owner: str, circuit_id: str, data: RelabelIn) -> Response[JobOut]:
            def work() -> dict[str, Any]:
                row = svc.catalog.get_circuit(owner, circuit_id)
                labeling = check_labeling(data.labeling, svc)
                _dataset_present(svc, owner, row)
                refs = {"circuit_id": circuit_id, "circuit_key": row["key"], "model_id": row["model_id"],
                        "dataset_id": row["dataset_id"], "images_key": images_key(row["dataset_id"])}
                return svc.jobs.create(new_id("job"), owner, "relabel", {"labeling": labeling, "refs": refs},
                                       svc.settings.max_attempts)

            job = await anyio.to_thread.run_sync(work)
            svc.manager.wake()
            return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

        @post("/{circuit_id:str}/debug", request_max_body_size=settings.max_image_mb * MB,
              summary="Why did the model predict this? Groups that fire on an image, their crops and ablations")
        async def debug(self, svc: Services, owner: str, circuit_id: str,
                        data: Annotated[DebugUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
                        wait: float = Parameter(default=settings.sync_wait_s, ge=0, le=600)) -> Response:
            if not isinstance(data.image, UploadFile):
                raise Invalid("the 'image' part must be a file upload (PNG or JPEG)")
            threshold = None
            if data.threshold not in (None, ""):
                try:
                    threshold = float(data.threshold)
                except ValueError:
                    raise Invalid(f"threshold must be a number, got {data.threshold!r}") from None
                if not 0.0 <= threshold <= 1.0:
                    raise Invalid("threshold must lie in [0, 1]")
            raw = await data.image.read()

            def work() -> dict[str, Any]:
                row = svc.catalog.get_circuit(owner, circuit_id)
                try:
                    model = svc.catalog.get_model(owner, row["model_id"])
                except NotFound:
                    raise Conflict("the model of this circuit was deleted; upload it again to debug images") from None
                if data.layer:
                    doc = svc.store.get_bytes(row["key"] + "/circuit.json")
                    if f'"name":"{data.layer}"'.encode() not in doc.replace(b" ", b"").replace(b"\n", b""):
                        raise Invalid(f"layer {data.layer!r} is not a layer of this circuit")
                image = decode_image(raw, svc.settings.max_image_pixels, name="the uploaded image")
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                job_id = new_id("job")
                image_key = f"jobs/{job_id}/input.png"
                svc.store.put_bytes(image_key, buf.getvalue())
                d = model["descriptor"]
                refs = {"circuit_id": circuit_id, "circuit_key": row["key"], "model_id": row["model_id"],
                        "dataset_id": row["dataset_id"], "weights_key": weights_key(row["model_id"]),
                        "arch": d["arch"], "num_classes": d["num_classes"], "image_key": image_key}
                return svc.jobs.create(job_id, owner, "debug", {"layer": data.layer or None, "threshold": threshold,
                                                                "refs": refs}, 1)

            job = await anyio.to_thread.run_sync(work)
            svc.manager.wake()
            return _answer(await wait_job(svc, owner, job["id"], wait))

        @post("/{circuit_id:str}/evaluate", summary="Offline evaluation of the circuit's labels")
        async def evaluate(self, svc: Services, owner: str, circuit_id: str, data: EvaluateIn | None = None,
                           wait: float = Parameter(default=settings.sync_wait_s, ge=0, le=600)) -> Response:
            options = msgspec.to_builtins(data.options) if data is not None else {}

            def work() -> dict[str, Any]:
                row = svc.catalog.get_circuit(owner, circuit_id)
                _dataset_present(svc, owner, row)
                if not any(g["label"] for layer in row["summary"]["layers"] for g in layer["groups"]):
                    raise Conflict("this circuit has no labels; label it first (POST .../labels)")
                refs = {"circuit_id": circuit_id, "circuit_key": row["key"], "model_id": row["model_id"],
                        "dataset_id": row["dataset_id"], "images_key": images_key(row["dataset_id"])}
                if options.get("activations") == "model":
                    try:
                        model = svc.catalog.get_model(owner, row["model_id"])
                    except NotFound:
                        raise Conflict("the model of this circuit was deleted; use activations \"recorded\"") from None
                    refs.update(weights_key=weights_key(row["model_id"]), arch=model["descriptor"]["arch"],
                                num_classes=model["descriptor"]["num_classes"])
                return svc.jobs.create(new_id("job"), owner, "evaluate", {"options": options, "refs": refs}, 1)

            job = await anyio.to_thread.run_sync(work)
            svc.manager.wake()
            return _answer(await wait_job(svc, owner, job["id"], wait))

    return CircuitController


def _dataset_present(svc: Services, owner: str, row: dict[str, Any]) -> None:
    try:
        svc.catalog.get_dataset(owner, row["dataset_id"])
    except NotFound:
        raise Conflict(f"the dataset {row['dataset_id']} of this circuit was deleted; this needs its images") from None
