"""The small per-circuit summary kept in the catalog, so listings never read whole documents."""

from __future__ import annotations

from typing import Any

from neurflow.core.circuit import Circuit


def summarize(circuit: Circuit) -> dict[str, Any]:
    """The small per-circuit summary kept in the catalog (listings without reading the document)."""
    layers = []
    labeled = False
    for layer in circuit.layers:
        groups = []
        for g in layer.groups:
            top = g.labels[0] if g.labels else None
            labeled = labeled or top is not None
            groups.append({"id": g.id, "label": top.text if top else None, "score": top.score if top else None,
                           "confidence": g.confidence, "members": len(g.members), "exemplars": len(g.exemplars)})
        layers.append({"name": layer.name, "neurons": len(layer.neurons), "groups": groups})
    return {"target": {"class_index": circuit.target.class_index, "name": circuit.target.name},
            "labeled": labeled, "layers": layers}
