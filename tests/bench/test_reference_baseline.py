"""The bench's reference-structured baseline finds the same core neurons as the engine."""

from __future__ import annotations

import torch
import torchvision

from bench.engine_speed import compare, jaccard
from bench.reference_baseline import engine_core_sets, reference_fit
from neurflow.core.engine import NeurFlow

LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1"]


def _setup():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, pixels


def test_baseline_matches_engine_core_sets():
    model, pixels = _setup()
    settings = dict(tau=3, top_n=6, ig_steps=4, batch_size=4)
    base = reference_fit(model, pixels, 1, LAYERS, **settings)
    circuit = NeurFlow(LAYERS, select="all", **settings).fit(model, pixels, 1).circuit_
    core, bottom = engine_core_sets(circuit)
    assert base.core == core
    assert base.bottom_chosen == bottom
    assert base.core["fc"] == [1]
    assert len(base.core["layer4.1"]) == 3
    assert base.n_patches == len(pixels) * 59  # granularities (1, .5, .25) at stride ratio .5


def test_compare_and_jaccard():
    assert jaccard([1, 2], [2, 3]) == 1 / 3
    assert jaccard([], []) == 1.0
    ref = {"core": {"fc": [0], "a": [1, 2], "b": [3, 4]}, "bottom_chosen": [5]}
    other = {"core": {"fc": [0], "a": [1, 2], "b": [3]}, "bottom_chosen": [5]}
    out = compare(ref, other, ["fc", "a", "b", "c"])
    assert not out["identical"]
    assert out["mean_jaccard"] == (1.0 + 0.5) / 2  # the target layer is left out of the mean
    assert compare(ref, ref, ["fc", "a", "b", "c"])["identical"]
