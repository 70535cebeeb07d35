"""The OpenAPI document matches the service: schemathesis against a live server on loopback that holds a
real model, dataset, job and circuits.

1. ``st run`` (second) (coverage, fuzzing and stateful phases, bounded by ``--max-examples``): zero server
   errors, zero undocumented status codes or content types, zero responses that violate their
   schema, zero schema-invalid requests accepted. The one check left out is
   ``positive_data_acceptance``: a schema-valid request may still name an id the caller does not own
   (404) or ask for a layer the model lacks (422), which the document cannot express.
2. First, every GET with path parameters is called with the real ids and its answer validated
   against the document (random ids only ever reach the 404s; the fuzzer's stateful phase may then
   delete what it finds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from neurflow.client.api import Client
from neurflow.exports import FORMATS

from ..helpers import KEY_A, job_spec, write_tiny_clip

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
schemathesis = pytest.importorskip("schemathesis")
A = {"X-API-Key": KEY_A}
MAX_EXAMPLES = int(os.environ.get("NEURFLOW_SCHEMATHESIS_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def populated(tmp_path_factory, assets):
    from ..helpers import LiveServer

    data = tmp_path_factory.mktemp("schemathesis") / "data"
    labeling = write_tiny_clip(data / "assets")  # exports need a labeled circuit
    server = LiveServer(data, workers=1, env={"NEURFLOW_RATE_LIMIT_PER_MINUTE": "1000000"}).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            model = c.upload_model(assets["weights"], assets["descriptor"])["id"]
            dataset = c.upload_dataset(assets["images"])["id"]
            job = c.follow(c.submit(job_spec(model, dataset, target=0, labeling=labeling))["id"])
            assert job["state"] == "succeeded", job
            circuit = job["result"]["circuits"][0]["id"]
            doc = c.circuit(circuit)
        text = doc if isinstance(doc, str) else __import__("json").dumps(doc)
        group = next(g for g in re.findall(r'"id": ?"([A-Za-z0-9_-]{1,64})"', text) if not g.startswith("c-"))
        yield {"server": server, "model_id": model, "dataset_id": dataset, "job_id": job["id"], "circuit_id": circuit,
               "group_id": group}
    finally:
        server.stop()


def test_every_operation_with_real_ids_matches_the_document(populated):
    server = populated["server"]
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    params = {k: v for k, v in populated.items() if k != "server"} | {"name": "0.png"}
    checked, expected = [], set()
    for op in schema.get_all_operations():
        op = op.ok()
        if op.method.upper() not in ("GET",) or "{" not in op.path:
            continue
        expected.add(op.path)
        names = re.findall(r"{(\w+)}", op.path)
        fmts = FORMATS if "fmt" in names else [None]
        for fmt in fmts:
            values = {n: (fmt if n == "fmt" else params[n]) for n in names}
            case = op.Case(path_parameters=values)
            if op.path.endswith("/events"):
                r = httpx.get(server.url + op.path.format(**values), headers=A, timeout=60)
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
                checked.append(op.path)
                continue
            response = case.call_and_validate(base_url=server.url, headers=A, timeout=180)
            assert response.status_code == 200, (op.path, values, response.status_code, response.text[:500])
            checked.append(op.path)
    assert set(checked) == expected and len(expected) >= 10, (sorted(expected), sorted(set(checked)))
    # the circuit document is documented as the object it is (it was a string)
    body = httpx.get(f"{server.url}/v1/circuits/{populated['circuit_id']}", headers=A).json()
    assert isinstance(body, dict) and body


def test_schemathesis_finds_nothing(populated, tmp_path):
    server = populated["server"]
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", f"{server.url}/schema/openapi.json", "-H", f"X-API-Key: {KEY_A}",
           "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", str(MAX_EXAMPLES),
           "--workers", "1", "--seed", "1", "--no-color",
           "--exclude-path", "/v1/jobs/{job_id}/events"]  # a stream that lasts as long as a job: checked below
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = done.stdout + done.stderr
    if os.environ.get("NEURFLOW_SCHEMATHESIS_OUT"):
        Path(os.environ["NEURFLOW_SCHEMATHESIS_OUT"]).write_text(out)
    assert done.returncode == 0, out[-6000:]
    assert re.search(r"\d+ generated, \d+ passed", out), out[-2000:]
