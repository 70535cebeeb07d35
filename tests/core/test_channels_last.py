"""``channels_last`` (on in the fast preset) changes the weights' memory layout for the fit only and
the numbers only up to rounding; a model that cannot run channels-last runs contiguous."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neurflow.core.engine import NeurFlow

from .test_map_cache import assert_same_circuit


class ViewNet(nn.Module):
    """Flattens a feature map with ``.view``, which needs contiguous (NCHW) strides."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=4, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.view(len(x), -1))


def fit(model, images, layers, **kw):
    return NeurFlow(layers, tau=3, top_n=8, ig_steps=4, select="all", **kw).fit(model, images, 1).circuit_


def test_channels_last_gives_the_contiguous_circuit_and_restores_the_weights(tiny_resnet, random_images):
    layers = ["fc", "layer4.1", "layer4.0", "layer3.1"]
    fast = fit(tiny_resnet, random_images, layers, channels_last=True)
    plain = fit(tiny_resnet, random_images, layers, channels_last=False)
    assert fast.params.channels_last is True and plain.params.channels_last is False
    assert_same_circuit(fast, plain)
    assert all(p.is_contiguous() for p in tiny_resnet.parameters())


def test_the_fast_preset_runs_channels_last():
    assert NeurFlow(["fc", "layer4"], preset="fast")._validated()[0].channels_last is True
    assert NeurFlow(["fc", "layer4"])._validated()[0].channels_last is False


def test_a_model_that_cannot_run_channels_last_runs_contiguous():
    torch.manual_seed(0)
    model = ViewNet().eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.to(memory_format=torch.channels_last)
        try:
            model(images[:1])
            raise AssertionError("the .view should fail on channels-last maps; the test model lost its point")
        except RuntimeError:
            pass
        model.to(memory_format=torch.contiguous_format)
    circuit = fit(model, images, ["fc", "conv2", "conv1"], channels_last=True)
    reference = fit(model, images, ["fc", "conv2", "conv1"], channels_last=False)
    assert_same_circuit(circuit, reference)
    assert all(p.is_contiguous() for p in model.parameters())
    assert np.isfinite([c.activation for layer in circuit.layers for n in layer.neurons for c in n.concepts]).all()
