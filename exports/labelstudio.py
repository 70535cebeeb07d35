"""Label Studio: a labeling config and tasks with predictions (pre-annotations).

* One **group task** per neuron group: its exemplar mosaic as the image, the group's top label as the
  predicted ``concept`` choice and its caption as the predicted ``caption`` text. An *uncertain* group
  predicts both of its candidates as choices (the header reads ``"A or B?"``), so the annotator picks
  one; a *corrected* group predicts the person's label. The task's data carry ``status`` and
  ``candidates``. An annotation submitted on a group task is a correction: Label Studio's webhook
  (``service/http/controllers/labelstudio_backend.py``) stores it with its provenance.
* Where the source images are available (option ``regions``), one **image task** per source image
  that holds exemplars: the exemplar boxes as ``region`` rectangles, each labeled with its group's
  top label. Label Studio rectangles are percentages of ``original_width``/``original_height``.

One config serves both kinds of task; its choices and rectangle labels are the union of every
group's candidate labels. Every prediction is checked with Label Studio's own
``LabelInterface.validate_prediction`` before it is written, because Label Studio itself imports
predictions that do not fit the config without a word and then shows nothing.

The ML backend (``service/http/controllers/labelstudio_backend.py``) builds its predictions with the same
functions, from the cached circuit.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from xml.sax.saxutils import quoteattr

from neurflow.core.circuit import Circuit, Group
from neurflow.core.group_label import candidate_texts, display_text, top_text
from neurflow.exports.registry import flag
from neurflow.exports.source import Exported, ExportSource

IMAGE, CONCEPT, CAPTION, REGION = "image", "concept", "caption", "region"


# -- the config ----------------------------------------------------------------------------------
def candidate_labels(circuit: Circuit) -> list[str]:
    """Every group's candidate label texts (its labels and, when uncertain, its two candidates), in
    order of first appearance, without repeats."""
    seen: dict[str, None] = {}
    for _, _, group in circuit.iter_groups():
        for text in [*candidate_texts(group), *(label.text for label in group.labels)]:
            seen.setdefault(text, None)
    return list(seen)


def label_config(labels: list[str]) -> str:
    """The labeling config for group tasks and image tasks alike."""
    if not labels:
        raise ValueError("the circuit has no labels: label it first (neurflow label, or a job with a labeling section)")
    choices = "\n".join(f"    <Choice value={quoteattr(t)}/>" for t in labels)
    rects = "\n".join(f"    <Label value={quoteattr(t)}/>" for t in labels)
    return (f'<View>\n'
            f'  <Header value="$info" size="5"/>\n'
            f'  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
            f'  <Choices name="{CONCEPT}" toName="{IMAGE}" choice="multiple" showInline="true">\n{choices}\n  </Choices>\n'
            f'  <TextArea name="{CAPTION}" toName="{IMAGE}" editable="true" maxSubmissions="1"/>\n'
            f'  <RectangleLabels name="{REGION}" toName="{IMAGE}">\n{rects}\n  </RectangleLabels>\n'
            f'</View>\n')


# -- predictions ----------------------------------------------------------------------------------
def group_score(group: Group) -> float | None:
    """The group's calibrated confidence, else its top label's score."""
    if group.confidence is not None:
        return float(group.confidence)
    return float(group.labels[0].score) if group.labels else None


def predicted_choices(group: Group) -> list[str]:
    """The ``concept`` choices predicted for a group: both candidates when it is uncertain, else its
    top label (a person's correction first); none for an unlabeled group."""
    top = top_text(group)
    return candidate_texts(group) or ([top] if top is not None else [])


def group_prediction(group: Group, model_version: str) -> dict[str, Any] | None:
    """The pre-annotation of a group task: the predicted choices as ``concept``, caption as
    ``caption``; ``None`` for an unlabeled group."""
    choices = predicted_choices(group)
    if not choices:
        return None
    result: list[dict[str, Any]] = [{"from_name": CONCEPT, "to_name": IMAGE, "type": "choices",
                                     "value": {"choices": choices}}]
    if group.caption is not None and group.caption.text:
        result.append({"from_name": CAPTION, "to_name": IMAGE, "type": "textarea",
                       "value": {"text": [group.caption.text]}})
    return {"model_version": model_version, "score": group_score(group), "result": result}


def _pct(value: float, total: int) -> float:
    return round(100.0 * min(max(value, 0.0), total) / total, 4)


def rectangle(box: list[int], width: int, height: int) -> dict[str, float]:
    """An ``[x0, y0, x1, y1]`` pixel box as Label Studio's percent rectangle (clipped to the image)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} is not positive")
    x0, y0, x1, y1 = box
    x, y = _pct(x0, width), _pct(y0, height)
    return {"x": x, "y": y, "width": round(_pct(x1, width) - x, 4), "height": round(_pct(y1, height) - y, 4),
            "rotation": 0}


def image_prediction(circuit: Circuit, index: int, model_version: str) -> dict[str, Any] | None:
    """The pre-annotation of the image task for source image ``index``: one rectangle per exemplar of
    a labeled group on that image; ``None`` when there is none."""
    ref = circuit.images[index]
    result, scores = [], []
    for _, _, group in circuit.iter_groups():
        if not group.labels:
            continue
        score = group_score(group)
        for k, ex in enumerate(group.exemplars):
            if ex.image != index:
                continue
            item = {"id": f"{group.id}-{k}", "from_name": REGION, "to_name": IMAGE, "type": "rectanglelabels",
                    "original_width": ref.width, "original_height": ref.height, "image_rotation": 0,
                    "value": {**rectangle(ex.box, ref.width, ref.height), "rectanglelabels": [group.labels[0].text]},
                    "meta": {"text": [f"group {group.id}"]}}
            if score is not None:
                item["score"] = score
                scores.append(score)
            result.append(item)
    if not result:
        return None
    return {"model_version": model_version, "score": round(sum(scores) / len(scores), 4) if scores else None,
            "result": result}


def check(interface: Any, prediction: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when Label Studio's validator rejects ``prediction``."""
    errors = interface.validate_prediction(prediction, return_errors=True)
    if errors:
        raise ValueError(f"the Label Studio prediction for {what} does not fit the labeling config: "
                         + "; ".join(map(str, errors)))


def interface_for(config: str) -> Any:
    try:
        from label_studio_sdk.label_interface import LabelInterface
    except ImportError:
        raise ValueError("the Label Studio export needs label-studio-sdk: pip install 'neurflow[labelstudio]'") from None
    return LabelInterface(config)


# -- tasks ----------------------------------------------------------------------------------------
def data_uri(png: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(png).decode()


def _media_type(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "bmp": "image/bmp",
            "gif": "image/gif"}.get(ext, "image/png")


def class_name(circuit: Circuit) -> str:
    return circuit.target.name or str(circuit.target.class_index)


def export(source: ExportSource, options: dict[str, Any]) -> Exported:
    circuit = source.circuit
    regions = flag(options, "regions", source.has_source_images)
    config = label_config(candidate_labels(circuit))
    interface = interface_for(config)
    version = source.model_version
    common = {"circuit_id": source.circuit_id, "class": class_name(circuit), "class_index": circuit.target.class_index}
    tasks: list[dict[str, Any]] = []
    warnings: list[str] = []

    for _, layer, group in circuit.iter_groups():
        png = source.mosaic(group)
        if png is None:
            warnings.append(f"group {group.id}: no mosaic (no exemplars, or the source images are missing); left out")
            continue
        ranked = ", ".join(f"{lab.text} ({lab.score:.2f})" for lab in group.labels) or "no labels"
        shown = f"{display_text(group)} [{group.status}] " if group.labels else ""
        task: dict[str, Any] = {"data": {"image": data_uri(png), **common, "kind": "group", "group_id": group.id,
                                         "layer": layer.name, "status": group.status,
                                         "candidates": candidate_texts(group),
                                         "labels": [lab.text for lab in group.labels],
                                         "info": f"{layer.name} / {group.id}: {shown}{ranked}"}}
        prediction = group_prediction(group, version)
        if prediction is not None:
            check(interface, prediction, f"group {group.id}")
            task["predictions"] = [prediction]
        tasks.append(task)

    if regions:
        if not source.has_source_images and source.image_url is None:
            raise ValueError("regions=yes needs the source images (CLI: --images DIR; API: the dataset was deleted)")
        used = sorted({ex.image for _, _, g in circuit.iter_groups() if g.labels for ex in g.exemplars})
        for index in used:
            ref = circuit.images[index]
            if source.image_url is not None:
                image = source.image_url(index)
            else:
                raw = source.source_image(index)
                if raw is None:
                    warnings.append(f"source image {ref.path} is missing; its region task is left out")
                    continue
                image = data_uri(raw, _media_type(ref.path))
            prediction = image_prediction(circuit, index, version)
            task = {"data": {"image": image, **common, "kind": "image", "image_index": index, "image_path": ref.path,
                             "info": f"{ref.path}: exemplar regions of the {class_name(circuit)} circuit"},
                    "predictions": []}
            if prediction is not None:
                check(interface, prediction, f"source image {ref.path}")
                task["predictions"].append(prediction)
            tasks.append(task)

    if not tasks:
        raise ValueError("nothing to export: no group has a mosaic; pass the source images (--images DIR)")
    tasks_json = json.dumps(tasks, indent=1).encode()
    document = json.dumps({"label_config": config, "model_version": version, "tasks": tasks}).encode()
    return Exported(files={"label_config.xml": config.encode(), "tasks.json": tasks_json}, document=document,
                    media_type="application/json", warnings=warnings)
