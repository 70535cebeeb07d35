"""``/v1/atlas``: the concept atlas of a job's circuits (or of a list of circuits of one model).

``GET /v1/atlas?job=JOB_ID`` answers the ``neurflow.atlas/1`` document built from the circuits the job
has stored so far (a batch job's atlas grows as its classes finish); ``?circuits=ID,ID,...`` builds it
from chosen circuits instead; ``&q=wheel`` answers the search "which classes use a concept like
wheel" over it; ``GET /v1/atlas/report?...`` is the atlas page, each class linked to its circuit viewer
(``/v1/circuits/{id}/report``). The atlas is built in the web process (no model, no CLIP: search is
text only here) and the last few are kept in memory, keyed by the exact circuits and settings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import anyio
import msgspec
from litestar import Controller, Response, get
from litestar.params import Parameter

from neurflow.service.errors import ApiError, Conflict, Invalid
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, StoreDep, provides
from neurflow.service.jobs.store import JobStore
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.circuits import load_circuit

MAX_CIRCUITS = 2000  # in one ?circuits= list
_CACHE_SIZE = 8
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def circuit_rows(catalog: Catalog, jobs: JobStore, owner: str, job: str | None, circuits: str | None) -> list[dict]:
    if (job is None) == (circuits is None):
        raise ApiError("give either job=JOB_ID (the circuits of a job) or circuits=ID,ID,... (circuits of one "
                       "model), not " + ("both" if job else "neither"))
    if job is not None:
        record = jobs.get(owner, job)  # 404 for an unknown job or another owner's
        rows = catalog.list_circuits(owner, job)
        if not rows:
            raise Conflict(f"job {job} ({record['kind']}, {record['state']}) has no circuits yet; an atlas is built "
                           "from the circuits a run job stores, one per class", job_id=job, state=record["state"])
        return rows
    ids = [i.strip() for i in circuits.split(",") if i.strip()]
    if not ids:
        raise ApiError("circuits= is empty; give circuit ids separated by commas")
    if len(ids) > MAX_CIRCUITS:
        raise ApiError(f"circuits= lists {len(ids)} circuits; at most {MAX_CIRCUITS} are accepted (or use job=)")
    return [catalog.get_circuit(owner, i) for i in dict.fromkeys(ids)]  # 404 names the first unknown id


def read_inputs(store: ArtifactStore, rows: list[dict]) -> list:
    """The circuits of catalog rows, as atlas inputs; a document that cannot be read is a conflict."""
    from neurflow.atlas import AtlasInput

    inputs = []
    for row in rows:
        try:
            circuit = load_circuit(store, row["key"], public=True)
        except (KeyError, ValueError) as exc:
            raise Conflict(f"the document of circuit {row['id']} cannot be read ({exc})") from None
        inputs.append(AtlasInput(circuit=circuit, circuit_id=row["id"]))
    return inputs


def build(catalog: Catalog, jobs: JobStore, store: ArtifactStore, owner: str, job: str | None, circuits: str | None,
          settings: dict[str, Any]):
    """The atlas of the request's circuits (cached); problems for every bad input."""
    from neurflow.atlas import AtlasSettings, build_atlas

    try:
        atlas_settings = msgspec.convert(settings, AtlasSettings)
    except msgspec.ValidationError as exc:
        raise Invalid(f"atlas settings: {exc}") from None
    rows = circuit_rows(catalog, jobs, owner, job, circuits)
    key = (owner, job, tuple((r["id"], r["key"]) for r in rows), atlas_settings)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    inputs = read_inputs(store, rows)
    try:
        atlas = build_atlas(inputs, atlas_settings, job=job)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    with _cache_lock:
        _cache[key] = atlas
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return atlas


JOB = Parameter(default=None, description="a job id: the atlas of its circuits")
CIRCUITS = Parameter(default=None, description="circuit ids separated by commas (instead of job)")
JACCARD = Parameter(default=0.5, gt=0, le=1, description="member-neuron Jaccard at which two groups are one concept")
MIN_CLASSES = Parameter(default=2, ge=2, le=100_000, description="classes a concept, label or neuron needs to be listed")


class AtlasController(Controller):
    path = "/atlas"
    tags = ["atlas"]
    dependencies = provides("catalog", "jobs", "store")

    @get("/", summary="The concept atlas of a job's circuits (neurflow.atlas/1), or with q= a search in it",
         media_type="application/json")
    async def atlas(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                    job: str | None = JOB, circuits: str | None = CIRCUITS,
                    q: str | None = Parameter(default=None, max_length=400,
                                              description="which classes use a concept like this (label text)"),
                    jaccard: float = JACCARD, min_classes: int = MIN_CLASSES) -> Response[bytes]:
        def work() -> bytes:
            from neurflow.atlas.query import search

            atlas = build(catalog, jobs, store, owner, job, circuits, {"jaccard": jaccard, "min_classes": min_classes})
            if q is None:
                return msgspec.json.encode(atlas)
            try:
                return msgspec.json.encode(search(atlas, q))
            except ValueError as exc:
                raise Invalid(str(exc)) from None

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")

    @get("/report", summary="The atlas page: class-by-concept matrix, search, drill-down into each class's circuit",
         media_type="text/html")
    async def report(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                     job: str | None = JOB, circuits: str | None = CIRCUITS, jaccard: float = JACCARD,
                     min_classes: int = MIN_CLASSES) -> Response[str]:
        def work() -> str:
            from neurflow.viewer.atlas_page import render_atlas_page

            atlas = build(catalog, jobs, store, owner, job, circuits, {"jaccard": jaccard, "min_classes": min_classes})
            return render_atlas_page(atlas, report_url="/v1/circuits/{circuit_id}/report",
                                     title=f"NeurFlow concept atlas of {'job ' + job if job else 'circuits'}")

        page = await anyio.to_thread.run_sync(work)
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})
