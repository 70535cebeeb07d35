"""The Label Studio export (config + tasks with predictions) and the ML backend of the service.

Predictions are checked with Label Studio's own validator (label-studio-sdk); the live round trip
through a real Label Studio is ``tests/exports/test_labelstudio_live.py``.
"""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET

import httpx
import pytest
from litestar.testing import TestClient
from PIL import Image

from neurflow.core.circuit import Circuit, Label
from neurflow.exports import ExportSource, labelstudio, run_export
from neurflow.exports.labelstudio import rectangle
from tests.service.conftest import assets  # noqa: F401 - the service tests' model + dataset fixture
from tests.service.helpers import KEY_A, KEY_B, assert_problem

from .labelstudio_service import start_labeled_service

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL_VERSION = "neurflow-0.1.0+clip-ViT-B-32@laion2b_s34b_b79k+vocab-test-vocab"


def _export(source: ExportSource, **options) -> tuple[str, list[dict]]:
    exported = run_export("labelstudio", source, options)
    assert set(exported.files) == {"label_config.xml", "tasks.json"}
    doc = json.loads(exported.document)
    config = exported.files["label_config.xml"].decode()
    tasks = json.loads(exported.files["tasks.json"])
    assert doc["label_config"] == config and doc["tasks"] == tasks and doc["model_version"] == MODEL_VERSION
    return config, tasks


def _by_kind(tasks: list[dict], kind: str) -> list[dict]:
    return [t for t in tasks if t["data"]["kind"] == kind]


def test_config_and_group_tasks(labeled):
    source = ExportSource.from_files(labeled.circuit_path, labeled.images)
    config, tasks = _export(source)
    root = ET.fromstring(config)
    controls = {el.get("name"): el for el in root if el.get("name")}
    assert {n: controls[n].tag for n in controls} == {"image": "Image", "concept": "Choices", "caption": "TextArea",
                                                      "region": "RectangleLabels"}
    assert all(controls[n].get("toName") == "image" for n in ("concept", "caption", "region"))
    union = list(dict.fromkeys(lab.text for _, _, g in labeled.circuit.iter_groups() for lab in g.labels))
    assert [c.get("value") for c in controls["concept"]] == union
    assert [c.get("value") for c in controls["region"]] == union

    groups = {g.id: (layer.name, g) for _, layer, g in labeled.circuit.iter_groups() if g.exemplars}
    group_tasks = _by_kind(tasks, "group")
    assert sorted(t["data"]["group_id"] for t in group_tasks) == sorted(groups)
    for task in group_tasks:
        layer, group = groups[task["data"]["group_id"]]
        data = task["data"]
        assert data["layer"] == layer and data["class"] == "red things" and data["class_index"] == 0
        assert data["circuit_id"] is None and data["labels"] == [lab.text for lab in group.labels]
        assert data["status"] == "labeled" and data["candidates"] == []
        assert data["image"].startswith("data:image/png;base64,")
        mosaic = Image.open(io.BytesIO(base64.b64decode(data["image"].split(",", 1)[1])))
        assert mosaic.format == "PNG" and mosaic.width > 0
        (pred,) = task["predictions"]
        assert pred["model_version"] == MODEL_VERSION and pred["score"] == group.confidence
        by_name = {r["from_name"]: r for r in pred["result"]}
        assert by_name["concept"]["value"] == {"choices": [group.labels[0].text]}
        if group.caption is not None:
            assert by_name["caption"]["value"] == {"text": [group.caption.text]}
        else:
            assert "caption" not in by_name
    assert any("caption" in {r["from_name"] for r in t["predictions"][0]["result"]} for t in group_tasks)


