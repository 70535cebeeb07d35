"""The service as users run it: `neurflow serve` in a subprocess on loopback, driven over HTTP.

Covers the whole flow with streamed SSE, cancellation, a killed worker (retried once, then failed with
the reason), and restarts of the server with a queued job and with finished results.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from neurflow.client.api import ApiError, Client

from .helpers import (
    KEY_A,
    KEY_B,
    SLOW_ENGINE,
    LiveServer,
    assert_problem,
    job_spec,
    labeling_section,
    wait_for,
    write_tiny_clip,
)

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("live") / "data"
    write_tiny_clip(data / "assets")
    srv = LiveServer(data, workers=1, env={"NEURFLOW_CANCEL_GRACE_S": "5"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def uploaded(server, assets):
    with Client(server.url, KEY_A) as c:
        model = c.upload_model(assets["weights"], assets["descriptor"])
        dataset = c.upload_dataset(assets["images"])
    return model["id"], dataset["id"]


def test_whole_flow_over_loopback(server, assets, uploaded, tmp_path):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=[0, 1], labeling=labeling_section()))
        received = []
        for event, data in c.events(job["id"]):
            received.append((time.time(), event, data))
        final = c.job(job["id"])
        assert final["state"] == "succeeded", final
        assert received[-1][1] == "end" and received[-1][2]["state"] == "succeeded"
        running = [t for t, ev, d in received if ev == "progress" and d["state"] == "running"]
        assert len(running) >= 2
        assert running[0] < final["finished_at"] - 0.05  # events are streamed while the job runs
        from neurflow.client.submit import download

        written = download(c, final, tmp_path / "out", mosaics=True)
        assert sorted(written) == [0, 1] and all(p.is_file() for p in written.values())
        assert any((tmp_path / "out/class-0/mosaics").glob("*.png"))
        cid = final["result"]["circuits"][0]["id"]
        doc = c.circuit(cid)
        assert any(g["labels"] for layer in doc["layers"] for g in layer["groups"])  # CLIP-labeled
        assert any(ev == "progress" and d["stage"].startswith("labeling") for _, ev, d in received)
        group = next(g for layer in doc["layers"] for g in layer["groups"] if g["exemplars"])
        assert c.exemplar(cid, group["id"], 0).startswith(b"\x89PNG")
        assert c.mosaic(cid, group["id"]).startswith(b"\x89PNG")
        result = c.debug(cid, assets["image"])
        assert result["target"] == 0 and {"id", "fires", "ablated_logit"} <= set(result["groups"][0])
        evaluation = c.evaluate(cid, {"negatives": 20, "faithfulness_pool": 20})
        assert isinstance(evaluation, dict) and evaluation
        relabel = c.follow(c.relabel(cid, labeling_section(("cat", "dog")))["id"])
        assert relabel["state"] == "succeeded", relabel
        relabeled = c.circuit(relabel["result"]["circuits"][0]["id"])
        assert {lab["text"] for layer in relabeled["layers"] for g in layer["groups"] for lab in g["labels"]} <= {"cat", "dog"}
    with Client(server.url, KEY_B) as other:
        with pytest.raises(ApiError) as err:
            other.circuit(cid)
        assert err.value.status == 404
        assert other.circuits() == []
    # the OpenAPI document is served by the real server too
    assert httpx.get(server.url + "/schema/openapi.json").json()["openapi"].startswith("3.1")


def test_cancel_running_job(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=0, engine=SLOW_ENGINE))
        wait_for(lambda: c.job(job["id"])["stage"] not in ("", "starting", "loading model"), 90,
                 what="the job to run")
        r = c.http.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 202 and r.json()["cancel_requested"]
        final = c.follow(job["id"])
        assert final["state"] == "cancelled", final
        assert_problem(c.http.delete(f"/v1/jobs/{job['id']}"), 409)
        assert server.health()["workers"][0]["alive"]


def _worker_pid(server) -> int:
    return server.health()["workers"][0]["pid"]


def test_killed_worker_is_retried_once_then_failed(server, uploaded):
    mid, did = uploaded
    with Client(server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=1, engine=SLOW_ENGINE))
        for attempt in (1, 2):
            wait_for(lambda: (j := c.job(job["id"]))["state"] == "running" and j["attempt"] == attempt
                     and j["stage"] not in ("starting",), 120, what=f"attempt {attempt} to run")
            pid = wait_for(lambda: server.health()["workers"][0]["state"] == "busy" and _worker_pid(server), 30,
                           what="a busy worker")
            os.kill(pid, signal.SIGKILL)
            if attempt == 1:
                requeued = wait_for(lambda: (j := c.job(job["id"]))["attempt"] == 1 and j["state"] == "queued" and j
                                    or (j["attempt"] == 2 and j), 30, what="the requeue")
                assert "SIGKILL" in (requeued["error"] or "SIGKILL")
        final = c.follow(job["id"])
        assert final["state"] == "failed"
        assert "killed by SIGKILL" in final["error"] and "attempt 2 of 2" in final["error"], final["error"]
        # a fresh worker takes over and the service keeps working
        health = wait_for(lambda: (h := server.health())["ready"] and h, 120, what="the replacement worker")
        assert health["workers"][0]["restarts"] == 2 and health["workers"][0]["pid"] != pid


def test_restarts_keep_queued_jobs_running_jobs_and_results(tmp_path, assets):
    data = tmp_path / "data"
    # 1. an API-only server (no worker): the job stays queued; the server stops
    first = LiveServer(data, workers=0).start()
    try:
        with Client(first.url, KEY_A) as c:
            mid = c.upload_model(assets["weights"], assets["descriptor"])["id"]
            did = c.upload_dataset(assets["images"])["id"]
            queued = c.submit(job_spec(mid, did, target=2))
            time.sleep(0.5)
            assert c.job(queued["id"])["state"] == "queued"
    finally:
        first.stop()
    # 2. the server comes back with a worker: the queued job runs to the end; then the whole server is
    #    SIGKILLed while a second job runs
    second = LiveServer(data, workers=1).start()
    try:
        with Client(second.url, KEY_A) as c:
            final = c.follow(queued["id"])
            assert final["state"] == "succeeded", final
            cid = final["result"]["circuits"][0]["id"]
            doc = c.circuit(cid)
            running = c.submit(job_spec(mid, did, target=0))
            wait_for(lambda: c.job(running["id"])["state"] == "running", 90, what="the second job to start")
        second.proc.kill()
        second.proc.wait(10)
    finally:
        second.stop()
    # 3. and again: finished results are still there byte for byte, the interrupted job is requeued
    #    (attempt 2) and finishes
    third = LiveServer(data, workers=1).start()
    try:
        with Client(third.url, KEY_A) as c:
            assert c.circuit(cid) == doc
            assert c.job(queued["id"])["state"] == "succeeded"
            assert [m["id"] for m in c.json("GET", "/v1/models")["models"]] == [mid]
            final = c.follow(running["id"])
            assert final["state"] == "succeeded" and final["attempt"] == 2, final
    finally:
        third.stop()


def test_neurflow_submit(server, assets, tmp_path, capsys):
    """`neurflow submit SPEC.json --server URL`: upload, follow the SSE progress, download the circuits."""
    import json

    from neurflow.cli import main

    spec = {"model": {**assets["descriptor"], "weights": str(assets["weights"])},
            "data": {"images": str(assets["images"]), "target_class": 2, "select": "all"},
            "engine": {"layers": ["layer4", "layer3"], "tau": 2, "top_n": 6, "ig_steps": 4}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = main(["submit", str(tmp_path / "spec.json"), "--server", server.url, "--api-key", KEY_A,
                 "--out", str(tmp_path / "out"), "--mosaics"])
    assert code == 0
    assert "class 2:" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out/circuit.json").read_text())  # one class: out/circuit.json, as `neurflow run`
    assert doc["target"]["class_index"] == 2
    # with its arrays file: the pair reads as `neurflow run`'s output does
    from neurflow.core.circuit_arrays import read_circuit

    assert (tmp_path / "out" / doc["arrays"]["file"]).is_file()
    assert any(c.vector for layer in read_circuit(tmp_path / "out/circuit.json").layers for n in layer.neurons
               for c in n.concepts)
    before = (tmp_path / "out/circuit.json").read_bytes()
    assert main(["submit", str(tmp_path / "spec.json"), "--server", server.url, "--api-key", KEY_A,
                 "--out", str(tmp_path / "out")]) == 2
    assert "never replaces a circuit" in capsys.readouterr().err
    assert (tmp_path / "out/circuit.json").read_bytes() == before
    spec["data"]["target_class"] = "all"  # every class of the model: one folder each
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["submit", str(tmp_path / "spec.json"), "--server", server.url, "--api-key", KEY_A,
                 "--out", str(tmp_path / "all")]) == 0
    for c in range(assets["descriptor"]["num_classes"]):
        assert json.loads((tmp_path / f"all/class-{c}/circuit.json").read_text())["target"]["class_index"] == c
    capsys.readouterr()
    assert main(["submit", str(tmp_path / "spec.json"), "--server", server.url, "--api-key", "wrong",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown or revoked API key" in capsys.readouterr().err
