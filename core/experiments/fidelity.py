"""Fidelity curves of core neurons (the paper's four panels).

For each masking point X (a layer of the circuit below the class layer, from the top down): zero the
core neurons of X ("single") or of X and every circuit layer above it ("multi"), or zero everything
*but* them ("retain"), and measure how many of the class's images are still predicted as the class.
The control is a random set of the same size drawn independently in each layer, averaged over draws.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from ..ablation import ablate, batched_logits
from ..circuit import Circuit
from ..model_output import OutputSelector
from ..layer_access import num_channels
from .results import FidelityCurve, FidelityPoint


def core_layers(circuit: Circuit) -> list[tuple[str, list[int], int]]:
    """(layer, core neuron ids, channel count) of each circuit layer below the class layer, top first.

    The core set of a layer is the union of the lower ends of the edges of the layer above; this also
    covers the bottom layer, whose core neurons are not fitted themselves (it has no layer below)."""
    out = []
    for upper, lay in zip(circuit.layers, circuit.layers[1:]):
        ids = sorted({e.neuron for n in upper.neurons for c in n.concepts for e in c.edges})
        if ids:
            out.append((lay.name, ids, num_channels(lay.shape)))
    return out


def _score(model: nn.Module, pixels: torch.Tensor, target: int, channels: dict[str, list[int]],
           keep: bool, output: OutputSelector = None) -> tuple[float, float]:
    with ablate(model, channels, keep=keep):
        logits = batched_logits(model, pixels, output=output)
    return float((logits.argmax(1) == target).float().mean()), float(logits[:, target].mean())


def fidelity_curves(model: nn.Module, circuit: Circuit, pixels: torch.Tensor, target: int, n_random: int,
                    rng: np.random.Generator, tau: int | None = None) -> list[FidelityCurve]:
    """The four curves (single/multi x mask/retain) of one circuit on ``pixels`` (images of ``target``)."""
    model = model.eval()
    layers = core_layers(circuit)
    output = circuit.params.output
    base_acc, base_logit = _score(model, pixels, target, {}, keep=False, output=output)
    curves = []
    modes: tuple[Literal["single", "multi"], ...] = ("single", "multi")
    operations: tuple[Literal["mask", "retain"], ...] = ("mask", "retain")
    for mode in modes:
        for operation in operations:
            keep = operation == "retain"
            points = []
            for i, (name, _, _) in enumerate(layers):
                chosen = layers[i:i + 1] if mode == "single" else layers[: i + 1]
                core = {n: ids for n, ids, _ in chosen}
                acc, logit = _score(model, pixels, target, core, keep, output)
                rand = [_score(model, pixels, target,
                               {n: sorted(rng.choice(c, size=len(ids), replace=False).tolist()) for n, ids, c in chosen},
                               keep, output) for _ in range(n_random)]
                points.append(FidelityPoint(
                    layer=name, n_channels=sum(len(ids) for _, ids, _ in chosen), core_accuracy=acc,
                    random_accuracy=float(np.mean([r[0] for r in rand])),
                    random_accuracy_std=float(np.std([r[0] for r in rand])),
                    core_logit=logit, random_logit=float(np.mean([r[1] for r in rand]))))
            curves.append(FidelityCurve(class_index=int(target), tau=int(tau or circuit.params.tau),
                                        mode=mode, operation=operation, n_images=int(len(pixels)),
                                        base_accuracy=base_acc, base_logit=base_logit, points=points))
    return curves