def test_region_tasks_are_percentages_of_the_source_image(labeled):
    assert rectangle([12, 10, 36, 30], 48, 40) == {"x": 25.0, "y": 25.0, "width": 50.0, "height": 50.0,
                                                   "rotation": 0}
    assert rectangle([-5, 0, 60, 20], 48, 40)["width"] == 100.0  # clipped to the image

    circuit = labeled.circuit
    source = ExportSource.from_files(labeled.circuit_path, labeled.images)
    _, tasks = _export(source)
    image_tasks = {t["data"]["image_index"]: t for t in _by_kind(tasks, "image")}
    used = {ex.image for _, _, g in circuit.iter_groups() for ex in g.exemplars}
    assert set(image_tasks) == used
    _, _, group = next(iter(circuit.iter_groups()))
    ex = group.exemplars[0]
    ref = circuit.images[ex.image]
    task = image_tasks[ex.image]
    assert task["data"]["image_path"] == ref.path and task["data"]["image"].startswith("data:image/png;base64,")
    (pred,) = task["predictions"]
    region = next(r for r in pred["result"] if r["id"] == f"{group.id}-0")
    x0, y0, x1, y1 = ex.box
    assert region["original_width"] == ref.width == 48 and region["original_height"] == ref.height == 40
    assert region["value"]["x"] == pytest.approx(100 * x0 / 48, abs=1e-3)
    assert region["value"]["y"] == pytest.approx(100 * y0 / 40, abs=1e-3)
    assert region["value"]["width"] == pytest.approx(100 * (x1 - x0) / 48, abs=1e-3)
    assert region["value"]["height"] == pytest.approx(100 * (y1 - y0) / 40, abs=1e-3)
    assert region["value"]["rectanglelabels"] == [group.labels[0].text] and region["score"] == group.confidence
    n_boxes = sum(1 for _, _, g in circuit.iter_groups() for e in g.exemplars if e.image == ex.image)
    assert len(pred["result"]) == n_boxes

    _, no_regions = _export(source, regions="no")
    assert _by_kind(no_regions, "image") == [] and len(no_regions) == len(_by_kind(tasks, "group"))


def test_without_pictures_or_labels_the_errors_say_what_to_do(labeled):
    bare = ExportSource(circuit=labeled.circuit)  # neither images nor rendered mosaics
    with pytest.raises(ValueError, match="--images"):
        run_export("labelstudio", bare, {})
    with pytest.raises(ValueError, match="source images"):
        run_export("labelstudio", bare, {"regions": "yes"})
    with pytest.raises(ValueError, match="yes/no"):
        run_export("labelstudio", ExportSource.from_files(labeled.circuit_path, labeled.images), {"regions": "maybe"})
    unlabeled = Circuit.from_json(labeled.circuit_path.read_bytes())
    for _, _, g in unlabeled.iter_groups():
        g.labels = []
    with pytest.raises(ValueError, match="no labels"):
        run_export("labelstudio", ExportSource(circuit=unlabeled, images_root=labeled.images), {})


def test_score_falls_back_to_the_top_label_and_text_is_escaped(labeled):
    circuit = Circuit.from_json(labeled.circuit_path.read_bytes())
    _, _, group = next(iter(circuit.iter_groups()))
    group.confidence = None
    group.labels = [Label(text='5" <tall> & "wide"', score=0.42, source="user")] + group.labels
    config, tasks = _export(ExportSource(circuit=circuit, images_root=labeled.images), regions="no")
    values = [c.get("value") for c in ET.fromstring(config).find("Choices")]
    assert values[0] == '5" <tall> & "wide"'
    task = next(t for t in tasks if t["data"]["group_id"] == group.id)
    assert task["predictions"][0]["score"] == 0.42
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ['5" <tall> & "wide"']


