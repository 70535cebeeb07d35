"""Executors: what runs the queued jobs. One interface, two implementations chosen by ``executor``
(:func:`~neurflow.service.executors.factory.create_executor`).

* ``local`` (default): worker subprocesses of this machine (:class:`~neurflow.service.executors.local.LocalExecutor`);
* ``ray``: units of work as Ray tasks on a Ray cluster (:class:`~neurflow.service.executors.ray.RayExecutor`,
  the optional extra ``neurflow[ray]``).

Both keep the job state in the service's database and write artifacts to the one artifact store; both
register each finished class of a run at once, here, so a retry never redoes or duplicates a class.
This base class holds what they share: the change notifications that API waits and SSE streams
block on, and the bookkeeping of finished circuits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from typing import Any

from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import NewCircuit, RelabelJob, RunJob, TaskOutput, decode_job
from neurflow.service.settings import Settings
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog, new_id

log = logging.getLogger("neurflow.executor")


class Executor:
    """The interface the API uses (``start``, ``stop``, ``wake``, ``wait_change``, ``status``) and the
    job bookkeeping every executor shares."""

    def __init__(self, settings: Settings, jobs: JobStore, catalog: Catalog) -> None:
        self.settings = settings
        self.jobs = jobs
        self.catalog = catalog
        self._waiters: dict[str, asyncio.Event] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: ArtifactStore | None = None
        jobs.on_end.append(self.drop_stages)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def status(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- notifications ---------------------------------------------------------------------------
    def notify(self, job_id: str) -> None:
        event = self._waiters.pop(job_id, None)
        if event is not None:
            event.set()

    def notify_threadsafe(self, job_id: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.notify, job_id)
            self._loop.call_soon_threadsafe(self.wake)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def wait_change(self, job_id: str, timeout: float) -> None:
        event = self._waiters.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    # -- finished stages -------------------------------------------------------------------------
    def drop_stages(self, job_id: str) -> None:
        """Remove the finished stages a job kept to continue after a crash (it ended: nothing will)."""
        try:
            if self._store is None:
                self._store = ArtifactStore(self.settings.artifact_url)
            self._store.delete(keys.stages(job_id))
            shutil.rmtree(self.settings.scratch_path / "stages" / job_id, ignore_errors=True)  # a remote store's copies
        except Exception as exc:  # noqa: BLE001 - a store that cannot be written must not keep a job running
            log.warning("cannot remove the finished stages of job %s: %s", job_id, exc)

    # -- circuits --------------------------------------------------------------------------------
    def finished_classes(self, job_id: str) -> list[int]:
        """Classes of a job whose circuits are registered (a retry skips them)."""
        rows = self.jobs.db.all("SELECT class_index FROM circuits WHERE job_id=? ORDER BY class_index", (job_id,))
        return [r["class_index"] for r in rows]

    def _origin(self, row) -> tuple[str, str, str | None] | None:
        job = decode_job(row["job"])
        if isinstance(job, RunJob):
            return job.model.id, job.dataset.id, None
        if isinstance(job, RelabelJob):
            return job.circuit.model_id, job.dataset.id, job.circuit.id
        return None

    def _insert(self, conn, row, circuits: list[NewCircuit]) -> None:
        """Register circuits of a job; a class the job already has is skipped (never a duplicate)."""
        model_id, dataset_id, parent = self._origin(row)
        for c in circuits:
            if conn.execute("SELECT 1 FROM circuits WHERE job_id=? AND class_index=?",
                            (row["id"], c.class_index)).fetchone() is None:
                self.catalog.add_circuit(conn, circuit_id=new_id("c"), owner=row["owner"], job_id=row["id"],
                                         class_index=c.class_index, parent=parent, key=c.key, model_id=model_id,
                                         dataset_id=dataset_id, summary=c.summary)

    def register_class(self, job_id: str, circuit: NewCircuit) -> bool:
        """Register one finished class of a running job at once; False when the job is not running."""
        row = self.jobs.row(job_id)
        if row is None or row["state"] != "running" or self._origin(row) is None:
            return False
        with self.jobs.db.tx() as conn:
            self._insert(conn, row, [circuit])
        return True

    def complete(self, job_id: str, output: TaskOutput) -> None:
        """Register a finished job's remaining circuits and mark it succeeded, in one transaction."""
        row = self.jobs.row(job_id)
        if row is None:
            return
        if output.circuits is None:
            self.jobs.finish(job_id, "succeeded", result=output.result or {})
            return
        if self._origin(row) is None:
            self.jobs.finish(job_id, "failed", error=f"a {row['kind']} job cannot make circuits")
            return
        result: dict[str, Any] = {}

        def insert(conn) -> None:
            self._insert(conn, row, output.circuits)
            rows = conn.execute("SELECT id, class_index FROM circuits WHERE job_id=? ORDER BY class_index",
                                (job_id,)).fetchall()
            result["circuits"] = [{"id": r["id"], "class_index": r["class_index"]} for r in rows]
            conn.execute("UPDATE jobs SET result=? WHERE id=?", (json.dumps(result), job_id))

        self.jobs.finish(job_id, "succeeded", result={"circuits": []}, also=insert)


def timeout_reason(limit_s: float, consequence: str) -> str:
    """Why a job failed over ``job_timeout_s``: the same words from both executors."""
    return f"the job ran longer than this server's limit of {limit_s:.0f} s (job_timeout_s); {consequence}"


def memory_reason(rss_mb: int, limit_mb: int, consequence: str) -> str:
    """Why a job failed over ``worker_memory_mb``: the same words from both executors."""
    return (f"the worker used {rss_mb} MB, over this server's limit of {limit_mb} MB per worker "
            f"(worker_memory_mb); {consequence}")
