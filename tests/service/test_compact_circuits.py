"""Compact circuits in the service (issue 19, item 4): the worker stores the document and its arrays'
sidecar, the API serves the sidecar streamed with its hash checked, circuits stored as one document
before still read everywhere (document, exports, corrections, the client), and the client downloads
the pair into files ``read_circuit`` reads."""

from __future__ import annotations

import hashlib
import json

import httpx
import msgspec
import pytest

from neurflow.client.api import Client
from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import decode_circuit, read_circuit, write_circuit
from neurflow.service.storage import keys

from .helpers import KEY_A, LiveServer, assert_problem, job_spec, write_tiny_clip

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
A = {"X-API-Key": KEY_A}


@pytest.fixture(scope="module")
def served(tmp_path_factory, assets):
    data = tmp_path_factory.mktemp("compact") / "data"
    labeling = write_tiny_clip(data / "assets")
    server = LiveServer(data, workers=1).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            mid = c.upload_model(assets["weights"], assets["descriptor"])["id"]
            did = c.upload_dataset(assets["images"])["id"]
            job = c.follow(c.submit(job_spec(mid, did, target=[0, 1], labeling=labeling))["id"])
            assert job["state"] == "succeeded", job
            cids = [x["id"] for x in job["result"]["circuits"]]
        # where the worker wrote each class (the catalog keeps the key; the API does not show it)
        folders = {x["id"]: data / "artifacts" / keys.class_circuit(keys.attempt(job["id"], job["attempt"]),
                                                                     x["class_index"])
                   for x in job["result"]["circuits"]}
        yield {"server": server, "cids": cids, "folders": folders}
    finally:
        server.stop()


def get(served, path: str, **params) -> httpx.Response:
    return httpx.get(served["server"].url + path, params=params, headers=A, timeout=120)


def inline(served, cid: str) -> Circuit:
    r = get(served, f"/v1/circuits/{cid}", arrays="inline")
    assert r.status_code == 200, r.text
    return Circuit.from_json(r.content)


def test_the_worker_stores_a_compact_document_and_serves_its_arrays(served):
    cid = served["cids"][0]
    folder = served["folders"][cid]
    assert {"circuit.json", "circuit.arrays.safetensors"} <= {p.name for p in folder.iterdir()}
    doc = get(served, f"/v1/circuits/{cid}")
    arrays = doc.json()["arrays"]
    assert arrays["file"] == "circuit.arrays.safetensors" and arrays["fields"] == ["concept.vector", "concept.patches"]
    r = get(served, f"/v1/circuits/{cid}/arrays")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(r.content).hexdigest() == arrays["sha256"] == r.headers["x-content-sha256"]
    assert int(r.headers["content-length"]) == len(r.content) == arrays["bytes"]
    # the pair is the whole circuit: the same as the server's inline document, which is bigger
    whole = inline(served, cid)
    assert decode_circuit(doc.content, lambda name: r.content) == whole
    assert any(c.patches and c.vector for layer in whole.layers for n in layer.neurons for c in n.concepts)
    assert len(doc.content) < len(get(served, f"/v1/circuits/{cid}", arrays="inline").content)
    assert_problem(get(served, f"/v1/circuits/{cid}", arrays="bogus"), 400)


def test_the_client_downloads_both_files(served, tmp_path):
    cid = served["cids"][0]
    with Client(served["server"].url, KEY_A) as c:
        path = c.download_circuit(cid, tmp_path / "one")
        assert sorted(p.name for p in path.parent.iterdir()) == ["circuit.arrays.safetensors", "circuit.json"]
        assert read_circuit(path) == inline(served, cid)
        # a wrong expected hash is refused and leaves no file behind
        with pytest.raises(ValueError, match="does not match its document's sha256"):
            c.circuit_arrays(cid, tmp_path / "bad" / "x.safetensors", sha256="0" * 64)
        assert not list((tmp_path / "bad").iterdir())


