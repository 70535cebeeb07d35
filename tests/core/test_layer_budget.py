"""Layer lists within a time budget (core/layer_budget.py, layer_catalog.deep_layers): the one rule behind
``neurflow layers --suggest``, ``--budget`` and ``"layers": "auto"``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from neurflow.core.engine import NeurFlow
from neurflow.core.layer_budget import (LayerEstimate, PairTiming, calibrate, estimate, parse_budget, resolve_layers,
                                        suggest, within_budget)
from neurflow.core.layer_catalog import deep_layers, probe_model
from neurflow.core.params import DEFAULT_LAYER_BUDGET_S, EngineParams


def test_budgets_read_as_seconds():
    assert [parse_budget(t) for t in ("600", "600s", "10m", "1.5h")] == [600, 600, 600, 5400]
    for bad in ("ten", "", "-5m", "0"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_the_candidates_are_the_last_stage_block_by_block_then_each_earlier_stage():
    model = torchvision.models.resnet50(num_classes=3)
    probes = probe_model(model, 64)
    assert deep_layers(model, probes) == ["fc", "layer4.2", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]


def test_the_estimate_adds_the_readout_pass_and_each_stage():
    layers = ["fc", "a", "b", "c"]
    shapes = {"fc": (3,), "a": (64, 2, 2), "b": (64, 2, 2), "c": (10, 4, 4)}
    params = EngineParams(layers=layers, tau=4, top_n=10, granularities=[1.0], preset="exact")
    timed = {"fc": PairTiming(0.1, 50), "a": PairTiming(0.2, 50), "b": PairTiming(0.3, 50)}
    rows = estimate(layers, 0.5, timed, shapes, params, n_images=20, input_size=32)
    # 20 patches x 0.5 s; then neurons x 10 patches x seconds per pair: 1 neuron, then tau = 4, then 1.5 * 4 * 2 = 12
    assert rows == [LayerEstimate("a", 64, 4, 10 + 1.0, 50), LayerEstimate("b", 64, 12, 11 + 8.0, 50),
                    LayerEstimate("c", 10, 10, 19 + 36.0, 50)]
    assert within_budget(layers, rows, 20) == ["fc", "a", "b"]
    assert within_budget(layers, rows, 1) == ["fc", "a"]
    fast = {"fc": PairTiming(0.1, 16), "a": PairTiming(0.2, 2), "b": PairTiming(0.3, 2)}
    sampled = dict(layers=layers, tau=4, top_n=10, granularities=[1.0], preset="fast", ig_patches=4)
    # the pair's seconds are already at the steps the ladder reached (16 here); with the adaptive sampling
    # every top patch counts (the fits resample most neurons), without it the sample of 4
    assert estimate(layers, 0.5, fast, shapes, EngineParams(**sampled), 20, 32)[0] == LayerEstimate("a", 64, 4, 10 + 10 * 0.1, 16)
    assert estimate(layers, 0.5, fast, shapes, EngineParams(**sampled, ig_stability="off"), 20, 32)[0].seconds == 10 + 4 * 0.1


def test_calibration_times_a_forward_and_one_ig_chunk_per_layer(tiny_resnet):
    layers = ["fc", "layer4.1", "layer4.0"]
    forward, per_pair, shapes = calibrate(tiny_resnet, layers, 32, EngineParams(layers=layers, preset="fast"))
    assert forward > 0 and set(per_pair) == {"fc", "layer4.1"}
    assert all(v.seconds > 0 and v.steps >= 2 for v in per_pair.values())
    assert shapes["layer4.0"] == (512, 1, 1)
    exact = calibrate(tiny_resnet, layers, 32, EngineParams(layers=layers, preset="exact"))[1]
    assert [v.steps for v in exact.values()] == [50, 50]  # no ladder: the preset's steps


class _Power(nn.Module):
    """z ** p elementwise: IG's integrand along the path is a polynomial of degree p - 1 in alpha, which
    n Gauss-Legendre steps integrate exactly when p - 1 <= 2n - 1 (and not below)."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, z):
        return z ** self.p


def _power_net(p: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), _Power(p), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


