"""The off-class reliance of a circuit diff's groups: which of them the second checkpoint leans on
for the class on images that do not show the class.

For every change of a class (the second checkpoint's group; a vanished group's first-side neurons),
its neurons are zeroed in **both** networks on the class's off-class images (the images of the other
classes, minus the related ones: :mod:`neurflow.atlas.offclass`), and the drop of the class's logit
in each is kept. ``increase`` = max(drop in the second, 0) - max(drop in the first, 0)
(:func:`neurflow.core.diff.reliance_increase`): how much more the second network relies on those
neurons to raise the class where it is absent, i.e. on something the class's images merely carry. A
negative drop (the neurons inhibited the class) counts as no reliance: a lost inhibition is not a new
shortcut. The same architecture is required, since a neuron id must be the same channel in both.

The second circuit's groups are ranked first, the vanished groups (measured on their first-side
neurons) after them: a vanished group is not one through which the second network works, and on the
planted worlds a vanished group of the clean circuit that overlaps the shortcut's group can edge it
out (docs/audit.md).

Why this orders the diff: a fine-tune that picked up a shortcut often routes it through neurons the
class already used (the group is matched, its importance barely moves) or regroups everything, so
the importance a group gained from the circuits alone does not name the shortcut; on the planted
worlds the reliance increase does (docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from neurflow.atlas.offclass import image_sets, logit_drops
from neurflow.core.circuit import Circuit
from neurflow.core.diff import CircuitDiff, GroupChange, OffClassReliance, order_by_reliance, reliance_increase
from neurflow.core.images import ImageSet
from neurflow.core.layer_access import LayerAccess

#: the off-class images drawn per class: one fixed draw, so that a rerun measures the same images
_SEED = 0


def _check_models(models: Sequence[nn.Module]) -> tuple[nn.Module, nn.Module]:
    if isinstance(models, nn.Module) or len(models) != 2 or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("models must be a pair (first checkpoint's network, second's) of torch modules")
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
    if shapes[0] != shapes[1]:
        differ = sorted(set(shapes[0]) ^ set(shapes[1])) or \
            sorted(k for k in shapes[0] if shapes[0][k] != shapes[1][k])
        raise ValueError(f"the two models are not one architecture (their parameters differ: {differ[:3]}); the "
                         "off-class reliance zeroes the same channels in both, so it needs two checkpoints of one "
                         "architecture")
    return models[0].eval(), models[1].eval()


def _labels(images: ImageSet, labels: Sequence[int | None] | None, num_classes: int) -> list[int]:
    given = list(labels) if labels is not None else list(images.labels or [None] * len(images))
    if len(given) != len(images):
        raise ValueError(f"labels has {len(given)} entries for {len(images)} images")
    missing = sum(k is None for k in given)
    if missing:
        # unlike the audit, no model's prediction can stand in: the two checkpoints predict differently
        raise ValueError(f"{missing} of {len(images)} images have no class; the off-class reliance needs each "
                         "image's class (labels=, ImageSet labels, or on the command line folders named like the "
                         "classes)")
    bad = sorted({k for k in given if not 0 <= int(k) < num_classes})
    if bad:
        raise ValueError(f"image classes {bad} are not classes of this {num_classes}-class model")
    return [int(k) for k in given]


def _check_outputs(models: tuple[nn.Module, nn.Module], pixels: torch.Tensor, num_classes: int) -> None:
    with torch.no_grad():
        for side, model in zip(("first", "second"), models):
            width = model(pixels[:1]).shape[-1]
            if width != num_classes:
                raise ValueError(f"the {side} model answers {width} class scores, its circuits are of a "
                                 f"{num_classes}-class model; give the networks the circuits were made with")


def _access(model: nn.Module, side: str, layers: list[str], circuit: Circuit) -> LayerAccess:
    try:
        return LayerAccess(model, layers, circuit.params.token_reduce)
    except ValueError as exc:
        raise ValueError(f"the {side} model does not have the circuits' layers: {exc}") from None


def add_reliance(diff: CircuitDiff, before: Mapping[int, Circuit], after: Mapping[int, Circuit],
                 models: Sequence[nn.Module], images: ImageSet, *, labels: Sequence[int | None] | None,
                 related: Mapping[int, Sequence[int]], max_images: int) -> CircuitDiff:
    """``diff`` (of ``before`` and ``after``, circuits by class) with each change's off-class reliance;
    each class's changes ordered by its increase, biggest first (ties by the importance gained), the
    second circuit's groups first, then the vanished ones."""
    if not diff.same_architecture:
        raise ValueError("the off-class reliance zeroes the same neurons in both networks, so it needs two checkpoints "
                         "of one architecture; these circuits are of different architectures (their groups were "
                         "matched by label): diff them without models")
    if not isinstance(images, ImageSet) or len(images) == 0:
        raise ValueError("the off-class reliance needs images (an ImageSet of the classes' images with their classes)")
    pair = _check_models(models)
    num_classes = next(iter(after.values())).model.num_classes
    image_labels = _labels(images, labels, num_classes)
    # the images go where the second network is (a worker's GPU); the first must be there too
    device = next((p.device for p in pair[1].parameters()), torch.device("cpu"))
    if any(p.device != device for p in pair[0].parameters()):
        raise ValueError(f"the two models are on different devices; put both on {device}")
    pixels = images.pixels.to(device)
    _check_outputs(pair, pixels, num_classes)
    related_of = {int(k): {int(x) for x in v} for k, v in related.items()}
    accesses: dict[tuple[str, ...], tuple[LayerAccess, LayerAccess]] = {}
    for cls in diff.classes:
        k = cls.class_index
        a, b = before[k], after[k]
        top = b.layers[0].name
        if a.layers[0].name != top:
            raise ValueError(f"class {k}: the circuits read the class from different layers ({a.layers[0].name!r} "
                             f"and {top!r}); explain both checkpoints with the same layers")
        sets = image_sets(pixels, image_labels, k, related_of.get(k, set()), max_images,
                          np.random.default_rng(_SEED))
        if len(sets.off) == 0:
            raise ValueError(f"class {k} has no off-class images among the {len(images)} images (those of other "
                             f"classes, minus its related classes {sorted(related_of.get(k, set()))}); give images "
                             "of the classes it is not related to")
        names = tuple(dict.fromkeys([lay.name for lay in b.layers] + [lay.name for lay in a.layers]))
        if names not in accesses:
            accesses[names] = (_access(pair[0], "first", list(names), a), _access(pair[1], "second", list(names), b))
        first, second = accesses[names]
        by_layer: dict[str, list[GroupChange]] = {}
        for change in cls.changes:
            by_layer.setdefault(change.layer, []).append(change)
        for layer, changes in by_layer.items():
            members = [(c.after or c.before).neurons for c in changes]
            drop_a = logit_drops(first, top, layer, sets.off, k, members)
            drop_b = logit_drops(second, top, layer, sets.off, k, members)
            for change, da, db in zip(changes, drop_a, drop_b):
                change.reliance = OffClassReliance(images=len(sets.off), drop_before=round(float(da), 4),
                                                   drop_after=round(float(db), 4),
                                                   increase=round(reliance_increase(float(da), float(db)), 4))
        order_by_reliance(cls.changes)
    diff.order = "off_class_reliance"
    diff.max_images = max_images
    return diff
