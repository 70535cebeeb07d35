"""neurflow.circuit/3 types params (the engine's EngineParams, and the fit record); /2 typed the labeling
record; /1 and /2 documents written before still load.

``data/circuit-v1-labeled.json`` was written by the code of the commit before /2 (3278458), and
``data/circuit-v2-labeled.json`` by the code of the commit before /3 (8feb3b0, the fast preset): a
planted model's circuit labeled with a random tiny open_clip bundle, with a captioner configured at a
port where nothing listens, so the record holds hold-out patches, the captioner and caption errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from neurflow.core.circuit import SCHEMA_VERSION, Circuit, FitRecord, Labeling, labeling_from_v1, params_from_v2
from neurflow.core.params import EngineParams, ImageSelection

DATA = Path(__file__).parent / "data"
SCHEMAS = Path(__file__).resolve().parents[2] / "core" / "schemas"


def _params_as_written(circuit: Circuit, raw: dict) -> None:
    """The typed params and fit record hold every key of the old params dict, with its value."""
    old = raw["params"]
    params = msgspec.to_builtins(circuit.params)
    fit = circuit.fit
    for key, value in old.items():
        if key in EngineParams.__struct_fields__:
            assert params[key] == value, key
        elif key in ImageSelection.__struct_fields__:
            assert getattr(fit.selection, key) == value, key
        elif key in ("n_images", "edge_normalisation"):  # derived from the document now
            assert (len(circuit.images) if key == "n_images" else "reference" if circuit.params.reference_compat
                    else "l1") == value
        elif key in FitRecord.__struct_fields__:
            assert getattr(fit, key) == value, key
        else:
            assert fit.unconverted[key] == value, key
    assert fit.n_patches == old["n_patches"] > 0


def test_v1_labeled_document_loads_as_v3():
    raw = json.loads((DATA / "circuit-v1-labeled.json").read_text())
    old = raw["labeling"]
    circuit = Circuit.from_json((DATA / "circuit-v1-labeled.json").read_bytes())
    assert raw["schema"] == "neurflow.circuit/1" and circuit.schema == SCHEMA_VERSION == "neurflow.circuit/3"
    rec = circuit.labeling
    assert isinstance(rec, Labeling)
    settings = msgspec.to_builtins(rec.settings)
    assert settings.pop("extra_clips") == [] and settings["captioner"].pop("vote") is True  # added since, defaulted
    assert settings == old["config"]
    assert rec.settings.top_k == old["top_k"] and rec.settings.holdout == old["holdout_fraction"]
    assert msgspec.to_builtins(rec.clip) == old["clip"] and msgspec.to_builtins(rec.vocabulary) == old["vocabulary"]
    assert rec.templates == old["templates"] and rec.confidence_method == old["confidence"]
    assert rec.reference_patches == old["reference_size"] and rec.holdout == old["holdout"]
    assert any(rec.holdout.values())
    assert rec.patches_source == old["patches_source"] and rec.seconds == old["seconds"]
    assert msgspec.to_builtins(rec.captioner) == old["captioner"] and rec.caption_errors == old["caption_errors"]
    assert rec.unconverted == {}
    _params_as_written(circuit, raw)
    assert circuit.fit.unconverted == {"low_memory": True}  # a parameter of early engines
    # everything but the records is as written, and the converted document is a valid /3 document
    doc = json.loads(circuit.to_json())
    # groups gain the fields added since (status and the rest, at their defaults); a labeled group
    # written before ``status`` existed reads as labeled
    added = ("status", "candidates", "evidence", "correction")
    for layer in doc["layers"]:
        for group in layer["groups"]:
            assert group["status"] == ("labeled" if group["labels"] else "unlabeled")
            assert group["candidates"] == [] and group["evidence"] is None and group["correction"] is None
    assert doc["model"].pop("normalisation") == "recorded"  # added since, defaulted
    assert doc.pop("arrays") is None  # set only in compact documents
    # layers gain the IG record (ig), absent from documents written before it existed
    assert all(layer["ig"] is None for layer in doc["layers"])
    stripped = {k: v for k, v in doc.items() if k not in ("schema", "labeling", "params", "fit")}
    stripped["layers"] = [{k: v for k, v in layer.items() if k != "ig"}
                          | {"groups": [{k: v for k, v in g.items() if k not in added} for g in layer["groups"]]}
                          for layer in stripped["layers"]]
    assert stripped == {k: v for k, v in raw.items() if k not in ("schema", "labeling", "params")}
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


def test_v2_labeled_document_loads_as_v3():
    raw = json.loads((DATA / "circuit-v2-labeled.json").read_text())
    circuit = Circuit.from_json((DATA / "circuit-v2-labeled.json").read_bytes())
    assert raw["schema"] == "neurflow.circuit/2" and circuit.schema == SCHEMA_VERSION
    assert isinstance(circuit.params, EngineParams) and circuit.params.preset == "fast"
    assert circuit.params.channels_last is True and circuit.params.map_cache_mb == 4096
    _params_as_written(circuit, raw)
    assert circuit.fit.unconverted == {} and circuit.fit.selection == ImageSelection(select="all", max_images=8)
    # the labeling record was typed already: it reads as written
    record = msgspec.to_builtins(circuit.labeling)
    assert record["settings"].pop("extra_clips") == []  # added since, defaulted
    assert record["settings"]["captioner"].pop("vote") is True
    assert record.pop("extra_clips", None) in (None, []) and record.pop("prototypes", None) in (None, {})
    assert record == raw["labeling"] and circuit.labeling.caption_errors
    doc = json.loads(circuit.to_json())
    # that labeler wrote "unlabeled" beside labels; such a group reads as labeled
    for layer in raw["layers"]:
        for group in layer["groups"]:
            assert group["status"] == "unlabeled"
            group["status"] = "labeled" if group["labels"] else "unlabeled"
    assert all(layer.pop("ig") is None for layer in doc["layers"])  # added since
    assert doc["model"].pop("normalisation") == "recorded"
    assert doc.pop("arrays") is None  # set only in compact documents
    assert {k: v for k, v in doc.items() if k not in ("schema", "params", "fit", "labeling")} == {
        k: v for k, v in raw.items() if k not in ("schema", "params", "labeling")}  # labeling: compared above
    jsonschema.validate(doc, json.loads((SCHEMAS / "circuit.schema.json").read_text()))
    assert Circuit.from_json(circuit.to_json()) == circuit


def test_v2_params_the_service_and_hand_made_documents_wrote():
    raw = json.loads((DATA / "circuit-v2-labeled.json").read_text())
    names = [layer["name"] for layer in raw["layers"]]
    params, fit = params_from_v2(raw["params"] | {"autocast": "bf16"}, names, len(raw["images"]))  # a GPU worker's
    assert fit.autocast == "bf16" and fit.unconverted == {}
    # a value /3 derives, recorded otherwise than it derives, is kept rather than dropped
    params, fit = params_from_v2(raw["params"] | {"n_images": 99}, names, len(raw["images"]))
    assert fit.unconverted == {"n_images": 99}
    # a circuit made by hand (world circuits) recorded only some parameters: the rest are EngineParams' defaults
    params, fit = params_from_v2({"granularities": [1.0, 0.5, 0.25]}, names, 0)
    assert fit is None and params == EngineParams(layers=names)
    doc = raw | {"params": {"tau": "many"}}
    with pytest.raises(ValueError, match=r"invalid circuit document: the params record is not one the engine wrote: "
                                         r"Expected `int`, got `str` - at `\$.tau`"):
        Circuit.from_json(json.dumps(doc))
