"""Multi-granularity patches of the selected images, with provenance.

For each granularity ``g`` (in the order given), each image and each position in row-major order,
a square crop of side ``s = int(g * S)`` is cut from the model-input square (side ``S``) with stride
``max(min(int(s * r), S - s), 1)`` and no padding (so the right/bottom border is dropped when
``S - s`` is not a multiple of the stride), then resized back to ``S`` bilinearly
(``align_corners=False``, no antialias). ``g = 1`` yields the image itself. This is the order and
geometry of the reference implementation, so patch indices are comparable with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PatchIndex:
    """Where every patch comes from: arrays of length D (number of patches)."""

    image: np.ndarray  # index into the selected images
    box: np.ndarray  # (D, 4) x0, y0, x1, y1 in model-input pixels
    granularity: np.ndarray  # crop side / S

    def __len__(self) -> int:
        return len(self.image)


def crop_positions(size: int, granularity: float, stride_ratio: float) -> tuple[int, list[int]]:
    """Crop side and top-left offsets along one axis."""
    side = int(granularity * size)
    if side <= 0:
        raise ValueError(f"granularity {granularity} gives an empty crop at input size {size}")
    if side >= size:
        return size, [0]
    stride = max(min(int(side * stride_ratio), size - side), 1)
    return side, list(range(0, size - side + 1, stride))


def build_index(n_images: int, size: int, granularities: Sequence[float], stride_ratio: float) -> PatchIndex:
    images, boxes, grans = [], [], []
    for g in granularities:
        side, offsets = crop_positions(size, g, stride_ratio)
        for i in range(n_images):
            for y in offsets:
                for x in offsets:
                    images.append(i)
                    boxes.append((x, y, x + side, y + side))
                    grans.append(side / size)
    return PatchIndex(np.asarray(images, dtype=np.int64), np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
                      np.asarray(grans, dtype=np.float64))


def make_patches(images: torch.Tensor, index: PatchIndex, which: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Pixel tensors (len(which), C, S, S) of the patches ``which`` of ``images`` (N, C, S, S)."""
    size = images.shape[-1]
    out = torch.empty((len(which), images.shape[1], size, size), dtype=images.dtype, device=images.device)
    which = np.asarray(which, dtype=np.int64)
    # Patches of equal side are resized together: one interpolate call per crop size.
    sides = index.box[which, 2] - index.box[which, 0]
    for side in np.unique(sides):
        rows = np.nonzero(sides == side)[0]
        crops = torch.stack([
            images[index.image[which[r]], :, index.box[which[r], 1]:index.box[which[r], 3],
                   index.box[which[r], 0]:index.box[which[r], 2]]
            for r in rows
        ])
        if side != size:
            crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False)
        out[torch.as_tensor(rows, device=images.device)] = crops
    return out
