"""Batch jobs on the local executor: one unit of work per class, each class stored at once.

A real server on loopback runs a job of every class of the tiny model; the worker is killed with
SIGKILL after the first class is stored, and the retry must neither redo nor duplicate it.
"""

from __future__ import annotations

import os
import signal

import pytest

import msgspec

from neurflow.client.api import Client
from neurflow.progress import ProgressEvent

from ..helpers import ENGINE, KEY_A, LiveServer, assert_problem, job_spec, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: each class takes a few seconds on the shared CPU: long enough to kill the worker between classes
MEDIUM_ENGINE = {**ENGINE, "ig_steps": 150, "tau": 4, "top_n": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("batch") / "data"
    srv = LiveServer(data, workers=1, env={"NEURFLOW_CANCEL_GRACE_S": "5"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def uploaded(server, assets):
    with Client(server.url, KEY_A) as c:
        model = c.upload_model(assets["weights"], assets["descriptor"])
        dataset = c.upload_dataset(assets["images"])
    return model["id"], dataset["id"]


def test_all_classes_one_circuit_each_with_per_class_progress(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target="all"))
        events = []
        final = c.follow(job["id"], on_progress=events.append)
        assert final["state"] == "succeeded", final
        done = sorted(r["class_index"] for r in final["result"]["circuits"])
        assert done == [0, 1, 2]
        # the worker's progress events, through the pipe, the job table and SSE: per class, the stage's
        # own units (done/total) and the job's count of finished classes beside them
        received = [msgspec.convert(e["progress_event"], ProgressEvent) for e in events if e["state"] == "running"]
        per_class = [e for e in received if e.target is not None]
        assert {e.target for e in per_class} == {0, 1, 2}, received
        assert all(e.classes_total == 3 for e in per_class)
        assert [e.classes_done for e in per_class] == sorted(e.classes_done for e in per_class)
        assert any(e.classes_done == 2 for e in per_class if e.target == 2)
        assert all(e.unit and e.total > 0 and 0 <= e.done <= e.total and e.elapsed >= 0 for e in per_class)
        assert all((raw["stage"], raw["done"], raw["total"]) == (e.stage, e.done, e.total)
                   for raw, e in zip([e for e in events if e["state"] == "running"], received))
        listed = c.circuits(job["id"])
        assert sorted(x["class_index"] for x in listed) == [0, 1, 2]
        one = c.http.get("/v1/circuits", params={"job_id": job["id"], "class_index": 1}).json()["circuits"]
        assert [x["class_index"] for x in one] == [1]  # browsable per class
        for row in listed:
            doc = c.circuit(row["id"])
            assert doc["target"]["class_index"] == row["class_index"]
            assert doc["target"]["name"] == ["red", "green", "blue"][row["class_index"]]


def test_worker_killed_mid_batch_never_redoes_or_duplicates_a_class(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=[2, 0, 1], engine=MEDIUM_ENGINE))
        first = wait_for(lambda: c.circuits(job["id"]), 300, interval=0.05, what="the first stored class")
        assert len(first) == 1 and first[0]["class_index"] == 2, first
        pid = server.health()["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        final = c.follow(job["id"])
        assert final["state"] == "succeeded", final
        assert final["attempt"] == 2
        listed = c.circuits(job["id"])
        assert sorted(x["class_index"] for x in listed) == [0, 1, 2]  # each class once
        kept = next(x for x in listed if x["class_index"] == 2)
        assert kept["id"] == first[0]["id"]  # the stored class was not redone
    artifacts = server.data_dir / "artifacts" / "jobs" / job["id"]
    assert (artifacts / "attempt-1" / "class-2" / "circuit.json").is_file()
    assert not (artifacts / "attempt-2" / "class-2").exists()  # attempt 2 never fitted it
    assert (artifacts / "attempt-2" / "class-0" / "circuit.json").is_file()


def test_cancel_stops_the_whole_batch(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target="all", engine=MEDIUM_ENGINE))
        wait_for(lambda: c.circuits(job["id"]), 300, interval=0.1, what="the first stored class")
        c.cancel(job["id"])
        final = c.follow(job["id"])
        assert final["state"] == "cancelled", final
        stored = c.circuits(job["id"])
        assert 1 <= len(stored) < 3  # what was stored stays browsable; nothing ran after the cancel
        # classes_done, not done: done counts the last stage's own units (patches, pairs), and a run
        # fast enough to get deep into the second class before the cancel passed 3 of those
        assert c.job(job["id"])["progress_event"].get("classes_done", 0) < 3


def test_target_class_all_and_bounds_are_checked(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        r = c.http.post("/v1/jobs", json=job_spec(mid, did, target="every"))
        assert_problem(r, 400)
        r = c.http.post("/v1/jobs", json=job_spec(mid, did, target=[0, 3]))
        assert_problem(r, 422, "out of range")