def test_a_stored_sidecar_that_does_not_match_is_never_served_whole(served, tmp_path):
    cid = served["cids"][1]
    side = served["folders"][cid] / "circuit.arrays.safetensors"
    good = side.read_bytes()
    try:
        side.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit changed
        with Client(served["server"].url, KEY_A) as c:
            with pytest.raises((httpx.HTTPError, ValueError)):
                c.circuit_arrays(cid, tmp_path / "x.safetensors")
            assert not (tmp_path / "x.safetensors").exists()
        assert_problem(get(served, f"/v1/circuits/{cid}", arrays="inline"), 409, "sha256")
    finally:
        side.write_bytes(good)
    assert get(served, f"/v1/circuits/{cid}/arrays").content == good


def test_a_circuit_stored_as_one_document_still_reads_everywhere(served, tmp_path):
    """A circuit stored before compact documents: its folder holds one whole ``circuit.json``."""
    cid = served["cids"][1]
    folder = served["folders"][cid]
    whole = inline(served, cid)
    saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    try:
        (folder / "circuit.arrays.safetensors").unlink()
        write_circuit(whole, folder / "circuit.json", compact=False)
        doc = get(served, f"/v1/circuits/{cid}")
        assert "arrays" not in doc.json() or doc.json()["arrays"] is None
        assert Circuit.from_json(doc.content) == whole == inline(served, cid)
        assert_problem(get(served, f"/v1/circuits/{cid}/arrays"), 404, "one document")
        with Client(served["server"].url, KEY_A) as c:
            path = c.download_circuit(cid, tmp_path / "old")
            assert [p.name for p in path.parent.iterdir()] == ["circuit.json"] and read_circuit(path) == whole
        graphml = get(served, f"/v1/circuits/{cid}/exports/graphml")
        assert graphml.status_code == 200 and whole.layers[0].groups[0].id in graphml.text
        assert get(served, f"/v1/circuits/{cid}/report").status_code == 200
        # a correction of an old document keeps it one document
        gid = whole.layers[0].groups[0].id
        r = httpx.put(f"{served['server'].url}/v1/circuits/{cid}/groups/{gid}/label", headers=A, json={"label": "old"})
        assert r.status_code == 200, r.text
        assert not (folder / "circuit.arrays.safetensors").exists()
        assert inline(served, cid).group(gid)[1].correction.text == "old"
    finally:
        for p in folder.iterdir():
            if p.is_file():
                p.unlink()
        for name, data in saved.items():
            (folder / name).write_bytes(data)


def test_exports_and_corrections_of_a_compact_circuit(served):
    cid = served["cids"][0]
    folder = served["folders"][cid]
    side = (folder / "circuit.arrays.safetensors").read_bytes()
    before = inline(served, cid)
    gid = before.layers[0].groups[0].id
    r = httpx.put(f"{served['server'].url}/v1/circuits/{cid}/groups/{gid}/label", headers=A, json={"label": "wheel"})
    assert r.status_code == 200, r.text
    # the document changed, its arrays did not: the same sidecar, still named with its hash
    assert (folder / "circuit.arrays.safetensors").read_bytes() == side
    after = inline(served, cid)
    assert after.group(gid)[1].correction.text == "wheel"
    assert msgspec.structs.replace(after, layers=[]) == msgspec.structs.replace(before, layers=[])
    assert [c.patches for layer in after.layers for n in layer.neurons for c in n.concepts] == [
        c.patches for layer in before.layers for n in layer.neurons for c in n.concepts]
    for fmt in ("graphml", "labelstudio", "datumaro"):
        r = get(served, f"/v1/circuits/{cid}/exports/{fmt}")
        assert r.status_code == 200, (fmt, r.text[:300])
    assert "wheel" in get(served, f"/v1/circuits/{cid}/exports/graphml").text
    report = get(served, f"/v1/circuits/{cid}/report")  # the viewer
    assert report.status_code == 200 and "wheel" in report.text
    atlas = get(served, "/v1/atlas", circuits=",".join(served["cids"]))
    assert atlas.status_code == 200, atlas.text[:300]
    assert json.loads(atlas.content)["source"]["circuits"] == 2
