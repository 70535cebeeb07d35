"""The kept maps of the IG input layer (``map_cache_mb``) change where the IG stages start, not what
they compute: every fit here is compared with the same fit that re-runs the model from the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurflow.core.engine import NeurFlow


class InplaceNet(nn.Module):
    """The IG input layer ``conv1`` is rewritten in place by the ReLU right after it (VGG's layout):
    kept maps must be the conv's output, not the ReLU's."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def edges(circuit) -> list[tuple[str, int, int, list[int], np.ndarray]]:
    return [(layer.name, neuron.id, concept.id, [e.neuron for e in concept.edges],
             np.array([e.weight for e in concept.edges]))
            for layer in circuit.layers for neuron in layer.neurons for concept in neuron.concepts]


def assert_same_circuit(a, b) -> None:
    assert [[n.id for n in layer.neurons] for layer in a.layers] == [[n.id for n in layer.neurons] for layer in b.layers]
    ea, eb = edges(a), edges(b)
    assert [e[:4] for e in ea] == [e[:4] for e in eb]
    for x, y in zip(ea, eb):
        np.testing.assert_allclose(x[4], y[4], rtol=1e-4, atol=1e-7)


def fit(model, images, layers, **kw):
    params = dict(tau=3, top_n=8, ig_steps=4, select="all")
    return NeurFlow(layers, **params, **kw).fit(model, images, 1).circuit_


@pytest.mark.parametrize("layers", [["fc", "layer4.1", "layer4.0", "layer3.1"], ["fc", "layer4.1", "layer3.0"]])
def test_kept_maps_give_the_circuit_of_a_rerun_from_pixels(tiny_resnet, random_images, layers):
    kept = fit(tiny_resnet, random_images, layers, map_cache_mb=64)
    rerun = fit(tiny_resnet, random_images, layers, map_cache_mb=0)
    assert_same_circuit(kept, rerun)


def test_kept_maps_are_taken_before_an_inplace_op_rewrites_them(random_images):
    torch.manual_seed(0)
    model = InplaceNet().eval()
    assert_same_circuit(fit(model, random_images, ["fc", "conv2", "conv1"], map_cache_mb=64),
                        fit(model, random_images, ["fc", "conv2", "conv1"], map_cache_mb=0))


def test_maps_are_kept_within_the_budget_only(tiny_resnet, random_images, monkeypatch):
    """A budget smaller than the maps (1.4 MB here) re-runs the model: the readout pass is asked for no
    map; the fast preset keeps them."""
    from neurflow.core import layer_access

    asked = []
    original = layer_access.LayerAccess.readouts

    def spy(self, x, names=None, maps=None):
        asked.append(maps is not None)
        return original(self, x, names, maps)

    monkeypatch.setattr(layer_access.LayerAccess, "readouts", spy)
    layers = ["fc", "layer4.1", "layer3.0"]  # layer3.0 at 32 px: 256 x 2 x 2 floats = 4 KB per patch, 354 patches
    for budget, kept in [(0, False), (1, False), (2, True), (None, False)]:  # None: the exact preset's 0
        asked.clear()
        fit(tiny_resnet, random_images, layers, map_cache_mb=budget)
        assert asked and set(asked) == {kept}, budget
    asked.clear()
    NeurFlow(layers, tau=3, top_n=8, select="all", preset="fast").fit(tiny_resnet, random_images, 1)
    assert asked and all(asked)
