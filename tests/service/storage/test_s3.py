"""The artifact root in S3 (``storage_url = s3://bucket/prefix``), against moto's server on loopback.

Uploads, a batch job's results, mosaics, exemplars, exports and the Label Studio ML backend all
work with nothing but the database on local disk; the objects are checked in the bucket itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from neurflow.client.api import Client  # noqa: E402
from neurflow.client.process import free_loopback_port  # noqa: E402

from ..helpers import KEY_A, LiveServer, job_spec, labeling_section, wait_for, write_tiny_clip  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    port = free_loopback_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, 60, interval=0.2, what="moto's server")
    yield {"url": url, "env": {**S3_ENV, "FSSPEC_S3_ENDPOINT_URL": url}}
    proc.terminate()
    proc.wait(20)
    log.close()


@pytest.fixture
def bucket(moto):
    import s3fs

    fs = s3fs.S3FileSystem(key=S3_ENV["AWS_ACCESS_KEY_ID"], secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=moto["url"])
    fs.mkdir("nf-artifacts")
    return fs


def test_service_with_the_artifact_root_in_s3(moto, bucket, assets, tmp_path):
    data = tmp_path / "data"
    labeling = write_tiny_clip(data / "assets")
    server = LiveServer(data, workers=1, env={**moto["env"], "NEURFLOW_STORAGE_URL": "s3://nf-artifacts/root"})
    server.start()
    try:
        with Client(server.url, KEY_A) as c:
            assert c.health()["storage"]
            model = c.upload_model(assets["weights"], assets["descriptor"])
            dataset = c.upload_dataset(assets["images"])
            final = c.follow(c.submit(job_spec(model["id"], dataset["id"], target=[0, 2],
                                               labeling=labeling))["id"])
            assert final["state"] == "succeeded", final
            circuits = c.circuits(final["id"])
            assert sorted(x["class_index"] for x in circuits) == [0, 2]
            cid = circuits[0]["id"]
            doc = c.circuit(cid)
            group = next(g for layer in doc["layers"] for g in layer["groups"] if g["exemplars"])
            assert c.mosaic(cid, group["id"]).startswith(b"\x89PNG")
            assert c.exemplar(cid, group["id"], 0).startswith(b"\x89PNG")
            # the compact document's arrays file, streamed from the bucket with its hash checked
            side = c.circuit_arrays(cid, tmp_path / "arrays.safetensors")
            assert side.stat().st_size == doc["arrays"]["bytes"]
            graphml = c.export(cid, "graphml")
            assert b"<graphml" in graphml
            ls = c.http.get(f"/v1/circuits/{cid}/exports/labelstudio").json()
            assert ls["tasks"] and all(t["data"]["circuit_id"] == cid for t in ls["tasks"])
            body = {"tasks": [{"id": i, "data": t["data"]} for i, t in enumerate(ls["tasks"])],
                    "label_config": ls["label_config"], "params": {}}
            r = httpx.post(f"{server.url}/ml/labelstudio/predict", auth=("x", KEY_A), json=body, timeout=60)
            assert r.status_code == 200, r.text
            predicted = r.json()["results"]
            assert [p for p in predicted if p["result"]], predicted
            relabel = c.follow(c.relabel(cid, labeling_section(("cat", "dog")))["id"])
            assert relabel["state"] == "succeeded", relabel
        # everything lives in the bucket; nothing under the local artifact folder
        root = "nf-artifacts/root"
        assert bucket.exists(f"{root}/models/{model['id']}.safetensors")
        assert bucket.ls(f"{root}/datasets/{dataset['id']}/images")
        keys = bucket.find(f"{root}/jobs/{final['id']}")
        assert any(k.endswith("class-2/circuit.json") for k in keys)
        assert any(k.endswith("class-2/circuit.arrays.safetensors") for k in keys)
        # the fits kept their stages in the bucket while they ran; none outlive the job, here or on disk
        assert not [k for k in keys if "/stages/" in k]
        assert not list((data / "scratch" / "stages").glob(f"{final['id']}/*"))
        assert any(k.endswith("mosaic.png") for k in keys)
        assert not (data / "artifacts").exists() or not any((data / "artifacts").rglob("*.json"))
    finally:
        server.stop()
