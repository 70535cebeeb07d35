"""The typed job on its way HTTP -> SQLite -> pipe -> worker: stored and sent as the same Struct, the
ids it uses as columns, the database schema migrated from version 1."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from neurflow.labeler.config import LabelerConfig
from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import (
    CircuitRef,
    DatasetRef,
    DiffJob,
    EvaluateJob,
    EvaluateOptions,
    Finished,
    FromWorker,
    NewCircuit,
    RelabelJob,
    RunTask,
    TaskOutput,
    ToWorker,
    decode_job,
    encode_job,
)
from neurflow.service.storage.db import SCHEMA_VERSION, Database, DatabaseRefused

from ..helpers import CIRCUIT, MODEL, debug_job, labeling_section, run_job


def _jobs():
    labeling = LabelerConfig.from_spec(labeling_section())
    return {
        "run": run_job(),
        "relabel": RelabelJob(circuit=CIRCUIT, dataset=DatasetRef(id="ds-1"), labeling=labeling),
        "debug": debug_job(),
        "evaluate": EvaluateJob(circuit=CIRCUIT, dataset=DatasetRef(id="ds-2"),
                                options=EvaluateOptions(negatives=20, references={"l0g0": ["red"]}), model=MODEL),
        "diff": DiffJob(before=[CircuitRef(id="c-before", key="k/before", model_id="m-before")], after=[CIRCUIT],
                        before_model=msgspec.structs.replace(MODEL, id="m-before"), model=MODEL,
                        dataset=DatasetRef(id="ds-3"), class_names=["red", None, "blue"], min_similarity=0.3,
                        min_delta=0.15, max_images=96, related={0: [2]}),
    }


def test_every_kind_round_trips_through_the_job_table(tmp_path):
    jobs = JobStore(Database(tmp_path / "j.db"))
    for kind, job in _jobs().items():
        view = jobs.create(f"job-{kind}", "o1", job, max_attempts=1)
        assert view["kind"] == kind and view["spec"] == job and type(view["spec"]) is type(job)
        row = jobs.row(f"job-{kind}")
        assert msgspec.json.decode(row["job"])["kind"] == kind  # the tag is in the stored document
        assert decode_job(row["job"]) == job
    cols = {r["id"]: (r["model_id"], r["dataset_id"], r["circuit_id"])
            for r in jobs.db.all("SELECT id, model_id, dataset_id, circuit_id FROM jobs")}
    assert cols == {"job-run": (MODEL.id, "ds-1", None), "job-relabel": (None, "ds-1", CIRCUIT.id),
                    "job-debug": (MODEL.id, None, CIRCUIT.id), "job-evaluate": (MODEL.id, "ds-2", CIRCUIT.id),
                    # a diff's columns name its second side (the first model is not among them)
                    "job-diff": (MODEL.id, "ds-3", CIRCUIT.id)}


def test_in_use_is_a_column_query_scoped_by_owner_and_state(tmp_path):
    jobs = JobStore(Database(tmp_path / "j.db"))
    jobs.create("job-a", "o1", run_job(dataset_id="ds-9"), max_attempts=1)
    assert jobs.model_in_use("o1", MODEL.id) and jobs.dataset_in_use("o1", "ds-9")
    assert not jobs.model_in_use("o2", MODEL.id) and not jobs.dataset_in_use("o2", "ds-9")  # another owner
    # text that merely occurs inside the stored job (the arch name) is not a model in use
    assert "resnet18" in jobs.row("job-a")["job"].decode() and not jobs.model_in_use("o1", "resnet18")
    jobs.request_cancel("o1", "job-a")
    assert not jobs.model_in_use("o1", MODEL.id) and not jobs.dataset_in_use("o1", "ds-9")  # ended jobs free them


def test_a_diff_job_keeps_both_of_its_models_in_use(tmp_path):
    jobs = JobStore(Database(tmp_path / "j.db"))
    jobs.create("job-diff", "o1", _jobs()["diff"], max_attempts=1)
    assert jobs.model_in_use("o1", MODEL.id) and jobs.model_in_use("o1", "m-before")  # the second and the first
    assert not jobs.model_in_use("o2", "m-before") and not jobs.model_in_use("o1", "m-other")
    jobs.request_cancel("o1", "job-diff")
    assert not jobs.model_in_use("o1", "m-before")  # an ended diff frees it


def test_pipe_messages_are_typed_both_ways():
    to_worker = msgspec.json.Decoder(ToWorker)
    for kind, job in _jobs().items():
        raw = msgspec.json.encode(RunTask(id=f"job-{kind}", attempt=2, job=job))
        task = to_worker.decode(raw)
        assert isinstance(task, RunTask) and task.job == job and task.attempt == 2
    with pytest.raises(msgspec.ValidationError):  # a hand-built dict without the tags is refused
        to_worker.decode(b'{"op": "run", "id": "j", "attempt": 1, "job": {"spec": {}}}')
    out = Finished(job_id="j", output=TaskOutput(circuits=[NewCircuit(class_index=1, key="k", summary={"a": 1})]))
    back = msgspec.json.Decoder(FromWorker).decode(msgspec.json.encode(out))
    assert back == out and back.output.circuits[0].class_index == 1


def test_a_stored_job_that_does_not_validate_is_refused():
    good = msgspec.json.decode(encode_job(run_job()))
    good["model"]["num_classes"] = "three"
    with pytest.raises(msgspec.ValidationError, match="num_classes"):
        decode_job(msgspec.json.encode(good))


V1_JOBS = """
CREATE TABLE api_keys (hash TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, created_at REAL NOT NULL,
                       revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE models (owner TEXT NOT NULL, id TEXT NOT NULL, descriptor TEXT NOT NULL, layers TEXT NOT NULL,
                     size INTEGER NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (owner, id));
CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
                   priority INTEGER NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0,
                   total INTEGER NOT NULL DEFAULT 0, error TEXT, spec TEXT NOT NULL, result TEXT,
                   attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 2,
                   cancel_requested INTEGER NOT NULL DEFAULT 0, worker TEXT, created_at REAL NOT NULL,
                   started_at REAL, finished_at REAL, updated_at REAL NOT NULL);
