"""The shortcut audit as a Label Studio project: one task per finding, a reviewer confirms or dismisses.

Each task shows the finding's exemplar patches (one mosaic), its plain sentence and its key; the
labeling config asks for a verdict (``confirmed`` / ``dismissed``) and an optional note.
:func:`reviews_from_labelstudio` reads Label Studio's JSON export of the project back into
:class:`neurflow.core.audit.Reviews`, so that the verdicts apply to the next run of the audit.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from neurflow.core.audit import Audit, Review, Reviews
from neurflow.core.images import crop_source
from neurflow.exports.labelstudio import data_uri

PATCH = 96

LABEL_CONFIG = """<View>
  <Header value="$sentence"/>
  <Text name="key" value="$key"/>
  <Image name="exemplars" value="$image"/>
  <Choices name="verdict" toName="exemplars" choice="single" required="true">
    <Choice value="confirmed" hint="the model relies on something it should not"/>
    <Choice value="dismissed" hint="not a problem"/>
  </Choices>
  <TextArea name="note" toName="exemplars" placeholder="why (optional)"/>
</View>
"""


def _mosaic(finding, root: Path | None) -> bytes | None:
    from neurflow.labeler.patches import mosaic

    if root is None:
        return None
    crops = [crop_source(root / p, ex.box, PATCH) for ex, p in zip(finding.evidence.exemplars, finding.evidence.exemplar_paths)
             if p and (root / p).is_file()]
    if not crops:
        return None
    buf = io.BytesIO()
    mosaic(crops, PATCH).save(buf, format="PNG")
    return buf.getvalue()


def audit_tasks(audit: Audit, images_root: str | Path | None = None, include_dismissed: bool = False) -> list[dict[str, Any]]:
    """Label Studio tasks, one per finding (open and confirmed ones; ``include_dismissed`` adds the rest)."""
    root = Path(images_root or audit.images or "")
    root = root if (images_root or audit.images) and root.is_dir() else None
    tasks = []
    for f in audit.findings(include_dismissed=include_dismissed):
        png = _mosaic(f, root)
        data = {"key": f.key, "sentence": f.sentence, "class_index": f.class_index, "layer": f.layer, "group": f.group,
                "image": data_uri(png) if png else ""}
        task: dict[str, Any] = {"data": data}
        if f.review is not None:
            task["predictions"] = [{"model_version": "previous-review", "result": [
                {"from_name": "verdict", "to_name": "exemplars", "type": "choices",
                 "value": {"choices": [f.review.verdict]}}]}] if f.review.verdict != "open" else []
        tasks.append(task)
    return tasks


def write_audit_project(audit: Audit, out: str | Path, images_root: str | Path | None = None) -> list[Path]:
    """``labelstudio-config.xml`` and ``labelstudio-tasks.json`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, tasks = out / "labelstudio-config.xml", out / "labelstudio-tasks.json"
    config.write_text(LABEL_CONFIG, encoding="utf-8")
    tasks.write_text(json.dumps(audit_tasks(audit, images_root), indent=1), encoding="utf-8")
    return [config, tasks]


def reviews_from_labelstudio(exported: list[dict[str, Any]], audit: Audit, reviews: Reviews | None = None) -> Reviews:
    """Verdicts from Label Studio's JSON export (tasks with ``annotations``), recorded for the audit's
    findings; the latest annotation of a task wins. ``ValueError`` for a task of another audit."""
    reviews = reviews or Reviews()
    findings = {f.key: f for f in audit.findings(include_dismissed=True)}
    if not isinstance(exported, list):
        raise ValueError("a Label Studio JSON export is a list of tasks")
    for task in exported:
        key = (task.get("data") or {}).get("key") if isinstance(task, dict) else None
        if key not in findings:
            raise ValueError(f"task {task.get('id') if isinstance(task, dict) else task!r} holds finding {key!r}, "
                             "which this audit does not have; export the project of this audit")
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not annotations:
            continue
        latest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        verdict, note = None, ""
        for item in latest.get("result") or []:
            value = item.get("value") or {}
            if item.get("from_name") == "verdict" and value.get("choices"):
                verdict = value["choices"][0]
            if item.get("from_name") == "note" and value.get("text"):
                note = " ".join(value["text"])
        if verdict not in ("confirmed", "dismissed"):
            continue
        who = latest.get("completed_by")
        by = str(who.get("email") if isinstance(who, dict) else who or "labelstudio")
        reviews.record(findings[key], Review(verdict=verdict, by=by, at=str(latest.get("updated_at") or ""), note=note))
    return reviews
