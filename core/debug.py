"""Image debugging: which neuron groups of a circuit fire on one image, where, and what they do.

Crop score (the paper's log-barrier): for group G with member concepts (n_t, k_t),
``b(x, G) = mean_t log(max(a_{n_t}(x), 0) / (|mu_{n_t}| + 1e-6) + 1e-6)``, where ``mu_n`` is the mean
activation of n's member concepts in G. A non-positive activation costs log(1e-6) (the barrier); a
ratio above 1 is not capped. The group score is ``exp(max_x b(x, G))`` over the image's crops, and
the crops with ``b >= log(threshold)`` are the ones that fire the group.

Members: as in the reference (``num_top_vecs``, default 5), only the ``n_members`` member concepts
nearest the group centroid take part (a group's members are stored nearest first); ``None`` uses all.
The same members' neurons are the ones ablated.
"""

from __future__ import annotations

import math
from collections import defaultdict

import msgspec
import numpy as np
import torch
from PIL import Image
from torch import nn

from .ablation import ablate
from .circuit import Circuit, Group
from .images import Geometry, Preprocess
from .layer_access import LayerAccess
from .model_output import class_scores
from .patches import build_index, make_patches

EPS = 1e-6
#: Member concepts per group used for debugging: the reference's ``num_top_vecs`` default.
DEBUG_MEMBERS = 5


class FiringCrop(msgspec.Struct):
    box: list[int]  # source-image pixels
    score: float  # exp(b(x, G))


class GroupDebug(msgspec.Struct):
    id: str
    score: float
    fires: bool
    label: str | None
    crops: list[FiringCrop]
    ablated_logit: float  # target logit with the group's neurons zeroed
    logit_change: float  # ablated_logit - logit


class DebugResult(msgspec.Struct):
    layer: str
    target: int
    predicted: int
    logit: float
    probability: float
    threshold: float
    groups: list[GroupDebug]


def nearest_members(group: Group, n_members: int | None) -> list:
    """The group's ``n_members`` member concepts nearest its centroid (all for ``None``)."""
    return list(group.members if n_members is None else group.members[:n_members])


def log_barrier_scores(acts: np.ndarray, group: Group, reference: dict[tuple[int, int], float],
                       n_members: int | None = None) -> np.ndarray:
    """b(x, G) for every crop over the group's ``n_members`` nearest members; ``acts`` is
    (crops, channels) of the group's layer."""
    members = nearest_members(group, n_members)
    terms = []
    for m in members:
        mu = float(np.mean([reference[(o.neuron, o.concept)] for o in members if o.neuron == m.neuron]))
        terms.append(np.log(np.maximum(acts[:, m.neuron], 0.0) / (abs(mu) + EPS) + EPS))
    return np.mean(terms, axis=0)


def default_debug_layer(circuit: Circuit) -> str:
    """The highest layer below the class layer that has groups (the reference debugs there)."""
    for layer in circuit.layers[1:]:
        if layer.groups:
            return layer.name
    return circuit.layers[0].name


def debug_image(model: nn.Module, circuit: Circuit, image: Image.Image, layer: str | None = None,
                threshold: float = 0.8, granularities: tuple[float, ...] | None = None,
                max_crops: int = 5, n_members: int | None = DEBUG_MEMBERS, mean: list[float] | None = None,
                std: list[float] | None = None) -> DebugResult:
    """Score every group of ``layer`` on ``image`` and ablate each group to see its effect;
    ``n_members``: member concepts per group taken into account, nearest the centroid first.
    The image is normalised as the circuit records (``mean``/``std`` override it); a circuit whose
    normalisation is unknown (fit on a bare tensor without mean/std) needs them."""
    if not 0 < threshold:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if n_members is not None and (not isinstance(n_members, int) or n_members < 1):
        raise ValueError(f"n_members must be a positive integer or None (all members), got {n_members!r}")
    info = circuit.model
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (the circuit's recorded normalisation is used)")
    if mean is None and info.normalisation == "unknown":
        raise ValueError("the circuit does not record how its images were normalised (it was fit on a bare tensor "
                         "without mean/std), so this image cannot be brought to the same model input; pass mean= "
                         "and std= (the normalisation the fit's pixels had), or fit with an ImageSet or with "
                         "mean/std")
    layer = layer or default_debug_layer(circuit)
    spec = circuit.layer(layer)
    if not spec.groups:
        raise ValueError(f"layer {layer!r} has no neuron groups; layers with groups: "
                         f"{[lay.name for lay in circuit.layers if lay.groups]}")
    pixels = Preprocess(info.input_size, info.mean if mean is None else mean,
                        info.std if std is None else std)(image.convert("RGB")).unsqueeze(0)
    geometry = Geometry(image.size[0], image.size[1], info.input_size)
    grans = granularities or tuple(circuit.params.granularities)
    index = build_index(1, info.input_size, grans, circuit.params.stride_ratio)
    access = LayerAccess(model.eval(), [layer], circuit.params.token_reduce)
    output = circuit.params.output
    with torch.no_grad():
        acts = access.readouts(make_patches(pixels, index, np.arange(len(index))))[layer].double().numpy()
        logits = class_scores(model(pixels), output).float()[0]
    target = circuit.target.class_index
    logit = float(logits[target])
    reference = {(n.id, c.id): c.activation for n in spec.neurons for c in n.concepts}
    results = []
    for group in spec.groups:
        b = log_barrier_scores(acts, group, reference, n_members)
        best = float(b.max())
        firing = np.nonzero(b >= math.log(threshold))[0]
        firing = firing[np.argsort(-b[firing], kind="stable")][:max_crops]
        crops = [FiringCrop(box=geometry.to_source(tuple(float(v) for v in index.box[p])), score=float(math.exp(b[p])))
                 for p in firing]
        neurons = sorted({m.neuron for m in nearest_members(group, n_members)})
        with ablate(model, {layer: neurons}), torch.no_grad():
            ablated = float(class_scores(model(pixels), output).float()[0, target])
        results.append(GroupDebug(id=group.id, score=math.exp(best), fires=best >= math.log(threshold),
                                  label=group.labels[0].text if group.labels else None, crops=crops,
                                  ablated_logit=ablated, logit_change=ablated - logit))
    results.sort(key=lambda g: -g.score)
    probs = torch.softmax(logits, dim=0)
    return DebugResult(layer=layer, target=target, predicted=int(logits.argmax()), logit=logit,
                       probability=float(probs[target]), threshold=threshold, groups=results)


def group_neurons(circuit: Circuit, layer: str) -> dict[str, list[int]]:
    """Unique member neurons of every group of a layer."""
    out: dict[str, set[int]] = defaultdict(set)
    for g in circuit.layer(layer).groups:
        out[g.id].update(m.neuron for m in g.members)
    return {k: sorted(v) for k, v in out.items()}
