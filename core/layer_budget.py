"""How deep a layer list fits a time budget: a short calibration of the model on this machine.

For the candidates of :func:`~neurflow.core.layer_catalog.deep_layers` (classifier, the blocks of the
last stage, the last block of each earlier stage), :func:`calibrate` times one forward pass of a few
images and one IG chunk per adjacent pair, and :func:`estimate` turns those into the seconds of a
fit per class, layer by layer:

* **readout pass**: every patch once through the model (``images x patches per image`` forwards);
* **IG stages**: for each fitted layer, ``neurons x patches per neuron x seconds per pair``. The
  neurons of a layer are estimated as ``min(channels, 1.5 * tau * sqrt(neurons above))`` (tau below
  a single neuron; the tau
  lists of sibling neurons overlap; this fits the measured counts 1/16/128/301/281 of ResNet-50 and
  1/16/57/96/141/119 of the world resnet18 within a factor of two); the fast preset's patches per
  neuron are taken halfway between its sample (``ig_patches``) and every top patch, and its steps
  as twice its starting steps (what the adaptive ladder chose on the fidelity bench's cases).

The estimate is an estimate: it says so wherever it is printed, and ``make bench`` measures the fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import msgspec
import torch
from torch import nn

from .block_gradients import fast_block_gradients
from .integrated_gradients import multi_target_ig
from .layer_access import LayerAccess, num_channels
from .params import EngineParams
from .patches import build_index

#: Images of the calibration batch (its forward pass and each IG chunk).
CALIBRATION_IMAGES = 4
#: How much the tau lists of sibling neurons overlap (see the module docstring).
OVERLAP = 1.5


class LayerEstimate(msgspec.Struct, frozen=True):
    """One candidate layer: its channels, the neurons a fit is expected to keep there, and the
    estimated seconds of a fit per class whose list ends at this layer (its IG input)."""

    name: str
    channels: int
    neurons: int
    seconds: float


def parse_budget(text: str) -> float:
    """Seconds of a budget written ``600``, ``600s``, ``10m`` or ``1.5h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    body, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        value = float(body) * unit
    except ValueError:
        raise ValueError(f"budget {text!r} is not a duration; write seconds (600, 600s), minutes (10m) or hours (1.5h)") from None
    if not value > 0:
        raise ValueError(f"budget {text!r} must be positive")
    return value


def calibrate(model: nn.Module, layers: Sequence[str], input_size: int, params: EngineParams,
              channels: int = 3) -> tuple[float, dict[str, float], dict[str, tuple[int, ...]]]:
    """Seconds per image of a forward pass, seconds per (patch, neuron) IG pair of each pair of adjacent
    ``layers`` (keyed by the upper layer, at the preset's starting steps) and the layers' shapes."""
    p = params.resolved()
    torch.manual_seed(0)
    x = torch.randn(CALIBRATION_IMAGES, channels, input_size, input_size)
    model = model.eval()
    access = LayerAccess(model, list(layers), p.token_reduce)
    with torch.no_grad():
        _, shapes = access.call_order(x[:1])  # also the first call, which pays one-off setup costs
        started = time.perf_counter()
        model(x)
        forward = (time.perf_counter() - started) / len(x)
    per_pair = {}
    for upper, lower in zip(layers, layers[1:]):
        with torch.no_grad():
            z = access.full_output(x, lower)
        block = access.block(lower, upper)
        started = time.perf_counter()
        with fast_block_gradients(model):
            multi_target_ig(block, z, [[0]] * len(z), p.ig_steps, p.token_reduce, x=x)
        per_pair[upper] = (time.perf_counter() - started) / len(z)
    return forward, per_pair, shapes


def estimate(layers: Sequence[str], forward: float, per_pair: dict[str, float], shapes: dict[str, tuple[int, ...]],
             params: EngineParams, n_images: int, input_size: int) -> list[LayerEstimate]:
    """Per layer from the second one down: the estimated seconds of a fit whose list ends there."""
    p = params.resolved()
    patches = n_images * len(build_index(1, input_size, p.granularities, p.stride_ratio))
    top = min(p.top_n, patches)
    per_neuron = top if p.ig_patches is None else (min(p.ig_patches, top) + top) / 2
    steps_factor = 1.0 if p.ig_tolerance == "off" else 2.0
    seconds = patches * forward
    neurons = 1
    out = []
    for upper, lower in zip(layers, layers[1:]):
        seconds += neurons * per_neuron * per_pair[upper] * steps_factor
        c = num_channels(shapes[lower])
        neurons = min(c, p.tau if neurons == 1 else math.ceil(OVERLAP * p.tau * math.sqrt(neurons)))
        out.append(LayerEstimate(lower, c, neurons, round(seconds, 1)))
    return out


def within_budget(layers: Sequence[str], estimates: list[LayerEstimate], budget_s: float) -> list[str]:
    """The longest prefix of ``layers`` (at least two) whose estimate fits ``budget_s``."""
    keep = 2
    for k, row in enumerate(estimates):
        if row.seconds <= budget_s:
            keep = k + 2
    return list(layers[:keep])
