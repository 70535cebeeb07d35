"""A real Label Studio (PyPI ``label-studio==1.23.2``) on loopback: our export imports with its
predictions intact, and our service works as its ML backend.

Label Studio is installed and started by ``tests/exports/labelstudio_process.py``, in the background
from the start of the session. The test fails, rather than skips, when Label Studio cannot be
installed or started; set ``NEURFLOW_SKIP_LABELSTUDIO=1`` to leave it out on purpose.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.exports.labelstudio_process import ENV_DIR, SKIP_ENV, LabelStudioUnavailable, Starter, wait_for_server
from tests.exports.labelstudio_service import start_labeled_service
from tests.service.conftest import assets  # noqa: F401 - the service tests' model + dataset fixture
from tests.service.helpers import KEY_A

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    announced = os.environ.get(ENV_DIR)
    try:
        if announced:  # started in the background when the session began (tests/conftest.py)
            server = wait_for_server(Path(announced))
            starter = None
        else:
            starter = Starter(tmp_path_factory.mktemp("label-studio"))
            starter.run()
            server = wait_for_server(starter.folder, timeout=1)
    except LabelStudioUnavailable as exc:
        pytest.fail(str(exc))
    print(f"\nlabel studio: install {server.seconds_to_install:.0f} s, start {server.seconds_to_start:.0f} s")
    yield server
    if starter is not None:
        starter.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, assets):  # noqa: F811 - the imported fixture
    svc = start_labeled_service(tmp_path_factory.mktemp("ls-live") / "data", assets)
    yield svc
    svc.server.stop()


def _key(data: dict) -> tuple:
    """What identifies one of our tasks: the group, or the source image."""
    return (data["circuit_id"], data.get("group_id"), data.get("image_index"))


def _stored(ls, project_id: int) -> dict[tuple, list]:
    tasks = {t.id: t.data for t in ls.tasks.list(project=project_id, fields="all")}
    found: dict[tuple, list] = {}
    for pred in ls.predictions.list(project=project_id):
        found.setdefault(_key(tasks[pred.task]), []).append(pred)
    return found


def _same_result(stored: list, ours: list) -> None:
    assert len(stored) == len(ours)
    for got, want in zip(sorted(stored, key=lambda r: (r["from_name"], r.get("id", ""))),
                         sorted(ours, key=lambda r: (r["from_name"], r.get("id", "")))):
        assert got["from_name"] == want["from_name"] and got["to_name"] == want["to_name"]
        assert got["type"] == want["type"]
        for field, value in want["value"].items():
            if isinstance(value, float):
                assert got["value"][field] == pytest.approx(value, abs=1e-3)
            else:
                assert got["value"][field] == value


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, f"timed out after {timeout} s waiting for {what}"
            return value
        time.sleep(1.0)


def test_import_and_ml_backend_round_trip(label_studio, service):
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    doc = httpx.get(f"{service.server.url}/v1/circuits/{service.circuit_id}/exports/labelstudio",
                    headers={"X-API-Key": service.key}, timeout=60).json()
    ours = {_key(t["data"]): t["predictions"][0] for t in doc["tasks"] if t.get("predictions")}
    assert any(k[1] for k in ours) and any(k[2] is not None for k in ours)  # group tasks and image tasks

    # 1. the export imports with its predictions
    imported = ls.projects.create(title="NeurFlow import", label_config=doc["label_config"])
    ls.projects.import_tasks(id=imported.id, request=doc["tasks"])
    stored = _wait_for(lambda: _stored(ls, imported.id), 60, "the imported predictions")
    assert set(stored) == set(ours)
    for key, preds in stored.items():
        (pred,) = preds
        assert pred.model_version == ours[key]["model_version"] == doc["model_version"]
        assert pred.score == pytest.approx(ours[key]["score"])
        _same_result(pred.result, ours[key]["result"])
    concept = ls.projects.get(id=imported.id).get_label_interface().get_control("concept")
    assert set(concept.labels) >= {r["value"]["choices"][0] for p in ours.values() for r in p["result"]
                                   if r["from_name"] == "concept"}

    # 2. the same tasks without predictions, filled in by our service as the project's ML backend
    project = ls.projects.create(title="NeurFlow ML backend", label_config=doc["label_config"])
    bare = [{"data": t["data"]} for t in doc["tasks"]]
    ls.projects.import_tasks(id=project.id, request=bare)
    _wait_for(lambda: len(list(ls.tasks.list(project=project.id))) == len(bare), 60, "the imported tasks")
    assert _stored(ls, project.id) == {}
    backend = ls.ml.create(url=f"{service.server.url}/ml/labelstudio", project=project.id, title="NeurFlow",
                           auth_method="BASIC_AUTH", basic_auth_user="label-studio", basic_auth_pass=KEY_A)
    assert backend.state == "CO", backend  # connected: /health and /setup answered with the key
    assert backend.model_version == "neurflow-0.1.0"
    ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                      selected_items={"all": True, "excluded": []})
    stored = _wait_for(lambda: (s := _stored(ls, project.id)) and len(s) == len(bare) and s, 120,
                       "predictions from the NeurFlow ML backend")
    assert set(stored) == set(ours)
    for key, preds in stored.items():
        (pred,) = preds
        assert pred.model_version == doc["model_version"]
        assert pred.score == pytest.approx(ours[key]["score"])
        _same_result(pred.result, ours[key]["result"])

    # a wrong key is refused, and Label Studio says so
    from label_studio_sdk.core.api_error import ApiError

    with pytest.raises(ApiError) as refused:
        ls.ml.create(url=f"{service.server.url}/ml/labelstudio", project=project.id, title="wrong key",
                     auth_method="BASIC_AUTH", basic_auth_user="label-studio", basic_auth_pass="not-a-key")
    assert refused.value.status_code == 400 and "authentication parameters" in str(refused.value.body)


def test_an_annotation_in_label_studio_becomes_a_stored_correction(label_studio, service):
    """A project webhook (with the key in its headers) sends each submitted annotation to the service:
    the annotator's concept choice is stored as the group's label with Label Studio provenance."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    headers = {"X-API-Key": service.key}
    base = f"{service.server.url}/v1/circuits/{service.circuit_id}"
    doc = httpx.get(f"{base}/exports/labelstudio", params={"regions": "false"}, headers=headers, timeout=60).json()
    project = ls.projects.create(title="NeurFlow corrections", label_config=doc["label_config"])
    ls.webhooks.create(url=f"{service.server.url}/ml/labelstudio/webhook", project=project.id, send_payload=True,
                       send_for_all_actions=False, headers=headers, actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"])
    ls.projects.import_tasks(id=project.id, request=[{"data": t["data"]} for t in doc["tasks"]])
    tasks = _wait_for(lambda: list(ls.tasks.list(project=project.id, fields="all")), 60, "the imported tasks")
    task = tasks[0]
    gid = task.data["group_id"]
    choices = [c.get("value") for c in ET.fromstring(doc["label_config"]).find("Choices")]
    automatic = task.data["labels"][0]
    chosen = next(c for c in choices if c != automatic)
    ls.annotations.create(id=task.id, result=[{"from_name": "concept", "to_name": "image", "type": "choices",
                                               "value": {"choices": [chosen]}}])

    def stored():
        group = next(g for layer in httpx.get(base, headers=headers, timeout=30).json()["layers"]
                     for g in layer["groups"] if g["id"] == gid)
        return group if group["correction"] else None

    group = _wait_for(stored, 60, "the correction sent by Label Studio's webhook")
    assert group["status"] == "corrected" and group["labels"][0] == {"text": chosen, "score": 1.0, "source": "human"}
    assert group["correction"]["via"] == "labelstudio" and group["correction"]["previous"] == automatic
    assert group["correction"]["key"].startswith("labelstudio-user:") and service.key not in str(group["correction"])
