"""Datumaro 1.0 JSON: ``annotations/default.json`` plus the pictures under ``images/default/``.

Layout as Datumaro reads it (``datumaro/plugins/data_formats/datumaro``): the subset is the name of
the annotation file (``default``), and an item's ``image.path`` is relative to ``images/<subset>/``;
``image.size`` is ``[height, width]``. Items:

* one per exemplar patch, id ``patches/<group id>/<k>``, with a ``label`` annotation (the group's top
  label) whose attributes are ``group``, ``layer``, ``score``, ``confidence``, ``status`` and, for an
  uncertain group, ``candidates`` (``"A | B"``);
* one per source image that holds an exemplar, id = its relative path without extension, with a
  ``bbox`` annotation ``[x, y, w, h]`` per exemplar box (attributes ``group``, ``layer``, ``status``,
  ``candidates``).

CVAT imports this as "Datumaro 1.0" (zip the folder); Datumaro: ``Dataset.import_from(folder,
"datumaro")``.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from neurflow.exports.common import group_pictures, label_names, review_attributes, source_pictures, top_label, top_score
from neurflow.exports.source import Exported, ExportSource

FORMAT_VERSION = "1.0"
SUBSET = "default"
MEDIA_TYPE_IMAGE = 2  # datumaro.components.media.MediaType.IMAGE
LABEL_ATTRIBUTES = ["group", "layer", "score", "confidence", "status", "candidates"]


def _item_id(path: str, taken: set[str]) -> str:
    stem = str(PurePosixPath(path).with_suffix(""))
    item_id = stem if stem not in taken else path  # a.png and a.jpg side by side keep their extension
    taken.add(item_id)
    return item_id


def export(source: ExportSource, options: dict) -> Exported:
    circuit = source.circuit
    warnings: list[str] = []
    patches = group_pictures(source, warnings)
    sources = source_pictures(source, warnings)
    names = label_names(circuit)
    label_id = {name: i for i, name in enumerate(names)}

    files: dict[str, bytes] = {}
    items: list[dict[str, Any]] = []
    taken: set[str] = set()
    ann_id = 0
    for pic in patches:
        files[f"images/{SUBSET}/{pic.name}"] = pic.png
        attributes: dict[str, Any] = {"group": pic.group.id, "layer": pic.layer}
        if top_score(pic.group) is not None:
            attributes["score"] = top_score(pic.group)
        if pic.group.confidence is not None:
            attributes["confidence"] = pic.group.confidence
        attributes.update(review_attributes(pic.group))
        items.append({
            "id": _item_id(pic.name, taken),
            "annotations": [{"id": ann_id, "type": "label", "label_id": label_id[top_label(pic.group)],
                             "group": 0, "attributes": attributes}],
            "image": {"path": pic.name, "size": [pic.height, pic.width]},
        })
        ann_id += 1
    for pic in sources:
        files[f"images/{SUBSET}/{pic.name}"] = pic.data
        annotations = []
        for _, layer, group, ex in pic.boxes:
            x0, y0, x1, y1 = ex.box
            annotations.append({"id": ann_id, "type": "bbox", "label_id": label_id[top_label(group)], "group": 0,
                                "z_order": 0, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "attributes": {"group": group.id, "layer": layer, **review_attributes(group)}})
            ann_id += 1
        items.append({"id": _item_id(pic.name, taken), "annotations": annotations,
                      "image": {"path": pic.name, "size": [pic.height, pic.width]}})

    document = {
        "dm_format_version": FORMAT_VERSION,
        "media_type": MEDIA_TYPE_IMAGE,
        "infos": {"neurflow": {"model_version": source.model_version, "model_arch": circuit.model.arch,
                               "class_index": circuit.target.class_index, "class_name": circuit.target.name,
                               "circuit_id": source.circuit_id}},
        "categories": {"label": {"labels": [{"name": n, "parent": "", "attributes": LABEL_ATTRIBUTES} for n in names],
                                 "label_groups": [], "attributes": []}},
        "items": items,
    }
    files[f"annotations/{SUBSET}.json"] = json.dumps(document, indent=1).encode()
    return Exported(files=files, warnings=warnings)
