"""Abstention and corrections travel into every export: an uncertain group carries its status and
both candidates (Label Studio predicts both as choices), a corrected group carries the person's label."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from neurflow.core.circuit import Label
from neurflow.core.corrections import correct_group
from neurflow.exports import ExportSource, run_export
from neurflow.exports.labelstudio import interface_for


@pytest.fixture(scope="module")
def reviewed(labeled):
    """The labeled fixture with its first group uncertain between its two best labels and its second
    corrected by a person."""
    circuit = copy.deepcopy(labeled.circuit)
    groups = [g for _, _, g in circuit.iter_groups()]
    unsure, fixed = groups[0], groups[1]
    unsure.status = "uncertain"
    unsure.candidates = [Label(lab.text, lab.score, lab.source) for lab in unsure.labels[:2]]
    correct_group(circuit, fixed.id, "brand new concept", key="k-abc", via="api")
    return ExportSource(circuit=circuit, images_root=labeled.images), unsure, fixed


def test_cvat_and_datumaro_carry_status_and_candidates(reviewed):
    source, unsure, fixed = reviewed
    pair = f"{unsure.labels[0].text} | {unsure.labels[1].text}"
    root = ET.fromstring(run_export("cvat", source, {}).files["annotations.xml"])
    declared = {a.findtext("name") for a in root.iter("attribute") if a.find("name") is not None}
    assert {"status", "candidates"} <= declared
    for kind in ("tag", "box"):
        seen = {}
        for el in root.iter(kind):
            attrs = {a.get("name"): a.text for a in el.findall("attribute")}
            seen[attrs["group"]] = (el.get("label"), attrs["status"], attrs.get("candidates"))
        assert seen[unsure.id] == (unsure.labels[0].text, "uncertain", pair)
        assert seen[fixed.id] == ("brand new concept", "corrected", None)
        assert {s for gid, (_, s, _) in seen.items() if gid not in (unsure.id, fixed.id)} == {"labeled"}

    doc = json.loads(run_export("datumaro", source, {}).files["annotations/default.json"])
    names = [c["name"] for c in doc["categories"]["label"]["labels"]]
    assert "brand new concept" in names
    anns = [a for item in doc["items"] for a in item["annotations"]]
    by_group = {}
    for a in anns:
        by_group.setdefault(a["attributes"]["group"], set()).add(
            (names[a["label_id"]], a["attributes"]["status"], a["attributes"].get("candidates")))
    assert by_group[unsure.id] == {(unsure.labels[0].text, "uncertain", pair)}
    assert by_group[fixed.id] == {("brand new concept", "corrected", None)}


def test_fiftyone_and_graphml_carry_status_candidates_and_correction(reviewed, tmp_path):
    source, unsure, fixed = reviewed
    samples = json.loads(run_export("fiftyone", source, {}).files["neurflow.json"])["samples"]
    first = {s["group"]: s for s in samples.values()}
    assert first[unsure.id]["status"] == "uncertain"
    assert first[unsure.id]["candidates"] == [lab.text for lab in unsure.labels[:2]]
    assert first[fixed.id]["status"] == "corrected" and first[fixed.id]["label"] == "brand new concept"
    assert first[fixed.id]["correction"]["key"] == "k-abc" and first[fixed.id]["correction"]["by"] == "human"

    (tmp_path / "c.graphml").write_bytes(run_export("graphml", source, {}).document)
    graph = nx.read_graphml(tmp_path / "c.graphml")
    assert graph.nodes[unsure.id]["status"] == "uncertain"
    assert graph.nodes[unsure.id]["candidates"] == "; ".join(lab.text for lab in unsure.labels[:2])
    assert graph.nodes[fixed.id]["status"] == "corrected" and graph.nodes[fixed.id]["label"] == "brand new concept"
    assert graph.nodes[fixed.id]["candidates"] == ""


def test_label_studio_offers_both_candidates(reviewed):
    source, unsure, fixed = reviewed
    exported = json.loads(run_export("labelstudio", source, {"regions": "no"}).document)
    config, tasks = exported["label_config"], {t["data"]["group_id"]: t for t in exported["tasks"]}
    choices = [c.get("value") for c in ET.fromstring(config).find("Choices")]
    assert "brand new concept" in choices
    both = [lab.text for lab in unsure.labels[:2]]

    task = tasks[unsure.id]
    assert task["data"]["status"] == "uncertain" and task["data"]["candidates"] == both
    assert f"{both[0]} or {both[1]}?" in task["data"]["info"]
    (pred,) = task["predictions"]
    (concept,) = [r for r in pred["result"] if r["from_name"] == "concept"]
    assert concept["value"]["choices"] == both
    assert interface_for(config).validate_prediction(pred, return_errors=True) == []  # Label Studio accepts it

    fixed_task = tasks[fixed.id]
    assert fixed_task["data"]["status"] == "corrected" and fixed_task["data"]["candidates"] == []
    (concept,) = [r for r in fixed_task["predictions"][0]["result"] if r["from_name"] == "concept"]
    assert concept["value"]["choices"] == ["brand new concept"]
