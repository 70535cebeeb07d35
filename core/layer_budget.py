"""How deep a layer list fits a time budget: a short calibration of the model on this machine.

For the candidates of :func:`~neurflow.core.layer_catalog.deep_layers` (classifier, the blocks of the
last stage, the last block of each earlier stage), :func:`calibrate` times one forward pass of a few
images and one IG chunk per adjacent pair, and :func:`estimate` turns those into the seconds of a
fit per class, layer by layer:

:func:`suggest` keeps the longest prefix of the candidates whose estimate fits a budget (the
classifier and one layer below it at least): the suggested list of ``neurflow layers --suggest`` and
of ``layers: "auto"`` (:func:`resolve_layers`, at :data:`~neurflow.core.params.DEFAULT_LAYER_BUDGET_S`
unless told otherwise). Its calibration stops at the first candidate over the budget, and each timing
is the shortest of :data:`TIMING_REPEATS` calls (other work on a shared machine only adds time; the
estimate still reflects the machine's load at the time).

* **readout pass**: every patch once through the model (``images x patches per image`` forwards);
* **IG stages**: for each fitted layer, ``neurons x patches per neuron x seconds per pair``.

  - The neurons of a layer are estimated as ``min(channels, 1.5 * tau * sqrt(neurons above))`` (tau
    below a single neuron; the tau lists of sibling neurons overlap; this fits the measured counts
    1/16/128/301/281 of ResNet-50 and 1/16/57/96/141/119 of the world resnet18 within a factor of two).
  - A pair's seconds are timed at the steps the adaptive preset's ladder reaches on the calibration
    chunk (:func:`~neurflow.core.integrated_gradients.ig_to_tolerance`, each image's most active upper
    neuron as its target): a fine-tuned network can need 16-64 steps where random weights need 2. The
    chunk is the fit's own first images when there are some (``layers: "auto"``), else noise.
  - With the adaptive sampling (``ig_stability``) every top patch is counted: on the planted worlds'
    networks the fits resampled nine in ten neurons on all their top patches.

The estimate is an estimate: it says so wherever it is printed, and ``make bench`` measures the fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import msgspec
import numpy as np
import torch
from torch import nn

from .batch_norm_folding import folded_copy
from .block_gradients import fast_block_gradients
from .integrated_gradients import ig_to_tolerance, multi_target_ig
from .layer_access import LayerAccess, num_channels, readout
from .layer_catalog import deep_layers, probe_model
from .params import DEFAULT_LAYER_BUDGET_S, EngineParams
from .patches import build_index

#: Images the calibration reads: its forward pass and its step ladder; the timed IG chunk repeats them
#: to the preset's batch size.
CALIBRATION_IMAGES = 16
#: Timed calls of each calibration step; the shortest counts.
TIMING_REPEATS = 2
#: How much the tau lists of sibling neurons overlap (see the module docstring).
OVERLAP = 1.5


class LayerEstimate(msgspec.Struct, frozen=True):
    """One candidate layer: its channels, the neurons a fit is expected to keep there, the estimated
    seconds of a fit per class whose list ends at this layer (its IG input), and the IG steps the
    calibration reached on the pair above it."""

    name: str
    channels: int
    neurons: int
    seconds: float
    steps: int = 0


class PairTiming(msgspec.Struct, frozen=True):
    """The calibration of one adjacent pair, keyed by its upper layer: the seconds of one (patch, neuron)
    IG pair at the ``steps`` the preset reached there."""

    seconds: float
    steps: int


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
              channels: int = 3, sample: torch.Tensor | None = None,
              ) -> tuple[float, dict[str, PairTiming], dict[str, tuple[int, ...]]]:
    """Seconds per image of a forward pass, the :class:`PairTiming` of each pair of adjacent ``layers``
    (keyed by the upper layer) and the layers' shapes. ``sample``: model inputs (N, C, S, S) to calibrate
    on, the fit's own images when there are some; the first :data:`CALIBRATION_IMAGES` are used, noise
    when None."""
    timings = _timings(model, layers, input_size, params, channels, sample)
    forward, shapes = next(timings)
    return forward, dict(timings), shapes


def _timings(model: nn.Module, layers: Sequence[str], input_size: int, params: EngineParams, channels: int,
             sample: torch.Tensor | None = None):
    """:func:`calibrate` lazily: first ``(forward seconds, shapes)``, then ``(upper, PairTiming)`` for each
    adjacent pair, so that a caller stops timing once the list is over its budget."""
    p = params.resolved()
    weights = next(iter(model.parameters()), None)
    if sample is not None:
        x = sample[:CALIBRATION_IMAGES].float()
    else:
        x = torch.randn(CALIBRATION_IMAGES, channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(weights.device) if weights is not None else x
    # timed at the fit's sizes: per image and per pair, a small batch costs several times a full one
    batch = _tiled(x, p.batch_size)
    model = model.eval()
    access = LayerAccess(model, list(layers), p.token_reduce)
    with torch.no_grad():
        _, shapes = access.call_order(x)  # also the first call at this batch size, which pays one-off setup costs
        # the readout pass runs on the folded copy when the preset folds batch norms
        reader = (folded_copy(model, layers) if p.fold_batch_norm else None) or model
        reader(x)
        forward = _best_of(lambda: reader(x)) / len(x)
        del reader
    yield forward, shapes
    for upper, lower in zip(layers, layers[1:]):
        block = access.block(lower, upper)
        xin = x if block.needs_input else None
        with torch.no_grad():
            z = access.full_output(x, lower)
            above = readout(block(z, xin), p.token_reduce).double()
        # each image's most active upper neuron: a fit's targets are neurons on their top patches
        targets = [[int(t)] for t in above.argmax(dim=1)]
        steps = p.ig_steps
        with fast_block_gradients(model):
            if p.ig_tolerance != "off":
                with torch.no_grad():
                    zero = readout(block(torch.zeros_like(z), xin), p.token_reduce).double()
                delta = np.array([float(above[r, t[0]] - zero[r, t[0]])
                                  for r, t in enumerate(targets)])
                _, steps, _, _ = ig_to_tolerance(block, z, targets, steps, p.ig_tolerance, delta, p.token_reduce, x=xin)
            zb = _tiled(z, p.batch_size)
            rows = [targets[r % len(targets)] for r in range(len(batch))]
            seconds = _best_of(lambda: multi_target_ig(block, zb, rows, steps, p.token_reduce, x=batch))
        yield upper, PairTiming(seconds=seconds / len(zb), steps=steps)


def _tiled(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``rows`` rows of ``t``, its rows repeated in order."""
    return t.repeat(-(-rows // len(t)), *([1] * (t.dim() - 1)))[:rows]


def _best_of(run, repeats: int = TIMING_REPEATS) -> float:
    """Seconds of ``run`` on this machine when quiet: the process's CPU seconds over its torch threads (other
    work on a shared machine stretches the wall time several-fold, the CPU seconds far less), the shortest of
    ``repeats`` calls (interference only ever adds time)."""
    threads = max(1, torch.get_num_threads())
    best = math.inf
    for _ in range(repeats):
        started = time.process_time()
        run()
        best = min(best, (time.process_time() - started) / threads)
    return best


def estimate(layers: Sequence[str], forward: float, per_pair: dict[str, PairTiming], shapes: dict[str, tuple[int, ...]],
             params: EngineParams, n_images: int, input_size: int) -> list[LayerEstimate]:
    """Per layer from the second one down: the estimated seconds of a fit whose list ends there."""
    p = params.resolved()
    patches = n_images * len(build_index(1, input_size, p.granularities, p.stride_ratio))
    top = min(p.top_n, patches)
    per_neuron = top if p.ig_patches is None or p.ig_stability != "off" else min(p.ig_patches, top)
    seconds = patches * forward
    neurons = 1
    out = []
    for upper, lower in zip(layers, layers[1:]):
        seconds += neurons * per_neuron * per_pair[upper].seconds
        c = num_channels(shapes[lower])
        neurons = min(c, p.tau if neurons == 1 else math.ceil(OVERLAP * p.tau * math.sqrt(neurons)))
        out.append(LayerEstimate(lower, c, neurons, round(seconds, 1), per_pair[upper].steps))
    return out


def within_budget(layers: Sequence[str], estimates: list[LayerEstimate], budget_s: float) -> list[str]:
    """The longest prefix of ``layers`` (at least two) whose estimate fits ``budget_s``."""
    keep = 2
    for k, row in enumerate(estimates):
        if row.seconds <= budget_s:
            keep = k + 2
    return list(layers[:keep])


#: Images per class a suggestion assumes when the caller does not know them (the method's 50).
DEFAULT_IMAGES = 50


class Suggestion(msgspec.Struct, frozen=True):
    """A layer list within a time budget: ``layers`` (from the output down, at least two), the
    ``candidates`` it is a prefix of, the estimate of every candidate that was timed (the chosen ones
    and the first one over the budget; the classifier has no row: its set is the class) and what the
    estimate assumed."""

    layers: list[str]
    candidates: list[str]
    estimates: list[LayerEstimate]
    budget_s: float
    images: int
    tau: int
    preset: str


def suggest(model: nn.Module, input_size: int, params: EngineParams | None = None, n_images: int = DEFAULT_IMAGES,
            budget_s: float = DEFAULT_LAYER_BUDGET_S, channels: int = 3,
            probes: dict | None = None, sample: torch.Tensor | None = None) -> Suggestion:
    """The layers a fit uses when it is not told (``--suggest``, ``"layers": "auto"``): the longest prefix of
    :func:`~neurflow.core.layer_catalog.deep_layers` whose estimated fit per class (``n_images`` images and
    ``params``' tau, sizes and preset) fits ``budget_s``, from a calibration on this machine (on ``sample``, see
    :func:`calibrate`) that stops at the first candidate over the budget. The classifier and one layer below it
    are always kept."""
    if not budget_s > 0:
        raise ValueError(f"budget {budget_s!r} s must be positive")
    probes = probes if probes is not None else probe_model(model, input_size, channels)
    candidates = deep_layers(model, probes)
    if len(candidates) < 2:
        raise ValueError(f"no block below the classifier {candidates[0]!r} could be read, so no layer list can be "
                         "suggested; give engine.layers by hand (`neurflow layers ARCH` lists the readable layers)")
    params = msgspec.structs.replace(params or EngineParams(layers=candidates, preset="fast"), layers=candidates)
    timings = _timings(model, candidates, input_size, params, channels, sample)
    forward, shapes = next(timings)
    per_pair: dict[str, PairTiming] = {}
    rows: list[LayerEstimate] = []
    for k, (upper, timing) in enumerate(timings):
        per_pair[upper] = timing
        rows = estimate(candidates[:k + 2], forward, per_pair, shapes, params, n_images, input_size)
        if rows[-1].seconds > budget_s:
            break
    timings.close()
    p = params.resolved()
    return Suggestion(layers=within_budget(candidates, rows, budget_s), candidates=candidates, estimates=rows,
                      budget_s=budget_s, images=n_images, tau=p.tau, preset=p.preset)


def resolve_layers(params: EngineParams, model: nn.Module, input_size: int, n_images: int = DEFAULT_IMAGES,
                   channels: int = 3, sample: torch.Tensor | None = None) -> EngineParams:
    """``params`` with ``layers: "auto"`` replaced by :func:`suggest`'s list for this fit (its images, tau,
    sizes and preset; calibrated on ``sample``, the fit's first images) within
    :data:`DEFAULT_LAYER_BUDGET_S`; any other ``layers`` unchanged."""
    if params.layers != "auto":
        return params
    found = suggest(model, input_size, params, n_images, channels=channels, sample=sample)
    return msgspec.structs.replace(params, layers=found.layers)
