"""Exemplar patches and per-group mosaics of a circuit, rendered once into PNG files.

Layout under a circuit folder: ``patches/<group id>/<k>.png`` (exemplar k, in the group's exemplar
order) and ``patches/<group id>/mosaic.png``. Rendering happens in the worker when a job finishes,
so the result stays viewable after its dataset is deleted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from core.circuit import Circuit
from core.images import crop_source

PATCH_SIZE = 96
MOSAIC_COLUMNS = 4


def mosaic(images: list[Image.Image], size: int = PATCH_SIZE, columns: int = MOSAIC_COLUMNS, pad: int = 2) -> Image.Image:
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * (size + pad) + pad, rows * (size + pad) + pad), (255, 255, 255))
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        sheet.paste(im.resize((size, size)), (pad + c * (size + pad), pad + r * (size + pad)))
    return sheet


def render_patches(circuit: Circuit, images_root: str | Path, out_dir: str | Path, size: int = PATCH_SIZE) -> int:
    """Write every group's exemplar PNGs and mosaic; return the number of PNGs written."""
    from labeler.patches import PatchLoader

    out_dir = Path(out_dir)
    loader = PatchLoader(circuit, Path(images_root), cache_size=64)
    count = 0
    for _, _, group in circuit.iter_groups():
        folder = out_dir / group.id
        folder.mkdir(parents=True, exist_ok=True)
        crops = []
        for k, ex in enumerate(group.exemplars):
            crop = loader.crop(ex).resize((size, size), Image.BILINEAR)
            crop.save(folder / f"{k}.png")
            crops.append(crop)
            count += 1
        if crops:
            mosaic(crops, size).save(folder / "mosaic.png")
            count += 1
    return count


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


__all__ = ["mosaic", "render_patches", "summarize", "crop_source"]
