"""Answers of the interactive job kinds (debug, evaluate): wait a little for the job, then answer
200 with its result, 202 with the job to poll, or a problem when it failed."""

from __future__ import annotations

import time
from typing import Any

import anyio
from litestar import Response

from neurflow.service.errors import ApiError
from neurflow.service.executors.base import Executor
from neurflow.service.http.schemas import JobOut
from neurflow.service.jobs.store import TERMINAL, JobStore


class JobFailed(ApiError):
    status, title, slug = 422, "The task failed", "task-failed"


async def wait_job(jobs: JobStore, executor: Executor, owner: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await anyio.to_thread.run_sync(jobs.get, owner, job_id)
        left = deadline - time.monotonic()
        if job["state"] in TERMINAL or left <= 0:
            return job
        await executor.wait_change(job_id, min(1.0, left))


def answer(job: dict[str, Any]) -> Response:
    if job["state"] == "succeeded":
        return Response(job["result"], status_code=200, headers={"X-Job-Id": job["id"]})
    if job["state"] in ("failed", "cancelled"):
        raise JobFailed(f"{job['kind']} job {job['id']} {job['state']}: {job['error']}", job_id=job["id"])
    return Response(JobOut(**job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


async def submitted(jobs: JobStore, executor: Executor, owner: str, job: dict[str, Any], wait: float) -> Response:
    """Wake the dispatcher for a just-created job and answer as above."""
    executor.wake()
    return answer(await wait_job(jobs, executor, owner, job["id"], wait))
