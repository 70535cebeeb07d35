"""``/v1/jobs``: submit a job spec (202), follow it (state, SSE events), cancel it."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import anyio
from litestar import Controller, Response, delete, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from neurflow.core.jobspec import JobSpec
from neurflow.service.catalog import new_id
from neurflow.service.deps import Services
from neurflow.service.jobstore import TERMINAL
from neurflow.service.policy import prepare_run
from neurflow.service.schemas import JobList, JobOut, JobState
from neurflow.service.settings import Settings

KEEPALIVE_S = 15.0


def event_of(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in ("id", "kind", "state", "stage", "done", "total", "progress", "error", "attempt")} | (
        {"result": job["result"]} if job["state"] in TERMINAL else {})


async def job_events(svc: Services, owner: str, job_id: str) -> AsyncIterator[ServerSentEventMessage]:
    """Progress events until the job ends; the last event is ``end`` with the final job state."""
    last: tuple | None = None
    seq = 0
    quiet = 0.0
    while True:
        job = await anyio.to_thread.run_sync(svc.jobs.get, owner, job_id)
        snap = (job["state"], job["stage"], job["done"], job["total"], job["attempt"])
        if snap != last:
            last, seq, quiet = snap, seq + 1, 0.0
            yield ServerSentEventMessage(data=json.dumps(event_of(job)), event="progress", id=seq)
        if job["state"] in TERMINAL:
            yield ServerSentEventMessage(data=json.dumps(event_of(job)), event="end", id=seq + 1)
            return
        await svc.manager.wait_change(job_id, 1.0)
        quiet += 1.0
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ServerSentEventMessage(comment="keep-alive")


def build(settings: Settings) -> type[Controller]:
    class JobController(Controller):
        path = "/jobs"
        tags = ["jobs"]

        @post("/", status_code=202, summary="Submit a job (the job spec of `neurflow run`, with ids)")
        async def submit(self, svc: Services, owner: str, data: JobSpec) -> Response[JobOut]:
            def work() -> dict[str, Any]:
                doc = prepare_run(data, svc, owner)
                return svc.jobs.create(new_id("job"), owner, "run", doc, svc.settings.max_attempts)

            job = await anyio.to_thread.run_sync(work)
            svc.manager.wake()
            return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

        @get("/", summary="List jobs (newest first)")
        async def list_jobs(self, svc: Services, owner: str,
                            state_filter: JobState | None = Parameter(query="state", default=None),
                            limit: int = Parameter(default=100, ge=1, le=1000)) -> JobList:
            rows = await anyio.to_thread.run_sync(svc.jobs.list, owner, state_filter, limit)
            return JobList(jobs=[JobOut(**r) for r in rows])

        @get("/{job_id:str}", summary="Job state, stage, progress, error and result")
        async def get_job(self, svc: Services, owner: str, job_id: str) -> JobOut:
            return JobOut(**await anyio.to_thread.run_sync(svc.jobs.get, owner, job_id))

        @get("/{job_id:str}/events", summary="Server-Sent Events with progress, ending when the job ends")
        async def events(self, svc: Services, owner: str, job_id: str) -> ServerSentEvent:
            await anyio.to_thread.run_sync(svc.jobs.get, owner, job_id)  # 404 before the stream starts
            return ServerSentEvent(job_events(svc, owner, job_id), retry_duration=2000,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        @delete("/{job_id:str}", status_code=202, summary="Cancel a queued or running job")
        async def cancel(self, svc: Services, owner: str, job_id: str) -> Response[JobOut]:
            job = await anyio.to_thread.run_sync(svc.jobs.request_cancel, owner, job_id)
            svc.manager.notify(job_id)
            svc.manager.wake()
            return Response(JobOut(**job), status_code=200 if job["state"] == "cancelled" else 202)

    return JobController
