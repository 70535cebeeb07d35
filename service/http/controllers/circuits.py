"""``/v1/circuits``: the labeled circuit documents, their patches and mosaics, relabel, evaluate.

Relabel and evaluate run in a worker (they load CLIP or the user's model) as jobs of their own kind
(debug, the image upload, is :mod:`.debug`). Relabel answers 202 with the job; evaluate waits up to
``wait`` seconds (default: the ``sync_wait_s`` setting) and answers 200 with the result, or 202 with
the job to poll when it takes longer. ``PUT .../groups/{group_id}/label`` stores a person's label in the
document (:mod:`neurflow.service.storage.corrections`); relabels keep it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import anyio
from litestar import Controller, Response, delete, get, post, put
from litestar.response import Stream
from litestar.params import Parameter

from neurflow.core.group_label import top_text
from neurflow.service.errors import Conflict, NotFound, public_json
from neurflow.service.http.answers import submitted
from neurflow.service.http.deps import CatalogDep, ExecutorDep, JobsDep, Owner, SettingsDep, StoreDep, provides
from neurflow.service.http.schemas import (
    DEFAULT_PAGE,
    CircuitList,
    CircuitOut,
    ClassIndexFilter,
    Cursor,
    EvaluateIn,
    GroupLabelOut,
    JobOut,
    LabelIn,
    PageLimit,
    RelabelIn,
    circuit_out,
)
from neurflow.service.jobs.policy import check_labeling, circuit_ref, model_ref
from neurflow.service.jobs.types import CorrectedCircuit, DatasetRef, EvaluateJob, RelabelJob
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog, new_id
from neurflow.service.storage.circuits import load_circuit, sidecar_of, stream_checked
from neurflow.service.storage.corrections import correct_stored

GROUP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXEMPLAR = re.compile(r"^(\d{1,6})\.png$")
PNG_HEADERS = {"Cache-Control": "private, max-age=86400, immutable"}


def _png(store: ArtifactStore, key: str, what: str) -> Response:
    try:
        data = store.get_bytes(key)
    except (KeyError, ValueError):
        raise NotFound(f"no {what}") from None
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


def dataset_present(catalog: Catalog, owner: str, row: dict[str, Any]) -> DatasetRef:
    """The circuit's dataset, which a job on it needs (its images)."""
    try:
        catalog.get_dataset(owner, row["dataset_id"])
    except NotFound:
        raise Conflict(f"the dataset {row['dataset_id']} of this circuit was deleted; this needs its images") from None
    return DatasetRef(id=row["dataset_id"])


def model_present(catalog: Catalog, owner: str, row: dict[str, Any], hint: str):
    """The circuit's model, for jobs that run it."""
    try:
        return model_ref(catalog.get_model(owner, row["model_id"]))
    except NotFound:
        raise Conflict(f"the model of this circuit was deleted; {hint}") from None


def corrected_circuits(catalog: Catalog, owner: str, row: dict[str, Any]) -> list[CorrectedCircuit]:
    """The owner's other circuits of the same model that hold corrections and still have their images:
    their corrections are evidence when ``row`` is relabeled."""
    out = []
    for other in catalog.list_circuits(owner):
        corrected = any(g.get("status") == "corrected" for layer in other["summary"]["layers"] for g in layer["groups"])
        if other["id"] == row["id"] or other["model_id"] != row["model_id"] or not corrected:
            continue
        try:
            catalog.get_dataset(owner, other["dataset_id"])
        except NotFound:
            continue  # its images are gone: its patches cannot be embedded
        out.append(CorrectedCircuit(circuit=circuit_ref(other), dataset=DatasetRef(id=other["dataset_id"])))
    return out


