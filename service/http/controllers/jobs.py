"""``/v1/jobs``: submit a job spec (202), follow it (state, SSE events), cancel it.

``POST /v1/jobs`` takes the public job spec (``neurflow run``'s, with a model id in
``model.weights`` and a dataset id in ``data.images``, size parameters bounded by
:data:`neurflow.service.jobs.limits.JobRequest`); :func:`neurflow.service.jobs.policy.prepare_run`
turns it into the typed :class:`~neurflow.service.jobs.types.RunJob` that is stored and run.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, AsyncIterator

import anyio
import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from neurflow.service.executors.base import Executor
from neurflow.service.http.deps import CatalogDep, ExecutorDep, JobsDep, Owner, QuotasDep, SettingsDep, provides
from neurflow.service.http.problems import naming_accepted
from neurflow.service.http.quotas import KeyGauge
from neurflow.service.http.schemas import DEFAULT_PAGE, Cursor, JobList, JobOut, JobState, PageLimit
from neurflow.service.jobs.limits import JobRequest, accepted
from neurflow.service.jobs.policy import prepare_run, submitted_spec
from neurflow.service.jobs.store import TERMINAL, JobStore
from neurflow.service.storage.catalog import new_id

KEEPALIVE_S = 15.0


def event_of(job: dict[str, Any]) -> dict[str, Any]:
    """The data of one SSE event: the job's state and its :class:`~neurflow.progress.ProgressEvent`
    (``progress_event``) as the worker reported it; ``stage``/``done``/``total`` repeat the event's."""
    keys = ("id", "kind", "state", "stage", "done", "total", "progress", "error", "attempt")
    return {k: job[k] for k in keys} | {"progress_event": msgspec.to_builtins(job["progress_event"])} | (
        {"result": job["result"]} if job["state"] in TERMINAL else {})


async def job_events(jobs: JobStore, executor: Executor, owner: str,
                     job_id: str) -> AsyncIterator[ServerSentEventMessage]:
    """Progress events until the job ends; the last event is ``end`` with the final job state."""
    last: tuple | None = None
    seq = 0
    quiet = 0.0
    while True:
        job = await anyio.to_thread.run_sync(jobs.get, owner, job_id)
        snap = (job["state"], job["progress_event"], job["attempt"])
        if snap != last:
            last, seq, quiet = snap, seq + 1, 0.0
            yield ServerSentEventMessage(data=json.dumps(event_of(job)), event="progress", id=seq)
        if job["state"] in TERMINAL:
            yield ServerSentEventMessage(data=json.dumps(event_of(job)), event="end", id=seq + 1)
            return
        await executor.wait_change(job_id, 1.0)
        quiet += 1.0
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ServerSentEventMessage(comment="keep-alive")


async def _released(events: AsyncIterator[ServerSentEventMessage], gauge: KeyGauge,
                    owner: str) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for event in events:
            yield event
    finally:
        gauge.release(owner)


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    dependencies = provides("catalog", "jobs", "executor", "quotas")

    @post("/", status_code=202, summary="Submit a job (the job spec of `neurflow run`, with ids)",
          exception_handlers={ValidationException: naming_accepted(accepted)})
    async def submit(self, catalog: CatalogDep, jobs: JobsDep, executor: ExecutorDep, settings: SettingsDep,
                     owner: Owner, data: JobRequest) -> Response[JobOut]:  # type: ignore[valid-type]
        def work() -> dict[str, Any]:
            job = prepare_run(submitted_spec(data), catalog, settings, owner)
            return jobs.create(new_id("job"), owner, job, settings.max_attempts, settings.max_jobs_per_key)

        job = await anyio.to_thread.run_sync(work)
        executor.wake()
        return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @get("/", summary="List jobs (newest first)")
    async def list_jobs(self, jobs: JobsDep, owner: Owner,
                        state_filter: Annotated[JobState | None, QueryParameter(name="state")] = None,
                        limit: PageLimit = DEFAULT_PAGE, cursor: Cursor = None) -> JobList:
        rows, after = await anyio.to_thread.run_sync(jobs.list, owner, state_filter, limit, cursor)
        return JobList(jobs=[JobOut(**r) for r in rows], next=after)

    @get("/{job_id:str}", summary="Job state, stage, progress, error and result")
    async def get_job(self, jobs: JobsDep, owner: Owner, job_id: str) -> JobOut:
        return JobOut(**await anyio.to_thread.run_sync(jobs.get, owner, job_id))

    @get("/{job_id:str}/events", summary="Server-Sent Events with progress, ending when the job ends")
    async def events(self, jobs: JobsDep, executor: ExecutorDep, quotas: QuotasDep, owner: Owner,
                     job_id: str) -> ServerSentEvent:
        await anyio.to_thread.run_sync(jobs.get, owner, job_id)  # 404 before the stream starts
        quotas.streams.acquire(owner)  # 429 before it starts, too; released when the stream ends or is dropped
        return ServerSentEvent(_released(job_events(jobs, executor, owner, job_id), quotas.streams, owner),
                               retry_duration=2000,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @delete("/{job_id:str}", status_code=202, summary="Cancel a queued or running job")
    async def cancel(self, jobs: JobsDep, executor: ExecutorDep, owner: Owner, job_id: str) -> Response[JobOut]:
        job = await anyio.to_thread.run_sync(jobs.request_cancel, owner, job_id)
        executor.notify(job_id)
        executor.wake()
        return Response(JobOut(**job), status_code=200 if job["state"] == "cancelled" else 202)
