"""The viewer's data: what one page shows, as plain JSON-able dicts.

:class:`ReportEntry` is one circuit (one class) with its pictures; :func:`viewer_data` turns a list of
entries into the document embedded in the page (``<script type="application/json" id="viewer-data">``)
which the page's script reads. Everything a group shows in the detail panel is in here: labels with
scores, confidence, its status (an uncertain group's two candidates, each with the votes that back it;
a corrected group's correction), caption, members, its exemplar mosaic (base64 PNG), edges, and, when
known, its ground-truth part and purity and its debug result.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import msgspec

from neurflow.core.circuit import Circuit, Group
from neurflow.core.group_label import candidate_texts, display_text, is_uncertain
from neurflow.viewer.debug import DebugView
from neurflow.viewer.layout import Layout, layout_circuit


@dataclass
class ReportEntry:
    """One circuit of a report. ``mosaics``: group id -> PNG; ``scores``: group id ->
    ``{"majority_part", "purity"}`` (ground truth, when known); ``debug``: a debug result to show."""

    circuit: Circuit
    class_name: str | None = None
    mosaics: dict[str, bytes] = field(default_factory=dict)
    scores: dict[str, dict] = field(default_factory=dict)
    circuit_id: str | None = None
    debug: DebugView | None = None

    @property
    def title(self) -> str:
        c = self.circuit
        name = self.class_name or c.target.name or f"class {c.target.class_index}"
        return f"Class {c.target.class_index}: {name}"


def b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data else None


def entry_meta(entry: ReportEntry) -> str:
    c = entry.circuit
    n_groups = sum(len(layer.groups) for layer in c.layers)
    meta = f"model {c.model.arch}, {len(c.images)} images, {n_groups} groups"
    if c.labeling is not None:
        meta += f", labels by CLIP {c.labeling.clip.model}"
    if entry.circuit_id:
        meta += f" - circuit {entry.circuit_id}"
    return meta


def candidate_data(group: Group) -> list[dict[str, Any]]:
    """An uncertain group's two candidates, each with its score and the votes of the group's evidence
    that name it (which voter, how strongly), so a reader sees what speaks for either."""
    scores = {lab.text: lab.score for lab in [*group.labels, *group.candidates]}
    votes = group.evidence.votes if group.evidence is not None else []
    return [{"text": text, "score": scores.get(text),
             "votes": [{"voter": v.voter, "score": v.score, "margin": v.margin} for v in votes if v.text == text]}
            for text in candidate_texts(group)]


def group_data(entry: ReportEntry, layer_name: str, group: Group) -> dict[str, Any]:
    score = entry.scores.get(group.id) or {}
    return {
        "id": group.id,
        "layer": layer_name,
        "labels": [{"text": lab.text, "score": lab.score, "source": lab.source} for lab in group.labels],
        "confidence": group.confidence,
        "uncertain": is_uncertain(group),
        "status": group.status,
        "display": display_text(group),
        "candidates": candidate_data(group),
        "correction": msgspec.to_builtins(group.correction),
        "caption": {"text": group.caption.text, "model": group.caption.model} if group.caption else None,
        "members": [{"neuron": m.neuron, "concept": m.concept} for m in group.members],
        "n_exemplars": len(group.exemplars),
        "mosaic": b64(entry.mosaics.get(group.id)),
        "ground_truth": {"part": score.get("majority_part"), "purity": score.get("purity")} if score else None,
    }


def graph_data(index: int, entry: ReportEntry, layout: Layout) -> dict[str, Any]:
    c = entry.circuit
    return {
        "index": index,
        "title": entry.title,
        "meta": entry_meta(entry),
        "circuit_id": entry.circuit_id,
        "class_index": c.target.class_index,
        "layers": [layer.name for layer in c.layers],
        "groups": [group_data(entry, layer.name, g) for _, layer, g in c.iter_groups()],
        "edges": [{"source": e.source, "target": e.target, "weight": e.weight} for e in layout.edges],
        "debug": entry.debug.to_data() if entry.debug else None,
    }


def viewer_data(entries: list[ReportEntry], title: str, notes: str = "",
                layouts: list[Layout] | None = None) -> dict[str, Any]:
    layouts = layouts or [layout_circuit(e.circuit) for e in entries]
    return {"title": title, "notes": notes,
            "graphs": [graph_data(i, e, lay) for i, (e, lay) in enumerate(zip(entries, layouts))]}
