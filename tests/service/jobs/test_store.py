"""The job table: its state machine, recovery after a crash, a graceful release."""

from __future__ import annotations

import pytest

from neurflow.service.errors import Conflict
from neurflow.service.jobs.store import JobStore
from neurflow.service.storage.db import Database

from ..helpers import debug_job, run_job


def test_job_state_machine_and_recovery(tmp_path):
    db = Database(tmp_path / "j.db")
    jobs = JobStore(db)
    a = jobs.create("job-a", "o1", run_job(), max_attempts=2)
    jobs.create("job-b", "o1", debug_job(), max_attempts=1)
    assert a["state"] == "queued" and jobs.next_queued()["id"] == "job-b"  # interactive kinds first
    assert jobs.claim("job-a", "w0") and not jobs.claim("job-a", "w1")
    jobs.progress("job-a", "ig", 3, 4)
    assert jobs.get("o1", "job-a")["progress"] == 0.75
    with pytest.raises(Exception, match="no job"):
        jobs.get("o2", "job-a")  # another owner sees nothing
    # the server stops: a running job is requeued once, then failed
    assert jobs.recover() == ["job-a"]
    assert jobs.get("o1", "job-a")["state"] == "queued"
    jobs.claim("job-a", "w0")
    jobs.recover()
    failed = jobs.get("o1", "job-a")
    assert failed["state"] == "failed" and "attempt 2 of 2" in failed["error"]
    with pytest.raises(Conflict, match="already ended"):
        jobs.request_cancel("o1", "job-a")
    assert jobs.request_cancel("o1", "job-b")["state"] == "cancelled"
    # a second connection (another thread or process) sees the same durable state
    assert JobStore(Database(tmp_path / "j.db")).get("o1", "job-b")["state"] == "cancelled"
    assert db.one("PRAGMA journal_mode")[0] == "wal"



def test_graceful_release_keeps_the_attempt(tmp_path):
    jobs = JobStore(Database(tmp_path / "j.db"))
    jobs.create("job-a", "o1", run_job(), max_attempts=1)
    jobs.claim("job-a", "w0")
    jobs.release("job-a", "the server stopped; requeued")
    job = jobs.get("o1", "job-a")
    assert job["state"] == "queued" and job["attempt"] == 0
    assert jobs.claim("job-a", "w0") and jobs.get("o1", "job-a")["attempt"] == 1
