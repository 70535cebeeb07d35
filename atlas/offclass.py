"""Switching neuron sets off on images that do not show a class: the measurement the audit and the
diff share.

A group that lifts a class's logit on images without the class's content detects something the
class's images merely tend to carry. Both :mod:`neurflow.atlas.audit` (one network, against random
neuron sets) and :mod:`neurflow.atlas.diff_reliance` (two checkpoints, against each other) measure it
the same way: the images of the other classes, minus the classes that legitimately share the class's
content, the chosen neurons zeroed at their layer and the rest of the network run from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

from neurflow.core.images import ImageSet
from neurflow.core.layer_access import LayerAccess

#: ablated images per forward pass of the upper network
_CHUNK_IMAGES = 2048


def folder_labels(images: ImageSet, class_names: Sequence[str | None]) -> list[int | None]:
    """Each image's class from a folder of its relative path named like a class (None when none is);
    a class whose name is None is named by no folder."""
    index = {name: i for i, name in enumerate(class_names) if name is not None}
    out: list[int | None] = []
    for path in images.paths:
        found = [index[p] for p in PurePosixPath(path).parts[:-1] if p in index]
        out.append(found[-1] if found else None)
    return out


@dataclass
class ImageSets:
    """The images one class's ablations run on."""

    own: torch.Tensor
    off: torch.Tensor
    off_labels: torch.Tensor  # the class each off-class image shows


def image_sets(pixels: torch.Tensor, labels: Sequence[int], target: int, related: set[int], cap: int,
               rng: np.random.Generator) -> ImageSets:
    """The class's own images and its off-class ones (neither the class nor a related one), at most
    ``cap`` of each, drawn with ``rng`` (kept in their original order)."""
    own = [i for i, k in enumerate(labels) if k == target]
    off = [i for i, k in enumerate(labels) if k != target and k not in related]

    def pick(idx: list[int]) -> list[int]:
        return sorted(rng.choice(idx, size=cap, replace=False).tolist()) if len(idx) > cap else idx

    own, off = pick(own), pick(off)
    return ImageSets(own=pixels[own], off=pixels[off],
                     off_labels=torch.tensor([int(labels[i]) for i in off], dtype=torch.long))


@dataclass
class Drops:
    """Mean drops over the images, one per channel set, when the set is zeroed."""

    target: np.ndarray  # of the target class's logit
    margin: np.ndarray | None  # of the target's logit minus that of the class each image shows (None: not asked)


def logit_drops(access: LayerAccess, top: str, layer: str, pixels: torch.Tensor, target: int,
                sets: list[list[int]]) -> np.ndarray:
    """Mean drop of the target logit over ``pixels`` when each channel set of ``layer`` is zeroed."""
    return ablation_drops(access, top, layer, pixels, target, sets).target


def ablation_drops(access: LayerAccess, top: str, layer: str, pixels: torch.Tensor, target: int,
                   sets: list[list[int]], shown: torch.Tensor | None = None) -> Drops:
    """:func:`logit_drops`, and with ``shown`` (the class each image shows) the drop of the target's margin
    over the shown class: zeroing a generic feature lowers every class's logit, the margin only falls when
    the set pushed the images towards the target rather than towards what they show."""
    if len(pixels) == 0:
        empty = np.full(len(sets), np.nan)
        return Drops(target=empty, margin=None if shown is None else empty.copy())
    if shown is not None and len(shown) != len(pixels):
        raise ValueError(f"shown has {len(shown)} classes for {len(pixels)} images")
    block = access.block(layer, top)
    with torch.no_grad():
        z = access.full_output(pixels, layer)
        outside = sorted({c for chans in sets for c in chans if not 0 <= c < z.shape[1]})
        if outside:
            raise ValueError(f"layer {layer!r} of this model has {z.shape[1]} channels; neurons {outside[:5]} are not "
                             "among them: give the network the circuits were made with")
        scores = block(z, pixels)
        if scores.dim() != 2:
            raise ValueError(f"layer {top!r} is not the model's class output (it gives {tuple(scores.shape[1:])} per "
                             "image, not one score per class): the ablation reads the class's logit, so explain "
                             "the model from its classifier down (e.g. \"fc\" first)")
        rows = torch.arange(len(pixels), device=scores.device)
        shown = None if shown is None else shown.to(scores.device)

        def margin(s: torch.Tensor) -> torch.Tensor:  # images x classes -> each image's margin of the target
            return s[..., target] - s[..., rows, shown]

        base, base_margin = scores[:, target], None if shown is None else margin(scores)
        target_out, margin_out = [], []
        per_chunk = max(1, _CHUNK_IMAGES // len(pixels))
        for start in range(0, len(sets), per_chunk):
            chunk = sets[start:start + per_chunk]
            batch = z.repeat(len(chunk), *([1] * (z.dim() - 1)))
            for k, chans in enumerate(chunk):
                batch[k * len(z):(k + 1) * len(z), chans] = 0
            x = pixels.repeat(len(chunk), 1, 1, 1) if block.needs_input else None
            logits = block(batch, x).view(len(chunk), len(z), -1)
            target_out.extend((base[None, :] - logits[..., target]).mean(1).tolist())
            if shown is not None:
                margin_out.extend((base_margin[None, :] - margin(logits)).mean(1).tolist())
    return Drops(target=np.asarray(target_out), margin=None if shown is None else np.asarray(margin_out))
