"""A straightforward implementation of the reference code's *structure*, for speed/memory baselines.

This is our own code, written from the method description (docs: neurflow-method.md §1.3-1.5), not
the reference repository. It keeps the reference's computational shape, which is what the bench
compares against:

* every crop of every selected image is materialised at once as one ``(D, 3, S, S)`` tensor;
* for every fitted layer, the lower activations ``Z = netA(D)`` of **all** crops are recomputed from
  the pixels (full ``C x H x W`` maps, kept in memory), then the upper readouts ``a = block(Z)``;
* for every core neuron ``i`` of the upper layer: its top-N crops by activation, one captum
  ``IntegratedGradients`` call per mini-batch of ``batch_size`` crops (``n_steps=ig_steps``,
  ``method='gausslegendre'``, zero baselines, ``target=i``) on ``z -> readout(block(z))``; spatial mean
  of the attributions -> signed per-channel scores; rank channels by mean ``|score|``; keep top-tau;
* the next layer's core neurons are the union of the kept channels (sorted).

Concept clustering, grouping and edge weights are skipped: they are a few seconds of scikit-learn
work on small matrices next to minutes of Integrated Gradients, in the reference and in the engine
alike (the engine's ``timings`` show them), so leaving them out makes the baseline slightly *faster*.
Optional pruning is off (the reference's run setting, ``acceptable_error_range=-1``).

It uses the engine's layer plumbing (``LayerAccess`` for netA / the block, ``make_patches`` for the
crop geometry) so that both compute the same numbers and the core-neuron sets can be compared
exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from captum.attr import IntegratedGradients

from neurflow.core.layer_access import LayerAccess, readout
from neurflow.core.patches import build_index, make_patches


@dataclass
class BaselineResult:
    """Core-neuron ids per layer (``layers[:-1]``), the bottom layer's kept channels, and timings."""

    core: dict[str, list[int]]
    bottom_chosen: list[int]
    n_patches: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_core_neurons(self) -> int:
        return sum(len(v) for v in self.core.values())


def reference_fit(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    target_class: int,
    layers: Sequence[str],
    tau: int = 16,
    top_n: int = 50,
    granularities: Sequence[float] = (1.0, 0.5, 0.25),
    stride_ratio: float = 0.5,
    ig_steps: int = 50,
    batch_size: int = 8,
    forward_batch_size: int = 128,
    device: str = "cpu",
    progress=None,
) -> BaselineResult:
    """Fit the core neurons of ``layers`` (output first) for ``target_class`` the reference's way.

    ``pixels`` are the already-selected, normalised model inputs ``(N, 3, S, S)``.
    """
    layers = list(layers)
    model = model.eval().to(device)
    pixels = pixels.to(device)
    access = LayerAccess(model, layers)
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    index = build_index(len(pixels), pixels.shape[-1], granularities, stride_ratio)
    crops = make_patches(pixels, index, np.arange(len(index)))  # all D crops at once, as the reference
    timings["crops"] = time.perf_counter() - clock

    core: dict[str, list[int]] = {}
    current = [int(target_class)]
    chosen_union: set[int] = set()
    for u in range(len(layers) - 1):
        upper, lower = layers[u], layers[u + 1]
        clock = time.perf_counter()
        core[upper] = list(current)
        block = access.block(lower, upper)

        def wrapper(z: torch.Tensor, block=block) -> torch.Tensor:
            return readout(block(z))

        with torch.no_grad():
            # netA recomputed from pixels for this layer, for every crop (full maps kept).
            z_all = torch.cat([access.full_output(crops[s:s + forward_batch_size], lower)
                               for s in range(0, len(crops), forward_batch_size)])
            a_up = torch.cat([wrapper(z_all[s:s + forward_batch_size])
                              for s in range(0, len(z_all), forward_batch_size)]).float().cpu()
        timings[f"forward:{upper}"] = time.perf_counter() - clock

        ig = IntegratedGradients(wrapper)
        n_top = min(top_n, len(index))
        n_lower = z_all.shape[1]
        tau_l = min(tau, n_lower)
        chosen_union = set()
        for done, i in enumerate(current):
            top = torch.topk(a_up[:, i], n_top, sorted=True).indices
            scores = []
            for s in range(0, n_top, batch_size):
                z = z_all[top[s:s + batch_size].to(z_all.device)]
                attr = ig.attribute(z, baselines=torch.zeros_like(z), target=int(i), n_steps=ig_steps,
                                    method="gausslegendre")
                scores.append(attr.mean(dim=(2, 3)) if attr.dim() == 4 else attr)
            s_mat = torch.cat(scores).double().cpu().numpy()  # (n_top, C_lower), signed
            ranking = np.abs(s_mat).mean(axis=0)
            chosen = np.argsort(-ranking, kind="stable")[:tau_l]
            chosen_union.update(int(j) for j in chosen)
            if progress:
                progress(f"ig {upper}", done + 1, len(current))
        del z_all
        timings[f"layer:{upper}"] = time.perf_counter() - clock
        current = sorted(chosen_union)
    return BaselineResult(core=core, bottom_chosen=sorted(chosen_union), n_patches=len(index), timings=timings)


def engine_core_sets(circuit) -> tuple[dict[str, list[int]], list[int]]:
    """Core-neuron ids per fitted layer of an engine ``Circuit``, and the bottom layer's kept channels
    (the union of the edge targets of the last fitted layer's concepts)."""
    core = {layer.name: sorted(n.id for n in layer.neurons) for layer in circuit.layers[:-1]}
    last = circuit.layers[-2]
    bottom = sorted({e.neuron for n in last.neurons for c in n.concepts for e in c.edges})
    return core, bottom


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)
