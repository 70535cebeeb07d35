"""``/v1/atlas`` on a real server on loopback: the atlas of a job's circuits, search in it, the atlas page,
and every bad input as problem+json (unknown job, job without circuits, circuits of different models)."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from neurflow.atlas import Atlas, AtlasInput, build_atlas, search
from neurflow.client.api import Client
from neurflow.core.circuit import Circuit

from ..helpers import ENGINE, KEY_A, KEY_B, LiveServer, assert_problem, job_spec, labeling_section, write_tiny_clip

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}
#: three layers, so that the circuits hold groups below their top layer (what a diff compares)
#: from the classifier down, so that an ablation can read the class's logit (the diff's reliance)
THREE_LAYERS = {**ENGINE, "layers": ["fc", "layer4", "layer3"]}


@pytest.fixture(scope="session")
def atlas_service(assets, tmp_path_factory):
    """A server with a finished, CLIP-labeled job for three classes (a tiny random CLIP: the labels mean
    nothing, but they are real labels to search), a one-class job of another model, and a debug job."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    data = tmp_path_factory.mktemp("atlas-svc")
    write_tiny_clip(data / "assets")
    server = LiveServer(data).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            model = c.upload_model(assets["weights"], assets["descriptor"])
            dataset = c.upload_dataset(assets["images"])
            final = c.follow(c.submit(job_spec(model["id"], dataset["id"], target=[0, 1, 2], engine=THREE_LAYERS,
                                                  labeling=labeling_section()))["id"])
            assert final["state"] == "succeeded", final
            torch.manual_seed(1)
            other_weights = tmp_path_factory.mktemp("other") / "other.safetensors"
            save_file(torchvision.models.resnet18(num_classes=3).state_dict(), str(other_weights))
            other = c.upload_model(other_weights, assets["descriptor"])
            lone = c.follow(c.submit(job_spec(other["id"], dataset["id"], target=0, engine=THREE_LAYERS))["id"])
            assert lone["state"] == "succeeded", lone
            circuits = [ref["id"] for ref in final["result"]["circuits"]]
            docs = {cid: c.request("GET", f"/v1/circuits/{cid}", params={"arrays": "inline"}).content for cid in circuits}
            c.debug(circuits[0], assets["image"])
            debug_job = next(j for j in c.json("GET", "/v1/jobs")["jobs"] if j["kind"] == "debug")
        yield {"server": server, "job": final["id"], "circuits": circuits, "docs": docs,
               "other_circuit": lone["result"]["circuits"][0]["id"], "debug_job": debug_job["id"],
               "weights": {"first": other_weights, "second": assets["weights"]}, "images": assets["images"]}
    finally:
        server.stop()


def get(svc, path: str, headers=A, **params) -> httpx.Response:
    return httpx.get(svc["server"].url + path, params=params, headers=headers, timeout=120)


