"""The durable job table and its state machine.

``queued -> running -> succeeded | failed | cancelled``; ``queued -> cancelled``; and
``running -> queued`` when the worker died and the job has attempts left. Only the executor
moves a job out of ``running``; handlers create jobs and flag cancellation.

A row holds the typed job (:data:`neurflow.service.jobs.types.Job`, msgspec JSON) and, as columns, the
ids it uses, so "is this model in use" is an indexed query.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import msgspec

from neurflow.progress import ProgressEvent, decode_event, encode_event
from neurflow.service.errors import Conflict, NotFound, TooMany, public_json, redact
from neurflow.service.jobs.types import Job, circuit_used, dataset_used, decode_job, encode_job, kind_of, model_used
from neurflow.service.storage import pages
from neurflow.service.storage.db import Database, now

TERMINAL = ("succeeded", "failed", "cancelled")
#: interactive kinds go before engine runs in the queue
PRIORITY = {"run": 0, "relabel": 1, "diff": 2, "evaluate": 2, "debug": 3}


def progress_event(row) -> ProgressEvent:
    """A job row's progress: the event its worker reported while running; for a row without one (not
    running, or written before events were stored) its stage, done and total columns as they are."""
    raw = row["progress_event"] if row["state"] == "running" else None
    if raw is not None:
        try:
            return decode_event(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):  # a newer schema: the columns still say it
            pass
    return ProgressEvent.legacy(row["stage"], row["done"], row["total"])


def job_view(row) -> dict[str, Any]:
    event = progress_event(row)
    progress = 1.0 if row["state"] == "succeeded" else event.fraction()
    return {
        "id": row["id"], "kind": row["kind"], "state": row["state"], "stage": event.stage,
        "done": event.done, "total": event.total, "progress": round(progress, 4), "progress_event": event,
        "error": row["error"], "attempt": row["attempt"], "max_attempts": row["max_attempts"],
        "cancel_requested": bool(row["cancel_requested"]),
        "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
        "updated_at": row["updated_at"],
        "spec": decode_job(public_json(row["job"])), "result": json.loads(row["result"]) if row["result"] else None,
    }


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # called with a job's id once it ended (any terminal state, after the commit): the executor drops
        # what the job kept only to continue after a crash (its finished stages)
        self.on_end: list[Callable[[str], None]] = []

    def _ended(self, job_id: str) -> None:
        for hook in self.on_end:
            hook(job_id)

    def create(self, job_id: str, owner: str, job: Job, max_attempts: int,
               max_live: int | None = None) -> dict[str, Any]:
        """Queue a job; ``TooMany`` when ``owner`` already has ``max_live`` queued or running jobs (counted in the
        same transaction, so concurrent submits cannot pass the cap together)."""
        kind, t = kind_of(job), now()
        with self.db.tx() as c:
            if max_live is not None:
                live = c.execute("SELECT COUNT(*) FROM jobs WHERE owner=? AND state IN ('queued','running')",
                                 (owner,)).fetchone()[0]
                if live >= max_live:
                    raise TooMany(f"this key has {live} queued or running jobs; at most {max_live} are accepted "
                                  "(max_jobs_per_key): wait for some to end or cancel them", retry_after=30)
            c.execute("INSERT INTO jobs (id, owner, kind, state, priority, job, model_id, dataset_id, circuit_id, "
                      "max_attempts, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      (job_id, owner, kind, "queued", PRIORITY[kind], encode_job(job), model_used(job),
                       dataset_used(job), circuit_used(job), max_attempts, t, t))
        return self.get(owner, job_id)

    def row(self, job_id: str):
        return self.db.one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def get(self, owner: str, job_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM jobs WHERE id=? AND owner=?", (job_id, owner))
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return job_view(row)

    def list(self, owner: str, state: str | None = None, limit: int = pages.DEFAULT_PAGE,
             cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the owner's jobs, newest first; the cursor of the next page."""
        where, params = ("owner=? AND state=?", (owner, state)) if state else ("owner=?", (owner,))
        rows, after = pages.page(self.db.conn(), "jobs", where, params, ("created_at", "id"), limit, cursor,
                                 newest_first=True)
        return [job_view(r) for r in rows], after

    def model_in_use(self, owner: str, model_id: str) -> bool:
        """A queued or running job of ``owner`` loads this model."""
        if self.db.one("SELECT 1 FROM jobs WHERE model_id=? AND owner=? AND state IN ('queued','running') LIMIT 1",
                       (model_id, owner)) is not None:
            return True
        # a diff job loads two models and its row has one model column (the second's): its first is read
        # from the few unfinished diffs of the owner
        diffs = self.db.all("SELECT job FROM jobs WHERE kind='diff' AND owner=? AND state IN ('queued','running')",
                            (owner,))
        return any(decode_job(row["job"]).before_model.id == model_id for row in diffs)

    def dataset_in_use(self, owner: str, dataset_id: str) -> bool:
        """A queued or running job of ``owner`` reads this dataset's images."""
        return self.db.one("SELECT 1 FROM jobs WHERE dataset_id=? AND owner=? AND state IN ('queued','running') "
                           "LIMIT 1", (dataset_id, owner)) is not None

    def live_counts(self) -> dict[str, int]:
        """How many jobs are queued and running (all owners)."""
        rows = self.db.all("SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('queued','running') GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    # -- transitions (executor) ------------------------------------------------------------------
    def next_queued(self):
        """The next job to run: keys take turns. The key with the fewest running jobs, then the one whose last
        job started longest ago (never: first), goes next; within a key, interactive kinds first, then the
        oldest. One key's hundred queued jobs so wait behind one job of every other key, not the reverse."""
        return self.db.one(
            "SELECT q.* FROM jobs q WHERE q.state='queued' ORDER BY "
            "(SELECT COUNT(*) FROM jobs r WHERE r.owner=q.owner AND r.state='running'), "
            "(SELECT MAX(started_at) FROM jobs s WHERE s.owner=q.owner) IS NOT NULL, "
            "(SELECT MAX(started_at) FROM jobs s WHERE s.owner=q.owner), "
            "q.priority DESC, q.created_at LIMIT 1")

    def claim(self, job_id: str, worker: str) -> bool:
        t = now()
        with self.db.tx() as c:
            return c.execute("UPDATE jobs SET state='running', worker=?, attempt=attempt+1, started_at=?, updated_at=?, "
                             "stage='starting', done=0, total=0, progress_event=NULL, error=NULL "
                             "WHERE id=? AND state='queued'",
                             (worker, t, t, job_id)).rowcount == 1

    def progress(self, job_id: str, event: ProgressEvent) -> None:
        """Store a running job's progress event as it came (its stage, done and total also as columns)."""
        with self.db.tx() as c:
            c.execute("UPDATE jobs SET stage=?, done=?, total=?, progress_event=?, updated_at=? "
                      "WHERE id=? AND state='running'",
                      (event.stage, event.done, event.total, encode_event(event), now(), job_id))

    def finish(self, job_id: str, state: str, *, error: str | None = None, result: Any = None,
               also: Callable[[Any], None] | None = None) -> bool:
        """Move a live job to a terminal state; ``also(conn)`` runs in the same transaction."""
        assert state in TERMINAL
        t = now()
        with self.db.tx() as c:
            n = c.execute("UPDATE jobs SET state=?, error=?, result=?, finished_at=?, updated_at=?, "
                          "stage=CASE WHEN ?='succeeded' THEN 'done' ELSE stage END, "
                          "done=CASE WHEN ?='succeeded' THEN total ELSE done END "
                          "WHERE id=? AND state IN ('queued','running')",
                          (state, redact(error) if error else error, json.dumps(result) if result is not None else None,
                           t, t, state, state,
                           job_id)).rowcount
            if n and also is not None:
                also(c)
        if n:
            self._ended(job_id)
        return n == 1

    def requeue(self, job_id: str, reason: str) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE jobs SET state='queued', worker=NULL, error=?, stage='queued', updated_at=? "
                      "WHERE id=? AND state='running'", (redact(reason), now(), job_id))

    def release(self, job_id: str, reason: str) -> None:
        """Give a running job back to the queue without counting the attempt (graceful shutdown)."""
        with self.db.tx() as c:
            c.execute("UPDATE jobs SET state='queued', worker=NULL, error=?, stage='queued', attempt=MAX(attempt-1, 0), "
                      "updated_at=? WHERE id=? AND state='running'", (reason, now(), job_id))

    def request_cancel(self, owner: str, job_id: str) -> dict[str, Any]:
        with self.db.tx() as c:
            row = c.execute("SELECT state FROM jobs WHERE id=? AND owner=?", (job_id, owner)).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            if row["state"] in TERMINAL:
                raise Conflict(f"job {job_id} already ended ({row['state']}); only queued or running jobs can be cancelled")
            t = now()
            if row["state"] == "queued":
                c.execute("UPDATE jobs SET state='cancelled', error='cancelled before it started', finished_at=?, "
                          "updated_at=?, cancel_requested=1 WHERE id=?", (t, t, job_id))
            else:
                c.execute("UPDATE jobs SET cancel_requested=1, updated_at=? WHERE id=?", (t, job_id))
        if row["state"] == "queued":  # a job requeued after a crash may have kept stages
            self._ended(job_id)
        return self.get(owner, job_id)

    def recover(self) -> list[str]:
        """At startup: jobs left ``running`` by a stopped server are requeued or failed."""
        touched = []
        for row in self.db.all("SELECT * FROM jobs WHERE state='running'"):
            touched.append(row["id"])
            if row["cancel_requested"]:
                self.finish(row["id"], "cancelled", error="cancelled (the server stopped while cancelling)")
            elif row["attempt"] < row["max_attempts"]:
                self.requeue(row["id"], f"the server stopped during attempt {row['attempt']}; requeued")
            else:
                self.finish(row["id"], "failed", error=f"the server stopped during attempt {row['attempt']} of "
                                                       f"{row['max_attempts']}; not retried")
        return touched
