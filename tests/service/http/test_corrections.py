"""A person's label for a group, through the real server on loopback: ``PUT .../groups/{id}/label``,
the Label Studio webhook and the Python client store it with provenance; every reader sees it (the
document, the summary, the exports, the Label Studio backend); a relabel keeps it; keys stay apart."""

from __future__ import annotations

import httpx
import pytest

from neurflow.client.api import ApiError, Client
from neurflow.core.circuit import Circuit
from neurflow.service.storage.catalog import hash_key, owner_of
from tests.exports.labelstudio_service import start_labeled_service
from tests.service.conftest import assets  # noqa: F401 - the service tests' model + dataset fixture
from tests.service.helpers import KEY_A, KEY_B, assert_problem, labeling_section, wait_for

A = {"X-API-Key": KEY_A}


@pytest.fixture(scope="module")
def service(tmp_path_factory, assets):  # noqa: F811 - the imported fixture
    svc = start_labeled_service(tmp_path_factory.mktemp("corrections") / "data", assets)
    yield svc
    svc.server.stop()


def _document(url: str, cid: str) -> Circuit:
    return Circuit.from_json(httpx.get(f"{url}/v1/circuits/{cid}", params={"arrays": "inline"}, headers=A,
                                       timeout=30).content)


def _summary_group(url: str, cid: str, gid: str) -> dict:
    summary = httpx.get(f"{url}/v1/circuits/{cid}/info", headers=A, timeout=30).json()["summary"]
    return next(g for layer in summary["layers"] for g in layer["groups"] if g["id"] == gid)