def test_atlas_of_a_job(atlas_service):
    svc = atlas_service
    r = get(svc, "/v1/atlas", job=svc["job"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    atlas = Atlas.from_json(r.content)
    assert atlas.source.job == svc["job"] and atlas.source.circuits == 3
    assert [(c.class_index, c.circuit_id) for c in atlas.classes] == list(zip([0, 1, 2], svc["circuits"]))
    # the same document as building it here from the circuits the API serves
    local = build_atlas([AtlasInput(Circuit.from_json(svc["docs"][cid]), cid) for cid in svc["circuits"]],
                        job=svc["job"])
    assert atlas == local
    # settings travel: a looser threshold finds at least as many shared concepts
    loose = Atlas.from_json(get(svc, "/v1/atlas", job=svc["job"], jaccard=0.2, min_classes=3).content)
    assert loose.settings.jaccard == 0.2 and loose.settings.min_classes == 3
    assert all(len(c.classes) >= 3 for c in loose.concepts())
    # chosen circuits instead of a job: two of the three
    pair = Atlas.from_json(get(svc, "/v1/atlas", circuits=",".join(svc["circuits"][:2])).content)
    assert [c.class_index for c in pair.classes] == [0, 1] and pair.source.job is None


def test_search_in_a_jobs_atlas(atlas_service):
    svc = atlas_service
    atlas = Atlas.from_json(get(svc, "/v1/atlas", job=svc["job"]).content)
    assert atlas.source.labeled == 3 and atlas.source.clip is not None
    label = next(g.labels[0] for c in atlas.classes for g in c.groups if g.labels)
    r = get(svc, "/v1/atlas", job=svc["job"], q=label.upper())
    assert r.status_code == 200
    assert r.json() == msgspec.to_builtins(search(atlas, label))
    hits = r.json()["classes"]
    assert hits and r.json()["mode"] == "text"  # no CLIP in the web process: text search
    assert {h["class_index"] for h in hits} == {c.class_index for c in atlas.classes
                                                if any(label in t for g in c.groups for t in g.labels)}
    assert get(svc, "/v1/atlas", job=svc["job"], q="no label is like this").json()["classes"] == []
    assert_problem(get(svc, "/v1/atlas", job=svc["job"], q="   "), 422, "query is empty")


def test_atlas_page_links_each_class_to_its_viewer(atlas_service):
    svc = atlas_service
    r = get(svc, "/v1/atlas/report", job=svc["job"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '"report_url":"/v1/circuits/{circuit_id}/report"' in r.text
    assert get(svc, f"/v1/circuits/{svc['circuits'][0]}/report").status_code == 200  # where a class leads


def test_atlas_problems(atlas_service):
    svc = atlas_service
    assert_problem(get(svc, "/v1/atlas", job="job-nope"), 404, "no job 'job-nope'")
    assert_problem(get(svc, "/v1/atlas", headers=B, job=svc["job"]), 404)  # another owner's job
    assert get(svc, "/v1/atlas", headers={}, job=svc["job"]).status_code == 401
    body = assert_problem(get(svc, "/v1/atlas", job=svc["debug_job"]), 409, "has no circuits")
    assert "debug" in body["detail"]
    mixed = ",".join([svc["circuits"][0], svc["other_circuit"]])
    assert_problem(get(svc, "/v1/atlas", circuits=mixed), 422, "one model")
    assert_problem(get(svc, "/v1/atlas/report", circuits=mixed), 422, "weights_sha256")
    assert_problem(get(svc, "/v1/atlas"), 400, "either job=")
    assert_problem(get(svc, "/v1/atlas", job=svc["job"], circuits=svc["circuits"][0]), 400, "not both")
    assert_problem(get(svc, "/v1/atlas", circuits="c-nope"), 404)
    assert_problem(get(svc, "/v1/atlas", circuits=" , "), 400, "empty")
    assert_problem(get(svc, "/v1/atlas", job=svc["job"], jaccard=0), 400)
    assert_problem(get(svc, "/v1/atlas", job=svc["job"], min_classes=1), 400)


def post(svc, path: str, body, headers=A) -> httpx.Response:
    return httpx.post(svc["server"].url + path, json=body, headers=headers, timeout=600)


def test_audit_of_a_job_and_verdicts_kept_per_owner(atlas_service):
    from neurflow.atlas.audit import audit_circuits
    from neurflow.core.audit import Audit, Reviews

    svc = atlas_service
    inputs = [AtlasInput(Circuit.from_json(svc["docs"][cid]), cid) for cid in svc["circuits"]]
    body = {"job": svc["job"], "expected": {"0": ["nothing these circuits show"]},
            "settings": {"min_importance": 0.0, "min_confidence": 0.0}}
    r = post(svc, "/v1/audits", body)
    assert r.status_code == 200, r.text
    audit = Audit.from_json(r.content)
    assert [c.circuit_id for c in audit.classes] == svc["circuits"]
    assert "skipped" in audit.warnings[0]  # the web process has no model: no ablation
    # the same document as auditing here, reviews of this owner applied (none yet)
    local = audit_circuits(inputs, expected={0: body["expected"]["0"]}, settings=audit.settings)
    assert [f.key for f in audit.findings()] == [f.key for f in local.findings()]
    review = {"key": "c0:layer4:abc", "class_index": 0, "layer": "layer4", "neurons": [1, 2], "verdict": "dismissed",
              "note": "known"}
    assert post(svc, "/v1/audits/reviews", review).status_code == 200
    mine = Reviews.from_json(get(svc, "/v1/audits/reviews").content)
    assert [e.key for e in mine.entries] == ["c0:layer4:abc"] and mine.entries[0].review.note == "known"
    assert mine.entries[0].review.by.startswith("api:")
    assert Reviews.from_json(get(svc, "/v1/audits/reviews", headers=B).content).entries == []  # per owner
    # a second verdict on the same key replaces the first
    assert post(svc, "/v1/audits/reviews", review | {"verdict": "confirmed"}).status_code == 200
    assert [e.review.verdict for e in Reviews.from_json(get(svc, "/v1/audits/reviews").content).entries] == ["confirmed"]
    # bad input: problem documents
    assert_problem(post(svc, "/v1/audits", {"job": svc["job"], "settings": {"controls": 1}}), 422, "controls")
    assert_problem(post(svc, "/v1/audits", {}), 400, "either job")
    assert_problem(post(svc, "/v1/audits", {"job": svc["job"], "expected": {"zero": []}}), 422, "class indices")
    assert_problem(post(svc, "/v1/audits/reviews", review | {"verdict": "maybe"}), 400)


def test_diff_of_two_checkpoints_circuits_and_its_problems(atlas_service):
    from neurflow.atlas.diff import diff_circuits
    from neurflow.core.diff import CircuitDiff

    svc = atlas_service
    other = httpx.get(svc["server"].url + f"/v1/circuits/{svc['other_circuit']}", params={"arrays": "inline"},
                      headers=A, timeout=60).content
    first = svc["circuits"][0]  # class 0 of the three-class job; the other model's job explained class 0 too
    r = post(svc, "/v1/diffs", {"before": {"circuits": [svc["other_circuit"]]}, "after": {"circuits": [first]}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    diff = CircuitDiff.from_json(r.content)
    # the document neurflow diff writes from the same circuits
    assert diff == diff_circuits([Circuit.from_json(other)], [Circuit.from_json(svc["docs"][first])])
    assert diff.same_architecture and [c.class_index for c in diff.classes] == [0] and diff.classes[0].changes
    # a job against itself: every group kept, nothing gained
    same = CircuitDiff.from_json(post(svc, "/v1/diffs", {"before": {"job": svc["job"]}, "after": {"job": svc["job"]},
                                                         "min_delta": 0.2}).content)
    assert [c.class_index for c in same.classes] == [0, 1, 2] and same.min_delta == 0.2
    assert {ch.change for c in same.classes for ch in c.changes} == {"kept"}
    assert all(ch.delta == 0 for c in same.classes for ch in c.changes)
    # bad input: problem documents
    one = {"circuits": [first]}
    assert_problem(post(svc, "/v1/diffs", {"before": {}, "after": one}), 400, "before: give either job")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": {"job": svc["job"], "circuits": [first]}}), 400,
                   "after: give either job")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": {"job": svc["job"]}}), 422, "same classes")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": one, "min_similarity": 0}), 422, "min_similarity")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": one, "min_delta": 2}), 422, "min_delta")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": {"circuits": ["c-nope"]}}), 404)
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": one}, headers=B), 404)  # another owner's circuit
    assert_problem(post(svc, "/v1/diffs", {"before": one}), 400)
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": one, "max_images": 2}), 422, "max_images")
    assert_problem(post(svc, "/v1/diffs", {"before": one, "after": one, "related": {"0": [1]}}), 422,
                   "related is for the off-class reliance")


