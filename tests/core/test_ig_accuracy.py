"""The fast preset's own error estimates (core/ig_accuracy.py) and the adaptive IG they drive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurflow.core.engine import NeurFlow, concept_sample, sample_weights
from neurflow.core.ig_accuracy import (MAX_ADAPTIVE_STEPS, completeness_residual, next_steps, relative,
                                       stratified_mean_and_error, to_resample, uncertain_channels)


def test_the_stratified_mean_is_the_weighted_sample_mean_and_a_full_sample_has_no_error():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [30, 15, 5])
    values = rng.normal(size=(50, 4))
    sample = concept_sample(labels, 10)
    mean, error = stratified_mean_and_error(values[sample], labels, sample)
    assert np.allclose(mean, sample_weights(labels, sample) @ values[sample])
    assert np.all(error > 0)
    full_mean, full_error = stratified_mean_and_error(values, labels, np.arange(50))
    assert np.allclose(full_mean, values.mean(axis=0)) and np.allclose(full_error, 0)


def test_the_standard_error_of_one_stratum_is_the_textbook_one():
    labels = np.zeros(10, dtype=int)
    sample = np.array([0, 3, 6, 9])
    values = np.array([[1.0], [2.0], [4.0], [7.0]])
    _, error = stratified_mean_and_error(values, labels, sample)
    s2 = values[:, 0].var(ddof=1)
    assert error[0] == pytest.approx(np.sqrt((1 - 4 / 10) * s2 / 4))


def test_uncertain_channels_are_those_whose_interval_reaches_the_top_tau_boundary():
    score = np.array([10.0, 9.0, 5.2, 4.8, 1.0])
    error = np.full(5, 0.15)
    assert uncertain_channels(score, error, tau=3, z=2.0) == 2  # 5.2 and 4.8 straddle the midpoint 5.0
    assert uncertain_channels(score, error, tau=2, z=2.0) == 0  # 9.0 | 5.2: far apart
    assert uncertain_channels(score, error, tau=5, z=2.0) == 0  # every channel kept: no boundary


def test_neurons_are_resampled_until_the_rest_keep_the_target_jaccard():
    # a layer of one neuron (the class) must be exact: any uncertain channel means resampling
    assert to_resample({7: 1}, union=16) == [7]
    assert to_resample({7: 0}, union=16) == []
    # a union of 100 channels allows 2 swaps at 0.95 (k <= 0.05 / 1.95 * 100 = 2.56): the most uncertain go first
    assert to_resample({1: 2, 2: 6, 3: 2, 4: 0}, union=100) == [2]
    assert to_resample({1: 2, 2: 6, 3: 2}, union=100, jaccard=1.0) == [2, 1, 3]


def test_the_residual_and_the_step_ladder():
    assert completeness_residual(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == (0.5, 3.0)
    assert relative(0.0, 0.0) == 0.0 and relative(1.0, 4.0) == 0.25
    assert [next_steps(2), next_steps(32), next_steps(50)] == [4, 64, 64] and next_steps(MAX_ADAPTIVE_STEPS) is None


class _Biased(nn.Module):
    """Convolutions with biases: not positively homogeneous, so few IG steps are not complete."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.conv3 = nn.Conv2d(12, 10, 3, padding=1)
        self.fc = nn.Linear(10, 3)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.uniform_(conv.bias, -0.5, 0.5)

    def forward(self, x):
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.fc(torch.tanh(self.conv3(x)).mean(dim=(2, 3)))


def _core_sets(circuit):
    return [sorted({e.neuron for n in layer.neurons for c in n.concepts for e in c.edges}) for layer in circuit.layers[:-1]]


def test_the_steps_go_up_until_the_completeness_residual_is_below_the_tolerance(random_images):
    model = _Biased().eval()
    layers = ["fc", "conv3", "conv2"]
    fixed = NeurFlow(layers, tau=3, top_n=12, ig_steps=1, select="all").fit(model, random_images, 0).circuit_
    assert all(layer.ig.steps == 1 and layer.ig.residual is None for layer in fixed.layers[:-1])
    one = NeurFlow(layers, tau=3, top_n=12, ig_steps=1, ig_tolerance=1e9, select="all").fit(
        model, random_images, 0).circuit_
    assert max(layer.ig.residual for layer in one.layers[:-1]) > 1e-3  # one step is not complete here
    adaptive = NeurFlow(layers, tau=3, top_n=12, ig_steps=1, ig_tolerance=1e-3, select="all").fit(
        model, random_images, 0).circuit_
    for layer in adaptive.layers[:-1]:
        assert layer.ig.residual <= 1e-3 and layer.ig.steps > 1
        assert layer.ig.pairs == sum(c.size for n in layer.neurons for c in n.concepts)
    assert adaptive.layers[-1].ig is None
    # the residual is a real error estimate: where it is small, the ranking is exact IG's
    exact = NeurFlow(layers, tau=3, top_n=12, ig_steps=50, select="all").fit(model, random_images, 0).circuit_
    assert _core_sets(adaptive) == _core_sets(exact)


def test_unstable_neurons_get_ig_on_every_top_patch(tiny_resnet, random_images):
    layers = ["fc", "layer4.1", "layer4.0"]
    kw = dict(tau=3, top_n=20, ig_steps=2, select="all")
    everything = NeurFlow(layers, **kw).fit(tiny_resnet, random_images, 1).circuit_
    # an absurd z makes every sampled neuron uncertain: each then gets IG on its other top patches
    grown = NeurFlow(layers, ig_patches=6, ig_stability=1e6, **kw).fit(tiny_resnet, random_images, 1).circuit_
    assert [layer.ig.resampled for layer in grown.layers[:-1]] == [1, len(grown.layers[1].neurons)]
    assert [layer.ig.pairs for layer in grown.layers[:-1]] == [layer.ig.pairs for layer in everything.layers[:-1]]
    assert _core_sets(grown) == _core_sets(everything)
    sampled = NeurFlow(layers, ig_patches=6, ig_stability="off", **kw).fit(tiny_resnet, random_images, 1).circuit_
    assert all(layer.ig.resampled == 0 for layer in sampled.layers[:-1])
    assert sampled.layers[0].ig.pairs < everything.layers[0].ig.pairs
