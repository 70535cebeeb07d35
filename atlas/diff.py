"""``diff_circuits``: what changed between the circuits of two checkpoints, class by class.

Groups are matched per class and layer, greedily from the most similar pair down, each group at most
once: by the Jaccard of their member-neuron sets when both checkpoints have the same architecture (a
neuron id is then the same channel on both sides), else by an equal top label. A matched pair whose
importance rose by at least ``min_delta`` grew, one that fell by as much shrank; an unmatched group of
the second checkpoint appeared, one of the first vanished. Each class's changes are sorted by the
importance they gained, so a fine-tune that started to rely on something new shows it first; with
both networks and images they are ordered instead by how much more the second network relies on
the group's neurons off-class (:mod:`neurflow.atlas.diff_reliance`).

What an unmatched group gained is counted neuron by neuron when the architecture is the same: its
importance minus the importance its member neurons had on the other side (0 for neurons not in that
circuit). The engine regroups the neurons of a retrained network (a group of the class's own
parts may come back split or merged, below ``min_similarity`` of any earlier group) and such a group
gained little, while a group of neurons the first checkpoint did not use at all (a shortcut picked
up by a fine-tune) gained all of its importance. Counted as a whole, every regrouped group looked new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from neurflow.atlas.build import group_importance
from neurflow.core.circuit import Circuit, Group, Layer
from neurflow.core.diff import SCHEMA_VERSION, CircuitDiff, ClassDiff, GroupChange, GroupSide

if TYPE_CHECKING:  # the web process diffs circuits without loading torch; only the reliance needs it
    from torch import nn

    from neurflow.core.images import ImageSet


def _by_class(circuits: Sequence[Circuit], side: str) -> dict[int, Circuit]:
    out: dict[int, Circuit] = {}
    for c in circuits:
        k = c.target.class_index
        if k in out:
            raise ValueError(f"class {k} appears twice among the {side} circuits; give one circuit per class")
        out[k] = c
    return out


def _same_architecture(a: Circuit, b: Circuit) -> bool:
    if (a.model.arch, a.model.num_classes, a.model.input_size) != (b.model.arch, b.model.num_classes, b.model.input_size):
        return False
    shapes = {layer.name: layer.shape for layer in b.layers}
    return all(shapes.get(layer.name, layer.shape) == layer.shape for layer in a.layers)


def _side(layer: Layer, g: Group, importance: dict[str, float]) -> GroupSide:
    label = g.correction.text if g.correction else (g.labels[0].text if g.labels else None)
    return GroupSide(group=g.id, neurons=sorted({m.neuron for m in g.members}), importance=importance[g.id], label=label)


def _similarity(a: GroupSide, b: GroupSide, by_neurons: bool) -> float:
    if by_neurons:
        x, y = set(a.neurons), set(b.neurons)
        return len(x & y) / len(x | y) if x | y else 0.0
    return 1.0 if a.label and b.label and a.label.strip().casefold() == b.label.strip().casefold() else 0.0


def _neuron_importance(layer: Layer | None) -> dict[int, float]:
    """Neuron id -> its importance over the layer's most important neuron (the scale of group_importance)."""
    if layer is None:
        return {}
    top = max((n.importance for n in layer.neurons), default=0.0)
    return {n.id: n.importance / top for n in layer.neurons} if top > 0 else {}


def _held(side: GroupSide, importance: dict[int, float]) -> float:
    """The importance ``side``'s member neurons have in the other circuit (the group_importance mean)."""
    return sum(importance.get(n, 0.0) for n in side.neurons) / len(side.neurons) if side.neurons else 0.0


def _layer_changes(name: str, before: Layer | None, after: Layer | None, by_neurons: bool, min_similarity: float,
                   min_delta: float) -> list[GroupChange]:
    sides_a = [_side(before, g, group_importance(before)) for g in before.groups] if before else []
    sides_b = [_side(after, g, group_importance(after)) for g in after.groups] if after else []
    pairs = sorted(((_similarity(a, b, by_neurons), i, j) for i, a in enumerate(sides_a) for j, b in enumerate(sides_b)),
                   key=lambda t: (-t[0], t[1], t[2]))
    used_a, used_b, out = set(), set(), []
    for sim, i, j in pairs:
        if sim < min_similarity or sim <= 0 or i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        a, b = sides_a[i], sides_b[j]
        delta = round(b.importance - a.importance, 6)
        change = "grew" if delta >= min_delta else "shrank" if delta <= -min_delta else "kept"
        out.append(GroupChange(layer=name, change=change, before=a, after=b, delta=delta,
                               matched_by="neurons" if by_neurons else "label", similarity=round(sim, 4)))
    # by neuron ids: what an unmatched group gained is counted neuron by neuron (the module docstring)
    held_a = _neuron_importance(before) if by_neurons else {}
    held_b = _neuron_importance(after) if by_neurons else {}
    out += [GroupChange(layer=name, change="appeared", before=None, after=b, delta=round(b.importance - _held(b, held_a), 6))
            for j, b in enumerate(sides_b) if j not in used_b]
    # a vanished group gained nothing, even where its neurons live on in the second circuit's groups
    # (they are counted there): it never leads the list of gains
    out += [GroupChange(layer=name, change="vanished", before=a, after=None,
                        delta=round(min(0.0, _held(a, held_b) - a.importance), 6))
            for i, a in enumerate(sides_a) if i not in used_a]
    return out


