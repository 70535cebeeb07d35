"""Reference labels of a circuit's groups from the world's part masks (for ``neurflow evaluate --world``).

A group's reference label is the part that dominates the majority of its patches, when that majority
holds at least ``min_purity`` of them; mixed groups get no reference (and are counted as such).
"""

from __future__ import annotations

from pathlib import Path

from neurflow.core.circuit import Circuit
from neurflow.labeler.evaluation import References
from neurflow.world.ground_truth import score_circuit


def from_world(circuit: Circuit, world_root: str | Path, images_root: str | Path | None, min_purity: float = 0.5) -> References:
    scored = score_circuit(circuit, world_root, images_root=images_root)
    labels, details = {}, {}
    for g in scored["groups"]:
        part, purity_value = g["patch_majority_part"], g["patch_purity"]
        if part is None:
            part, purity_value = g["majority_part"], g["purity"]
        ok = part is not None and purity_value is not None and purity_value >= min_purity
        labels[g["id"]] = [part] if ok else []
        details[g["id"]] = {"majority_part": part, "purity": purity_value}
    return References(f"world:{world_root}", labels, details)