def test_diff_with_the_off_class_reliance_runs_both_networks_in_a_worker(atlas_service):
    """The other model's class-0 circuit against the first model's: both networks on the job's images."""
    from neurflow.atlas.diff import diff_circuits
    from neurflow.atlas.offclass import folder_labels
    from neurflow.core.diff import CircuitDiff
    from neurflow.core.images import ImageSet, Preprocess
    from neurflow.core.model_intake import load_model

    svc = atlas_service
    first = svc["circuits"][0]
    body = {"before": {"circuits": [svc["other_circuit"]]}, "after": {"circuits": [first]}, "reliance": True,
            "max_images": 8}
    r = post(svc, "/v1/diffs", body)
    assert r.status_code == 200 and r.headers.get("X-Job-Id"), r.text
    diff = CircuitDiff.from_json(r.content)
    assert diff.order == "off_class_reliance" and diff.max_images == 8 and not diff.warnings
    changes = diff.classes[0].changes
    # 12 images of green and blue, the classes other than red (class 0), 8 of them drawn
    assert changes and all(c.reliance is not None and c.reliance.images == 8 for c in changes)
    # what neurflow.atlas.diff computes here from the same circuits, networks and images
    after = Circuit.from_json(svc["docs"][first])
    other = httpx.get(svc["server"].url + f"/v1/circuits/{svc['other_circuit']}", params={"arrays": "inline"},
                      headers=A, timeout=60).content
    images = ImageSet.from_folder(svc["images"], Preprocess(after.model.input_size, after.model.mean, after.model.std))
    models = tuple(load_model("resnet18", svc["weights"][side], 3) for side in ("first", "second"))
    local = diff_circuits([Circuit.from_json(other)], [after], models=models, images=images, max_images=8,
                          labels=folder_labels(images, ["red", "green", "blue"])).classes[0].changes
    assert [(c.layer, (c.after or c.before).group) for c in changes] == [(c.layer, (c.after or c.before).group)
                                                                          for c in local]
    assert [c.reliance.increase for c in changes] == pytest.approx([c.reliance.increase for c in local], abs=1e-3)
    # problems: said before any job runs, or by the job that could not measure (a 422 naming it)
    both = {"circuits": [svc["circuits"][0], svc["circuits"][1]]}
    mixed = {"circuits": [svc["other_circuit"], svc["circuits"][1]]}
    assert_problem(post(svc, "/v1/diffs", {"before": both, "after": mixed, "reliance": True}), 422,
                   "after: the circuits are of several models")
    body = assert_problem(post(svc, "/v1/diffs", body | {"related": {"0": [1, 2]}}), 422, "no off-class images")
    assert "diff job" in body["detail"]