def test_put_label_stores_a_correction_that_every_reader_sees(service):
    url, cid = service.server.url, service.circuit_id
    groups = [g for _, _, g in _document(url, cid).iter_groups()]
    target, other = groups[0], groups[1]
    automatic = target.labels[0].text
    # the tiny CLIP has random weights, so its labels may well be uncertain: Label Studio is then
    # offered the group's two candidates, else its one label
    status = _summary_group(url, cid, target.id)["status"]
    assert status == target.status and status in ("labeled", "uncertain")
    offered = [automatic] if status == "labeled" else [label.text for label in target.candidates]
    assert len(offered) == (1 if status == "labeled" else 2)
    # the Label Studio backend caches the circuit: ask it once before the correction
    task = {"id": 1, "data": {"circuit_id": cid, "group_id": target.id}}
    before = httpx.post(f"{url}/ml/labelstudio/predict", headers=A, json={"tasks": [task]}, timeout=30).json()
    assert before["results"][0]["result"][0]["value"]["choices"] == offered

    r = httpx.put(f"{url}/v1/circuits/{cid}/groups/{target.id}/label", headers=A, json={"label": " Red  wheel "},
                  timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "Red wheel" and body["status"] == "corrected" and body["group_id"] == target.id
    stored = body["correction"]
    assert stored["by"] == "human" and stored["via"] == "api" and stored["previous"] == automatic
    assert stored["key"] == owner_of(hash_key(KEY_A)) and KEY_A not in r.text  # the key's id, never the key

    _, group = _document(url, cid).group(target.id)
    assert group.status == "corrected" and group.labels[0].text == "Red wheel" and group.correction.at == stored["at"]
    assert _document(url, cid).group(other.id)[1].correction is None
    summary = _summary_group(url, cid, target.id)
    assert summary["label"] == "Red wheel" and summary["status"] == "corrected"
    assert summary["corrected"]["key"] == stored["key"] and summary["corrected"]["previous"] == automatic
    after = httpx.post(f"{url}/ml/labelstudio/predict", headers=A, json={"tasks": [task]}, timeout=30).json()
    assert after["results"][0]["result"][0]["value"]["choices"] == ["Red wheel"]  # the cache was not stale
    exported = httpx.get(f"{url}/v1/circuits/{cid}/exports/graphml", headers=A, timeout=60).text
    assert "Red wheel" in exported and "corrected" in exported


def test_bad_corrections_are_refused_clearly(service):
    url, cid = service.server.url, service.circuit_id
    gid = next(_document(url, cid).iter_groups())[2].id
    put = f"{url}/v1/circuits/{cid}/groups/{gid}/label"
    assert_problem(httpx.put(put, headers=A, json={"label": "  "}, timeout=10), 422, "cannot be empty")
    assert_problem(httpx.put(put, headers=A, json={"label": "x" * 300}, timeout=10), 422, "at most 200")
    assert_problem(httpx.put(put, headers=A, json={"text": "wheel"}, timeout=10), 400)
    assert_problem(httpx.put(put, headers=A, json={"label": 5}, timeout=10), 400)
    assert_problem(httpx.put(f"{url}/v1/circuits/{cid}/groups/l9g9/label", headers=A, json={"label": "x"},
                             timeout=10), 404, "no group 'l9g9'")
    assert_problem(httpx.put(put, json={"label": "wheel"}, timeout=10), 401)
    # another key cannot see, let alone correct, this circuit
    assert_problem(httpx.put(put, headers={"X-API-Key": KEY_B}, json={"label": "wheel"}, timeout=10), 404)
    assert _document(url, cid).group(gid)[1].labels[0].text != "wheel"


def test_python_client_and_relabel_keep_the_correction(service):
    url, cid = service.server.url, service.circuit_id
    gid = [g for _, _, g in _document(url, cid).iter_groups()][-1].id
    with Client(url, KEY_A) as client:
        made = client.correct_label(cid, gid, "hubcap")
        assert made["label"] == "hubcap" and made["correction"]["via"] == "api"
        with pytest.raises(ApiError) as refused:
            client.correct_label(cid, gid, "")
        assert refused.value.status == 422
        job = client.follow(client.relabel(cid, labeling_section(("tyre", "hubcap", "spoke", "sky")))["id"])
    assert job["state"] == "succeeded", job
    new_id = job["result"]["circuits"][0]["id"]
    relabeled = _document(url, new_id)
    assert relabeled.labeling.settings.vocabulary[:4] == ["tyre", "hubcap", "spoke", "sky"]
    _, group = relabeled.group(gid)
    assert group.status == "corrected" and group.labels[0].text == "hubcap" and group.correction.text == "hubcap"
    assert group.correction.previous in relabeled.labeling.settings.vocabulary  # the new automatic label it overrules
    assert [lab.source for lab in group.labels][:3] == ["human", "clip", "clip"]
    assert _summary_group(url, new_id, gid)["status"] == "corrected"
    # every correction of the parent survived, the earlier one through the API included, and each was
    # evidence: its concept joined the vocabulary with an image-side prototype
    parent = {g.id: g.correction.text for _, _, g in _document(url, cid).iter_groups() if g.correction}
    assert len(parent) >= 2 and {g.id: g.correction.text for _, _, g in relabeled.iter_groups() if g.correction} == parent
    assert relabeled.labeling.prototypes == {text: 1 for text in parent.values()}
    # a corrected concept the vocabulary lacked joined it
    assert relabeled.labeling.settings.vocabulary[4:] == [t for t in parent.values() if t not in ("tyre", "hubcap", "spoke", "sky")]

    # relabeling the parent again: the child, another corrected circuit of the model, is evidence too
    with Client(url, KEY_A) as client:
        again = client.json("POST", f"/v1/circuits/{cid}/labels", json={"labeling": labeling_section()})
        own = client.json("POST", f"/v1/circuits/{cid}/labels", json={"labeling": labeling_section(),
                                                                      "corrections": "circuit"})
        assert [e["circuit"]["id"] for e in again["spec"]["evidence"]] == [new_id] and own["spec"]["evidence"] == []
        finished = client.follow(again["id"])
        client.follow(own["id"])
    assert finished["state"] == "succeeded", finished
    twice = _document(url, finished["result"]["circuits"][0]["id"])
    assert twice.labeling.prototypes == {text: 2 for text in parent.values()}  # its own groups and the child's


def test_label_studio_webhook_stores_annotations_as_corrections(service):
    url, cid = service.server.url, service.circuit_id
    gid = next(_document(url, cid).iter_groups())[2].id  # corrected through the API before: the webhook overrides

    def event(choices, data=None, action="ANNOTATION_CREATED", **annotation):
        result = [{"from_name": "concept", "to_name": "image", "type": "choices", "value": {"choices": choices}},
                  {"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": ["x"]}}]
        return {"action": action, "project": {"id": 1},
                "task": {"id": 7, "data": data or {"circuit_id": cid, "group_id": gid, "kind": "group"}},
                "annotation": {"id": 3, "result": result, "completed_by": 12, **annotation}}

    hook = f"{url}/ml/labelstudio/webhook"
    r = httpx.post(hook, auth=("ls", KEY_A), json=event(["spoke"]), timeout=30)
    assert r.status_code == 200 and r.json() == {"stored": [{"circuit_id": cid, "group_id": gid, "label": "spoke"}],
                                                 "skipped": []}
    _, group = _document(url, cid).group(gid)
    assert group.status == "corrected" and group.labels[0].text == "spoke"
    assert group.correction.via == "labelstudio" and group.correction.key == "labelstudio-user:12"

    skipped = {
        "two choices": event(["spoke", "sky"]),
        "cancelled": event(["sky"], was_cancelled=True),
        "image task": event(["sky"], data={"circuit_id": cid, "image_index": 0}),
        "unknown group": event(["sky"], data={"circuit_id": cid, "group_id": "l9g9"}),
        "other action": event(["sky"], action="PROJECT_UPDATED"),
    }
    for what, body in skipped.items():
        r = httpx.post(hook, auth=("ls", KEY_A), json=body, timeout=30)
        assert r.status_code == 200 and r.json()["stored"] == [] and len(r.json()["skipped"]) == 1, what
    # another key's webhook cannot reach this circuit
    r = httpx.post(hook, auth=("ls", KEY_B), json=event(["sky"]), timeout=30)
    assert r.json()["stored"] == [] and "no circuit" in r.json()["skipped"][0]["why"]
    assert_problem(httpx.post(hook, auth=("ls", KEY_A), json={"tasks": []}, timeout=30), 400, "action")
    assert _document(url, cid).group(gid)[1].labels[0].text == "spoke"  # none of them changed it