class CircuitController(Controller):
    path = "/circuits"
    tags = ["circuits"]
    dependencies = provides("catalog", "jobs", "store", "executor")

    @get("/", summary="List circuits (optionally of one job, and of one class: ?job_id=&class_index=)")
    async def list_circuits(self, catalog: CatalogDep, owner: Owner, job_id: str | None = None,
                            class_index: ClassIndexFilter = None, limit: PageLimit = DEFAULT_PAGE,
                            cursor: Cursor = None) -> CircuitList:
        rows, after = await anyio.to_thread.run_sync(
            lambda: catalog.page("circuits", owner, limit, cursor, job_id=job_id, class_index=class_index))
        return CircuitList(circuits=[circuit_out(r) for r in rows], next=after)

    @get("/{circuit_id:str}", summary="The labeled circuit document (neurflow.circuit schema); its concept "
                                      "vectors and patches are in .../arrays when the document names that file "
                                      "(?arrays=inline: one whole document instead)",
         media_type="application/json")
    async def document(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str,
                       arrays: Literal["sidecar", "inline"] = Parameter(
                           default="sidecar", description="sidecar: the document as stored (a compact one names "
                                                          "its arrays file); inline: the arrays put back into it")
                       ) -> Response[bytes]:
        def work() -> bytes:
            key = catalog.get_circuit(owner, circuit_id)["key"]
            if arrays == "inline":
                try:
                    return load_circuit(store, key, public=True).to_json().encode()
                except ValueError as exc:  # a sidecar that does not match: never served as if it did
                    raise Conflict(f"this circuit's stored arrays cannot be read: {exc}") from None
            return public_json(store.get_bytes(keys.document(key)))

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")

    @get("/{circuit_id:str}/arrays", summary="The circuit's arrays file (safetensors: concept vectors and patches), "
                                             "streamed; its sha256 is the document's arrays.sha256",
         media_type="application/octet-stream")
    async def arrays(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str) -> Stream:
        def work() -> tuple[str, str, int]:
            key, digest, size = sidecar_of(store, catalog.get_circuit(owner, circuit_id)["key"])
            if not store.exists(key):
                raise Conflict("this circuit's arrays file is missing from the store")
            return key, digest, size

        key, digest, size = await anyio.to_thread.run_sync(work)
        return Stream(stream_checked(store, key, digest), media_type="application/octet-stream",
                      headers={"Content-Length": str(size), "ETag": f'"{digest}"', "X-Content-SHA256": digest,
                               "Content-Disposition": f'attachment; filename="{key.rsplit("/", 1)[-1]}"',
                               "Cache-Control": "private, max-age=86400, immutable"})

    @get("/{circuit_id:str}/info", summary="Catalog entry of a circuit (job, class, summary, links)")
    async def info(self, catalog: CatalogDep, owner: Owner, circuit_id: str) -> CircuitOut:
        return circuit_out(await anyio.to_thread.run_sync(catalog.get_circuit, owner, circuit_id))

    @get("/{circuit_id:str}/groups/{group_id:str}/mosaic.png", summary="Mosaic of a group's exemplar patches",
         media_type="image/png")
    async def mosaic(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str,
                     group_id: str) -> Response[bytes]:
        if not GROUP_ID.match(group_id):
            raise NotFound(f"no group {group_id!r}")

        def work() -> Response:
            row = catalog.get_circuit(owner, circuit_id)
            return _png(store, keys.mosaic(row["key"], group_id), f"group {group_id!r} in this circuit")

        return await anyio.to_thread.run_sync(work)

    @get("/{circuit_id:str}/groups/{group_id:str}/exemplars/{name:str}", media_type="image/png",
         summary="One exemplar patch of a group: .../exemplars/{k}.png, k from 0 in exemplar order")
    async def exemplar(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str, group_id: str,
                       name: str) -> Response[bytes]:
        m = _EXEMPLAR.match(name)
        if not GROUP_ID.match(group_id) or not m:
            raise NotFound(f"no exemplar {name!r} of group {group_id!r}; use .../exemplars/<k>.png")
        k = int(m.group(1))

        def work() -> Response:
            row = catalog.get_circuit(owner, circuit_id)
            return _png(store, keys.exemplar(row["key"], group_id, k), f"exemplar {k} of group {group_id!r}")

        return await anyio.to_thread.run_sync(work)

    @put("/{circuit_id:str}/groups/{group_id:str}/label",
         summary="Correct a group's label: stored with who and when, kept through every relabel")
    async def correct_label(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str, group_id: str,
                            data: LabelIn) -> GroupLabelOut:
        if not GROUP_ID.match(group_id):
            raise NotFound(f"no group {group_id!r}")

        def work() -> GroupLabelOut:
            group = correct_stored(catalog, store, owner, circuit_id, group_id, data.label, via="api", key=owner)
            return GroupLabelOut(circuit_id=circuit_id, group_id=group.id, label=top_text(group), status=group.status,
                                 correction=group.correction)

        return await anyio.to_thread.run_sync(work)

    @delete("/{circuit_id:str}", summary="Delete a circuit")
    async def delete_circuit(self, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str) -> None:
        await anyio.to_thread.run_sync(lambda: catalog.delete_circuit(owner, circuit_id, unreferenced=store.delete))

    @post("/{circuit_id:str}/labels", status_code=202,
          summary="Relabel with another vocabulary, CLIP model or captioner (no engine rerun); the model's "
                  "corrections re-score the groups")
    async def relabel(self, catalog: CatalogDep, jobs: JobsDep, executor: ExecutorDep, settings: SettingsDep,
                      owner: Owner, circuit_id: str, data: RelabelIn) -> Response[JobOut]:
        def work() -> dict[str, Any]:
            row = catalog.get_circuit(owner, circuit_id)
            evidence = corrected_circuits(catalog, owner, row) if data.corrections == "model" else []
            job = RelabelJob(circuit=circuit_ref(row), labeling=check_labeling(data.labeling, settings),
                             dataset=dataset_present(catalog, owner, row), evidence=evidence)
            return jobs.create(new_id("job"), owner, job, settings.max_attempts, settings.max_jobs_per_key)

        job = await anyio.to_thread.run_sync(work)
        executor.wake()
        return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @post("/{circuit_id:str}/evaluate", summary="Offline evaluation of the circuit's labels")
    async def evaluate(self, catalog: CatalogDep, jobs: JobsDep, executor: ExecutorDep, settings: SettingsDep,
                       owner: Owner, circuit_id: str, data: EvaluateIn | None = None,
                       wait: float | None = Parameter(default=None, ge=0, le=600,
                                                      description="seconds to wait; default: the server's "
                                                                  "sync_wait_s")) -> Response:
        options = data.options if data is not None else EvaluateIn().options

        def work() -> dict[str, Any]:
            row = catalog.get_circuit(owner, circuit_id)
            dataset = dataset_present(catalog, owner, row)
            if not any(g["label"] for layer in row["summary"]["layers"] for g in layer["groups"]):
                raise Conflict("this circuit has no labels; label it first (POST .../labels)")
            model = (model_present(catalog, owner, row, 'use activations "recorded"')
                     if options.activations == "model" else None)
            job = EvaluateJob(circuit=circuit_ref(row), dataset=dataset, options=options, model=model)
            return jobs.create(new_id("job"), owner, job, 1, settings.max_jobs_per_key)

        job = await anyio.to_thread.run_sync(work)
        return await submitted(jobs, executor, owner, job, settings.sync_wait_s if wait is None else wait)
