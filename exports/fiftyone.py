"""FiftyOne image classification dataset (``fiftyone.types.FiftyOneImageClassificationDataset``).

One sample per exemplar patch, labelled with its group's top label::

    labels.json   {"classes": [...], "labels": {"<uuid>": {"label": <class index>, "confidence": c}, ...}}
    data/<uuid>.png

FiftyOne's importer maps a sample's file to its ``labels`` key by file name without extension and
reads a dict target as ``Classification(label=classes[label], confidence=confidence)``; without a
calibrated confidence the target is ``{"label": <index>}``. The uuid is ``<group id>-<k>`` (or
``<group id>-mosaic`` for the mosaic fallback without source images).

``neurflow.json`` (ignored by FiftyOne) maps each uuid to its group, layer, top labels, score,
``status`` (labeled, uncertain, corrected), ``candidates`` (an uncertain group's two best labels, else
empty), ``correction`` (who corrected the label, when, and what it replaced) and, for patches, the
source image and box, so they can be joined onto the samples as extra fields.
Import: ``fo.Dataset.from_dir(dataset_dir=folder,
dataset_type=fo.types.FiftyOneImageClassificationDataset, label_field="neurflow")``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from neurflow.core.group_label import candidate_texts
from neurflow.exports.common import group_pictures, label_names, top_label, top_score
from neurflow.exports.source import Exported, ExportSource


def export(source: ExportSource, options: dict) -> Exported:
    circuit = source.circuit
    warnings: list[str] = []
    pictures = group_pictures(source, warnings)
    classes = label_names(circuit)
    index = {name: i for i, name in enumerate(classes)}

    files: dict[str, bytes] = {}
    labels: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, Any]] = {}
    for pic in pictures:
        uuid = f"{pic.group.id}-{'mosaic' if pic.k is None else pic.k}"
        files[f"data/{uuid}.png"] = pic.png
        target: dict[str, Any] = {"label": index[top_label(pic.group)]}
        if pic.group.confidence is not None:
            target["confidence"] = pic.group.confidence
        labels[uuid] = target
        sample: dict[str, Any] = {"group": pic.group.id, "layer": pic.layer, "label": top_label(pic.group),
                                  "score": top_score(pic.group), "confidence": pic.group.confidence,
                                  "labels": [lab.text for lab in pic.group.labels],
                                  "caption": pic.group.caption.text if pic.group.caption else None,
                                  "status": pic.group.status, "candidates": candidate_texts(pic.group),
                                  "correction": msgspec.to_builtins(pic.group.correction)}
        if pic.exemplar is not None:
            sample["source_image"] = circuit.images[pic.exemplar.image].path
            sample["box"] = list(pic.exemplar.box)
            sample["activation"] = pic.exemplar.activation
        samples[uuid] = sample

    files["labels.json"] = json.dumps({"classes": classes, "labels": labels}, indent=1).encode()
    files["neurflow.json"] = json.dumps({"model_version": source.model_version, "model_arch": circuit.model.arch,
                                         "class_index": circuit.target.class_index,
                                         "class_name": circuit.target.name, "samples": samples}, indent=1).encode()
    return Exported(files=files, warnings=warnings)
