"""Captum's Integrated Gradients on a model's own tensors, by plain hooks: independent of the engine's
FX blocks and layout handling, so that tests can hold the engine against it."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients
from torch import nn


def captum_native(model: nn.Module, lower: str, upper: str, x: torch.Tensor, target: int, steps: int,
                  reduce_dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(attribution, lower output), both in the native layout of ``lower``. The lower output is
    replaced through a hook, the upper output read through one and averaged over ``reduce_dims``
    (its positions; () for a vector): the upper neuron ``target``'s readout."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        z = {}
        h = modules[lower].register_forward_hook(lambda _m, _i, o: z.update(z=o.clone()))
        model(x)
        h.remove()

    def forward(zz):
        found = {}
        h1 = modules[lower].register_forward_hook(lambda _m, _i, _o: zz.clone())  # captum passes a leaf
        # read at once, and return None (no replacement): VGG's next ReLU(inplace) modifies the output later
        h2 = modules[upper].register_forward_hook(
            lambda _m, _i, o: found.update(o=o.mean(dim=reduce_dims) if reduce_dims else o.clone()))
        try:
            model(x.repeat(len(zz) // len(x), *([1] * (x.dim() - 1))))
        finally:
            h1.remove()
            h2.remove()
        return found["o"]

    attr = IntegratedGradients(forward).attribute(z["z"], baselines=torch.zeros_like(z["z"]), target=target,
                                                  n_steps=steps, method="gausslegendre")
    return attr, z["z"]


def position_dims(layout: str) -> tuple[int, ...]:
    """The dims a neuron readout averages over, in a native layout (see layer_access.Layout)."""
    return {"CHW": (2, 3), "HWC": (1, 2), "TC": (1,), "CL": (2,), "C": ()}[layout]
