"""neurflow.circuit/2 types the labeling record; /1 documents written before still load.

``data/circuit-v1-labeled.json`` was written by the code of the commit before /2 (3278458): a planted
model's circuit labeled with a random tiny open_clip bundle, with a captioner configured at a port
where nothing listens, so the record holds hold-out patches, the captioner and caption errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from neurflow.core.circuit import SCHEMA_VERSION, Circuit, Labeling, labeling_from_v1

DATA = Path(__file__).parent / "data"
SCHEMAS = Path(__file__).resolve().parents[2] / "core" / "schemas"


def test_v1_labeled_document_loads_as_v2():
    raw = json.loads((DATA / "circuit-v1-labeled.json").read_text())
    old = raw["labeling"]
    circuit = Circuit.from_json((DATA / "circuit-v1-labeled.json").read_bytes())
    assert raw["schema"] == "neurflow.circuit/1" and circuit.schema == SCHEMA_VERSION == "neurflow.circuit/2"
    rec = circuit.labeling
    assert isinstance(rec, Labeling)
    assert msgspec.to_builtins(rec.settings) == old["config"]
    assert rec.settings.top_k == old["top_k"] and rec.settings.holdout == old["holdout_fraction"]
    assert msgspec.to_builtins(rec.clip) == old["clip"] and msgspec.to_builtins(rec.vocabulary) == old["vocabulary"]
    assert rec.templates == old["templates"] and rec.confidence_method == old["confidence"]
    assert rec.reference_patches == old["reference_size"] and rec.holdout == old["holdout"]
    assert any(rec.holdout.values())
    assert rec.patches_source == old["patches_source"] and rec.seconds == old["seconds"]
    assert msgspec.to_builtins(rec.captioner) == old["captioner"] and rec.caption_errors == old["caption_errors"]
    assert rec.unconverted == {}
    # everything but the record is as written, and the converted document is a valid /2 document
    doc = json.loads(circuit.to_json())
    # groups gain the fields added since (status and the rest, at their defaults); a labeled group
    # written before ``status`` existed reads as labeled
    added = ("status", "candidates", "evidence", "correction")
    for layer in doc["layers"]:
        for group in layer["groups"]:
            assert group["status"] == ("labeled" if group["labels"] else "unlabeled")
            assert group["candidates"] == [] and group["evidence"] is None and group["correction"] is None
    # layers gain the IG record (ig), absent from documents written before it existed
    assert all(layer["ig"] is None for layer in doc["layers"])
    assert doc["model"].pop("normalisation") == "recorded"  # added since, defaulted
    stripped = {k: v for k, v in doc.items() if k not in ("schema", "labeling")}
    stripped["layers"] = [{k: v for k, v in layer.items() if k != "ig"}
                          | {"groups": [{k: v for k, v in g.items() if k not in added} for g in layer["groups"]]}
                          for layer in stripped["layers"]]
    assert stripped == {k: v for k, v in raw.items() if k not in ("schema", "labeling")}
    assert any(g["labels"] for layer in doc["layers"] for g in layer["groups"])
    jsonschema.validate(doc, json.loads((SCHEMAS / "circuit.schema.json").read_text()))
    assert Circuit.from_json(circuit.to_json()) == circuit


def test_v1_keys_without_a_v2_field_are_kept():
    old = json.loads((DATA / "circuit-v1-labeled.json").read_text())["labeling"]
    old["confidence_temperature"] = 0.07  # an early labeler's settings: repeated from config, dropped
    old["config"]["confidence_temperature"] = 0.07
    old["note"] = "hand-added"
    rec = labeling_from_v1(old)
    assert rec.unconverted == {"config.confidence_temperature": 0.07, "note": "hand-added"}
    del old["patches_source"], old["seconds"], old["captioner"], old["caption_errors"]  # added by later labelers
    rec = labeling_from_v1(old)
    assert rec.patches_source is None and rec.captioner is None and rec.caption_errors == {}


def test_v1_record_the_labeler_never_wrote_is_refused_clearly():
    doc = json.loads((DATA / "circuit-v1-labeled.json").read_text())
    doc["labeling"] = {"clip": {"model": "ViT-B-32"}, "top_k": 3}
    with pytest.raises(ValueError, match="labeling record is not one the labeler wrote: Object missing required field"):
        Circuit.from_json(json.dumps(doc))