@pytest.mark.parametrize("power, steps", [(3, 2), (8, 4), (16, 8)])
def test_the_calibration_reaches_the_steps_the_fit_reaches(power, steps, random_images):
    model, layers = _power_net(power), ["4", "1", "0"]
    params = EngineParams(layers=layers, preset="fast")
    per_pair = calibrate(model, layers, 32, params, sample=random_images)[1]
    assert per_pair["4"].steps == 2  # linear above: the starting steps are exact
    assert per_pair["1"].steps == steps  # the closed form's
    circuit = NeurFlow(layers, tau=2, top_n=6, granularities=[1.0], preset="fast", select="all").fit(
        model, random_images, 0).circuit_
    assert [layer.ig.steps for layer in circuit.layers[:-1]] == [2, steps]


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


def test_a_larger_budget_keeps_a_longer_list_of_the_same_candidates(resnet18):
    layers = deep_layers(resnet18, probe_model(resnet18, 32))
    assert layers == ["fc", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]
    params = EngineParams(layers=layers, preset="fast")
    forward, per_pair, shapes = calibrate(resnet18, layers, 32, params)
    rows = estimate(layers, forward, per_pair, shapes, params, n_images=50, input_size=32)
    seconds = [row.seconds for row in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0  # a deeper list never costs less
    lists = [within_budget(layers, rows, b) for b in [s * f for s in seconds for f in (0.99, 1.0)] + [1e-9, 1e9]]
    lists.sort(key=len)
    assert lists[0] == layers[:2] and lists[-1] == layers
    for short, long in zip(lists, lists[1:]):
        assert long[:len(short)] == short


def test_the_suggestion_is_a_prefix_of_the_candidates_with_estimates(resnet18):
    candidates = deep_layers(resnet18, probe_model(resnet18, 32))
    tiny = suggest(resnet18, 32, EngineParams(layers="auto", tau=4, preset="fast"), n_images=8, budget_s=1e-6)
    assert tiny.layers == candidates[:2] and tiny.candidates == candidates
    assert [row.name for row in tiny.estimates] == ["layer4.1"]  # the calibration stopped at the first over budget
    everything = suggest(resnet18, 32, EngineParams(layers="auto", tau=4, preset="fast"), n_images=8, budget_s=1e6)
    assert everything.layers == candidates
    assert [(row.name, row.channels) for row in everything.estimates] == [
        ("layer4.1", 512), ("layer4.0", 512), ("layer3", 256), ("layer2", 128), ("layer1", 64)]
    assert all(row.seconds > 0 and 1 <= row.neurons <= row.channels for row in everything.estimates)
    assert (everything.budget_s, everything.images, everything.tau, everything.preset) == (1e6, 8, 4, "fast")
    with pytest.raises(ValueError, match="budget"):
        suggest(resnet18, 32, budget_s=0)


def test_auto_is_the_suggestion_at_the_default_budget(resnet18):
    params = EngineParams(layers="auto", tau=2, top_n=3, granularities=[1.0], preset="fast")
    expected = suggest(resnet18, 32, params, n_images=3)
    assert expected.budget_s == DEFAULT_LAYER_BUDGET_S
    # three 32 px images: every candidate fits ten minutes by orders of magnitude, whatever the load
    assert expected.layers == expected.candidates
    assert resolve_layers(params, resnet18, 32, 3).layers == expected.layers
    assert resolve_layers(EngineParams(layers=["fc", "layer4"]), resnet18, 32).layers == ["fc", "layer4"]
    torch.manual_seed(3)
    circuit = NeurFlow("auto", tau=2, top_n=3, granularities=[1.0], preset="fast", select="all", n_groups=1,
                       max_concepts=2).fit(resnet18, torch.randn(3, 3, 32, 32), 1).circuit_
    assert [layer.name for layer in circuit.layers] == expected.layers
    assert circuit.params.layers == expected.layers  # the circuit records the list, not "auto"


def test_the_command_prints_the_list_and_each_candidates_estimate(tmp_path):
    run = subprocess.run([sys.executable, "-m", "neurflow.cli", "layers", "torchvision:resnet18", "--num-classes", "5",
                          "--input-size", "32", "--suggest", "--images", "4", "--tau", "4", "--budget", "1h"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == ["fc", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]
    lines = [line.split() for line in run.stderr.splitlines() if "channels" in line]
    assert [(w[0], w[1]) for w in lines] == [("layer4.1", "512"), ("layer4.0", "512"), ("layer3", "256"),
                                            ("layer2", "128"), ("layer1", "64")]
    assert "budget 3600 s" in run.stderr and "4 images, tau 4, fast preset" in run.stderr
    assert all(" IG steps above" in " ".join(w) for w in lines)