@pytest.mark.parametrize("tamper", ["choice", "from_name"])
def test_every_prediction_is_validated(labeled, monkeypatch, tamper):
    real = labelstudio.group_prediction
    _, _, first = next(iter(labeled.circuit.iter_groups()))

    def tampered(group, version):
        pred = real(group, version)
        if pred is not None and group.id == first.id:
            if tamper == "choice":
                pred["result"][0]["value"]["choices"] = ["not a label of this circuit"]
            else:
                pred["result"][0]["from_name"] = "nope"
        return pred

    monkeypatch.setattr(labelstudio, "group_prediction", tampered)
    with pytest.raises(ValueError, match=f"group {first.id} does not fit the labeling config") as err:
        run_export("labelstudio", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    assert ("not a label of this circuit" if tamper == "choice" else "nope") in str(err.value)


def test_cli_writes_config_and_tasks(labeled, tmp_path, capsys):
    from neurflow.cli import main

    out = tmp_path / "ls"
    assert main(["export", "labelstudio", str(labeled.circuit_path), "--images", str(labeled.images),
                 "--out", str(out), "--option", "regions=no"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["label_config.xml", "tasks.json"]
    tasks = json.loads((out / "tasks.json").read_text())
    assert tasks and all(t["data"]["kind"] == "group" for t in tasks)
    assert ET.fromstring((out / "label_config.xml").read_text()).tag == "View"
    assert "labelstudio: 2 file(s)" in capsys.readouterr().out


def test_ml_backend_without_auth_answers_anyone(tmp_path):
    from neurflow.service.http.app import create_app
    from neurflow.service.settings import Settings

    with TestClient(create_app(Settings(data_dir=str(tmp_path), auth=False))) as client:
        for path in ("/ml/labelstudio", "/ml/labelstudio/health"):
            assert client.get(path).json() == {"status": "UP", "model_class": "NeurFlow"}
        assert client.post("/ml/labelstudio/setup", json={"project": "1.1"}).json() == {"model_version": "neurflow-0.1.0"}
        r = client.post("/ml/labelstudio/predict", json={"tasks": [{"id": 1, "data": {"circuit_id": "c-nope",
                                                                                      "group_id": "l0g0"}},
                                                                   {"id": 2, "data": {"image": "x"}}]})
        assert r.status_code == 200
        assert [res["result"] for res in r.json()["results"]] == [[], []]
        assert_problem(client.post("/ml/labelstudio/predict", json={"tasks": "all"}), 400, "tasks")
        assert client.post("/ml/labelstudio/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200


# -- against a real service with a finished circuit -----------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory, assets):  # noqa: F811 - the imported fixture
    svc = start_labeled_service(tmp_path_factory.mktemp("ls-export") / "data", assets)
    yield svc
    svc.server.stop()


def test_api_export_and_ml_backend(service):
    url, cid = service.server.url, service.circuit_id
    headers = {"X-API-Key": KEY_A}
    r = httpx.get(f"{url}/v1/circuits/{cid}/exports/labelstudio", headers=headers, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert "<Choices name=\"concept\"" in doc["label_config"]
    groups, images = _by_kind(doc["tasks"], "group"), _by_kind(doc["tasks"], "image")
    assert groups and images  # rendered mosaics, and the dataset still exists
    assert all(t["data"]["circuit_id"] == cid for t in doc["tasks"])
    assert doc["model_version"].startswith("neurflow-0.1.0+clip-nf-service-test-clip")
    assert all(t["predictions"][0]["model_version"] == doc["model_version"] for t in groups if t.get("predictions"))
    no_regions = httpx.get(f"{url}/v1/circuits/{cid}/exports/labelstudio", params={"regions": "false"},
                           headers=headers, timeout=60).json()
    assert len(no_regions["tasks"]) == len(groups)
    assert_problem(httpx.get(f"{url}/v1/circuits/{cid}/exports/labelstudio", params={"regions": "maybe"},
                             headers=headers, timeout=60), 422, "yes/no")
    assert_problem(httpx.get(f"{url}/v1/circuits/{cid}/exports/labelstudio", timeout=60), 401)

    ml = f"{url}/ml/labelstudio"
    assert_problem(httpx.get(f"{ml}/health", timeout=10), 401)
    assert_problem(httpx.get(f"{ml}/health", auth=("labelstudio", "wrong-key"), timeout=10), 401)
    assert httpx.get(f"{ml}/health", auth=("labelstudio", KEY_A), timeout=10).json()["status"] == "UP"
    assert httpx.post(f"{ml}/setup", auth=("x", KEY_A), json={"project": "1.1", "schema": doc["label_config"]},
                      timeout=10).json() == {"model_version": "neurflow-0.1.0"}
    asked = [{"id": i, "data": t["data"]} for i, t in enumerate(doc["tasks"])]
    asked.append({"id": 99, "data": {**groups[0]["data"], "group_id": "l9g9"}})  # unknown group
    asked.append({"id": 100, "data": {**groups[0]["data"], "circuit_id": "c-unknown"}})  # unknown circuit
    body = {"tasks": asked, "project": "1.1", "label_config": doc["label_config"], "params": {}}
    r = httpx.post(f"{ml}/predict", auth=("x", KEY_A), json=body, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(asked)
    for task, result in zip(doc["tasks"], results):
        assert result == task["predictions"][0]  # the same cached labels as the export
    assert results[-2]["result"] == [] and results[-1]["result"] == []
    # Bearer works too; another key's owner sees nothing of this circuit
    r = httpx.post(f"{ml}/predict", headers={"Authorization": f"Bearer {KEY_A}"}, json=body, timeout=60)
    assert r.json()["results"][0] == doc["tasks"][0]["predictions"][0]
    other = httpx.post(f"{ml}/predict", auth=("x", KEY_B), json=body, timeout=60).json()["results"]
    assert all(res["result"] == [] for res in other)
    # a project whose config lacks our labels gets empty results rather than predictions it cannot show
    foreign = '<View><Image name="image" value="$image"/><Choices name="concept" toName="image">' \
              '<Choice value="cat"/></Choices></View>'
    r = httpx.post(f"{ml}/predict", auth=("x", KEY_A), json={**body, "label_config": foreign}, timeout=60)
    assert r.json()["results"][0]["result"] == []
    assert httpx.post(f"{ml}/webhook", auth=("x", KEY_A), json={"action": "ANNOTATION_CREATED"},
                      timeout=10).status_code == 200


def test_api_file_exports_answer_documents_or_zips(service):
    """The export route for the file formats: GraphML as its document, CVAT as a zip of its files,
    any format as a zip on ?archive=zip, and clear errors for unknown formats or options."""
    import io
    import zipfile

    import networkx as nx

    url, cid = service.server.url, service.circuit_id
    headers = {"X-API-Key": KEY_A}
    base = f"{url}/v1/circuits/{cid}/exports"
    graph = httpx.get(f"{base}/graphml", headers=headers, timeout=60)
    assert graph.status_code == 200 and graph.headers["content-type"].startswith("application/graphml+xml")
    g = nx.read_graphml(io.BytesIO(graph.content))
    summary = httpx.get(f"{url}/v1/circuits/{cid}/info", headers=headers, timeout=10).json()["summary"]
    assert g.number_of_nodes() == sum(len(layer["groups"]) for layer in summary["layers"])

    cvat = httpx.get(f"{base}/cvat", headers=headers, timeout=60)
    assert cvat.status_code == 200 and cvat.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(cvat.content)).namelist()
    assert "annotations.xml" in names and any(n.startswith("images/patches/") for n in names)

    zipped = httpx.get(f"{base}/labelstudio", params={"archive": "zip"}, headers=headers, timeout=60)
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == ["label_config.xml", "tasks.json"]

    assert_problem(httpx.get(f"{base}/coco", headers=headers, timeout=10), 422, "accepted")
    assert_problem(httpx.get(f"{base}/graphml", params={"colour": "red"}, headers=headers, timeout=10), 422,
                   "unknown option")
    assert_problem(httpx.get(f"{base}/graphml", params={"archive": "tar"}, headers=headers, timeout=10), 422,
                   "archive=zip")
    assert_problem(httpx.get(f"{url}/v1/circuits/c-missing/exports/graphml", headers=headers, timeout=10), 404)
