"""The job table: its state machine, recovery after a crash, a graceful release."""

from __future__ import annotations

import pytest

import sqlite3

from neurflow.progress import ProgressEvent
from neurflow.service.errors import Conflict
from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import encode_job
from neurflow.service.storage.db import SCHEMA, SCHEMA_VERSION, Database

from ..helpers import debug_job, run_job


def test_job_state_machine_and_recovery(tmp_path):
    db = Database(tmp_path / "j.db")
    jobs = JobStore(db)
    a = jobs.create("job-a", "o1", run_job(), max_attempts=2)
    jobs.create("job-b", "o1", debug_job(), max_attempts=1)
    assert a["state"] == "queued" and jobs.next_queued()["id"] == "job-b"  # interactive kinds first
    assert jobs.claim("job-a", "w0") and not jobs.claim("job-a", "w1")
    event = ProgressEvent(stage="ig fc", done=3, total=4, unit="neuron-patch pairs", elapsed=3.0, eta=1.0)
    jobs.progress("job-a", event)
    seen = jobs.get("o1", "job-a")
    assert seen["progress"] == 0.75 and seen["progress_event"] == event  # stored and read back unchanged
    assert (seen["stage"], seen["done"], seen["total"]) == ("ig fc", 3, 4)
    jobs.progress("job-a", event.in_class(target=2, classes_done=1, classes_total=2))
    assert jobs.get("o1", "job-a")["progress"] == pytest.approx((1 + 0.75) / 2)
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


def test_a_version_2_database_gets_the_event_column_and_its_old_progress_text_still_reads(tmp_path):
    """Rows written before progress events: their stage text, done and total read as they were."""
    path = tmp_path / "neurflow.db"
    v2 = "\n".join(line for line in SCHEMA.splitlines() if "progress_event" not in line)
    with sqlite3.connect(path) as conn:
        conn.executescript(v2)
        conn.execute("PRAGMA user_version=2")
        conn.execute("INSERT INTO jobs (id, owner, kind, state, stage, done, total, job, attempt, created_at, updated_at) "
                     "VALUES ('job-old', 'o1', 'run', 'running', 'activations 40/96 | class 7, 3 of 10 done', 3, 10, "
                     "?, 1, 1.0, 1.0)", (encode_job(run_job()),))
    db = Database(path)
    assert db.one("PRAGMA user_version")[0] == SCHEMA_VERSION == 3
    jobs = JobStore(db)
    old = jobs.get("o1", "job-old")
    assert old["progress_event"] == ProgressEvent.legacy("activations 40/96 | class 7, 3 of 10 done", 3, 10)
    assert old["stage"] == "activations 40/96 | class 7, 3 of 10 done" and old["progress"] == 0.3
    jobs.progress("job-old", ProgressEvent(stage="groups", done=1, total=2, unit="layers"))
    assert jobs.get("o1", "job-old")["progress_event"].unit == "layers"  # the new column is written
