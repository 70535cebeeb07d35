"""Layer lists within a time budget (core/layer_budget.py, layer_catalog.deep_layers)."""

from __future__ import annotations

import pytest
import torchvision

from neurflow.core.layer_budget import LayerEstimate, calibrate, estimate, parse_budget, within_budget
from neurflow.core.layer_catalog import deep_layers, probe_model, suggest_layers
from neurflow.core.params import EngineParams


def test_budgets_read_as_seconds():
    assert [parse_budget(t) for t in ("600", "600s", "10m", "1.5h")] == [600, 600, 600, 5400]
    for bad in ("ten", "", "-5m", "0"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_the_candidates_are_the_last_stage_block_by_block_then_each_earlier_stage():
    model = torchvision.models.resnet50(num_classes=3)
    probes = probe_model(model, 64)
    assert deep_layers(model, probes) == ["fc", "layer4.2", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]
    assert suggest_layers(model, probes) == ["fc", "layer4", "layer3", "layer2", "layer1"]  # unchanged


def test_the_estimate_adds_the_readout_pass_and_each_stage():
    layers = ["fc", "a", "b", "c"]
    shapes = {"fc": (3,), "a": (64, 2, 2), "b": (64, 2, 2), "c": (10, 4, 4)}
    params = EngineParams(layers=layers, tau=4, top_n=10, granularities=[1.0], preset="exact")
    rows = estimate(layers, 0.5, {"fc": 0.1, "a": 0.2, "b": 0.3}, shapes, params, n_images=20, input_size=32)
    # 20 patches x 0.5 s; then neurons x 10 patches x seconds per pair: 1 neuron, then tau = 4, then 1.5 * 4 * 2 = 12
    assert rows == [LayerEstimate("a", 64, 4, 10 + 1.0), LayerEstimate("b", 64, 12, 11 + 8.0),
                    LayerEstimate("c", 10, 10, 19 + 36.0)]
    assert within_budget(layers, rows, 20) == ["fc", "a", "b"]
    assert within_budget(layers, rows, 1) == ["fc", "a"]
    fast = estimate(layers, 0.5, {"fc": 0.1, "a": 0.2, "b": 0.3}, shapes,
                    EngineParams(layers=layers, tau=4, top_n=10, granularities=[1.0], preset="fast", ig_patches=4),
                    n_images=20, input_size=32)
    assert fast[0].seconds == 10 + 1 * 7 * 0.1 * 2  # half-way between 4 and 10 patches, twice the starting steps


def test_calibration_times_a_forward_and_one_ig_chunk_per_layer(tiny_resnet):
    layers = ["fc", "layer4.1", "layer4.0"]
    forward, per_pair, shapes = calibrate(tiny_resnet, layers, 32, EngineParams(layers=layers, preset="fast"))
    assert forward > 0 and set(per_pair) == {"fc", "layer4.1"} and all(v > 0 for v in per_pair.values())
    assert shapes["layer4.0"] == (512, 1, 1)
