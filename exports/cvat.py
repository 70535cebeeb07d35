"""CVAT for images 1.1: ``annotations.xml`` plus the pictures under ``images/``.

Two kinds of image entries:

* each exemplar patch of each group (``images/patches/<group id>/<k>.png``), carrying one ``<tag>``
  with the group's top label and attributes ``group``, ``layer``, ``score`` (of the top label),
  ``confidence`` (calibrated, when the labeler computed it), ``status`` (labeled, uncertain,
  corrected) and, for an uncertain group, ``candidates`` (its two best labels, ``"A | B"``);
* each source image that holds an exemplar (``images/<its relative path>``), carrying a ``<box>`` at
  every exemplar box (source pixels; NeurFlow's half-open ``[x0, y0, x1, y1]`` is CVAT's
  ``xtl ytl xbr ybr``) with attributes ``group``, ``layer``, ``status`` and ``candidates``.

All annotations are ``source="auto"`` (predictions, not human work). Attributes are declared as
``text`` in ``<meta>``: CVAT range-checks ``number`` attributes, and CLIP scores have no fixed range.
Import into CVAT: create a task from the ``images/`` folder, then *Upload annotations* with format
"CVAT for images 1.1" and ``annotations.xml``; or ``Dataset.import_from(folder, "cvat")`` in Datumaro.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from neurflow.exports.common import group_pictures, label_names, review_attributes, source_pictures, top_label, top_score
from neurflow.exports.source import Exported, ExportSource

CVAT_VERSION = "1.1"
TAG_ATTRIBUTES = ["group", "layer", "score", "confidence", "status", "candidates"]
BOX_ATTRIBUTES = ["group", "layer", "status", "candidates"]
# a fixed, readable palette; labels cycle through it in circuit order
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def _text(parent: ET.Element, tag: str, text: Any) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = "" if text is None else str(text)
    return el


def _attribute(parent: ET.Element, name: str, value: Any) -> None:
    if value is None:
        return
    el = ET.SubElement(parent, "attribute", name=name)
    el.text = str(value)


def _meta(root: ET.Element, source: ExportSource, names: list[str], size: int) -> None:
    circuit = source.circuit
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    _text(task, "id", 0)
    target = circuit.target.name or f"class {circuit.target.class_index}"
    _text(task, "name", f"NeurFlow circuit: {target} ({circuit.model.arch}, {source.model_version})")
    _text(task, "size", size)
    _text(task, "mode", "annotation")
    _text(task, "overlap", 0)
    _text(task, "bugtracker", "")
    _text(task, "flipped", "False")
    _text(task, "subset", "default")
    _text(task, "start_frame", 0)
    _text(task, "stop_frame", max(size - 1, 0))
    _text(task, "frame_filter", "")
    labels = ET.SubElement(task, "labels")
    for n, name in enumerate(names):
        label = ET.SubElement(labels, "label")
        _text(label, "name", name)
        _text(label, "color", PALETTE[n % len(PALETTE)])
        _text(label, "type", "any")
        attributes = ET.SubElement(label, "attributes")
        for attr in TAG_ATTRIBUTES:
            a = ET.SubElement(attributes, "attribute")
            _text(a, "name", attr)
            _text(a, "mutable", "False")
            _text(a, "input_type", "text")
            _text(a, "default_value", "")
            _text(a, "values", "")


def _coord(value: float) -> str:
    return f"{float(value):.2f}"


def export(source: ExportSource, options: dict) -> Exported:
    warnings: list[str] = []
    patches = group_pictures(source, warnings)
    sources = source_pictures(source, warnings)
    names = label_names(source.circuit)

    root = ET.Element("annotations")
    _text(root, "version", CVAT_VERSION)
    _meta(root, source, names, len(patches) + len(sources))

    files: dict[str, bytes] = {}
    frame = 0
    for pic in patches:
        files[f"images/{pic.name}"] = pic.png
        image = ET.SubElement(root, "image", id=str(frame), name=pic.name, width=str(pic.width),
                              height=str(pic.height))
        tag = ET.SubElement(image, "tag", label=top_label(pic.group), source="auto")
        _attribute(tag, "group", pic.group.id)
        _attribute(tag, "layer", pic.layer)
        _attribute(tag, "score", top_score(pic.group))
        _attribute(tag, "confidence", pic.group.confidence)
        for name, value in review_attributes(pic.group).items():
            _attribute(tag, name, value)
        frame += 1
    for pic in sources:
        files[f"images/{pic.name}"] = pic.data
        image = ET.SubElement(root, "image", id=str(frame), name=pic.name, width=str(pic.width),
                              height=str(pic.height))
        for _, layer, group, ex in pic.boxes:
            x0, y0, x1, y1 = ex.box
            box = ET.SubElement(image, "box", label=top_label(group), source="auto", occluded="0",
                                xtl=_coord(x0), ytl=_coord(y0), xbr=_coord(x1), ybr=_coord(y1), z_order="0")
            _attribute(box, "group", group.id)
            _attribute(box, "layer", layer)
            for name, value in review_attributes(group).items():
                _attribute(box, name, value)
        frame += 1

    ET.indent(root, space="  ")
    files["annotations.xml"] = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
    return Exported(files=files, media_type="application/xml", warnings=warnings)