CREATE INDEX jobs_state ON jobs (state, priority, created_at);
CREATE INDEX jobs_owner ON jobs (owner, created_at);
INSERT INTO models VALUES ('o1', 'm1', '{"arch": "resnet18"}', '[]', 10, 1.0);
INSERT INTO jobs (id, owner, kind, state, spec, created_at, updated_at)
    VALUES ('job-old', 'o1', 'run', 'queued', '{"job": {}, "refs": {"model_id": "m1"}}', 1.0, 1.0);
"""


def test_a_version_1_database_is_migrated(tmp_path, caplog):
    path = tmp_path / "neurflow.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_JOBS)
    db = Database(path)
    assert db.one("PRAGMA user_version")[0] == SCHEMA_VERSION
    assert db.one("SELECT id FROM models")["id"] == "m1"  # the catalog carries over
    assert db.one("SELECT id FROM jobs_v1")["id"] == "job-old"  # the old jobs are kept, unread
    assert db.one("SELECT COUNT(*) FROM jobs")[0] == 0
    assert "1 unfinished job(s) will not run" in caplog.text
    jobs = JobStore(db)
    jobs.create("job-new", "o1", run_job(), max_attempts=1)
    assert jobs.next_queued()["id"] == "job-new"
    Database(path)  # opening again is a no-op
    assert JobStore(Database(path)).get("o1", "job-new")["spec"] == run_job()


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "neurflow.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseRefused, match="newer than this NeurFlow"):
        Database(path)


@pytest.mark.parametrize("content", ["garbage", "foreign", "empty-header"])
def test_a_corrupt_or_foreign_database_is_refused_in_one_line(tmp_path, capsys, content):
    """``neurflow serve`` on a damaged file or another program's SQLite file: one line, exit 2, file unchanged."""
    from neurflow.cli import main

    path = tmp_path / "neurflow.db"
    if content == "foreign":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER)")
    else:
        path.write_bytes(b"SQLite format 3\0" + b"\xff" * 200 if content == "empty-header" else b"not a database" * 100)
    before = path.read_bytes()
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neurflow serve: error: the database" in err[0] and "Traceback" not in err[0], err
    assert path.read_bytes() == before
