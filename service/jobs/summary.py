"""The small per-circuit summary kept in the catalog, so listings never read whole documents."""

from __future__ import annotations

from typing import Any

from neurflow.core.circuit import Circuit
from neurflow.core.group_label import candidate_texts, top_text


def summarize(circuit: Circuit) -> dict[str, Any]:
    """The small per-circuit summary kept in the catalog (listings without reading the document).

    Per group: its label (a person's correction first), the top label's score, the confidence, the
    ``status`` (unlabeled, labeled, uncertain, corrected), an uncertain group's two ``candidates`` and
    who ``corrected`` it (``{"by", "key", "at", "via", "previous"}``, else ``None``)."""
    layers = []
    labeled = False
    for layer in circuit.layers:
        groups = []
        for g in layer.groups:
            top = g.labels[0] if g.labels else None
            labeled = labeled or top is not None
            corrected = None if g.correction is None else {"by": g.correction.by, "key": g.correction.key,
                                                            "at": g.correction.at, "via": g.correction.via,
                                                            "previous": g.correction.previous}
            groups.append({"id": g.id, "label": top_text(g), "score": top.score if top else None,
                           "confidence": g.confidence, "members": len(g.members), "exemplars": len(g.exemplars),
                           "status": g.status, "candidates": candidate_texts(g), "corrected": corrected})
        layers.append({"name": layer.name, "neurons": len(layer.neurons), "groups": groups})
    return {"target": {"class_index": circuit.target.class_index, "name": circuit.target.name},
            "labeled": labeled, "layers": layers}
