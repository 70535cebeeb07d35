"""The API through the in-process test client: the whole flow, keys, every bad input as problem+json."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from neurflow.core.circuit import SCHEMA_VERSION
from neurflow.service.http.app import create_app
from neurflow.service.settings import Settings

from ..helpers import (
    KEY_A,
    KEY_B,
    assert_problem,
    job_spec,
    labeling_section,
    make_zip,
    png_bytes,
    wait_for,
    write_tiny_clip,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("svc")
    write_tiny_clip(data / "assets")
    settings = Settings(data_dir=str(data), api_keys=[KEY_A, KEY_B], max_weights_mb=60, max_dataset_mb=1,
                        max_image_mb=1, max_body_kb=64, max_zip_entries=50, sync_wait_s=60)
    with TestClient(create_app(settings), timeout=120) as c:
        yield c


def upload_model(client, assets, headers=A, descriptor=None):
    with open(assets["weights"], "rb") as fh:
        return client.post("/v1/models", headers=headers, files={"weights": ("tiny.safetensors", fh)},
                           data={"descriptor": json.dumps(descriptor or assets["descriptor"])})


def upload_zip(client, payload: bytes, headers=A):
    return client.post("/v1/datasets", headers=headers, files={"file": ("d.zip", payload, "application/zip")})


@pytest.fixture(scope="module")
def objects(client, assets):
    r = upload_model(client, assets)
    assert r.status_code == 201, r.text
    model = r.json()
    r = upload_zip(client, assets["zip"].read_bytes())
    assert r.status_code == 201, r.text
    return {"model": model, "dataset": r.json()}


def test_model_and_dataset_resources(client, assets, objects):
    model = objects["model"]
    from neurflow.core.hashing import sha256_file

    assert model["id"] == sha256_file(assets["weights"])  # identified by the sha256 of its weights
    names = [layer["name"] for layer in model["layers"]]
    assert "layer4" in names and {"name": "fc", "shape": [3]} in model["layers"]
    # the descriptor left mean and std out: the answer says which normalisation the server filled in
    assert model["mean"] == [0.485, 0.456, 0.406] and "mean and std left out" in model["warnings"][0]
    assert client.get(f"/v1/models/{model['id']}", headers=A).json()["warnings"] == []
    assert upload_model(client, assets).status_code == 200  # same weights again: the existing model
    assert_problem(upload_model(client, assets, descriptor={**assets["descriptor"], "input_size": 64}), 409)
    listed = client.get("/v1/models", headers=A).json()["models"]
    assert [m["id"] for m in listed] == [model["id"]]
    assert client.get(f"/v1/models/{model['id']}", headers=A).json()["layers"] == model["layers"]
    ds = objects["dataset"]
    assert ds["n_images"] == 18 and ds["classes"] == ["blue", "green", "red"]
    assert client.get(f"/v1/datasets/{ds['id']}", headers=A).json() == ds
    assert client.get("/v1/datasets", headers=A).json()["datasets"] == [ds]


def test_keys_cannot_see_each_other(client, assets, objects):
    mid, did = objects["model"]["id"], objects["dataset"]["id"]
    assert client.get("/v1/models", headers=B).json()["models"] == []
    assert client.get("/v1/datasets", headers=B).json()["datasets"] == []
    assert_problem(client.get(f"/v1/models/{mid}", headers=B), 404)
    assert_problem(client.get(f"/v1/datasets/{did}", headers=B), 404)
    assert_problem(client.delete(f"/v1/datasets/{did}", headers=B), 404)
    assert_problem(client.post("/v1/jobs", headers=B, json=job_spec(mid, did)), 422, "one of your models")
    jobs_a = client.get("/v1/jobs", headers=A).json()["jobs"]
    for job in jobs_a:
        assert_problem(client.get(f"/v1/jobs/{job['id']}", headers=B), 404)
        assert_problem(client.delete(f"/v1/jobs/{job['id']}", headers=B), 404)
    assert_problem(client.get("/v1/models"), 401, "missing API key")
    assert_problem(client.get("/v1/models", headers={"X-API-Key": "wrong"}), 401, "unknown")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200


def test_whole_flow_in_process(client, assets, objects):
    mid, did = objects["model"]["id"], objects["dataset"]["id"]
    r = client.post("/v1/jobs", headers=A, json=job_spec(mid, did, target=[0, 2], labeling=labeling_section()))
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=A) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event:"):
                events.append(line[6:].strip())
    assert events[-1] == "end" and events.count("progress") >= 2
    job = client.get(f"/v1/jobs/{job_id}", headers=A).json()
    assert job["state"] == "succeeded", job
    assert [c["class_index"] for c in job["result"]["circuits"]] == [0, 2]
    cid = job["result"]["circuits"][0]["id"]
    doc = client.get(f"/v1/circuits/{cid}", headers=A).json()
    assert doc["schema"] == SCHEMA_VERSION == "neurflow.circuit/3" and doc["target"]["class_index"] == 0
    assert doc["model"]["weights_sha256"] in (mid, None)
    group = next(g for layer in doc["layers"] for g in layer["groups"] if g["exemplars"])
    png = client.get(f"/v1/circuits/{cid}/groups/{group['id']}/mosaic.png", headers=A)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    ex = client.get(f"/v1/circuits/{cid}/groups/{group['id']}/exemplars/0.png", headers=A)
    assert ex.status_code == 200 and ex.content.startswith(b"\x89PNG")
    assert_problem(client.get(f"/v1/circuits/{cid}/groups/{group['id']}/exemplars/99.png", headers=A), 404)
    assert_problem(client.get(f"/v1/circuits/{cid}/groups/..%2F..%2Fx/mosaic.png", headers=A), 404)
    info = client.get(f"/v1/circuits/{cid}/info", headers=A).json()
    assert info["job_id"] == job_id and info["summary"]["layers"][0]["name"] == "layer4"
    assert [c["id"] for c in client.get("/v1/circuits", params={"job_id": job_id}, headers=A).json()["circuits"]] == [
        c["id"] for c in job["result"]["circuits"]]
    assert_problem(client.get(f"/v1/circuits/{cid}", headers=B), 404)
    # debug: why did the model predict this?
    r = client.post(f"/v1/circuits/{cid}/debug", headers=A, files={"image": ("x.png", assets["image"])})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["target"] == 0 and result["groups"] and "ablated_logit" in result["groups"][0]
    # labeled by CLIP in the job
    labeled = [g for layer in doc["layers"] for g in layer["groups"] if g["labels"]]
    assert labeled and labeled[0]["labels"][0]["source"] == "clip" and doc["labeling"]["clip"]
    # relabel with another vocabulary, without rerunning the engine
    r = client.post(f"/v1/circuits/{cid}/labels", headers=A, json={"labeling": labeling_section(("cat", "dog"))})
    assert r.status_code == 202, r.text
    relabel = wait_for(lambda: (j := client.get(f"/v1/jobs/{r.json()['id']}", headers=A).json())["state"]
                       in ("succeeded", "failed") and j, 60, what="the relabel job")
    assert relabel["state"] == "succeeded", relabel
    new_id = relabel["result"]["circuits"][0]["id"]
    new_doc = client.get(f"/v1/circuits/{new_id}", headers=A).json()
    assert client.get(f"/v1/circuits/{new_id}/info", headers=A).json()["parent"] == cid
    assert {lab["text"] for layer in new_doc["layers"] for g in layer["groups"] for lab in g["labels"]} <= {"cat", "dog"}
    assert [layer["neurons"] for layer in new_doc["layers"]] == [layer["neurons"] for layer in doc["layers"]]
    assert client.get(f"/v1/circuits/{new_id}/groups/{group['id']}/mosaic.png", headers=A).status_code == 200
    # the offline evaluation of the labels
    r = client.post(f"/v1/circuits/{cid}/evaluate", headers=A, json={"options": {"negatives": 20,
                                                                                  "faithfulness_pool": 20}})
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict) and r.json()
    assert_problem(client.post(f"/v1/circuits/{cid}/evaluate", headers=A, json={"options": {"bogus": 1}}), 400)
    # another key cannot relabel or debug this circuit
    assert_problem(client.post(f"/v1/circuits/{cid}/labels", headers=B, json={"labeling": labeling_section()}), 404)
    assert_problem(client.post(f"/v1/circuits/{cid}/debug", headers=B, files={"image": ("x.png", assets["image"])}), 404)


def test_bad_inputs_are_problems(client, assets, objects):
    mid, did = objects["model"]["id"], objects["dataset"]["id"]
    desc = json.dumps(assets["descriptor"])
    # models
    assert_problem(client.post("/v1/models", headers=A, files={"weights": ("m.pt", b"\x80\x04junk")},
                               data={"descriptor": desc}), 415, "safetensors")
    assert_problem(client.post("/v1/models", headers=A, files={"weights": ("m.safetensors", b"\x80\x04" + b"x" * 64)},
                               data={"descriptor": desc}), 415, "not a safetensors file")
    with open(assets["weights"], "rb") as fh:
        assert_problem(client.post("/v1/models", headers=A, files={"weights": ("m.safetensors", fh)},
                                   data={"descriptor": json.dumps({**assets["descriptor"], "num_classes": 7,
                                                                   "class_names": None})}), 422, "fc.weight")
    assert_problem(client.post("/v1/models", headers=A, files={"weights": ("m.safetensors", b"x")},
                               data={"descriptor": "{not json"}), 422, "not valid JSON")
    assert_problem(client.post("/v1/models", headers=A, files={"descriptor": (None, desc)}), 400, "weights")
    assert_problem(client.post("/v1/models", headers=A, data={"descriptor": desc}), 400, "multipart")
    assert_problem(client.post("/v1/models", headers=A, json={"descriptor": desc}), 400)
    assert_problem(client.post("/v1/models", headers=A, files={"weights": ("m.safetensors", b"x" * (61 << 20))},
                               data={"descriptor": desc}), 413)
    # datasets
    assert_problem(upload_zip(client, b"not a zip"), 422, "not a valid zip")
    assert_problem(upload_zip(client, make_zip({"../../etc/x.png": png_bytes((1, 1, 1))})), 422, "traversal")
    assert_problem(upload_zip(client, make_zip({f"{i}.png": b"" for i in range(60)})), 413, "entries")
    assert_problem(upload_zip(client, make_zip({"a.png": b"garbage"})), 422, "cannot be decoded")
    assert_problem(upload_zip(client, make_zip({"a.exe": b"MZ"})), 422, "not a PNG or JPEG")
    assert_problem(upload_zip(client, b"0" * (2 << 20)), 413)
    # jobs
    spec = job_spec(mid, did)
    assert_problem(client.post("/v1/jobs", headers=A, json={**spec, "bogus": 1}), 400, "bogus")
    assert_problem(client.post("/v1/jobs", headers=A, content=b"{", ), 400)
    assert_problem(client.post("/v1/jobs", headers=A, json=job_spec(mid, "ds-nope")), 422, "one of your datasets")
    assert_problem(client.post("/v1/jobs", headers=A, json=job_spec(mid, did, target=[0, 5])), 422, "out of range")
    bad_layer = job_spec(mid, did, engine={"layers": ["layer4", "nope"]})
    assert_problem(client.post("/v1/jobs", headers=A, json=bad_layer), 422, "'nope' is not a layer")
    wrong_arch = job_spec(mid, did)
    wrong_arch["model"]["input_size"] = 64
    assert_problem(client.post("/v1/jobs", headers=A, json=wrong_arch), 422, "input_size")
    outside = job_spec(mid, did, labeling={"clip": {"model": "ViT-B-32", "pretrained": "/etc/passwd"}})
    assert_problem(client.post("/v1/jobs", headers=A, json=outside), 422, "asset folders")
    for sneaky in ({"vocabulary": "neurflow.db"}, {"vocabulary": "../neurflow.db"}, {"templates": "/etc/hosts"},
                   {"clip": {"model": "local-dir:/tmp", "pretrained": None}}):
        section = {**labeling_section(), **sneaky}
        assert_problem(client.post("/v1/jobs", headers=A, json=job_spec(mid, did, labeling=section)), 422,
                       "asset folders")
    leak = job_spec(mid, did, labeling={"clip": {"model": "ViT-B-32", "pretrained": "openai"},
                                        "captioner": {"backend": "openai", "model": "m", "base_url": "http://evil/v1"}})
    assert_problem(client.post("/v1/jobs", headers=A, json=leak), 422, "not allowed")
    assert_problem(client.post("/v1/jobs", headers=A, json={**spec, "pad": "x" * (70 << 10)}), 413)
    assert_problem(client.get("/v1/jobs/job-nope", headers=A), 404)
    assert_problem(client.get("/v1/jobs/job-nope/events", headers=A), 404)
    assert_problem(client.get("/v1/jobs", params={"state": "weird"}, headers=A), 400)
    # circuits
    assert_problem(client.get("/v1/circuits/c-nope", headers=A), 404)
    assert_problem(client.post("/v1/circuits/c-nope/labels", headers=A, json={"labeling": labeling_section()}), 404)
    assert_problem(client.post("/v1/circuits/c-nope/evaluate", headers=A, json={}), 404)
    circuits = client.get("/v1/circuits", headers=A).json()["circuits"]
    if circuits:
        cid = circuits[0]["id"]
        assert_problem(client.post(f"/v1/circuits/{cid}/debug", headers=A, files={"image": ("x.png", b"nope")}),
                       422, "cannot be decoded")
        assert_problem(client.post(f"/v1/circuits/{cid}/debug", headers=A, files={"image": ("x.png", b"0" * (2 << 20))}),
                       413)
        assert_problem(client.post(f"/v1/circuits/{cid}/debug", headers=A, data={"threshold": "x"},
                                   files={"image": ("x.png", assets["image"])}), 422, "threshold")
        assert_problem(client.post(f"/v1/circuits/{cid}/debug", headers=A, data={"layer": "nope"},
                                   files={"image": ("x.png", assets["image"])}), 422, "not a layer")
        assert_problem(client.post(f"/v1/circuits/{cid}/labels", headers=A, json={"labeling": {"vocabulary": []}}),
                       400, "missing required field `clip`")
        assert_problem(client.post(f"/v1/circuits/{cid}/labels", headers=A,
                                   json={"labeling": {**labeling_section(), "vocabulary": []}}), 422, "empty list")
        assert_problem(client.post(f"/v1/circuits/{cid}/labels", headers=A, json={"wrong": 1}), 400)
    # unknown routes and methods
    assert_problem(client.get("/v1/nothing", headers=A), 404)
    assert_problem(client.put("/v1/models", headers=A), 405)


def test_cancel_queued_job_and_conflicts(client, objects):
    mid, did = objects["model"]["id"], objects["dataset"]["id"]
    from ..helpers import SLOW_ENGINE

    running = client.post("/v1/jobs", headers=A, json=job_spec(mid, did, engine=SLOW_ENGINE)).json()
    queued = client.post("/v1/jobs", headers=A, json=job_spec(mid, did)).json()
    r = client.delete(f"/v1/jobs/{queued['id']}", headers=A)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert_problem(client.delete(f"/v1/jobs/{queued['id']}", headers=A), 409, "already ended")
    assert_problem(client.delete(f"/v1/models/{mid}", headers=A), 409, "used by a queued or running job")
    wait_for(lambda: client.get(f"/v1/jobs/{running['id']}", headers=A).json()["state"] == "running", 60,
             what="the slow job to start")
    r = client.delete(f"/v1/jobs/{running['id']}", headers=A)
    assert r.status_code == 202 and r.json()["cancel_requested"]
    final = wait_for(lambda: (j := client.get(f"/v1/jobs/{running['id']}", headers=A).json())["state"] in
                     ("cancelled", "failed", "succeeded") and j, 60, what="the cancel")
    assert final["state"] == "cancelled", final


def test_openapi_and_health(client):
    schema = client.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    for path in ("/v1/models", "/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/circuits/{circuit_id}",
                 "/v1/circuits/{circuit_id}/labels", "/v1/circuits/{circuit_id}/debug",
                 "/v1/circuits/{circuit_id}/evaluate", "/health"):
        assert path in schema["paths"], path
    assert "apiKey" in schema["components"]["securitySchemes"]
    health = client.get("/health").json()
    assert health["database"] and health["storage"] and health["workers"][0]["alive"]


def test_rate_limit_per_key(tmp_path):
    settings = Settings(data_dir=str(tmp_path), api_keys=[KEY_A, KEY_B], workers=0, rate_limit_per_minute=3)
    with TestClient(create_app(settings)) as c:
        for _ in range(3):
            assert c.get("/v1/models", headers=A).status_code == 200
        body = assert_problem(c.get("/v1/models", headers=A), 429)
        assert body["title"]
        assert c.get("/v1/models", headers=B).status_code == 200  # another key has its own budget
        assert c.get("/health").status_code == 200  # health is never limited
