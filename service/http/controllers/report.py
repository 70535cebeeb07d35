"""``GET /v1/circuits/{id}/report``: the interactive circuit viewer of a stored circuit (one HTML page,
no external assets), with the mosaics rendered when its job finished. ``?debug_job=<job id>`` adds a
finished debug job of this circuit: the groups that fired on its image, highlighted on the graph.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Response, get

from neurflow.service.errors import Conflict, Invalid
from neurflow.service.http.controllers.exports import service_source
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, StoreDep, provides
from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import DebugJob
from neurflow.service.storage.artifacts import ArtifactStore


def debug_view(jobs: JobStore, store: ArtifactStore, owner: str, circuit_id: str, job_id: str):
    """The result of the owner's finished debug job ``job_id`` on this circuit, with its input image."""
    from neurflow.viewer.debug import DebugView

    job: dict[str, Any] = jobs.get(owner, job_id)  # NotFound (404) for another owner's job
    debug = job["spec"]
    if not isinstance(debug, DebugJob):
        raise Invalid(f"job {job_id} is a {job['kind']} job, not a debug job")
    if debug.circuit.id != circuit_id:
        raise Invalid(f"debug job {job_id} explains circuit {debug.circuit.id}, not {circuit_id}")
    if job["state"] != "succeeded" or not job["result"]:
        raise Conflict(f"debug job {job_id} is {job['state']}; the report needs a finished (succeeded) one")
    try:
        image = store.get_bytes(debug.image_key)
    except (KeyError, ValueError):
        image = None  # the result is still worth showing without its picture
    return DebugView.of(job["result"], image, job_id=job_id)


class ReportController(Controller):
    path = "/circuits"
    tags = ["circuits"]
    dependencies = provides("catalog", "jobs", "store")

    @get("/{circuit_id:str}/report", summary="The circuit viewer: an interactive, self-contained HTML page",
         media_type="text/html")
    async def report(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner, circuit_id: str,
                     debug_job: str | None = None) -> Response[str]:
        from neurflow.viewer.report import ReportEntry, render_report

        def work() -> str:
            source = service_source(catalog, store, owner, circuit_id)
            circuit = source.circuit
            mosaics = source.all_mosaics()
            debug = debug_view(jobs, store, owner, circuit_id, debug_job) if debug_job else None
            entry = ReportEntry(circuit=circuit, mosaics=mosaics, circuit_id=circuit_id, debug=debug)
            return render_report([entry], title=f"NeurFlow circuit {circuit_id}")

        page = await anyio.to_thread.run_sync(work)
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})