#: the defaults of :func:`diff_circuits`, `neurflow diff` and ``POST /v1/diffs``
MIN_SIMILARITY = 0.3
MIN_DELTA = 0.15
#: off-class images per class for the reliance (fixed with the rule on the dev planted world, docs/audit.md)
MAX_IMAGES = 96
MAX_IMAGES_RANGE = (4, 10_000)


def diff_circuits(before: Sequence[Circuit], after: Sequence[Circuit], *, min_similarity: float = MIN_SIMILARITY,
                  min_delta: float = MIN_DELTA, models: Sequence[nn.Module] | None = None,
                  images: ImageSet | None = None, labels: Sequence[int | None] | None = None,
                  related: Mapping[int, Sequence[int]] | None = None, max_images: int = MAX_IMAGES) -> CircuitDiff:
    """The diff of two checkpoints' circuits (one per class on each side, the same classes).

    ``models`` (the two networks, first checkpoint's first) and ``images`` (with each image's class:
    ``labels``, default ``images.labels``) add each change's off-class reliance and order each class's
    changes by it; ``related`` maps a class to the classes that legitimately share its content (their
    images are not off-class for it); at most ``max_images`` off-class images per class."""
    if not 0 < min_similarity <= 1:
        raise ValueError(f"min_similarity must lie in (0, 1], got {min_similarity}")
    if not 0 <= min_delta <= 1:  # importances lie in 0..1
        raise ValueError(f"min_delta must lie in [0, 1], got {min_delta}")
    low, high = MAX_IMAGES_RANGE
    if isinstance(max_images, bool) or not isinstance(max_images, int) or not low <= max_images <= high:
        raise ValueError(f"max_images must be a whole number in [{low}, {high}], got {max_images!r}")
    if (models is None) != (images is None):
        raise ValueError("the off-class reliance needs both models (the two networks) and images; pass both or neither")
    if not before or not after:
        raise ValueError("a diff needs circuits on both sides")
    a_by, b_by = _by_class(before, "first"), _by_class(after, "second")
    if set(a_by) != set(b_by):
        raise ValueError(f"both sides must explain the same classes: the first has {sorted(a_by)}, the second "
                         f"{sorted(b_by)}")
    first_a, first_b = a_by[min(a_by)], b_by[min(b_by)]
    same = _same_architecture(first_a, first_b)
    classes = []
    for k in sorted(a_by):
        a, b = a_by[k], b_by[k]
        layers_a = {layer.name: layer for layer in a.layers[1:]}
        layers_b = {layer.name: layer for layer in b.layers[1:]}
        names = [n for n in layers_b if n in layers_a] + [n for n in layers_b if n not in layers_a] + \
                [n for n in layers_a if n not in layers_b]
        changes = [c for n in names for c in _layer_changes(n, layers_a.get(n), layers_b.get(n), same,
                                                           min_similarity, min_delta)]
        changes.sort(key=lambda c: -c.delta)
        classes.append(ClassDiff(class_index=k, name=b.target.name or a.target.name, changes=changes))
    diff = CircuitDiff(schema=SCHEMA_VERSION, before=first_a.model.weights_sha256 or "first",
                       after=first_b.model.weights_sha256 or "second", same_architecture=same,
                       min_similarity=min_similarity, min_delta=min_delta, classes=classes)
    if models is None:
        diff.warnings.append("no models and images: changes are ordered by the importance they gained; the "
                             "off-class reliance was not measured")
        return diff
    from neurflow.atlas.diff_reliance import add_reliance

    return add_reliance(diff, a_by, b_by, models, images, labels=labels, related=related or {}, max_images=max_images)
